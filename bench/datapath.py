"""Datapath benchmark: per-packet cost, pod-to-pod and Service traffic, firewalls, write rate.

    sudo .venv/bin/python bench/datapath.py [--quick] [--service-only] [--rounds N] [--json]

Four parts, measured in one run on this machine, side by side with their baselines:

1. Per-packet cost with BPF_PROG_TEST_RUN (repeat 1e6; the kernel reports the average ns
   per run; we take the median of 5 such runs): labelwall's worst verdict path (new flow,
   peer not in the ipcache but in a policy CIDR, named port present, isolated subject,
   no allow: endpoint + conntrack + subject + ipcache + cidr trie + port + 6 policy-trie
   lookups, then drop, count, rate-limited event) and an established TCP flow (conntrack
   hit), with 10, 10k and 1M entries in the ipcache and policy maps, next to
   bench/bpf/floor.bpf.c (returns TC_ACT_OK) and bench/bpf/parse_hash.bpf.c (parses and
   does one 5-tuple hash lookup in a map with as many entries).
2. Real traffic between two pod namespaces routed through a node namespace (all created
   here, see labelwall/lab/topology.py): TCP_RR-like latency (one connection, 1-byte
   ping-pong, median), TCP_CRR-like connection rate and TCP_STREAM-like throughput, with
   bench/lwperf.c (compiled here with cc). Configurations: no program; labelwall with 10,
   1k, 10k, 1M entries (the server pod is ingress-isolated and admits the client on the
   port); iptables with 10k rules, one per allowed peer/port, the matching one last (as
   kube-router and Calico's iptables mode lay them out), with and without a conntrack
   ESTABLISHED shortcut; nftables with a 10k-element concatenated set (saddr . dport).
   Each size is measured in rounds that interleave every configuration, so drift on this
   shared machine hits all of them alike; ratios are medians of per-round ratios.
3. Pod -> Service -> pod (issue 11): RR and CRR from the client, egress-isolated and
   allowed to the server's pod port, to a ClusterIP that an nftables DNAT rule in the node
   namespace (kube-proxy's part) translates to the server; labelwall (tc deferral + the
   netfilter program judging after DNAT) against the same path with no program, in
   interleaved rounds (``service_rr_overhead_pct``, ``service_crr_vs_none``); a third
   configuration, the netfilter program alone without tc, splits the cost between the two
   (``service_rr_netfilter_only_pct``, ``service_rr_tc_over_netfilter_pct``).
4. Map write rate through the writer (MapWriter, batched) for 10k and 100k ipcache
   entries, and per-entry LPM-trie policy writes for comparison.

Isolation: the benchmark re-executes itself in a private mount namespace with its own
bpffs on /sys/fs/bpf and its own tmpfs on /run/netns, so its pins and namespace names are
invisible to (and cannot collide with) anything else on the machine and vanish with it.
iptables/nftables rules live only in the bench's node namespace and are removed after
each measurement; every process is killed by pid and every namespace removed in finally.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import random
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _machine
from pyroute2 import IPRoute
from pyroute2.conntrack import Conntrack

from labelwall.cluster import Direction, IPAddress, IPNetwork, Protocol
from labelwall.datapath import libbpf, mapspecs, testrun
from labelwall.datapath.facade import FROM_POD, TO_POD, Datapath
from labelwall.identity.numbers import LOCAL_FLAG
from labelwall.lab import topology as L  # noqa: N812
from labelwall.lab.node import LabNode
from labelwall.policy import mapstate
from labelwall.policy.mapstate import (
    IpcacheEntry,
    MapChanges,
    NamedPortKey,
    PolicyKey,
    SubjectFlags,
)

HERE = Path(__file__).resolve().parent
INNER_FLAG = "--inner-private-mounts"
PREFIX = "lwb-"
NODE = PREFIX + "node"
LAB_NODE = LabNode("lab", NODE)
CLIENT_V4, SERVER_V4 = "10.244.50.2", "10.244.50.3"
CLIENT_V6, SERVER_V6 = "fd00:10:244:50::2", "fd00:10:244:50::3"
PERF_PORT = 5001
# Identities of the benchmark's own pods (cluster range, far from the filler's range).
SUBJECT, PEER = 0x00ABCD00, 0x00ABCD01
FILLER_IDS = range(1000, 61000)  # identities the synthetic entries use
CIDR_ID = LOCAL_FLAG | 1
WORST_PEER = "10.200.0.9"  # not in the ipcache; inside the policy CIDR 10.200.0.0/16
NAMED_PORT, NAME_ID = 8080, 7
ESTABLISHED_PORT = 9000
SERVICE_V4, SERVICE_PORT = "10.96.0.50", 80  # a ClusterIP DNATed to SERVER_V4:PERF_PORT
SERVICE_CIDR = "10.96.0.0/12"
SEED = 20240601


# ---------------------------------------------------------------- packets


def _eth(ethertype: int, payload: bytes) -> bytes:
    return bytes.fromhex("020000000001020000000002") + struct.pack("!H", ethertype) + payload


def ipv4_tcp(src: str, dst: str, sport: int, dport: int, flags: int) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0,
        ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed,
    )  # fmt: skip
    return _eth(0x0800, ip + tcp)


SYN, ACK = 0x02, 0x10


# ---------------------------------------------------------------- map filling


@dataclass
class Filler:
    """Synthetic entries, added incrementally so the maps grow 10 -> 1k -> 10k -> 1M."""

    dp: Datapath
    rng: random.Random = field(default_factory=lambda: random.Random(SEED))
    ipcache: int = 0
    policy: int = 0
    cidrs: int = 0
    ports: int = 0

    def grow(self, n: int) -> None:
        """ipcache and policy to ``n`` synthetic entries; cidrs and named ports to
        min(n, 10k) and min(n, 100k) (their maps hold 64k and 256k)."""
        w = self.dp.writer
        if n > self.ipcache:
            base = int(ipaddress.IPv4Address("10.128.0.0"))
            ips = {
                ipaddress.IPv4Address(base + i): IpcacheEntry(FILLER_IDS[i % len(FILLER_IDS)])
                for i in range(self.ipcache, n)
            }
            w.apply_changes(mapstate.IPCACHE, MapChanges(upserts=ips))
            self.ipcache = n
        if n > self.policy:
            r = self.rng
            subjects = [SUBJECT, *r.sample(FILLER_IDS, 999)]
            keys: dict[PolicyKey, int] = {}
            while len(keys) < n - self.policy:
                k = PolicyKey(
                    subject=r.choice(subjects),
                    peer=r.choice(FILLER_IDS),
                    direction=r.choice((Direction.INGRESS, Direction.EGRESS)),
                    protocol=Protocol.TCP,
                    port=r.randrange(1, 65536),
                    port_bits=16,
                )
                keys[k] = 1 + len(keys)
            w.apply_changes(mapstate.POLICY, MapChanges(upserts=keys))
            self.policy = n
        n_cidrs = min(n, 10_000)
        if n_cidrs > self.cidrs:
            cidrs: dict[IPNetwork, int] = {
                ipaddress.IPv4Network((int(ipaddress.IPv4Address("172.16.0.0")) + (i << 8), 24)):
                LOCAL_FLAG | (2 + i)
                for i in range(self.cidrs, n_cidrs)
            }  # fmt: skip
            w.apply_changes(mapstate.CIDRS, MapChanges(upserts=cidrs))
            self.cidrs = n_cidrs
        n_ports = min(n, 100_000)
        if n_ports > self.ports:
            base = int(ipaddress.IPv4Address("10.128.0.0"))
            ports = {
                NamedPortKey(ipaddress.IPv4Address(base + i), Protocol.TCP, 80): 1 + i % 100
                for i in range(self.ports, n_ports)
            }
            w.apply_changes(mapstate.NAMED_PORTS, MapChanges(upserts=ports))
            self.ports = n_ports


def write_real_entries(dp: Datapath, client: IPAddress, server: IPAddress) -> None:
    """What the compiler would write for: server (SUBJECT) ingress-isolated, admitting the
    client (PEER) on TCP PERF_PORT/ESTABLISHED_PORT and the named port; a CIDR policy
    prefix 10.200.0.0/16 (so a peer there gets a cidr identity)."""
    w = dp.writer
    w.apply_changes(mapstate.SUBJECTS, MapChanges(upserts={SUBJECT: SubjectFlags.INGRESS_ISOLATED}))
    ips: dict[IPAddress, IpcacheEntry] = {
        client: IpcacheEntry(PEER),
        server: IpcacheEntry(SUBJECT),
        ipaddress.IPv4Address(CLIENT_V4): IpcacheEntry(PEER),
        ipaddress.IPv4Address(SERVER_V4): IpcacheEntry(SUBJECT),
        ipaddress.IPv4Address(LAB_NODE.host_v4): IpcacheEntry(1),  # host identity
    }
    w.apply_changes(mapstate.IPCACHE, MapChanges(upserts=ips))
    w.apply_changes(
        mapstate.CIDRS, MapChanges(upserts={ipaddress.IPv4Network("10.200.0.0/16"): CIDR_ID})
    )
    ports = {
        NamedPortKey(addr, Protocol.TCP, NAMED_PORT): NAME_ID
        for addr in (server, ipaddress.IPv4Address(SERVER_V4))
    }
    w.apply_changes(mapstate.NAMED_PORTS, MapChanges(upserts=ports))
    allow = {
        PolicyKey(SUBJECT, PEER, Direction.INGRESS, Protocol.TCP, port, 16): 42
        for port in (PERF_PORT, ESTABLISHED_PORT)
    }
    w.apply_changes(mapstate.POLICY, MapChanges(upserts=allow))


# ---------------------------------------------------------------- BPF_PROG_TEST_RUN


def ns_per_packet(fd: int, packet: bytes, repeat: int, runs: int, expect: int) -> float:
    """Median over ``runs`` of the kernel's average ns per run over ``repeat`` runs."""
    samples = []
    for _ in range(runs):
        r = testrun.run(fd, packet, testrun.LOOPBACK_IFINDEX, repeat)
        if r.retval != expect:
            raise RuntimeError(f"program returned {r.retval}, expected {expect}")
        samples.append(r.duration_ns)
    return float(statistics.median(samples))


