"""Facts about the machine a benchmark ran on (CPU, cores, kernel, Python), for its table."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def facts() -> dict[str, str | int | float]:
    """Stable keys: cpu, cores, kernel, python, loadavg_1m (shared machines are noisy)."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 0,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def describe() -> str:
    f = facts()
    return (
        f"{f['cpu']}, {f['cores']} cores, Linux {f['kernel']}, Python {f['python']}, "
        f"load {f['loadavg_1m']}"
    )


if __name__ == "__main__":
    print(describe())
