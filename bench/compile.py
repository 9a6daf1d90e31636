"""Compiler benchmark: a synthetic cluster, full compile time, map sizes, RSS, incremental latency.

Run ``python bench/compile.py`` for a table, ``--json`` for one JSON object. The cluster
is generated from a fixed seed: 1,000 namespaces, 10,000 pods in ~2,000 label sets, 2,000
policies of four realistic shapes (default-deny, namespace isolation, app-to-app on ports,
ipBlock egress).
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import _machine

from labelwall.cluster import (
    ContainerPort,
    Direction,
    IPAddress,
    Labels,
    Namespace,
    Node,
    Pod,
    Protocol,
)
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import compile_cluster
from labelwall.policy.incremental import IncrementalCompiler
from labelwall.policy.mapstate import MapDelta
from labelwall.policy.model import (
    IPBlock,
    LabelSelector,
    NetworkPolicy,
    Peer,
    PortSpec,
    Rule,
)

V4 = int(ipaddress.IPv4Address("10.244.0.0"))
V6 = int(ipaddress.IPv6Address("fd00:10:244::"))
PRIVATE = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


def sel(**labels: str) -> LabelSelector:
    return LabelSelector(Labels(labels))


def pod_ips(i: int) -> tuple[IPAddress, ...]:
    v4 = ipaddress.IPv4Address(V4 + i + 1)
    # About a third of the pods are dual-stack.
    return (v4, ipaddress.IPv6Address(V6 + i + 1)) if i % 3 == 0 else (v4,)


def make_policy(rng: random.Random, ns: str, name: str, shape: int) -> NetworkPolicy:
    if shape == 0:  # default deny ingress
        return NetworkPolicy(ns, name, sel(), frozenset({Direction.INGRESS}))
    if shape == 1:  # namespace isolation: only pods of the same namespace
        rule = Rule((Peer(pod_selector=sel()),))
        return NetworkPolicy(ns, name, sel(), frozenset({Direction.INGRESS}), (rule,))
    if shape == 2:  # app-to-app on ports, plus metrics from the monitoring namespaces
        app = rng.randrange(2)
        web = Rule(
            (Peer(pod_selector=sel(app=f"app-{1 - app}")),),
            (PortSpec(Protocol.TCP, 8080), PortSpec(Protocol.TCP, "http")),
        )
        team = f"t{rng.randrange(50)}"
        metrics = Rule(
            (Peer(pod_selector=sel(role="prometheus"), namespace_selector=sel(team=team)),),
            (PortSpec(Protocol.TCP, "metrics"), PortSpec(Protocol.TCP, 9100, 9110)),
        )
        return NetworkPolicy(
            ns, name, sel(app=f"app-{app}"), frozenset({Direction.INGRESS}), (web, metrics)
        )
    # ipBlock egress: the internet but not private ranges on 443, DNS, one partner /24
    internet = Rule(
        (Peer(ip_block=IPBlock(ipaddress.ip_network("0.0.0.0/0"), PRIVATE)),),
        (PortSpec(Protocol.TCP, 443),),
    )
    dns = Rule(
        (Peer(namespace_selector=sel(**{"kubernetes.io/metadata.name": "ns-0000"})),),
        (PortSpec(Protocol.UDP, 53), PortSpec(Protocol.TCP, 53)),
    )
    partner = Rule(
        (Peer(ip_block=IPBlock(ipaddress.ip_network(f"203.0.{rng.randrange(256)}.0/24"))),),
        (PortSpec(Protocol.TCP, 5432),),
    )
    return NetworkPolicy(
        ns, name, sel(), frozenset({Direction.EGRESS}), (), (internet, dns, partner)
    )


def generate(
    seed: int = 1, namespaces: int = 1000, pods_per_ns: int = 10, policies_per_ns: int = 2
) -> ClusterState:
    rng = random.Random(seed)
    nss = {}
    pods = {}
    pols = {}
    nodes = {}
    i = 0
    for n in range(namespaces):
        name = f"ns-{n:04d}"
        nss[name] = Namespace(
            name, Labels({"team": f"t{n % 50}", "env": ("prod", "staging", "dev")[n % 3]})
        )
        for k in range(pods_per_ns):
            app = f"app-{k % 2}"  # two label sets per namespace -> ~2,000 identities
            labels = {"app": app, "pod-template-hash": f"{rng.getrandbits(32):08x}"}
            if n % 50 == 0 and k == 0:
                labels = {"role": "prometheus"}
            ports = (
                ContainerPort(8080 + k % 2, Protocol.TCP, "http"),
                ContainerPort(9100, Protocol.TCP, "metrics"),
            )
            p = Pod(name, f"{app}-{k}", Labels(labels), pod_ips(i), ports, f"node-{i // 100}")
            pods[p.key] = p
            i += 1
        for k in range(policies_per_ns):
            shape = rng.choices((0, 1, 2, 3), weights=(25, 25, 35, 15))[0]
            pol = make_policy(rng, name, f"p{k}", shape)
            pols[pol.key] = pol
    for k in range((i + 99) // 100):
        nodes[f"node-{k}"] = Node(
            f"node-{k}", (ipaddress.IPv4Address(f"192.168.{k // 250}.{k % 250 + 1}"),)
        )
    return ClusterState(nss, pods, nodes, pols)


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def timed(fn: Callable[[], MapDelta]) -> tuple[float, MapDelta]:
    t0 = time.perf_counter()
    delta = fn()
    return time.perf_counter() - t0, delta


def run(runs: int, updates: int, seed: int) -> dict[str, Any]:
    state = generate(seed)
    times = []
    compiled = None
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        compiled = compile_cluster(state)
        times.append(time.perf_counter() - t0)
    assert compiled is not None
    ms = compiled.map_state
    entries = {
        "lw_subjects_v1": len(ms.subjects),
        "lw_policy_v1": len(ms.policy),
        "lw_ipcache_v1": len(ms.ipcache),
        "lw_cidrs_v1": len(ms.cidrs),
        "lw_ports_v1": len(ms.named_ports),
    }
    inc = IncrementalCompiler(state)
    rng = random.Random(seed + 1)
    keys = sorted(state.pods)
    lat: dict[str, list[float]] = {"pod_relabel": [], "pod_ip_change": [], "policy_add": []}
    ip_change_policy_writes = 0
    for u in range(updates):
        p = inc.state.pods[rng.choice(keys)]
        app = p.labels.get("app", "app-0")
        new_app = "app-1" if app == "app-0" else "app-0"
        dt, _ = timed(
            lambda p=p, a=new_app: inc.upsert_pod(replace(p, labels=Labels({**p.labels, "app": a})))
        )
        lat["pod_relabel"].append(dt)

        p = inc.state.pods[rng.choice(keys)]
        new_ips = (ipaddress.IPv4Address(V4 + 60000 + u),)
        dt, delta = timed(lambda p=p, ips=new_ips: inc.upsert_pod(replace(p, ips=ips)))
        lat["pod_ip_change"].append(dt)
        ip_change_policy_writes += len(delta.policy) + len(delta.subjects)

        ns = f"ns-{rng.randrange(1000):04d}"
        pol = make_policy(rng, ns, f"bench-{u}", rng.choice((0, 1, 2, 3)))
        dt, _ = timed(lambda pol=pol: inc.upsert_policy(pol))
        lat["policy_add"].append(dt)
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out: dict[str, Any] = {
        "machine": _machine.facts(),
        "cluster": {
            "namespaces": len(state.namespaces),
            "pods": len(state.pods),
            "label_sets": len(compiled.identities),
            "policies": len(state.policies),
        },
        "runs": runs,
        "updates_per_kind": updates,
        "full_compile_s": statistics.median(times),
        "entries": entries,
        "peak_rss_mb": rss_kb / 1024,
        "incremental_ms": {
            k: {"p50": percentile(v, 50) * 1e3, "p99": percentile(v, 99) * 1e3}
            for k, v in lat.items()
        },
        "ip_change_policy_writes": ip_change_policy_writes,
    }
    out["incremental_p99_ms"] = max(v["p99"] for v in out["incremental_ms"].values())
    return out


def table(r: dict[str, Any]) -> str:
    m, c = r["machine"], r["cluster"]
    rows = [
        ("machine", f"{m['cpu']}, {m['cores']} cores, Python {m['python']}"),
        (
            "cluster",
            f"{c['namespaces']} namespaces, {c['pods']} pods, {c['label_sets']} label sets, "
            f"{c['policies']} policies",
        ),
        (f"full compile (median of {r['runs']})", f"{r['full_compile_s']:.2f} s"),
    ]
    rows += [(f"entries {k}", str(v)) for k, v in r["entries"].items()]
    rows.append(("peak RSS", f"{r['peak_rss_mb']:.0f} MB"))
    for k, v in r["incremental_ms"].items():
        rows.append((f"incremental {k} p50/p99", f"{v['p50']:.2f} / {v['p99']:.2f} ms"))
    rows.append(("policy-map writes from IP changes", str(r["ip_change_policy_writes"])))
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--runs", type=int, default=3, help="full compiles to take the median of")
    ap.add_argument("--updates", type=int, default=200, help="incremental updates per kind")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    r = run(args.runs, args.updates, args.seed)
    print(json.dumps(r, indent=None if args.json else 2) if args.json else table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