@dataclass
class Baselines:
    floor_fd: int
    parse_hash_fd: int
    flows_fd: int
    flows: int = 0

    def grow_flows(self, n: int, packet: bytes) -> None:
        """The parse+hash map to ``n`` entries, one of them the benchmark packet's flow."""
        if self.flows == 0:
            libbpf.update_elem(self.flows_fd, flow_key(packet), b"\0" * 8)
            self.flows = 1
        if n <= self.flows:
            return
        keys = [
            struct.pack("!16s16sHHBB2x", struct.pack("!I", 0x0A800000 + i) + b"\0" * 12,
                        b"\x0a\xf4\x32\x03" + b"\0" * 12, 1024 + i % 60000, 80, 6, 4)
            for i in range(self.flows, n)
        ]  # fmt: skip
        for start in range(0, len(keys), 65536):
            chunk = keys[start : start + 65536]
            libbpf.update_batch(self.flows_fd, b"".join(chunk), b"\0" * 8 * len(chunk), len(chunk))
        self.flows = n


def flow_key(packet: bytes) -> bytes:
    """struct bench_flow_key of an Ethernet+IPv4+TCP packet (network byte order fields)."""
    ip = packet[14:34]
    return struct.pack(
        "!16s16s2s2sBB2x", ip[12:16] + b"\0" * 12, ip[16:20] + b"\0" * 12,
        packet[34:36], packet[36:38], ip[9], 4,
    )  # fmt: skip


