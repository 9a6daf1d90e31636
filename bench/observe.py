"""Observation benchmark: what flow events and counters cost, and what the agent keeps up with.

    sudo .venv/bin/python bench/observe.py [--quick] [--json]

Measured in one run on this machine, each beside its baseline from the same run:

1. Pod-to-pod traffic (bench/datapath.py's namespaces and bench/lwperf.c): TCP_RR-like
   latency and TCP_CRR-like connection rate with labelwall attached, verdict events on
   (the default: the kernel's token bucket at its default rate, the agent's collector
   draining the ring) vs off (``LW_CFG_NO_EVENTS``). The per-rule and per-reason counters
   run in both (they have no switch: they are the lossless part). Rounds interleave the
   two configurations; overheads are medians of per-round ratios.
2. Lossless event rate: verdict records produced with BPF_PROG_TEST_RUN (denied packets,
   bucket opened wide) at fixed rates, drained by the agent's own collector
   (labelwall/agent/flowring.py) into a ring of 65,536 flows. Per rate: records produced,
   received, lost in the kernel ring, and the collector thread's CPU (thread_time /
   wall time, in cores). ``lossless_flows_per_s``: the highest rate with nothing lost at
   <= 0.25 core.
3. Agent memory for a full ring of 65,536 flows (tracemalloc, IPv4 records).

Isolation as bench/datapath.py: a private mount namespace with its own bpffs and
/run/netns; everything created is removed in finally.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _machine
import datapath as bd

from labelwall.agent.flowring import FlowCollector, FlowRing
from labelwall.cluster import Direction
from labelwall.datapath import codecs, mapspecs
from labelwall.datapath.abi import ConfigFlags
from labelwall.datapath.facade import TO_POD, Datapath
from labelwall.datapath.flowreader import VerdictReader
from labelwall.lab import topology as L  # noqa: N812
from labelwall.policy.flows import VerdictEvent
from labelwall.policy.lookup import Reason
from labelwall.policy.mapstate import IpcacheEntry, MapState, SubjectFlags, diff

RING = 65_536
CPU_BUDGET = 0.25


class MeteredCollector(FlowCollector):
    """The agent's collector, with its thread's CPU time recorded."""

    cpu_s = 0.0

    def _run(self) -> None:
        t0 = time.thread_time()
        try:
            super()._run()
        finally:
            self.cpu_s = time.thread_time() - t0


# ---------------------------------------------------------------- traffic


@contextlib.contextmanager
def events(dp: Datapath, on: bool) -> Iterator[None]:
    flags = ConfigFlags.NONE if on else ConfigFlags.NO_EVENTS
    dp.set_config(codecs.DatapathConfig(flags=flags))
    collector = None
    if on:  # the agent drains the ring while events are on
        collector = FlowCollector(VerdictReader(dp.events()), FlowRing(RING), lambda: None)
        collector.start()
    try:
        yield
    finally:
        if collector is not None:
            collector.stop()
        dp.set_config(codecs.DatapathConfig())


def traffic(dp: Datapath, tmp: Path, rounds: int, secs: float) -> dict[str, Any]:
    lwperf = str(tmp / "lwperf")
    subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-o", lwperf,
                    str(bd.HERE / "lwperf.c")], check=True)  # fmt: skip
    node_net = None
    t = None
    try:
        node_net = L.setup_node(bd.LAB_NODE)
        client = L.create_pod(bd.PREFIX + "a", bd.CLIENT_V4, bd.CLIENT_V6, node=bd.LAB_NODE)
        server = L.create_pod(bd.PREFIX + "b", bd.SERVER_V4, bd.SERVER_V6, node=bd.LAB_NODE)
        ips = {a: ipaddress.ip_address(a)
               for a in (bd.CLIENT_V4, bd.CLIENT_V6, bd.SERVER_V4, bd.SERVER_V6)}  # fmt: skip
        dp.set_endpoint(client.host_ifindex, bd.PEER, (ips[bd.CLIENT_V4], ips[bd.CLIENT_V6]))
        dp.set_endpoint(server.host_ifindex, bd.SUBJECT, (ips[bd.SERVER_V4], ips[bd.SERVER_V6]))
        bd.write_real_entries(
            dp, ipaddress.IPv6Address(bd.CLIENT_V6), ipaddress.IPv6Address(bd.SERVER_V6)
        )
        t = bd.Traffic(dp, lwperf, client, server, secs)
        t.start_server()
        rows: dict[str, list[dict[str, float]]] = {"events_off": [], "events_on": []}
        with t.labelwall():
            for _ in range(rounds):
                for name in rows:
                    with events(dp, name == "events_on"):
                        rows[name].append(t.measure())
        on, off = rows["events_on"], rows["events_off"]
        return {
            "rounds": rows,
            "median": {n: {k: bd.median_of(r, k) for k in r[0]} for n, r in rows.items()},
            "rr_overhead_pct": (bd.paired_ratio(on, off, "rr_ns") - 1) * 100,
            "crr_overhead_pct": (1 - bd.paired_ratio(on, off, "crr_per_s")) * 100,
        }
    finally:
        if t is not None:
            t.stop_server()
        L.cleanup(bd.PREFIX, nodes=[None, bd.NODE])
        if node_net is not None:
            L.teardown_node(node_net)


# ---------------------------------------------------------------- event rate


A, B = 300, 400
A4, B4 = ipaddress.ip_address("10.244.0.5"), ipaddress.ip_address("10.244.1.7")


def _packet() -> bytes:
    return bd.ipv4_tcp(str(B4), str(A4), 5555, 81, 0x02)


def event_rate(dp: Datapath, rates: list[int], secs: float) -> list[dict[str, float]]:
    dp.set_endpoint(1, A, (A4,))
    dp.apply(diff(dp.read_state(), MapState(
        subjects={A: SubjectFlags.INGRESS_ISOLATED},
        ipcache={A4: IpcacheEntry(A), B4: IpcacheEntry(B)},
    )))  # fmt: skip
    dp.set_config(codecs.DatapathConfig(events_per_s=50_000_000, events_burst=10_000_000))
    packet = _packet()
    out = []
    for rate in rates:
        ring = FlowRing(RING)
        collector = MeteredCollector(VerdictReader(dp.events()), ring, lambda: None)
        lost0 = dp.event_rate().lost
        collector.start()
        tick = 0.01
        per_tick = max(1, round(rate * tick))
        sent = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < secs:
            dp.test_run(TO_POD, packet, 1, repeat=per_tick)
            sent += per_tick
            nxt = t0 + (sent / per_tick) * tick
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        wall = time.monotonic() - t0
        time.sleep(0.3)  # let the collector drain what is queued
        collector.stop()
        got = ring.since(0)[2]
        lost = dp.event_rate().lost - lost0
        out.append({
            "target_per_s": rate, "produced_per_s": sent / wall, "produced": sent,
            "received": got, "lost_ring_full": lost,
            "collector_cores": collector.cpu_s / (wall + 0.3),
        })  # fmt: skip
        bd.log(f"{rate}/s: produced {sent}, received {got}, lost {lost}, "
               f"{out[-1]['collector_cores']:.3f} cores")  # fmt: skip
    dp.set_config(codecs.DatapathConfig())
    return out


def ring_memory() -> float:
    """MiB held by a full ring of 65,536 IPv4 flows (events as the collector stores them)."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    ring = FlowRing(RING)
    batch = []
    for i in range(RING):
        src = ipaddress.IPv4Address(0x0AF40000 + i)
        batch.append(VerdictEvent(i, Direction.INGRESS, False, Reason.POLICY_DENIED, 0, A, B,
                                  0, 6, 40000 + i % 20000, 80, src, A4, 2))  # fmt: skip
    ring.add(batch, None)
    del batch
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(ring) == RING
    return used / 2**20


