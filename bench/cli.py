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
import statistics
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


def _pod(ns: str, name: str, tier: str, index: int, nodes: int) -> str:
    """The same workload as a Pod from a cluster dump: an address and a node."""
    addr = f"10.244.{index // 250}.{index % 250 + 1}"
    return (
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, "
        f"labels: {{app: {name}, tier: {tier}}}}}\n"
        f"spec:\n  nodeName: node-{index % nodes}\n  containers:\n  - name: c\n    image: i\n"
        "    ports:\n    - {name: http, containerPort: 8080}\n"
        "    - {name: metrics, containerPort: 9090}\n"
        f"status: {{podIP: {addr}}}\n---\n"
    )


def _node(i: int) -> str:
    return (
        f"apiVersion: v1\nkind: Node\nmetadata: {{name: node-{i}}}\n"
        f"status: {{addresses: [{{type: InternalIP, address: 192.168.0.{i + 1}}}]}}\n---\n"
    )


def _policies(ns: str, prev: str, apps: list[str], rng: random.Random, count: int) -> list[str]:
    """Default deny, DNS egress, then app-to-app rules on a named port (every fourth from
    the previous namespace, by namespaceSelector); the first ``count`` of them."""
    head = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: "
    out = [
        f"{head}default-deny, namespace: {ns}}}\n"
        "spec: {podSelector: {}, policyTypes: [Ingress, Egress]}\n---\n",
        f"{head}dns, namespace: {ns}}}\n"
        "spec:\n  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n"
        "  - ports: [{port: 53, protocol: UDP}]\n---\n",
    ]
    for i in range(max(0, count - 2)):
        src, dst = rng.sample(apps, 2) if len(apps) > 1 else (apps[0], apps[0])
        peer = f"podSelector: {{matchLabels: {{app: {src}}}}}"
        if i % 4 == 3:
            peer = f"namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {prev}}}}}"
        out.append(
            f"{head}allow-{i}, namespace: {ns}}}\n"
            f"spec:\n  podSelector: {{matchLabels: {{app: {dst}}}}}\n  ingress:\n"
            f"  - from: [{{{peer}}}]\n"
            "    ports: [{port: http}]\n---\n"
        )
    return out[:count]