def build_baselines(tmp: Path) -> Baselines:
    fds = []
    for name in ("floor", "parse_hash"):
        obj = tmp / f"{name}.bpf.o"
        cmd = ["clang", "-O2", "-g", "-target", "bpf", "-Wall", "-Wextra", "-Werror",
               "-idirafter/usr/include/x86_64-linux-gnu", "-c", str(HERE / "bpf" / f"{name}.bpf.c"),
               "-o", str(obj)]  # fmt: skip
        subprocess.run(cmd, check=True)
        pin = f"{mapspecs.PIN_ROOT}/lwbench_{name}"
        load = ["bpftool", "prog", "load", str(obj), pin, "type", "classifier"]
        if name == "parse_hash":
            load += ["pinmaps", f"{mapspecs.PIN_ROOT}/lwbench_maps"]
        subprocess.run(load, check=True)
        fds.append(libbpf.obj_get(pin))
    flows = libbpf.obj_get(f"{mapspecs.PIN_ROOT}/lwbench_maps/bench_flows")
    return Baselines(fds[0], fds[1], flows)


def packet_costs(dp: Datapath, base: Baselines, size: int, repeat: int) -> dict[str, float]:
    server = SERVER_V4
    worst = ipv4_tcp(WORST_PEER, server, 40000, NAMED_PORT, SYN)
    established = ipv4_tcp(CLIENT_V4, server, 40001, ESTABLISHED_PORT, ACK)
    first = ipv4_tcp(CLIENT_V4, server, 40001, ESTABLISHED_PORT, SYN)
    # The server's answer at its own veth (FROM_POD): a conntrack reply (second lookup).
    reply = ipv4_tcp(server, CLIENT_V4, ESTABLISHED_PORT, 40001, ACK)
    to_pod, from_pod = dp.prog_fd(TO_POD), dp.prog_fd(FROM_POD)
    dp.set_endpoint(testrun.LOOPBACK_IFINDEX, SUBJECT, (ipaddress.ip_address(server),))
    # The SYN is allowed by policy and creates the conntrack entry the ACKs then hit.
    if testrun.run(to_pod, first, testrun.LOOPBACK_IFINDEX, 1).retval != testrun.TC_ACT_OK:
        raise RuntimeError("the established flow's SYN was not allowed")
    # Its answer moves the flow to the replied table (conntrack.h): one lookup from now on.
    if testrun.run(from_pod, reply, testrun.LOOPBACK_IFINDEX, 1).retval != testrun.TC_ACT_OK:
        raise RuntimeError("the established flow's reply was not allowed")
    base.grow_flows(size, established)
    runs = 5
    return {
        "worst_ns": ns_per_packet(to_pod, worst, repeat, runs, testrun.TC_ACT_SHOT),
        "established_ns": ns_per_packet(to_pod, established, repeat, runs, testrun.TC_ACT_OK),
        "reply_ns": ns_per_packet(from_pod, reply, repeat, runs, testrun.TC_ACT_OK),
        "floor_ns": ns_per_packet(base.floor_fd, established, repeat, runs, testrun.TC_ACT_OK),
        "parse_hash_ns": ns_per_packet(
            base.parse_hash_fd, established, repeat, runs, testrun.TC_ACT_OK
        ),
    }