# ---------------------------------------------------------------- orchestration


def run_all(quick: bool) -> dict[str, Any]:
    rounds, secs = (5, 1.0) if not quick else (1, 0.3)
    rates = [5_000, 10_000, 20_000, 40_000, 80_000] if not quick else [5_000, 20_000]
    report: dict[str, Any] = {"machine": _machine.facts(), "quick": quick, "ring": RING}
    tmp = Path(tempfile.mkdtemp(prefix="lwbench-obs-"))
    dp = None
    try:
        dp = Datapath.open()
        report["traffic"] = traffic(dp, tmp, rounds, secs)
        report["event_rate"] = event_rate(dp, rates, 2.0 if not quick else 0.5)
    finally:
        if dp is not None:
            dp.close()
        Datapath.unpin_all()
        shutil.rmtree(tmp, ignore_errors=True)
    report["ring_mib"] = ring_memory()
    ok = [r for r in report["event_rate"] if r["lost_ring_full"] == 0
          and r["received"] == r["produced"] and r["collector_cores"] <= CPU_BUDGET]  # fmt: skip
    best = max(ok, key=lambda r: r["produced_per_s"], default=None)
    report["summary"] = {
        "rr_overhead_pct": round(report["traffic"]["rr_overhead_pct"], 2),
        "crr_overhead_pct": round(report["traffic"]["crr_overhead_pct"], 2),
        "lossless_flows_per_s": round(best["produced_per_s"]) if best else 0,
        "agent_cpu_cores": round(best["collector_cores"], 3) if best else None,
        "ring_65536_mib": round(report["ring_mib"], 1),
    }
    return report


