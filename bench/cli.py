"""Offline CLI benchmark: matrix, diff and compile on generated workload manifests, as CI runs them.

Each measure runs ``labelwall`` as a subprocess (what a pipeline pays: start-up, parsing,
compile, output) and reports wall time and the child's peak RSS. The cluster: N namespaces
of workloads (Deployments with two named ports) and per-namespace policies (default deny,
app-to-app on a named port, namespace-to-namespace, DNS egress).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _machine

LABELWALL = [sys.executable, "-m", "labelwall.cli.main"]


def _deployment(ns: str, name: str, tier: str) -> str:
    return (
        f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\n"
        f"spec:\n  template:\n    metadata: {{labels: {{app: {name}, tier: {tier}}}}}\n"
        "    spec:\n      containers:\n      - name: c\n        image: i\n        ports:\n"
        "        - {name: http, containerPort: 8080}\n"
        "        - {name: metrics, containerPort: 9090}\n---\n"
    )


def _policies(ns: str, apps: list[str], rng: random.Random, count: int) -> list[str]:
    out = [
        f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        f"metadata: {{name: default-deny, namespace: {ns}}}\n"
        "spec: {podSelector: {}, policyTypes: [Ingress, Egress]}\n---\n",
        f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        f"metadata: {{name: dns, namespace: {ns}}}\n"
        "spec:\n  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n"
        "  - ports: [{port: 53, protocol: UDP}]\n---\n",
    ]
    for i in range(max(0, count - 2)):
        src, dst = rng.sample(apps, 2) if len(apps) > 1 else (apps[0], apps[0])
        out.append(
            f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
            f"metadata: {{name: allow-{i}, namespace: {ns}}}\n"
            f"spec:\n  podSelector: {{matchLabels: {{app: {dst}}}}}\n  ingress:\n"
            f"  - from: [{{podSelector: {{matchLabels: {{app: {src}}}}}}}]\n"
            "    ports: [{port: http}]\n---\n"
        )
    return out


def generate(root: Path, workloads: int, policies: int, seed: int = 7) -> Path:
    """Write ``workloads`` Deployments over namespaces of 10 and ``policies`` in all."""
    rng = random.Random(seed)
    namespaces = max(1, workloads // 10)
    per_ns_pol = max(2, policies // namespaces)
    root.mkdir(parents=True, exist_ok=True)
    for n in range(namespaces):
        ns = f"team-{n:03d}"
        apps = [f"app-{i}" for i in range(min(10, workloads - n * 10))]
        text = "".join(_deployment(ns, a, rng.choice(["web", "api", "db"])) for a in apps)
        (root / f"{ns}.yaml").write_text(text)
        (root / f"{ns}-policies.yaml").write_text("".join(_policies(ns, apps, rng, per_ns_pol)))
    return root


def timed(argv: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MB) of this child alone (wait4's rusage), exit code."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--large", type=int, default=2000, help="workloads in the large case")
    args = ap.parse_args()
    results: dict[str, float | int | str] = {"machine": _machine.describe()}
    with tempfile.TemporaryDirectory(prefix="lw-bench-cli-") as tmp:
        small = generate(Path(tmp) / "small", 200, 13)
        large = generate(Path(tmp) / "large", args.large, args.large // 10)
        # A one-port change: the first allow rule of the first namespace moves to metrics.
        after = Path(tmp) / "after"
        after.mkdir()
        for f in small.glob("*-policies.yaml"):
            text = f.read_text()
            if f.name == "team-000-policies.yaml":
                text = text.replace("ports: [{port: http}]", "ports: [{port: metrics}]", 1)
            (after / f.name).write_text(text)
        workloads_only, before = Path(tmp) / "workloads", Path(tmp) / "before"
        workloads_only.mkdir()
        before.mkdir()
        for f in small.glob("team-???.yaml"):
            (workloads_only / f.name).write_text(f.read_text())
        for f in small.glob("*-policies.yaml"):
            (before / f.name).write_text(f.read_text())
        compile10k = generate(Path(tmp) / "c10k", 2000, 10000)
        runs = {
            "matrix_200": [*LABELWALL, "matrix", "-f", str(small), "-o", "json"],
            "matrix_2000": [*LABELWALL, "matrix", "-f", str(large), "-o", "json"],
            "diff_200": [
                *LABELWALL, "diff", "-f", str(workloads_only),
                "--before", str(before), "--after", str(after), "-o", "json",
            ],
            "compile_10k": [*LABELWALL, "compile", "-f", str(compile10k), "-o", "json"],
        }  # fmt: skip
        for name, argv in runs.items():
            wall, rss, code = timed(argv)
            results[f"{name}_s"] = round(wall, 2)
            results[f"{name}_rss_mb"] = round(rss, 1)
            results[f"{name}_exit"] = code
    if args.json:
        print(json.dumps(results))
    else:
        for k, v in results.items():
            print(f"{k:24} {v}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