# ---------------------------------------------------------------- write rate


def write_rates(dp: Datapath, sizes: list[int]) -> dict[str, float]:
    """Entries/s through the writer on empty maps (encode + batched syscalls), then removed."""
    out: dict[str, float] = {}
    w = dp.writer
    for n in sizes:
        base = int(ipaddress.IPv4Address("10.160.0.0"))
        ips = {ipaddress.IPv4Address(base + i): IpcacheEntry(1000 + i % 50000) for i in range(n)}
        t = time.perf_counter()
        w.apply_changes(mapstate.IPCACHE, MapChanges(upserts=ips))
        out[f"ipcache_upserts_per_s_{n}"] = n / (time.perf_counter() - t)
        t = time.perf_counter()
        w.apply_changes(mapstate.IPCACHE, MapChanges(deletes=frozenset(ips)))
        out[f"ipcache_deletes_per_s_{n}"] = n / (time.perf_counter() - t)
    n = min(sizes)
    keys = {
        PolicyKey(SUBJECT, 1000 + i, Direction.INGRESS, Protocol.TCP, 80, 16): 1 for i in range(n)
    }
    t = time.perf_counter()
    w.apply_changes(mapstate.POLICY, MapChanges(upserts=keys))
    out[f"policy_upserts_per_s_{n}"] = n / (time.perf_counter() - t)
    w.apply_changes(mapstate.POLICY, MapChanges(deletes=frozenset(keys)))
    return out


# ---------------------------------------------------------------- real traffic


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the bench dies, however it dies (the server
    would otherwise outlive a bench killed before its finally ran; `ip netns exec` execs,
    so the setting reaches lwperf)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


@dataclass
class Traffic:
    dp: Datapath
    lwperf: str
    client: L.PodNet
    server: L.PodNet
    secs: float
    server_proc: subprocess.Popen[str] | None = None

    def start_server(self) -> None:
        self.server_proc = subprocess.Popen(
            L.exec_argv(self.server.name, [self.lwperf, "server", str(PERF_PORT)]),
            stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent,
        )  # fmt: skip
        assert self.server_proc.stdout is not None
        if self.server_proc.stdout.readline().strip() != "ready":
            raise RuntimeError("lwperf server did not start")

    def stop_server(self) -> None:
        p = self.server_proc
        if p is not None and p.poll() is None:
            p.kill()  # by pid: only the process we started
            p.wait(timeout=5)

    def perf(
        self, mode: str, secs: float, max_n: int = 400_000, dst: str = SERVER_V4,
        port: int = PERF_PORT,
    ) -> dict[str, Any]:  # fmt: skip
        argv = [self.lwperf, mode, dst, str(port), str(secs)]
        if mode != "stream":
            argv.append(str(max_n))
        r = L.run(self.client.name, argv, timeout=secs + 30)
        if r.returncode != 0:
            raise RuntimeError(f"lwperf {mode} failed: {r.stderr.strip()}")
        result: dict[str, Any] = json.loads(r.stdout)
        return result

    def measure(self) -> dict[str, float]:
        rr = self.perf("rr", self.secs)
        crr = self.perf("crr", self.secs / 2)
        stream = self.perf("stream", self.secs / 2)
        return {
            "rr_ns": float(rr["median_ns"]),
            "rr_per_s": float(rr["per_s"]),
            "crr_per_s": float(crr["per_s"]),
            "gbit_s": float(stream["bytes_per_s"]) * 8 / 1e9,
        }

    def measure_service(self) -> dict[str, float]:
        """RR and CRR from the client to the server through its ClusterIP (DNAT)."""
        rr = self.perf("rr", self.secs, dst=SERVICE_V4, port=SERVICE_PORT)
        crr = self.perf("crr", self.secs / 2, dst=SERVICE_V4, port=SERVICE_PORT)
        return {
            "rr_ns": float(rr["median_ns"]),
            "rr_per_s": float(rr["per_s"]),
            "crr_per_s": float(crr["per_s"]),
        }

    @contextlib.contextmanager
    def service_dnat(self) -> Iterator[None]:
        """kube-proxy's part: a DNAT of SERVICE_V4:80 to the server, and the client's route."""
        script = f"""table ip lwbench_svc {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr {SERVICE_V4} tcp dport {SERVICE_PORT} dnat to {SERVER_V4}:{PERF_PORT}
  }}
}}
"""
        _in_node(["nft", "-f", "-"], script)
        r = L.run(self.client.name, ["ip", "route", "add", SERVICE_CIDR, "via",
                                     LAB_NODE.gateway_v4, "dev", "eth0"])  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"service route: {r.stderr.strip()}")
        try:
            yield
        finally:
            L.run(self.client.name, ["ip", "route", "del", SERVICE_CIDR])
            _in_node(["nft", "delete", "table", "ip", "lwbench_svc"])

    @contextlib.contextmanager
    def labelwall_services(self) -> Iterator[None]:
        """The classifier plus the netfilter program judging egress after DNAT."""
        with self.labelwall(), self.netfilter_only():
            yield

    @contextlib.contextmanager
    def netfilter_only(self) -> Iterator[None]:
        """The netfilter program alone, no tc programs: splits labelwall's Service cost
        into its netfilter and tc parts (a diagnostic, not a configuration anyone runs)."""
        with L.in_netns(NODE):
            hook = self.dp.enable_services([ipaddress.ip_network(SERVICE_CIDR)])
        if not hook.active:
            raise RuntimeError(f"no netfilter program: {hook.reason}")
        try:
            yield
        finally:
            self.dp.disable_services()

    # -- configurations: each is a context manager that installs and removes itself

    @contextlib.contextmanager
    def no_program(self) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def labelwall(self) -> Iterator[None]:
        with L.in_netns(NODE):
            for pod in (self.client, self.server):
                self.dp.attach(pod.host_ifname)
        try:
            yield
        finally:
            with L.in_netns(NODE):
                for pod in (self.client, self.server):
                    self.dp.detach(pod.host_ifname)
                # No clsact qdisc either: "no program" must mean no tc hook at all.
                with IPRoute() as ipr:
                    for pod in (self.client, self.server):
                        ipr.tc("del", "clsact", pod.host_ifindex)

    @contextlib.contextmanager
    def iptables(self, rules: list[tuple[str, int]], ct_shortcut: bool) -> Iterator[None]:
        lines = [
            "*filter",
            ":LWBENCH - [0:0]",
            f"-A FORWARD -o {self.server.host_ifname} -j LWBENCH",
        ]
        if ct_shortcut:
            lines.append("-A LWBENCH -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT")
        lines += [f"-A LWBENCH -s {ip}/32 -p tcp --dport {port} -j ACCEPT" for ip, port in rules]
        lines += ["-A LWBENCH -j DROP", "COMMIT", ""]
        _in_node(["iptables-restore", "--noflush"], "\n".join(lines))
        try:
            yield
        finally:
            _in_node(["iptables", "-D", "FORWARD", "-o", self.server.host_ifname, "-j", "LWBENCH"])
            _in_node(["iptables", "-F", "LWBENCH"])
            _in_node(["iptables", "-X", "LWBENCH"])

    @contextlib.contextmanager
    def nftables(self, rules: list[tuple[str, int]]) -> Iterator[None]:
        elements = ", ".join(f"{ip} . {port}" for ip, port in rules)
        script = f"""table inet lwbench {{
  set allowed {{ type ipv4_addr . inet_service; elements = {{ {elements} }} }}
  chain forward {{
    type filter hook forward priority 0; policy accept;
    oifname "{self.server.host_ifname}" ip saddr . tcp dport @allowed accept
    oifname "{self.server.host_ifname}" drop
  }}
}}
"""
        _in_node(["nft", "-f", "-"], script)
        try:
            yield
        finally:
            _in_node(["nft", "delete", "table", "inet", "lwbench"])


