"""Per-packet cost probe (a script, not a test): BPF_PROG_TEST_RUN timings of the classifier.

    sudo .venv/bin/python bench/perf_probe.py [--sizes 10,10000,1000000] [--runs 5]

Prints the median (and min) ns per packet over ``--runs`` runs of ``repeat`` = 1e6 for:
a tc program that only returns TC_ACT_OK (floor), one that parses and does one 40-byte
hash lookup (parse+lookup, bench/perf_probe_bpf/), and the real classifier on its
established path, its reply path, and its worst new-flow paths, with 10 / 10k / 1M
entries in lw_ipcache_v1 and 1 / 100 / 10k other isolated subjects (6 policy entries
each). Worst paths (isolated subject, conntrack miss, dropped, event budget checked):
"ipcache hit" = the peer's identity, its CIDR identity and ANY each have a policy group
with named entries, so all three groups and the named port are looked up; "overflow" =
the same with groups larger than their slots (matched in lw_polovf_v1); "ipcache miss" =
a WORLD peer found in the cidr trie. An allowed new flow creates a conntrack entry, so
repeating the same packet would time the established path; the allowed-by-ANY-peer path
is therefore timed with repeat = 1 on fresh flows, next to the floor timed the same way.
``--object`` times another build of the classifier (A/B runs).

Methodology matches the issue's: an Ethernet/IPv4/TCP packet of 54 bytes, a __sk_buff
context carrying only ifindex = 1 (lo), counters and events left on (as in production),
kernel.bpf_stats_enabled = 0 (it adds two clock reads per run; the probe refuses to run
with it on). It re-executes itself in a private mount namespace with its own bpffs at
/sys/fs/bpf, so its pins never collide with anyone else's tests or benchmarks.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo: bpf_src, tests

from bpf_src import build
from labelwall.cluster import Direction, Protocol
from labelwall.datapath import abi, codecs, libbpf, mapspecs, testrun
from labelwall.datapath.facade import FROM_POD, TO_POD, Datapath
from labelwall.policy import mapstate
from labelwall.policy.mapstate import IpcacheEntry, MapChanges, NamedPortKey, PolicyKey
from labelwall.policy.mapstate import SubjectFlags as SF  # noqa: N817 - short in tables
from tests.datapath import packets as P  # noqa: N812 - P.tcp(...) reads like a builder

HERE = Path(__file__).resolve().parent
PRIVATE_ENV = "LW_PERF_PROBE_PRIVATE_BPFFS"
REPEAT = 1_000_000
LO = testrun.LOOPBACK_IFINDEX

# The measured pod and its world (identities are arbitrary, above the reserved range).
SUBJECT, SUBJECT_OVF, PEER, CIDR_ID, NAME_ID = 0x10001, 0x10004, 0x10002, 0x1000001, 7
SUBJECT_ADDR = ipaddress.ip_address("10.244.0.5")
PEER_ADDR = ipaddress.ip_address("10.244.0.9")  # in ipcache, inside an ipBlock, named port 80
WORLD_ADDR = ipaddress.ip_address("192.168.3.4")  # not in ipcache: cidr trie fallback
SUBJECT_ADDR6 = ipaddress.ip_address("fd00:10:244::5")  # the same pods over IPv6
PEER_ADDR6 = ipaddress.ip_address("fd00:10:244::9")
ALLOW_ANY_PORT = 9090  # allowed for every peer (ANY), egress


def _private_bpffs() -> None:
    """Re-exec in a private mount namespace with a fresh bpffs (pins die with us)."""
    if os.environ.get(PRIVATE_ENV) == "1":
        return
    if os.geteuid() != 0:
        sys.exit("perf_probe needs root (BPF_PROG_TEST_RUN, map creation)")
    cmd = 'mount --make-rprivate / && mount -t bpf bpf /sys/fs/bpf && exec "$@"'
    argv = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]]
    env = dict(os.environ, **{PRIVATE_ENV: "1"})
    os.execvpe("unshare", ["unshare", "-m", "sh", "-c", cmd, "sh", *argv], env)


def _compile(name: str, out_dir: Path) -> Path:
    out = out_dir / f"{name}.o"
    cmd = build.command(out)
    cmd[cmd.index(str(build.SOURCE))] = str(HERE / "perf_probe_bpf" / f"{name}.bpf.c")
    subprocess.run(cmd, check=True)
    return out


def _load_baseline(obj: Path, name: str) -> int:
    """Load with bpftool into our private bpffs; returns the program fd."""
    pin = f"/sys/fs/bpf/{name}"
    maps = f"/sys/fs/bpf/{name}_maps"
    subprocess.run(["bpftool", "prog", "load", str(obj), pin, "pinmaps", maps], check=True)
    return libbpf.obj_get(pin)


def _time(fd: int, packet: bytes, runs: int, repeat: int = REPEAT) -> list[int]:
    out = []
    for _ in range(runs):
        r = testrun.run(fd, packet, LO, repeat)
        out.append(r.duration_ns)
    return out


def _time_fresh(fd: int, make: Callable[[int], bytes], n: int) -> list[int]:
    """repeat = 1 on ``n`` distinct packets (each a new flow)."""
    return [testrun.run(fd, make(i), LO, 1).duration_ns for i in range(n)]


def _v4(i: int) -> bytes:
    return struct.pack("!I", i)


class Filler:
    """Grows the maps to a target size with raw, realistic-looking entries."""

    def __init__(self, dp: Datapath) -> None:
        self.dp = dp
        self.ipcache = 0
        self.subjects = 0

    def ipcache_to(self, n: int) -> None:
        # 10.0.0.0/8 minus 10.244.0.0/16: pods of 1024 identities (pod addresses, /32 each)
        keys, values = [], []
        for i in range(self.ipcache, n):
            addr = (10 << 24) + (1 << 16) + i  # 10.1.0.0 upwards, never 10.244.x
            keys.append(b"\x04\0\0\0" + _v4(addr) + bytes(12))
            values.append(codecs.encode_ipcache_value(IpcacheEntry(0x20000 + i % 1024, 0)))
        self.dp.writer.upsert_raw(mapspecs.IPCACHE_MAP, keys, values)
        self.ipcache = n

    def subjects_to(self, n: int) -> None:
        """``n`` other isolated subjects, each with a typical handful of allow entries."""
        policy: dict[PolicyKey, int] = {}
        subjects = {}
        for s in range(self.subjects, n):
            ident = 0x30000 + s
            subjects[ident] = SF.INGRESS_ISOLATED | SF.EGRESS_ISOLATED
            peer = 0x20000 + s % 1024
            policy[PolicyKey(ident, peer, Direction.INGRESS, Protocol.TCP, 8080, 16)] = s
            policy[PolicyKey(ident, peer, Direction.INGRESS, Protocol.UDP, 53, 16)] = s
            policy[PolicyKey(ident, 0, Direction.EGRESS, Protocol.UDP, 53, 16)] = s
            policy[PolicyKey(ident, peer, Direction.EGRESS, Protocol.TCP, 5432, 16)] = s
            policy[PolicyKey(ident, CIDR_ID, Direction.EGRESS, Protocol.TCP, 0x8000, 6)] = s
            policy[PolicyKey(ident, peer, Direction.INGRESS, Protocol.TCP, NAME_ID, 16, True)] = s
        self.dp.writer.apply_changes(mapstate.POLICY, MapChanges(policy))
        self.dp.writer.apply_changes(mapstate.SUBJECTS, MapChanges(subjects))
        self.subjects = n


def _denying_group(subject: int, peer: int, size: int) -> dict[PolicyKey, int]:
    """``size`` egress entries of one group that the measured packets (TCP 80) all miss:
    exact ports, a range, a named port of another name id; over 8 = overflow to the trie."""
    e = Direction.EGRESS
    out = {
        PolicyKey(subject, peer, e, Protocol.TCP, NAME_ID + 1, 16, True): 1,
        PolicyKey(subject, peer, e, Protocol.TCP, 8000, 10): 2,  # a range: 8000-8063
        PolicyKey(subject, peer, e, Protocol.UDP, 53, 16): 3,
    }
    for i in range(size - len(out)):
        out[PolicyKey(subject, peer, e, Protocol.TCP, 443 + i, 16)] = 10 + i
    return out


def setup_subjects(dp: Datapath) -> None:
    """The measured subjects, isolated both ways. Every peer the worst paths consult (the
    peer's identity, its CIDR identity, ANY) has a group with named entries, so the named
    port is looked up too; SUBJECT's groups fit their slots, SUBJECT_OVF's overflow."""
    dp.set_endpoint(LO, SUBJECT, (SUBJECT_ADDR, SUBJECT_ADDR6))
    w = dp.writer
    iso = SF.INGRESS_ISOLATED | SF.EGRESS_ISOLATED
    w.apply_changes(mapstate.SUBJECTS, MapChanges({SUBJECT: iso, SUBJECT_OVF: iso}))
    w.apply_changes(
        mapstate.IPCACHE,
        MapChanges(
            {
                SUBJECT_ADDR: IpcacheEntry(SUBJECT, CIDR_ID),
                PEER_ADDR: IpcacheEntry(PEER, CIDR_ID),
                SUBJECT_ADDR6: IpcacheEntry(SUBJECT, CIDR_ID),
                PEER_ADDR6: IpcacheEntry(PEER, CIDR_ID),
            }
        ),
    )
    w.apply_changes(
        mapstate.CIDRS,
        MapChanges(
            {
                ipaddress.ip_network("10.0.0.0/8"): CIDR_ID,
                ipaddress.ip_network("192.168.0.0/16"): CIDR_ID + 1,
                ipaddress.ip_network("172.16.0.0/12"): CIDR_ID + 2,
            }
        ),
    )
    w.apply_changes(
        mapstate.NAMED_PORTS,
        MapChanges(
            {
                NamedPortKey(PEER_ADDR, Protocol.TCP, 80): NAME_ID,
                NamedPortKey(PEER_ADDR6, Protocol.TCP, 80): NAME_ID,
            }
        ),
    )
    policy: dict[PolicyKey, int] = {}
    for subject, size in ((SUBJECT, 6), (SUBJECT_OVF, 12)):
        for peer in (PEER, CIDR_ID, CIDR_ID + 1, 0):
            policy |= _denying_group(subject, peer, size)
        policy[PolicyKey(subject, 0, Direction.EGRESS, Protocol.TCP, ALLOW_ANY_PORT, 16)] = 5
        policy[PolicyKey(subject, PEER, Direction.INGRESS, Protocol.TCP, 8080, 16)] = 6
    w.apply_changes(mapstate.POLICY, MapChanges(policy))


@contextmanager
def baselines(tmp: Path) -> Iterator[tuple[int, int]]:
    floor = _load_baseline(_compile("floor", tmp), "lwprobe_floor")
    parse = _load_baseline(_compile("parse_lookup", tmp), "lwprobe_parse")
    flows = libbpf.obj_get("/sys/fs/bpf/lwprobe_parse_maps/lw_probe_flows")
    key = codecs.encode_ct_key(codecs.CtKey(4, 6, 0, 40000, 80, SUBJECT_ADDR, PEER_ADDR, 1))
    libbpf.update_elem(flows, key, bytes(8))
    try:
        yield floor, parse
    finally:
        for fd in (floor, parse, flows):
            os.close(fd)


def _fmt(xs: list[int]) -> str:
    return f"{statistics.median(xs):7.0f} (min {min(xs):4d})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10,10000,1000000")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--fresh", type=int, default=3000, help="new flows for repeat=1 timings")
    ap.add_argument("--object", type=Path, help="classifier object (default: the built one)")
    args = ap.parse_args()
    _private_bpffs()
    if Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip() != "0":
        sys.exit("kernel.bpf_stats_enabled is on: it adds ~20 ns per run; turn it off")
    sizes = [int(s) for s in args.sizes.split(",")]
    tcp_syn = P.packet(SUBJECT_ADDR, PEER_ADDR, P.TCP, 40000, 80)
    assert len(tcp_syn) == 54
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as t, baselines(Path(t)) as (floor, parse):
        rows.append(("floor (return TC_ACT_OK)", "-", _fmt(_time(floor, tcp_syn, args.runs))))
        rows.append(("parse + one hash lookup", "-", _fmt(_time(parse, tcp_syn, args.runs))))
        floor1 = _time_fresh(floor, lambda i: tcp_syn, args.fresh)
        rows.append(("floor, repeat=1", "-", _fmt(floor1)))
        dp = Datapath.open(args.object)
        try:
            fill = Filler(dp)
            setup_subjects(dp)
            from_pod, to_pod = dp.prog_fd(FROM_POD), dp.prog_fd(TO_POD)
            arp = P.eth(P.ETH_P_ARP, bytes(28))
            for n in sizes:
                fill.ipcache_to(n)
                fill.subjects_to(max(1, min(n // 100, 10_000)))
                label = f"{n}"
                dp.clear_conntrack()
                est = P.packet(SUBJECT_ADDR, PEER_ADDR, P.TCP, 40001, ALLOW_ANY_PORT, P.ACK)
                assert dp.test_run(FROM_POD, est, LO).verdict == abi.TcVerdict.ALLOW
                reply = P.packet(PEER_ADDR, SUBJECT_ADDR, P.TCP, ALLOW_ANY_PORT, 40001, P.ACK)
                worst_hit = P.packet(SUBJECT_ADDR, PEER_ADDR, P.TCP, 40000, 80)
                worst_miss = P.packet(SUBJECT_ADDR, WORLD_ADDR, P.TCP, 40000, 80)
                worst_hit6 = P.packet(SUBJECT_ADDR6, PEER_ADDR6, P.TCP, 40000, 80)
                for name, subject, pkt in (
                    ("worst: ipcache hit, 3 groups, named", SUBJECT, worst_hit),
                    ("worst: the same over IPv6", SUBJECT, worst_hit6),
                    ("worst: same, groups overflow to trie", SUBJECT_OVF, worst_hit),
                    ("worst: ipcache miss, cidr trie", SUBJECT, worst_miss),
                ):
                    dp.set_endpoint(LO, subject, (SUBJECT_ADDR, SUBJECT_ADDR6))
                    assert dp.test_run(FROM_POD, pkt, LO).verdict == abi.TcVerdict.DROP, name
                    rows.append((name, label, _fmt(_time(from_pod, pkt, args.runs))))
                dp.set_endpoint(LO, SUBJECT, (SUBJECT_ADDR, SUBJECT_ADDR6))
                rows.append(("established (forward)", label, _fmt(_time(from_pod, est, args.runs))))
                rows.append(("established (reply)", label, _fmt(_time(to_pod, reply, args.runs))))
                est6 = P.packet(SUBJECT_ADDR6, PEER_ADDR6, P.TCP, 40001, ALLOW_ANY_PORT, P.ACK)
                assert dp.test_run(FROM_POD, est6, LO).verdict == abi.TcVerdict.ALLOW
                rows.append(("established (IPv6)", label, _fmt(_time(from_pod, est6, args.runs))))
                rows.append(("ARP", label, _fmt(_time(from_pod, arp, args.runs))))

                def fresh(i: int) -> bytes:
                    return P.packet(SUBJECT_ADDR, PEER_ADDR, P.TCP, 1024 + i, ALLOW_ANY_PORT)

                dp.clear_conntrack()
                rows.append(("new flow allowed by ANY, repeat=1", label,
                             _fmt(_time_fresh(from_pod, fresh, args.fresh))))  # fmt: skip
                dp.clear_conntrack()
                print(f"# filled: ipcache {n}, subjects {fill.subjects}", file=sys.stderr)
        finally:
            dp.close()
            Datapath.unpin_all()
    print(f"{'path':40s} {'ipcache':>8s}  ns/packet median (min), {args.runs} runs")
    for name, size, v in rows:
        print(f"{name:40s} {size:>8s}  {v}")


if __name__ == "__main__":
    main()