def print_tables(r: dict[str, Any]) -> None:
    print(_machine.describe())
    t = r["traffic"]["median"]
    print("\n| traffic (labelwall attached) | events off | events on | overhead |")
    print("|---|---|---|---|")
    print(f"| TCP_RR latency (median ns) | {t['events_off']['rr_ns']:.0f} | "
          f"{t['events_on']['rr_ns']:.0f} | {r['traffic']['rr_overhead_pct']:+.2f}% |")  # fmt: skip
    crr = r["traffic"]["crr_overhead_pct"]
    print(f"| TCP_CRR connections/s | {t['events_off']['crr_per_s']:.0f} | "
          f"{t['events_on']['crr_per_s']:.0f} | {crr:+.2f}% |")  # fmt: skip
    print("\n| events/s asked | produced/s | received | lost (ring full) | collector cores |")
    print("|---|---|---|---|---|")
    for e in r["event_rate"]:
        print(f"| {e['target_per_s']:,} | {e['produced_per_s']:,.0f} | {e['received']:,} / "
              f"{e['produced']:,} | {e['lost_ring_full']:,} | "
              f"{e['collector_cores']:.3f} |")  # fmt: skip
    s = r["summary"]
    print(
        f"\nlossless at <= {CPU_BUDGET} core: {s['lossless_flows_per_s']:,} flows/s "
        f"({s['agent_cpu_cores']} cores); ring of {RING:,} flows: {s['ring_65536_mib']} MiB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    parser.add_argument(bd.INNER_FLAG, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/observe.py needs root (BPF, network namespaces)", file=sys.stderr)
        return 2
    missing = [t for t in ("cc", "ip", "unshare") if shutil.which(t) is None]
    if missing:
        print(f"missing tools: {', '.join(missing)}", file=sys.stderr)
        return 2
    if not getattr(args, bd.INNER_FLAG.lstrip("-").replace("-", "_")):
        argv = ["unshare", "--mount", "--propagation", "private", sys.executable, *sys.argv,
                bd.INNER_FLAG]  # fmt: skip
        return subprocess.call(argv)
    subprocess.run(["mount", "-t", "bpf", "bpf", mapspecs.PIN_ROOT], check=True)
    os.makedirs(L.NETNS_DIR, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "lwbench", L.NETNS_DIR], check=True)
    report = run_all(args.quick)
    if args.json:
        print(json.dumps({**report["summary"], "details": report}, indent=1, default=str))
    else:
        print_tables(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