def _in_node(argv: list[str], stdin: str | None = None) -> None:
    r = subprocess.run(
        L.exec_argv(NODE, argv), input=stdin, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} in {NODE}: {r.stderr.strip()[:500]}")


def firewall_rules(n: int) -> list[tuple[str, int]]:
    """``n`` (peer, port) allows; the benchmark client's is last (worst case for a list)."""
    rng = random.Random(SEED + 1)
    rules: set[tuple[str, int]] = set()
    while len(rules) < n - 1:
        rules.add(
            (
                str(ipaddress.IPv4Address(0x0A820000 + rng.randrange(1 << 16))),
                rng.randrange(1, 65536),
            )
        )
    return [*sorted(rules), (CLIENT_V4, PERF_PORT)]


# ---------------------------------------------------------------- orchestration


@dataclass
class Config:
    name: str
    enter: Callable[[], contextlib.AbstractContextManager[None]]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_traffic_size(
    t: Traffic, configs: list[Config], rounds: int
) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {c.name: [] for c in configs}
    for _ in range(rounds):
        for c in configs:
            with c.enter():
                results[c.name].append(t.measure())
    return results


def median_of(rows: list[dict[str, float]], key: str) -> float:
    return float(statistics.median(r[key] for r in rows))


def paired_ratio(a: list[dict[str, float]], b: list[dict[str, float]], key: str) -> float:
    """Median over rounds of a[i][key] / b[i][key] (same round, so the same machine load)."""
    return float(statistics.median(x[key] / y[key] for x, y in zip(a, b, strict=True)))


