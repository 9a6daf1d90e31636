"""Time from `lab apply` to enforcement, measured with real packets (root needed).

For each iteration a policy change (or a pod relabel) is handed to the lab without
waiting, then one pod probes another in a tight loop; the latency is the send time of
the first probe whose verdict shows the change (a SYN that got through after an allow,
or one that was dropped after a deny) minus the time `apply` was called. Both directions
are measured (allow and deny), so p50/p99 cover opening and closing. Everything runs in
a throw-away lab (prefix ``lwb-``) that is removed at the end, also on failure.

    sudo .venv/bin/python bench/apply_latency.py [--iterations 50] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

from labelwall.lab.control import Lab, down
from labelwall.lab.layout import LabPaths
from labelwall.manifests import SourceDoc

# Probe timeouts (seconds). Waiting for an allow, a probe that fails early only delays
# detection (conservative), so it is short; waiting for a deny, a slow success must not pass
# for a drop, so it is longer. Latency counts from the probe's send time either way.
ALLOW_PROBE_TIMEOUT_S = 0.005
DENY_PROBE_TIMEOUT_S = 0.05
GIVE_UP_S = 5.0


def pod(name: str, ip: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench", "labels": labels},
        "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
        "status": {"podIP": ip},
    }


def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": spec,
    }


NS = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}
DENY = policy("deny", {"podSelector": {"matchLabels": {"app": "server"}}, "ingress": []})
ALLOW = policy(
    "allow-clients",
    {
        "podSelector": {"matchLabels": {"app": "server"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                     "ports": [{"port": 80}]}],
    },
)  # fmt: skip
SERVER = pod("server", "10.244.200.2", {"app": "server"})
CLIENT = pod("client", "10.244.200.3", {"app": "client", "role": "client"})
OTHER = pod("other", "10.244.200.4", {"app": "other"})
OTHER_CLIENT = pod("other", "10.244.200.4", {"app": "other", "role": "client"})
FILLER = [pod(f"filler-{i}", f"10.244.201.{i + 10}", {"app": f"filler-{i % 5}"}) for i in range(6)]


def docs(objs: list[dict[str, Any]]) -> list[SourceDoc]:
    return [SourceDoc("bench", i, o) for i, o in enumerate(objs)]


def until(lab: Lab, src: str, want_ok: bool, t0: float) -> float:
    """ms from ``t0`` to the send time of the first probe src -> bench/server that agrees."""
    req = [{"src": src, "dst": "bench/server", "port": 80, "protocol": "TCP"}]
    while True:
        sent = time.perf_counter()
        [r] = lab.probe(req, ALLOW_PROBE_TIMEOUT_S if want_ok else DENY_PROBE_TIMEOUT_S)
        if (r["outcome"] == "ok") == want_ok:
            return (sent - t0) * 1e3
        if sent - t0 > GIVE_UP_S:
            raise RuntimeError(f"{src}: change not enforced after {GIVE_UP_S} s")


def measure(lab: Lab, iterations: int) -> dict[str, list[float]]:
    apply_ms: list[float] = []
    relabel_ms: list[float] = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        lab.apply(docs([ALLOW]), wait=False)
        apply_ms.append(until(lab, "bench/client", True, t0))
        t0 = time.perf_counter()
        lab.delete(docs([ALLOW]), wait=False)
        apply_ms.append(until(lab, "bench/client", False, t0))
    lab.apply(docs([ALLOW]))
    for _ in range(iterations):
        t0 = time.perf_counter()
        lab.apply(docs([OTHER_CLIENT]), wait=False)
        relabel_ms.append(until(lab, "bench/other", True, t0))
        t0 = time.perf_counter()
        lab.apply(docs([OTHER]), wait=False)
        relabel_ms.append(until(lab, "bench/other", False, t0))
    return {"apply": apply_ms, "relabel": relabel_ms}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50, help="per kind and direction")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("error: needs root (network namespaces, BPF): run with sudo", file=sys.stderr)
        return 2
    paths = LabPaths.from_env(f"/tmp/labelwall-bench-{os.getpid()}", "lwb-")
    lab = Lab(paths)
    try:
        lab.up(docs([NS, SERVER, CLIENT, OTHER, *FILLER, DENY]), metrics_port=0)
        until(lab, "bench/client", False, time.perf_counter())  # baseline: denied
        samples = measure(lab, args.iterations)
    except BaseException:
        for log in (paths.agent_log, paths.daemon_log):
            if log.exists():
                print(f"--- last lines of {log}", file=sys.stderr)
                print("\n".join(log.read_text().splitlines()[-15:]), file=sys.stderr)
        raise
    finally:
        down(paths)
    out: dict[str, Any] = {
        "iterations": args.iterations,
        "probe_timeout_ms": {
            "allow": ALLOW_PROBE_TIMEOUT_S * 1e3,
            "deny": DENY_PROBE_TIMEOUT_S * 1e3,
        },
    }
    for kind, values in samples.items():
        out[f"{kind}_n"] = len(values)
        out[f"{kind}_p50_ms"] = round(statistics.median(values), 2)
        out[f"{kind}_p99_ms"] = round(pct(values, 99), 2)
        out[f"{kind}_max_ms"] = round(max(values), 2)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:20} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