def generate(root: Path, workloads: int, policies: int, seed: int = 7, pods: int = 0) -> Path:
    """``workloads`` Deployments in namespaces of 10 and ``policies`` NetworkPolicies in all
    (at least four per namespace that has any, filling namespaces in order). ``pods``: write
    each workload as a Pod with an address on one of ``pods`` Nodes instead (a cluster dump).
    """
    rng = random.Random(seed)
    namespaces = max(1, -(-workloads // 10))
    per_ns = max(4, -(-policies // namespaces))
    root.mkdir(parents=True, exist_ok=True)
    left = policies
    if pods:
        (root / "nodes.yaml").write_text("".join(_node(i) for i in range(pods)))
    for n in range(namespaces):
        ns = f"team-{n:03d}"
        apps = [f"app-{i}" for i in range(min(10, workloads - n * 10))]
        tiers = [rng.choice(["web", "api", "db"]) for _ in apps]
        if pods:
            text = "".join(
                _pod(ns, a, t, n * 10 + i, pods)
                for i, (a, t) in enumerate(zip(apps, tiers, strict=True))
            )
        else:
            text = "".join(_deployment(ns, a, t) for a, t in zip(apps, tiers, strict=True))
        (root / f"{ns}.yaml").write_text(text)
        take = min(per_ns, left)
        left -= take
        prev = f"team-{(n - 1) % namespaces:03d}"
        (root / f"{ns}-policies.yaml").write_text("".join(_policies(ns, prev, apps, rng, take)))
    return root


def timed(argv: list[str]) -> tuple[float, float, int, float]:
    """Wall seconds, peak RSS (MB) and CPU seconds (user + system) of this child alone
    (wait4's rusage), and its exit code. CPU time is what a busy shared machine distorts
    least; wall time is what a pipeline waits."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, proc.returncode, usage.ru_utime + usage.ru_stime


def _median_run(argv: list[str], repeat: int) -> tuple[float, float, int, float]:
    runs = [timed(argv) for _ in range(repeat)]
    return (
        statistics.median(r[0] for r in runs),
        max(r[1] for r in runs),
        max(r[2] for r in runs),
        statistics.median(r[3] for r in runs),
    )


def _in_process_baseline(small: Path) -> tuple[float, float]:
    """The per-pair path (``reachability``, one lookup per pod pair and port) against the
    grouped one on the 200-workload input, in this process, after one shared compile."""
    from labelwall.cli.offline import load, probe_ports
    from labelwall.policy.matrix import reachability
    from labelwall.policy.reachgroups import GroupedMatrix

    loaded = load([str(small)])
    ports = probe_ports(loaded.state, [], [])
    t0 = time.perf_counter()
    reachability(loaded.compiled, ports, per_node=True)
    t1 = time.perf_counter()
    m = GroupedMatrix(loaded.compiled, ports, per_node=True)
    m.rows(m.pods, m.pods, ports[0])
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


TARGETS = {
    "matrix_200": "<= 2 s, <= 200 MB",
    "matrix_2000": "<= 10 s",
    "matrix_2000_pods": "<= 10 s",
    "diff_200": "<= 2 s",
    "compile_10k": "<= 3 s",
    "startup": "(baseline)",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--large", type=int, default=2000, help="workloads in the large case")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measure (median)")
    args = ap.parse_args()
    results: dict[str, float | int | str] = {"machine": _machine.describe()}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="lw-bench-cli-") as tmp:
        small = generate(Path(tmp) / "small", 200, 13)
        large = generate(Path(tmp) / "large", args.large, args.large // 10)
        large_pods = generate(Path(tmp) / "large-pods", args.large, args.large // 10, pods=4)
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
        one = Path(tmp) / "one.yaml"
        one.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
        runs = {
            "startup": [*LABELWALL, "compile", "-f", str(one), "-o", "json"],
            "matrix_200": [*LABELWALL, "matrix", "-f", str(small), "-o", "json"],
            "matrix_2000": [*LABELWALL, "matrix", "-f", str(large), "-o", "json"],
            "matrix_2000_pods": [*LABELWALL, "matrix", "-f", str(large_pods), "-o", "json"],
            "diff_200": [
                *LABELWALL, "diff", "-f", str(workloads_only),
                "--before", str(before), "--after", str(after), "-o", "json",
            ],
            "compile_10k": [*LABELWALL, "compile", "-f", str(compile10k), "-o", "json"],
        }  # fmt: skip
        for name, argv in runs.items():
            wall, rss, code, cpu = _median_run(argv, args.repeat)
            results[f"{name}_s"] = round(wall, 2)
            results[f"{name}_cpu_s"] = round(cpu, 2)
            results[f"{name}_rss_mb"] = round(rss, 1)
            results[f"{name}_exit"] = code
        per_pair, grouped = _in_process_baseline(small)
        results["matrix_200_per_pair_s"] = round(per_pair, 3)
        results["matrix_200_grouped_s"] = round(grouped, 3)
        results["matrix_200_speedup"] = round(per_pair / max(grouped, 1e-9), 1)
    results["loadavg_after"] = round(os.getloadavg()[0], 2)
    results["loadavg_before"] = round(load_before, 2)
    if args.json:
        print(json.dumps(results))
        return 0
    print(
        f"machine: {results['machine']}  (median of {args.repeat} runs, peak RSS; load "
        f"{results['loadavg_before']} -> {results['loadavg_after']})"
    )
    print(f"{'measure':18} {'wall s':>7} {'CPU s':>6} {'RSS MB':>7} {'exit':>4}  target")
    for name in runs:
        print(
            f"{name:18} {results[name + '_s']:>7} {results[name + '_cpu_s']:>6} "
            f"{results[name + '_rss_mb']:>7} {results[name + '_exit']:>4}  {TARGETS[name]}"
        )
    print(
        f"in-process, 200 workloads: per pair {results['matrix_200_per_pair_s']} s, grouped "
        f"{results['matrix_200_grouped_s']} s ({results['matrix_200_speedup']}x)"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