def run_all(quick: bool, service_only: bool = False, rounds: int | None = None) -> dict[str, Any]:
    sizes = [10, 1_000, 10_000, 1_000_000] if not quick else [10, 1_000]
    sizes = [] if service_only else sizes
    testrun_sizes = {10, 10_000, 1_000_000} if not quick else {10, 1_000}
    repeat = 1_000_000 if not quick else 100_000
    default_rounds, secs = (5, 1.0) if not quick else (1, 0.3)
    rounds = default_rounds if rounds is None else rounds
    fw_rules = 10_000 if not quick else 1_000
    report: dict[str, Any] = {
        "machine": _machine.facts(),
        "quick": quick,
        "service_only": service_only,
        "repeat": repeat,
        "rounds": rounds,
        "seconds_per_rr": secs,
        "firewall_rules": fw_rules,
    }
    tmp = Path(tempfile.mkdtemp(prefix="lwbench-"))
    node_net: L.NodeNet | None = None
    dp: Datapath | None = None
    traffic: Traffic | None = None
    try:
        lwperf = str(tmp / "lwperf")
        subprocess.run(
            ["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-o", lwperf,
             str(HERE / "lwperf.c")],
            check=True,
        )  # fmt: skip
        base = build_baselines(tmp)
        dp = Datapath.open()
        if not service_only:
            report["writes"] = write_rates(dp, [10_000, 100_000] if not quick else [10_000])

        node_net = L.setup_node(LAB_NODE)
        client = L.create_pod(PREFIX + "a", CLIENT_V4, CLIENT_V6, node=LAB_NODE)
        server = L.create_pod(PREFIX + "b", SERVER_V4, SERVER_V6, node=LAB_NODE)
        ips = {a: ipaddress.ip_address(a) for a in (CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6)}
        dp.set_endpoint(client.host_ifindex, PEER, (ips[CLIENT_V4], ips[CLIENT_V6]))
        dp.set_endpoint(server.host_ifindex, SUBJECT, (ips[SERVER_V4], ips[SERVER_V6]))
        write_real_entries(dp, ipaddress.IPv6Address(CLIENT_V6), ipaddress.IPv6Address(SERVER_V6))
        traffic = Traffic(dp, lwperf, client, server, secs)
        traffic.start_server()
        rules = firewall_rules(fw_rules)
        t = traffic
        configs = [
            Config("none", t.no_program),
            Config("labelwall", t.labelwall),
            Config("nft_set", lambda: t.nftables(rules)),
            Config("iptables", lambda: t.iptables(rules, ct_shortcut=False)),
            Config("iptables_ct", lambda: t.iptables(rules, ct_shortcut=True)),
        ]
        filler = Filler(dp)
        report["packet"] = {}
        report["traffic"] = {}
        for size in sizes:
            t0 = time.perf_counter()
            filler.grow(size)
            fill_s = time.perf_counter() - t0
            log(f"{_size(size)} entries written in {fill_s:.1f} s; measuring")
            if size in testrun_sizes:
                report["packet"][str(size)] = packet_costs(dp, base, size, repeat)
            raw = run_traffic_size(traffic, configs, rounds)
            lw, none, nft, ipt = raw["labelwall"], raw["none"], raw["nft_set"], raw["iptables"]
            report["traffic"][str(size)] = {
                "fill_s": round(fill_s, 2),
                "median": {
                    name: {k: median_of(rows, k) for k in rows[0]} for name, rows in raw.items()
                },
                "rr_overhead_pct": (paired_ratio(lw, none, "rr_ns") - 1) * 100,
                "rr_vs_nft": paired_ratio(lw, nft, "rr_ns"),
                "rr_rate_vs_nft": paired_ratio(lw, nft, "rr_per_s"),
                "crr_vs_nft": paired_ratio(lw, nft, "crr_per_s"),
                "iptables_rr_vs_labelwall": paired_ratio(ipt, lw, "rr_ns"),
                "rounds": raw,
            }
        report["service"] = measure_services(traffic, rounds)
    finally:
        if traffic is not None:
            traffic.stop_server()
        L.cleanup(PREFIX, nodes=[None, NODE])
        if node_net is not None:
            L.teardown_node(node_net)
        if dp is not None:
            dp.close()
        Datapath.unpin_all()
        for pin in ("lwbench_floor", "lwbench_parse_hash", "lwbench_maps"):
            path = Path(mapspecs.PIN_ROOT) / pin
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    if service_only:
        report["summary"] = {k: report["service"][k] for k in SERVICE_KEYS}
    else:
        report["summary"] = summarize(report, sizes)
    return report


SERVICE_KEYS = (
    "service_rr_overhead_pct",
    "service_crr_vs_none",
    "service_rr_netfilter_only_pct",
    "service_crr_netfilter_only_vs_none",
    "service_rr_tc_over_netfilter_pct",
)


