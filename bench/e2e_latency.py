"""Time from `kubectl apply` of a NetworkPolicy to enforcement seen by real packets, full stack.

The stack is tests/fullstack/harness.py: a real etcd + kube-apiserver, the chart installed
with helm, the operator and one agent run as the chart runs them (rendered config, the
chart's ServiceAccounts), and the lab kubelet giving each pod a network namespace; all of it
inside one lab node netns, the agent with a private bpffs. Nothing is left behind.

Each iteration applies a policy that opens server:80 to the client, then one (same name)
that closes it again, both with `kubectl apply -f -`; meanwhile the client probes the server
in a tight loop. A sample is the send time of the first probe whose verdict shows the
change (a SYN answered after an open, one dropped after a close) minus the moment kubectl
was started, so it includes kubectl's own start-up and request. The same is then measured
with the API call made directly (no kubectl), which isolates what labelwall adds.

    sudo .venv/bin/python bench/e2e_latency.py [--iterations 50] [--json]

``--real-cluster`` measures on 2 real nodes instead (kubelet, containerd, CNI, kube-proxy;
labelwall installed by its chart): apply -> enforced for probers on the server's node and
on the other node, to the pod IP and through the Service, and how soon a new pod on node-2
is admitted on node-1 (bench/_real_latency.py says how). ``--testenv DIR`` uses a cluster
already up (`labelwall testenv up --dir DIR --nodes 2`) instead of bringing one up.

    sudo .venv/bin/python bench/e2e_latency.py --real-cluster [--newcomers 20] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _machine

HERE = Path(__file__).resolve().parent
PREFIX = "lwe-"
SUBNET = "10.244.110.0/24"
# Probe timeouts (seconds). Waiting for an open, a probe that fails early only delays the
# detection (the sample is the send time of the first success), so it is short; waiting for
# a close, a slow success must not pass for a drop, so it is longer.
OPEN_PROBE_TIMEOUT_S = 0.005
CLOSE_PROBE_TIMEOUT_S = 0.05
GIVE_UP_S = 10.0
TARGET_P99_MS = 300.0


def load_harness() -> ModuleType:
    path = HERE.parent / "tests" / "fullstack" / "harness.py"
    spec = importlib.util.spec_from_file_location("lw_fullstack_harness", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def pod(name: str, labels: dict[str, str], node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench", "labels": labels},
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": "c", "image": "example.invalid/app:1", "ports": [{"containerPort": 80}]}
            ],
        },
    }


def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": spec,
    }


DENY = policy("deny", {"podSelector": {"matchLabels": {"app": "server"}}, "ingress": []})


def gate(role: str) -> dict[str, Any]:
    """The policy under test: server:80 open to pods with ``role`` (client: open)."""
    return policy(
        "gate",
        {
            "podSelector": {"matchLabels": {"app": "server"}},
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"role": role}}}],
                    "ports": [{"port": 80}],
                }
            ],
        },
    )


OPEN, CLOSED = gate("client"), gate("nobody")


def until(stack: Any, want_ok: bool, t0: float) -> float:
    """ms from ``t0`` to the send time of the first probe client -> server that agrees."""
    req = [{"src": "bench/client", "dst": "bench/server", "port": 80, "protocol": "TCP"}]
    timeout = OPEN_PROBE_TIMEOUT_S if want_ok else CLOSE_PROBE_TIMEOUT_S
    while True:
        sent = time.perf_counter()
        [r] = stack.probe(req, timeout)
        if (r["outcome"] == "ok") == want_ok:
            return (sent - t0) * 1e3
        if sent - t0 > GIVE_UP_S:
            raise RuntimeError(f"not {'open' if want_ok else 'closed'} after {GIVE_UP_S} s")


def kubectl_apply(stack: Any, obj: dict[str, Any]) -> Callable[[], float]:
    """Start `kubectl apply -f -` (not waiting); returns a function that waits for it and
    gives its ms from start."""
    env = stack.env
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(env.binaries.kubectl), f"--kubeconfig={env.kubeconfig}",
         f"--cache-dir={env.directory / 'kubectl-cache'}", "apply", "-f", "-"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(obj))
    proc.stdin.close()

    def done() -> float:
        assert proc.stderr is not None
        err = proc.stderr.read()
        if proc.wait(timeout=60) != 0:
            raise RuntimeError(f"kubectl apply failed: {err}")
        return (time.perf_counter() - t0) * 1e3

    return done


def measure_kubectl(stack: Any, iterations: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"open": [], "close": [], "kubectl_returned": []}
    for _ in range(iterations):
        for obj, want_ok, kind in ((OPEN, True, "open"), (CLOSED, False, "close")):
            t0 = time.perf_counter()
            done = kubectl_apply(stack, obj)
            out[kind].append(until(stack, want_ok, t0))
            out["kubectl_returned"].append(done())
    return out


def measure_api(stack: Any, iterations: int) -> dict[str, list[float]]:
    """The same changes as one PATCH each through the Python client (no kubectl start-up)."""
    from kubernetes.client import NetworkingV1Api

    from labelwall.kube.client import api_client

    api = NetworkingV1Api(api_client(str(stack.env.kubeconfig)))
    out: dict[str, list[float]] = {"open": [], "close": []}
    for _ in range(iterations):
        for obj, want_ok, kind in ((OPEN, True, "open"), (CLOSED, False, "close")):
            t0 = time.perf_counter()
            # A merge patch of the spec: the operator annotates the object after every
            # change, so a read-modify-PUT would race it (409).
            api.patch_namespaced_network_policy(
                "gate", "bench", {"spec": obj["spec"]},
                _content_type="application/merge-patch+json",
            )  # fmt: skip
            out[kind].append(until(stack, want_ok, t0))
    return out


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 100 samples is the 99th smallest, not the max)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values), 1),
        "p99_ms": round(pct(values, 99), 1),
        "max_ms": round(max(values), 1),
    }


def run(iterations: int, workdir: Path) -> dict[str, Any]:
    harness = load_harness()
    missing = harness.requirements()
    if missing:
        raise SystemExit("missing: " + "; ".join(missing))
    node = harness.NODE_NAME
    stack = harness.Stack(workdir, PREFIX, subnet=SUBNET)
    with stack:
        try:
            return _measure(stack, node, iterations)
        except BaseException:
            for proc in (stack.agent, stack.operator):
                if proc is not None:
                    print(f"--- last lines of the {proc.name} log", file=sys.stderr)
                    print(proc.tail(20), file=sys.stderr)
            raise


def _measure(stack: Any, node: str, iterations: int) -> dict[str, Any]:
    stack.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}])
    stack.apply(
        [
            pod("server", {"app": "server"}, node),
            pod("client", {"app": "client", "role": "client"}, node),
            pod("other", {"app": "other"}, node),
            DENY,
            CLOSED,
        ]
    )
    stack.kubelet.wait_running(["bench/server", "bench/client", "bench/other"])
    # Warm-up (not measured): identities published, one open and one close enforced.
    kubectl_apply(stack, OPEN)()
    until(stack, True, time.perf_counter())
    kubectl_apply(stack, CLOSED)()
    until(stack, False, time.perf_counter())
    syncs_before = stack.agent_metric("labelwall_agent_sync_duration_seconds_count")
    sync_s_before = stack.agent_metric("labelwall_agent_sync_duration_seconds_sum")
    via_kubectl = measure_kubectl(stack, iterations)
    syncs = stack.agent_metric("labelwall_agent_sync_duration_seconds_count") - syncs_before
    sync_s = stack.agent_metric("labelwall_agent_sync_duration_seconds_sum") - sync_s_before
    via_api = measure_api(stack, iterations)
    stack.check_alive()
    timings = dict(stack.timings)
    applies = via_kubectl["open"] + via_kubectl["close"]
    total = summary(applies)
    return {
        "apply_to_enforced_p50_ms": total["p50_ms"],
        "apply_to_enforced_p99_ms": total["p99_ms"],
        "apply_to_enforced_max_ms": total["max_ms"],
        "applies": total["n"],
        "target_p99_ms": TARGET_P99_MS,
        "kubectl": {k: summary(v) for k, v in via_kubectl.items()},
        "api": {
            "all": summary(via_api["open"] + via_api["close"]),
            **{k: summary(v) for k, v in via_api.items()},
        },
        "agent_sync_mean_ms": round(sync_s / syncs * 1e3, 2) if syncs else None,
        "agent_syncs_per_apply": round(syncs / len(applies), 2),
        "probe_timeout_ms": {
            "open": OPEN_PROBE_TIMEOUT_S * 1e3,
            "close": CLOSE_PROBE_TIMEOUT_S * 1e3,
        },
        "stack_start_s": {k: round(v, 2) for k, v in timings.items()},
        "machine": _machine.facts(),
    }


def print_table(r: dict[str, Any]) -> None:
    print(f"machine: {_machine.describe()}")
    print(f"stack start: {r['stack_start_s']} (apiserver, helm install, operator+agent healthy)")
    print()
    print(f"{'path':<34}{'n':>5}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    headline = {
        "n": r["applies"],
        "p50_ms": r["apply_to_enforced_p50_ms"],
        "p99_ms": r["apply_to_enforced_p99_ms"],
        "max_ms": r["apply_to_enforced_max_ms"],
    }
    rows = [
        ("kubectl apply -> enforced (all)", headline),
        ("  opening (SYN answered)", r["kubectl"]["open"]),
        ("  closing (SYN dropped)", r["kubectl"]["close"]),
        ("  kubectl apply returned", r["kubectl"]["kubectl_returned"]),
        ("API PATCH -> enforced (all)", r["api"]["all"]),
        ("  opening", r["api"]["open"]),
        ("  closing", r["api"]["close"]),
    ]  # fmt: skip
    for name, s in rows:
        print(f"{name:<34}{s['n']:>5}{s['p50_ms']:>10}{s['p99_ms']:>10}{s['max_ms']:>10}")
    print()
    print(
        f"agent sync (compile + map writes) mean {r['agent_sync_mean_ms']} ms, "
        f"{r['agent_syncs_per_apply']} syncs per apply; probe timeouts {r['probe_timeout_ms']} ms"
    )
    verdict = "meets" if r["apply_to_enforced_p99_ms"] <= r["target_p99_ms"] else "MISSES"
    print(f"p99 {r['apply_to_enforced_p99_ms']} ms {verdict} the target of {r['target_p99_ms']} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50, help="open+close pairs per path")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument(
        "--real-cluster",
        action="store_true",
        help="measure on 2 real nodes (labelwall testenv up --nodes 2)",
    )
    parser.add_argument(
        "--testenv",
        type=Path,
        metavar="DIR",
        help="with --real-cluster: a cluster already up in DIR",
    )
    parser.add_argument(
        "--newcomers", type=int, default=20, help="with --real-cluster: new pods on node-2 to admit"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("error: needs root (network namespaces, BPF): run with sudo", file=sys.stderr)
        return 2
    if args.real_cluster or args.testenv:
        import _real_latency

        real = _real_latency.run(args.testenv, args.iterations, args.newcomers)
        if args.json:
            print(json.dumps(real))
        else:
            _real_latency.print_table(real)
        return 0
    with tempfile.TemporaryDirectory(prefix="labelwall-e2e-bench-") as tmp:
        result = run(args.iterations, Path(tmp))
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
