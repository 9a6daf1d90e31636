"""Compile the labelwall classifier: the one place that knows the clang command line.

Used by setup.py (at ``pip install .`` / ``pip install -e .``) and by ``make bpf``.
Standard library only, so it runs inside pip's isolated build environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "bpf_src" / "labelwall.bpf.c"
INCLUDE = ROOT / "bpf_src" / "include"
OUTPUT = ROOT / "labelwall" / "datapath" / "bpf" / "labelwall.bpf.o"
# asm/types.h lives in the multiarch directory on Debian; -target bpf does not search it.
MULTIARCH_INCLUDE = "/usr/include/x86_64-linux-gnu"
CFLAGS = ["-O2", "-g", "-target", "bpf", "-Wall", "-Wextra", "-Werror"]


def command(output: Path = OUTPUT, clang: str | None = None) -> list[str]:
    cc = clang or os.environ.get("CLANG") or "clang"
    return [cc, *CFLAGS, f"-I{INCLUDE}", f"-idirafter{MULTIARCH_INCLUDE}", "-c", str(SOURCE),
            "-o", str(output)]  # fmt: skip


def build(output: Path = OUTPUT) -> Path:
    """Compile SOURCE into ``output``; raises RuntimeError with clang's message on failure."""
    cmd = command(output)
    if shutil.which(cmd[0]) is None:
        raise RuntimeError(
            f"{cmd[0]} not found: install clang (Debian: apt-get install clang libbpf-dev) "
            "to build the labelwall BPF object"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return output


if __name__ == "__main__":
    out = build(Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT)
    print(out)