def measure_services(t: Traffic, rounds: int) -> dict[str, Any]:
    """Pod -> Service -> pod with the client egress-isolated (allowed to the server's pod
    port), through kube-proxy-style DNAT, with labelwall (tc deferral + the netfilter
    program) and without any program: the same cluster path, interleaved rounds."""
    w = t.dp.writer
    w.apply_changes(mapstate.SUBJECTS, MapChanges(upserts={PEER: SubjectFlags.EGRESS_ISOLATED}))
    allow = {PolicyKey(PEER, SUBJECT, Direction.EGRESS, Protocol.TCP, PERF_PORT, 16): 43}
    w.apply_changes(mapstate.POLICY, MapChanges(upserts=allow))
    # The sweep's conntrack-using configurations (iptables ESTABLISHED rule, nftables) left
    # the node netns's nf_conntrack full of closing connections; the DNAT needs new entries,
    # so without a flush the full run measured ~200 connections/s here (8,000 alone).
    with L.in_netns(NODE), Conntrack() as ct:
        left = ct.count()
        ct.flush()
    log(f"pod -> Service -> pod: measuring ({left} conntrack entries flushed in {NODE})")
    configs = {"none": t.no_program, "netfilter_only": t.netfilter_only,
               "labelwall": t.labelwall_services}  # fmt: skip
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    with t.service_dnat():
        for _ in range(rounds):
            for name, config in configs.items():
                with config():
                    rows[name].append(t.measure_service())
    lw, nf, none = rows["labelwall"], rows["netfilter_only"], rows["none"]
    return {
        "median": {name: {k: median_of(v, k) for k in v[0]} for name, v in rows.items()},
        "service_rr_overhead_pct": (paired_ratio(lw, none, "rr_ns") - 1) * 100,
        "service_crr_vs_none": paired_ratio(lw, none, "crr_per_s"),
        # where the cost is: the netfilter program alone, and what tc adds on top of it
        "service_rr_netfilter_only_pct": (paired_ratio(nf, none, "rr_ns") - 1) * 100,
        "service_crr_netfilter_only_vs_none": paired_ratio(nf, none, "crr_per_s"),
        "service_rr_tc_over_netfilter_pct": (paired_ratio(lw, nf, "rr_ns") - 1) * 100,
        "rounds": rows,
    }


def summarize(r: dict[str, Any], sizes: list[int]) -> dict[str, float]:
    pk = r["packet"]
    small, big = str(min(int(s) for s in pk)), str(max(int(s) for s in pk))
    tr = r["traffic"]
    ipt_size = "10000" if "10000" in tr else str(sizes[-1])
    writes = r["writes"]
    biggest_write = max(int(k.rsplit("_", 1)[1]) for k in writes if k.startswith("ipcache_up"))
    return {
        "worst_path_ns_1m": pk[big]["worst_ns"],
        "worst_path_ratio_1m_to_10": pk[big]["worst_ns"] / pk[small]["worst_ns"],
        "established_ns_1m": pk[big]["established_ns"],
        "parse_hash_ns": pk[big]["parse_hash_ns"],
        "worst_path_vs_parse_hash": pk[big]["worst_ns"] / pk[big]["parse_hash_ns"],
        "floor_ns": pk[big]["floor_ns"],
        "established_minus_parse_hash_ns": pk[big]["established_ns"] - pk[big]["parse_hash_ns"],
        "reply_ns_1m": pk[big]["reply_ns"],
        "rr_overhead_pct_max": max(tr[s]["rr_overhead_pct"] for s in tr),
        "rr_vs_nft_ratio_max": max(tr[s]["rr_vs_nft"] for s in tr),
        "rr_rate_vs_nft_min": min(tr[s]["rr_rate_vs_nft"] for s in tr),
        "crr_vs_nft_min": min(tr[s]["crr_vs_nft"] for s in tr),
        "rr_vs_iptables_10k": tr[ipt_size]["iptables_rr_vs_labelwall"],
        "writes_per_s": writes[f"ipcache_upserts_per_s_{biggest_write}"],
        **{k: r["service"][k] for k in SERVICE_KEYS},
    }


# ---------------------------------------------------------------- output


def _size(n: str | int) -> str:
    n = int(n)
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k" if n >= 1000 else str(n)


def print_tables(r: dict[str, Any]) -> None:
    print(f"machine: {_machine.describe()}")
    if r["service_only"]:
        print(f"mode: service only; {r['rounds']} interleaved rounds, {r['seconds_per_rr']} s RR")
        print_service(r["service"])
        return
    print(f"mode: {'quick' if r['quick'] else 'full'}; BPF_PROG_TEST_RUN repeat {r['repeat']}, "
          f"median of 5; traffic: {r['rounds']} interleaved rounds, "
          f"{r['seconds_per_rr']} s RR each")  # fmt: skip
    print("\nPer-packet cost, ns (BPF_PROG_TEST_RUN, TC program on an IPv4 TCP packet)")
    print(f"{'entries':>8} {'floor':>7} {'parse+1 hash':>13} {'established':>12} "
          f"{'ct reply':>9} {'worst path':>11}")  # fmt: skip
    for size, p in r["packet"].items():
        print(f"{_size(size):>8} {p['floor_ns']:7.1f} {p['parse_hash_ns']:13.1f} "
              f"{p['established_ns']:12.1f} {p.get('reply_ns', 0):9.1f} "
              f"{p['worst_ns']:11.1f}")  # fmt: skip
    print(
        "\nPod-to-pod traffic, IPv4 TCP (medians; firewall baselines with "
        f"{_size(r['firewall_rules'])} rules)"
    )
    print(f"{'entries':>8} {'config':>12} {'RR us':>8} {'RR/s':>9} {'CRR/s':>8} {'Gbit/s':>7}")
    for size, t in r["traffic"].items():
        for name, m in t["median"].items():
            print(f"{_size(size):>8} {name:>12} {m['rr_ns'] / 1000:8.2f} {m['rr_per_s']:9.0f} "
                  f"{m['crr_per_s']:8.0f} {m['gbit_s']:7.2f}")  # fmt: skip
        print(f"{'':>8} {'ratios':>12} labelwall RR overhead {t['rr_overhead_pct']:+.1f}% vs none, "
              f"{t['rr_vs_nft']:.3f}x nft RR, {t['crr_vs_nft']:.3f}x nft CRR/s, "
              f"iptables RR {t['iptables_rr_vs_labelwall']:.1f}x labelwall")  # fmt: skip
    print_service(r["service"])
    print("\nMap writes through the writer")
    for k, v in r["writes"].items():
        print(f"  {k:32} {v:12,.0f} entries/s")
    print("\nSummary")
    for k, v in r["summary"].items():
        print(f"  {k:34} {v:10.3f}")


def print_service(s: dict[str, Any]) -> None:
    print("\nPod -> Service (ClusterIP, DNAT) -> pod, IPv4 TCP, client egress-isolated (medians)")
    print(f"{'config':>12} {'RR us':>8} {'RR/s':>9} {'CRR/s':>8}")
    for name, m in s["median"].items():
        print(f"{name:>12} {m['rr_ns'] / 1000:8.2f} {m['rr_per_s']:9.0f} {m['crr_per_s']:8.0f}")
    print(f"{'ratios':>12} labelwall RR overhead {s['service_rr_overhead_pct']:+.1f}% vs none, "
          f"CRR/s {s['service_crr_vs_none']:.3f}x none")  # fmt: skip
    print(f"{'split':>12} netfilter program alone RR {s['service_rr_netfilter_only_pct']:+.1f}% "
          f"vs none, CRR/s {s['service_crr_netfilter_only_vs_none']:.3f}x none; tc on top of it "
          f"RR {s['service_rr_tc_over_netfilter_pct']:+.1f}%")  # fmt: skip


def _run_forwarding_signals(argv: list[str]) -> int:
    """Run the inner bench; SIGINT and SIGTERM are passed on and waited for, never turned
    into a SIGKILL (subprocess.call kills its child on KeyboardInterrupt, which skipped the
    inner cleanup and left the lwperf server and the namespaces behind)."""
    proc = subprocess.Popen(argv)

    def forward(signum: int, _frame: object) -> None:
        proc.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    return proc.wait()


def _terminate_handler(main_pid: int) -> Callable[[int, object], None]:
    """SIGTERM: unwind (every finally runs) in the bench process only. pyroute2 forks
    helpers for netns work (fork mode, no exec) and stops some of them with SIGTERM; they
    inherit this handler, and a SystemExit there unwound the bench's copied stack in the
    child, whose run_all finally ran L.cleanup and deleted the bench's namespaces under the
    parent ("No such file or directory: '/run/netns/lwb-a'", a race that strace hid)."""

    def handler(signum: int, _frame: object) -> None:
        if os.getpid() != main_pid:
            os._exit(128 + signum)
        sys.exit(128 + signum)

    return handler


def _positive_int(text: str) -> int:
    n = int(text) if text.isdigit() else 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs (smoke test)")
    parser.add_argument(
        "--service-only", action="store_true", help="only part 3 (pod -> Service -> pod)"
    )
    parser.add_argument(
        "--rounds", type=_positive_int, default=None,
        help="interleaved traffic rounds (default 5, --quick 1); more resolve smaller effects",
    )  # fmt: skip
    parser.add_argument(INNER_FLAG, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/datapath.py needs root (BPF, network namespaces)", file=sys.stderr)
        return 2
    missing = [t for t in ("clang", "bpftool", "cc", "ip", "iptables-restore", "nft", "unshare")
               if shutil.which(t) is None]  # fmt: skip
    if missing:
        print(f"missing tools: {', '.join(missing)}", file=sys.stderr)
        return 2
    if not getattr(args, INNER_FLAG.lstrip("-").replace("-", "_")):
        # Private mounts: our own bpffs and /run/netns, released when we exit.
        argv = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            sys.executable,
            *sys.argv,
            INNER_FLAG,
        ]
        return _run_forwarding_signals(argv)
    # SIGTERM unwinds like Ctrl-C, so every finally removes what it made.
    signal.signal(signal.SIGTERM, _terminate_handler(os.getpid()))
    subprocess.run(["mount", "-t", "bpf", "bpf", mapspecs.PIN_ROOT], check=True)
    os.makedirs(L.NETNS_DIR, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "lwbench", L.NETNS_DIR], check=True)
    report = run_all(args.quick, args.service_only, args.rounds)
    if args.json:
        slim = {**report["summary"], "details": {k: v for k, v in report.items() if k != "summary"}}
        print(json.dumps(slim, indent=1, sort_keys=False))
    else:
        print_tables(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
