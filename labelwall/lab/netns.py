"""Pod network namespaces wired like a routed CNI, with in-namespace echo servers and probers.

Topology (what ``create_pod`` builds; every name is chosen by the caller and carries a
prefix, ``lw-`` by default, so ``cleanup(prefix)`` can remove exactly what we made)::

    pod netns NAME                          node netns (None = the current one, the host)
    eth0  10.244.x.y/32, fd00:10:244::z/128 <== veth ==> HOST_IFNAME (tc clsact: classifier)
      10.244.0.0/16    via 169.254.1.1          10.244.x.y/32        dev HOST_IFNAME
      fd00:10:244::/48 via fe80::1              fd00:10:244::z/128   dev HOST_IFNAME
      (no default route, ever)                  lw-host0 (veth):  10.244.0.1/32,
                                                fd00:10:244::1/128  ("node" traffic)

The link-local gateway is resolved by a permanent neighbour entry pointing at the
host-side veth's MAC (and the node has one for the pod's addresses), so neither proxy
ARP nor proxy NDP, nor any per-link sysctl, is needed and no ARP/ND race slows the first
probe. Forwarding is a per-network-namespace sysctl: ``setup_node`` turns on
``net.ipv4.ip_forward`` and ``net.ipv6.conf.all.forwarding`` in the node netns and
remembers the old values; ``teardown_node`` restores only values it changed. When the
node is the real host (``node=None``) that is a host-wide setting: restoring it while
another lab still runs would break that lab, so run one lab per node netns, or pass a
dedicated node netns (tests and benches do: nothing in the root netns is touched then).

Processes: ``Agent.start(netns)`` runs ``python -m labelwall.lab.netns agent`` inside a
namespace (it calls setns(2) itself before opening any socket). The agent is long-lived
and speaks line-oriented JSON on stdin/stdout: ``serve`` starts TCP/UDP (and raw SCTP)
echo servers, ``probe`` runs a batch of probes concurrently and answers once for the
batch. It exits when its stdin closes, so a crashed parent leaves no agent behind.

Usage::

    node = setup_node("lw-node")                   # or setup_node() for the host itself
    a = create_pod("lw-a", "10.244.1.2", "fd00:10:244:1::2", node="lw-node")
    b = create_pod("lw-b", "10.244.1.3", "fd00:10:244:1::3", node="lw-node")
    with Agent.start(b.name) as server, Agent.start(a.name) as client:
        server.serve(tcp=[80], udp=[80])
        [r] = client.probe([Probe("tcp", "10.244.1.3", 80)])
        assert r.ok
    delete_pod(a.name, node="lw-node"); delete_pod(b.name, node="lw-node")
    teardown_node(node)                           # or cleanup("lw-") after a crash
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import IO, Any, Literal

from pyroute2 import IPRoute, NetNS
from pyroute2 import netns as _netns
from pyroute2.netlink.exceptions import NetlinkError

PREFIX = "lw-"
POD_CIDR_V4 = ipaddress.IPv4Network("10.244.0.0/16")
POD_CIDR_V6 = ipaddress.IPv6Network("fd00:10:244::/48")
GATEWAY_V4 = "169.254.1.1"  # link-local next hop inside every pod (as Calico does)
GATEWAY_V6 = "fe80::1"
HOST_LINK = "lw-host0"  # link on the node carrying the node's pod-CIDR addresses
HOST_V4 = "10.244.0.1"
HOST_V6 = "fd00:10:244::1"
POD_IFNAME = "eth0"
IFNAMSIZ = 15  # usable characters in a Linux interface name
NETNS_DIR = "/run/netns"

_NUD_PERMANENT = 0x80
_IFA_F_NODAD = 0x02  # no duplicate address detection: the address is usable at once
_FORWARDING_SYSCTLS = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding")

Proto = Literal["tcp", "udp", "sctp"]
Outcome = Literal["ok", "timeout", "refused", "unreachable", "error"]


class LabError(RuntimeError):
    """A lab namespace, link or agent could not be set up as asked."""


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class PodNet:
    """One pod: its netns, the host side of its veth (where the classifier attaches)."""

    name: str  # netns name (/run/netns/NAME)
    host_ifname: str  # host-side veth, in the node netns
    host_ifindex: int  # its ifindex in the node netns: the endpoints-map key
    addresses: tuple[str, ...]  # IPv4 first, then IPv6 if any
    node: str | None = None  # node netns (None: the netns of the caller)


@dataclass(frozen=True)
class NodeNet:
    """The node side: a link with the node's addresses, forwarding switched on."""

    node: str | None  # netns (None: the caller's, i.e. the real host)
    link: str
    addresses: tuple[str, ...]
    created_netns: bool  # setup_node created the netns, so teardown_node removes it
    restore: tuple[tuple[str, str], ...] = ()  # (sysctl path, old value) we changed


@dataclass(frozen=True)
class Probe:
    """One connection attempt: TCP connect + echo, or UDP/SCTP datagram + echo."""

    proto: Proto
    dst: str
    port: int
    timeout: float = 0.3  # seconds; a dropped packet shows up as "timeout"
    src: str | None = None  # bind to this source address (host probes use HOST_V4/V6)


@dataclass(frozen=True)
class ProbeResult:
    probe: Probe
    outcome: Outcome
    rtt_ms: float
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


# ---------------------------------------------------------------- netlink plumbing


def _ipr(node: str | None) -> Any:
    """A netlink socket in ``node`` (flags=0: never create the netns by accident)."""
    return NetNS(node, flags=0) if node else IPRoute()


def _ifindex(ipr: Any, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def _mac(ipr: Any, index: int) -> str:
    return str(ipr.get_links(index)[0].get_attr("IFLA_ADDRESS"))


def _check_ifname(ifname: str) -> None:
    if not 0 < len(ifname) <= IFNAMSIZ:
        raise ValueError(f"interface name {ifname!r} must have 1..{IFNAMSIZ} characters")


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


@contextlib.contextmanager
def in_netns(name: str | None) -> Iterator[None]:
    """Run the body with the calling *thread* in netns ``name`` (None: stay put).

    setns(2) with CLONE_NEWNET moves only the calling thread; sockets (netlink included)
    opened inside keep their netns afterwards, so e.g. ``with in_netns(node):
    datapath.attach(ifname)`` attaches tc filters in the node netns.
    """
    if name is None:
        yield
        return
    if not netns_exists(name):
        raise LabError(f"no network namespace {name!r}")
    back = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        _netns.setns(name, flags=0)
        try:
            yield
        finally:
            _netns.setns(back, flags=0)
    finally:
        os.close(back)


def _sysctl_read(path: str) -> str:
    with open(f"/proc/sys/{path}") as f:
        return f.read().strip()


def _sysctl_write(path: str, value: str) -> None:
    with open(f"/proc/sys/{path}", "w") as f:
        f.write(value)


def _create_netns(name: str) -> None:
    _netns.create(name)
    with _ipr(name) as ipr:
        ipr.link("set", index=_ifindex(ipr, "lo"), state="up")


def _remove_netns(name: str) -> bool:
    if not netns_exists(name):
        return False
    try:
        _netns.remove(name)
    except FileNotFoundError:
        return False
    return True


def _delete_link(ipr: Any, ifname: str) -> bool:
    index = _ifindex(ipr, ifname)
    if index is None:
        return False
    try:
        ipr.link("del", index=index)
    except NetlinkError as e:
        if e.code != errno.ENODEV:
            raise
        return False
    return True


# ---------------------------------------------------------------- node


def setup_node(
    node: str | None = None,
    link: str = HOST_LINK,
    ipv4: str = HOST_V4,
    ipv6: str | None = HOST_V6,
) -> NodeNet:
    """The node side: create ``node`` (if named and missing), the ``link`` with the
    node's /32 and /128 addresses, and forwarding for both families. Idempotent."""
    _check_ifname(link)
    created = False
    if node is not None and not netns_exists(node):
        _create_netns(node)
        created = True
    restore: list[tuple[str, str]] = []
    with in_netns(node):
        for path in _FORWARDING_SYSCTLS:
            old = _sysctl_read(path)
            if old != "1":
                _sysctl_write(path, "1")
                restore.append((path, old))
    addresses = (ipv4,) + ((ipv6,) if ipv6 else ())
    with _ipr(node) as ipr:
        index = _ifindex(ipr, link)
        if index is None:
            # A veth pair, not a dummy: CONFIG_DUMMY is often missing (it is here) while
            # veth is always there. The peer (LINK + "p") only gives the link a carrier.
            ipr.link("add", ifname=link, kind="veth", peer={"ifname": _host_peer(link)})
            index = _ifindex(ipr, link)
            ipr.link("set", index=_ifindex(ipr, _host_peer(link)), state="up")
        if index is None:
            raise LabError(f"link {link} vanished after creation")
        ipr.link("set", index=index, state="up")
        _add_addr(ipr, index, ipv4, 32)
        if ipv6:
            _add_addr(ipr, index, ipv6, 128)
    return NodeNet(node, link, addresses, created, tuple(restore))


def _host_peer(link: str) -> str:
    return (link + "p")[:IFNAMSIZ] if len(link) < IFNAMSIZ else link[:-1] + "p"


def teardown_node(net: NodeNet) -> None:
    """Undo ``setup_node``: the link, the sysctls it changed, the netns it created."""
    if net.node is not None and not netns_exists(net.node):
        return
    with _ipr(net.node) as ipr:
        _delete_link(ipr, net.link)
    with in_netns(net.node):
        for path, old in net.restore:
            _sysctl_write(path, old)
    if net.created_netns and net.node is not None:
        _remove_netns(net.node)


def _add_addr(ipr: Any, index: int, address: str, prefixlen: int) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    flags = _IFA_F_NODAD if family == socket.AF_INET6 else 0
    try:
        ipr.addr("add", index=index, address=address, prefixlen=prefixlen, flags=flags)
    except NetlinkError as e:
        if e.code != errno.EEXIST:
            raise


def _has_addr(ipr: Any, address: str) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return bool(ipr.get_addr(family=family, address=address))


# ---------------------------------------------------------------- pods


def create_pod(
    name: str,
    ipv4: str,
    ipv6: str | None = None,
    *,
    node: str | None = None,
    host_ifname: str | None = None,
) -> PodNet:
    """Create netns ``name`` wired to the node like a routed CNI pod (see module doc).

    ``host_ifname`` defaults to ``name`` (netns and link names live in separate name
    spaces); it must fit in 15 characters and should carry the cleanup prefix. Raises
    LabError if the netns or the link exists already; on any failure nothing is left.
    """
    host_ifname = host_ifname or name
    _check_ifname(host_ifname)
    v4 = ipaddress.IPv4Address(ipv4)
    v6 = ipaddress.IPv6Address(ipv6) if ipv6 else None
    if netns_exists(name):
        raise LabError(f"network namespace {name!r} exists already")
    with _ipr(node) as ipr:
        if _ifindex(ipr, host_ifname) is not None:
            raise LabError(f"link {host_ifname!r} exists already in node netns {node!r}")
    _create_netns(name)
    try:
        return _wire_pod(name, str(v4), str(v6) if v6 else None, node, host_ifname)
    except BaseException:
        delete_pod(name, node=node, host_ifname=host_ifname)
        raise


def _wire_pod(name: str, v4: str, v6: str | None, node: str | None, host_ifname: str) -> PodNet:
    nsfd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
    try:
        with _ipr(node) as ipr:
            # The peer is born inside the pod netns, already named eth0.
            ipr.link(
                "add", ifname=host_ifname, kind="veth",
                peer={"ifname": POD_IFNAME, "net_ns_fd": nsfd},
            )  # fmt: skip
            host_index = _ifindex(ipr, host_ifname)
            if host_index is None:
                raise LabError(f"veth {host_ifname} vanished after creation")
            host_mac = _mac(ipr, host_index)
    finally:
        os.close(nsfd)
    addresses = (v4,) + ((v6,) if v6 else ())
    with _ipr(name) as pod:
        eth0 = _ifindex(pod, POD_IFNAME)
        if eth0 is None:
            raise LabError(f"{POD_IFNAME} missing in {name}")
        pod_mac = _mac(pod, eth0)
        pod.link("set", index=eth0, state="up")
        _add_addr(pod, eth0, v4, 32)
        pod.route("add", dst=f"{GATEWAY_V4}/32", oif=eth0, scope=253)  # scope link
        pod.neigh("add", dst=GATEWAY_V4, lladdr=host_mac, ifindex=eth0, state=_NUD_PERMANENT)
        pod.route("add", dst=str(POD_CIDR_V4), gateway=GATEWAY_V4, oif=eth0)
        if v6:
            _add_addr(pod, eth0, v6, 128)
            pod.neigh(
                "add", dst=GATEWAY_V6, lladdr=host_mac, ifindex=eth0, state=_NUD_PERMANENT,
                family=socket.AF_INET6,
            )  # fmt: skip
            pod.route(
                "add", dst=str(POD_CIDR_V6), gateway=GATEWAY_V6, oif=eth0,
                family=socket.AF_INET6,
            )  # fmt: skip
    with _ipr(node) as ipr:
        ipr.link("set", index=host_index, state="up")
        for address, bits, host_src in ((v4, 32, HOST_V4), (v6, 128, HOST_V6)):
            if address is None:
                continue
            family = socket.AF_INET6 if bits == 128 else socket.AF_INET
            route: dict[str, Any] = {"dst": f"{address}/{bits}", "oif": host_index}
            if _has_addr(ipr, host_src):
                route["prefsrc"] = host_src  # node-originated traffic comes from lw-host0
            ipr.route("add", family=family, **route)
            ipr.neigh(
                "add", dst=address, lladdr=pod_mac, ifindex=host_index, state=_NUD_PERMANENT,
                family=family,
            )  # fmt: skip
    return PodNet(name, host_ifname, host_index, addresses, node)


def delete_pod(name: str, *, node: str | None = None, host_ifname: str | None = None) -> bool:
    """Remove the pod netns and its host-side veth (routes go with it). Idempotent;
    returns whether anything was there."""
    host_ifname = host_ifname or name
    found = False
    if node is None or netns_exists(node):
        with _ipr(node) as ipr:
            found = _delete_link(ipr, host_ifname)
    return _remove_netns(name) or found


def pod_from_existing(
    name: str, *, node: str | None = None, host_ifname: str | None = None
) -> PodNet:
    """Describe a pod made earlier (e.g. by another process of the lab)."""
    host_ifname = host_ifname or name
    with _ipr(node) as ipr:
        index = _ifindex(ipr, host_ifname)
    if index is None or not netns_exists(name):
        raise LabError(f"no pod {name!r} with host link {host_ifname!r}")
    with _ipr(name) as pod:
        eth0 = _ifindex(pod, POD_IFNAME)
        addrs = [str(a.get_attr("IFA_ADDRESS")) for a in pod.get_addr(index=eth0)]
    v4 = [a for a in addrs if ":" not in a]
    v6 = [a for a in addrs if ":" in a and not a.startswith("fe80")]
    return PodNet(name, host_ifname, index, tuple(v4 + v6), node)


# ---------------------------------------------------------------- listing and cleanup


def list_netns(prefix: str = PREFIX) -> list[str]:
    return sorted(n for n in _netns.listnetns() if n.startswith(prefix))


def list_links(prefix: str = PREFIX, node: str | None = None) -> list[str]:
    with _ipr(node) as ipr:
        names = [str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()]
    return sorted(n for n in names if n.startswith(prefix))


def cleanup(prefix: str = PREFIX, nodes: Sequence[str | None] = (None,)) -> list[str]:
    """Delete every link named ``prefix*`` in each of ``nodes`` (None: the caller's netns)
    and every netns named ``prefix*``; returns what was removed. For `lab down` after a
    crash: only names with our prefix are touched. Agents exit by themselves once their
    parent is gone (stdin EOF); a netns kept alive by a foreign process loses its name
    here and disappears when that process exits."""
    if not prefix:
        raise ValueError("cleanup needs a non-empty prefix")
    removed: list[str] = []
    for node in nodes:
        if node is not None and not netns_exists(node):
            continue
        with _ipr(node) as ipr:
            for link in list_links(prefix, node):
                if _delete_link(ipr, link):
                    removed.append(f"link {link}" + (f"@{node}" if node else ""))
    for name in list_netns(prefix):
        if _remove_netns(name):
            removed.append(f"netns {name}")
    return removed


# ---------------------------------------------------------------- running code inside


def exec_argv(name: str | None, argv: Sequence[str]) -> list[str]:
    """argv that runs ``argv`` inside netns ``name`` (iproute2 `ip netns exec`)."""
    return list(argv) if name is None else ["ip", "netns", "exec", name, *argv]


def run(
    name: str | None, argv: Sequence[str], timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run a command inside netns ``name`` and wait (bounded by ``timeout`` seconds)."""
    return subprocess.run(
        exec_argv(name, argv), capture_output=True, text=True, timeout=timeout, check=False
    )


class Agent:
    """A long-lived helper process inside one netns: echo servers and a prober.

    Commands go as JSON lines on its stdin; each gets one JSON line back. Not thread
    safe: one caller thread per agent.
    """

    def __init__(self, netns: str | None, proc: subprocess.Popen[str]) -> None:
        self.netns = netns
        self.proc = proc

    @classmethod
    def start(cls, netns: str | None) -> Agent:
        argv = [sys.executable, "-m", "labelwall.lab.netns", "agent"]
        if netns is not None:
            argv += ["--netns", netns]
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        agent = cls(netns, proc)
        try:
            agent._call({"op": "ping"}, timeout=10.0)
        except BaseException:
            agent.close()
            raise
        return agent

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _call(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        if stdin is None or stdout is None or self.proc.poll() is not None:
            raise LabError(f"agent in {self.netns} is not running")
        stdin.write(json.dumps(request) + "\n")
        stdin.flush()
        ready, _, _ = select.select([stdout], [], [], timeout)
        if not ready:
            raise LabError(f"agent in {self.netns}: no answer to {request['op']} in {timeout}s")
        line = stdout.readline()
        if not line:
            raise LabError(f"agent in {self.netns} exited (code {self.proc.poll()})")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise LabError(f"agent in {self.netns}: {answer['error']}")
        return answer

    def serve(
        self, tcp: Sequence[int] = (), udp: Sequence[int] = (), sctp: Sequence[int] = ()
    ) -> None:
        """Start echo servers on all addresses of the netns (IPv4 and IPv6). Idempotent
        per port; servers run until the agent closes."""
        self._call({"op": "serve", "tcp": list(tcp), "udp": list(udp), "sctp": list(sctp)}, 10)

    def probe(self, probes: Sequence[Probe]) -> list[ProbeResult]:
        """Run ``probes`` concurrently; one result per probe, in order. Bounded by the
        largest probe timeout (plus process overhead)."""
        if not probes:
            return []
        wait = max(p.timeout for p in probes) * (1 + len(probes) // _PROBE_WORKERS) + 10
        answer = self._call({"op": "probe", "probes": [asdict(p) for p in probes]}, wait)
        return [
            ProbeResult(p, r["outcome"], r["rtt_ms"], r.get("detail", ""))
            for p, r in zip(probes, answer["results"], strict=True)
        ]

    def close(self) -> None:
        """Stop the agent (EOF, then SIGKILL after 2 s) and reap it."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- the agent process

_PROBE_WORKERS = 64
_ECHO_IDLE_S = 5.0  # an idle echo connection is closed after this many seconds
_IPPROTO_SCTP = 132
_SCTP_INIT = 1
_SCTP_INIT_ACK = 2


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)  # Castagnoli, reflected
        table.append(c)
    return tuple(table)


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC32c (RFC 9260 appendix A): the SCTP checksum; the stdlib has only CRC32."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _sctp_packet(sport: int, dport: int, vtag: int, chunk_type: int, init_tag: int) -> bytes:
    """A minimal SCTP packet with one INIT / INIT-ACK chunk (RFC 9260 §3.3.2): ports,
    verification tag and chunk fields in network byte order; the CRC32c checksum is
    stored little-endian, as Linux's sctp_compute_cksum() does."""
    # chunk: type, flags, length; initiate tag, a_rwnd, out streams, in streams, initial TSN
    chunk = struct.pack("!BBHIIHHI", chunk_type, 0, 20, init_tag, 65536, 1, 1, init_tag)
    header = struct.pack("!HHI", sport, dport, vtag)
    checksum = struct.pack("<I", crc32c(header + b"\0\0\0\0" + chunk))
    return header + checksum + chunk


@dataclass(frozen=True)
class _SctpChunk:
    """The fields of a raw-socket SCTP read that the INIT / INIT-ACK exchange uses."""

    sport: int
    dport: int
    vtag: int
    ctype: int
    init_tag: int


def _parse_sctp(data: bytes, family: socket.AddressFamily) -> _SctpChunk | None:
    """The common header and first chunk of a raw-socket read, or None."""
    if family == socket.AF_INET:  # IPv4 raw sockets deliver the IP header too
        if len(data) < 20:
            return None
        data = data[(data[0] & 0x0F) * 4 :]
    if len(data) < 20:
        return None
    sport, dport, vtag, _crc, ctype, _fl, _ln, itag = struct.unpack("!HHIIBBHI", data[:20])
    return _SctpChunk(sport, dport, vtag, ctype, itag)


def _is_our_init_ack(
    chunk: _SctpChunk | None, peer: str, dst: str, port: int, sport: int, tag: int
) -> bool:
    """Whether a read is the INIT-ACK answering our INIT to ``dst``:``port``.

    Every raw SCTP socket in the namespace sees every SCTP packet, and concurrent probes
    from one pod all target the same port. Ports alone are not enough (two probes can draw
    the same source port, and then one probe's answer would count for the other): the
    answer must also come from the probed address and carry our initiate tag as its
    verification tag (RFC 9260 §8.5), which is 32 random bits per probe.
    """
    return (
        chunk is not None
        and chunk.ctype == _SCTP_INIT_ACK
        and (chunk.sport, chunk.dport) == (port, sport)
        and chunk.vtag == tag
        and socket.inet_pton(_family(peer), peer) == socket.inet_pton(_family(dst), dst)
    )


class _SourcePorts:
    """Source ports for UDP and SCTP probes: each agent walks the ephemeral range in order
    from a random start, so a port repeats only after 28 000 probes from one pod.

    The kernel picks a random port for an unbound UDP socket (and SCTP here is raw, so
    we pick). A port reused within the conntrack timeout (60 s for UDP/SCTP) would make
    the new probe the continuation of an old flow that an earlier policy allowed, and
    the probe would measure that policy instead of the current one: a probe must be a
    new connection, as the upstream e2e tests assume.
    """

    LOW, COUNT = 32768, 28000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = int.from_bytes(os.urandom(2), "big") % self.COUNT

    def take(self) -> int:
        with self._lock:
            port = self.LOW + self._next
            self._next = (self._next + 1) % self.COUNT
            return port


_SOURCE_PORTS = _SourcePorts()


def _bind_fresh_port(s: socket.socket, src: str | None, fam: socket.AddressFamily) -> int:
    """Bind ``s`` to the next free source port of the sequence (skip ports in use)."""
    host = src or ("::" if fam == socket.AF_INET6 else "0.0.0.0")
    for _ in range(64):
        port = _SOURCE_PORTS.take()
        try:
            s.bind((host, port))
            return port
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, "no free source port in 64 tries")


@dataclass
class _AgentState:
    tcp: dict[int, socket.socket] = field(default_factory=dict)
    udp: dict[int, socket.socket] = field(default_factory=dict)
    sctp: set[int] = field(default_factory=set)
    sctp_started: bool = False


def _dual_stack(kind: socket.SocketKind, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 arrives v4-mapped
    s.bind(("::", port))
    return s


def _echo_conn(conn: socket.socket) -> None:
    with conn:
        conn.settimeout(_ECHO_IDLE_S)
        with contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)


def _tcp_server(s: socket.socket) -> None:
    s.listen(512)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=_echo_conn, args=(conn,), daemon=True).start()


def _udp_server(s: socket.socket) -> None:
    while True:
        data, peer = s.recvfrom(65536)
        with contextlib.suppress(OSError):
            s.sendto(data, peer)


def _sctp_server(state: _AgentState, family: socket.AddressFamily) -> None:
    """Answer an SCTP INIT to a served port with an INIT-ACK (raw sockets; no SCTP stack)."""
    s = socket.socket(family, socket.SOCK_RAW, _IPPROTO_SCTP)
    while True:
        data, peer = s.recvfrom(65536)
        got = _parse_sctp(data, family)
        if got is not None and got.ctype == _SCTP_INIT and got.dport in state.sctp:
            reply = _sctp_packet(
                got.dport, got.sport, got.init_tag, _SCTP_INIT_ACK, got.init_tag ^ 0x5A5A5A5A
            )
            with contextlib.suppress(OSError):
                s.sendto(reply, (peer[0], 0))


def _serve(state: _AgentState, request: dict[str, Any]) -> dict[str, Any]:
    for port in request.get("tcp", []):
        if port not in state.tcp:
            state.tcp[port] = _dual_stack(socket.SOCK_STREAM, port)
            threading.Thread(target=_tcp_server, args=(state.tcp[port],), daemon=True).start()
    for port in request.get("udp", []):
        if port not in state.udp:
            state.udp[port] = _dual_stack(socket.SOCK_DGRAM, port)
            threading.Thread(target=_udp_server, args=(state.udp[port],), daemon=True).start()
    state.sctp.update(request.get("sctp", []))
    if state.sctp and not state.sctp_started:
        state.sctp_started = True
        for fam in (socket.AF_INET, socket.AF_INET6):
            threading.Thread(target=_sctp_server, args=(state, fam), daemon=True).start()
    return {"ok": True}


def _probe_one(p: dict[str, Any]) -> dict[str, Any]:
    proto, dst, port = p["proto"], p["dst"], int(p["port"])
    timeout, src = float(p["timeout"]), p.get("src")
    fam = _family(dst)
    nonce = os.urandom(8)
    start = time.monotonic()

    def result(outcome: str, detail: str = "") -> dict[str, Any]:
        rtt = (time.monotonic() - start) * 1000
        return {"outcome": outcome, "rtt_ms": round(rtt, 3), "detail": detail}

    try:
        if proto == "tcp":
            with socket.socket(fam, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                if src:
                    s.bind((src, 0))
                s.connect((dst, port))
                s.sendall(nonce)
                got = b""
                while len(got) < len(nonce):
                    chunk = s.recv(64)
                    if not chunk:
                        return result("error", "connection closed before the echo")
                    got += chunk
                return result("ok" if got == nonce else "error")
        if proto == "udp":
            with socket.socket(fam, socket.SOCK_DGRAM) as s:
                s.settimeout(timeout)
                _bind_fresh_port(s, src, fam)
                s.connect((dst, port))
                s.send(nonce)
                while True:  # skip stray datagrams until the deadline
                    s.settimeout(max(0.001, timeout - (time.monotonic() - start)))
                    if s.recv(65536) == nonce:
                        return result("ok")
        if proto == "sctp":
            return _probe_sctp(fam, dst, port, timeout, src, start, result)
        return result("error", f"unknown protocol {proto}")
    except TimeoutError:
        return result("timeout")
    except ConnectionRefusedError:
        return result("refused")
    except OSError as e:
        if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return result("unreachable", str(e))
        return result("error", str(e))


def _probe_sctp(
    fam: socket.AddressFamily,
    dst: str,
    port: int,
    timeout: float,
    src: str | None,
    start: float,
    result: Any,
) -> dict[str, Any]:
    tag = int.from_bytes(os.urandom(4), "big") | 1
    sport = _SOURCE_PORTS.take()  # nothing binds SCTP ports here: raw sockets
    with socket.socket(fam, socket.SOCK_RAW, _IPPROTO_SCTP) as s:
        if src:
            s.bind((src, 0))
        s.sendto(_sctp_packet(sport, port, 0, _SCTP_INIT, tag), (dst, 0))
        while True:
            left = timeout - (time.monotonic() - start)
            if left <= 0:
                return dict(result("timeout"))
            s.settimeout(left)
            data, peer = s.recvfrom(65536)
            if _is_our_init_ack(_parse_sctp(data, fam), peer[0], dst, port, sport, tag):
                return dict(result("ok"))


def _agent_main(netns: str | None, stdin: IO[str], stdout: IO[str]) -> int:
    if netns is not None:
        _netns.setns(netns, flags=0)  # before any socket: the whole process moves
    state = _AgentState()
    pool = ThreadPoolExecutor(max_workers=_PROBE_WORKERS)
    for line in stdin:
        try:
            request = json.loads(line)
            op = request.get("op")
            if op == "ping":
                answer: dict[str, Any] = {"ok": True, "pid": os.getpid()}
            elif op == "serve":
                answer = _serve(state, request)
            elif op == "probe":
                answer = {"results": list(pool.map(_probe_one, request["probes"]))}
            else:
                answer = {"error": f"unknown op {op!r}"}
        except Exception as e:  # report to the caller; the agent keeps serving
            answer = {"error": f"{type(e).__name__}: {e}"}
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()
    pool.shutdown(wait=False, cancel_futures=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labelwall.lab.netns")
    sub = parser.add_subparsers(dest="command", required=True)
    agent = sub.add_parser("agent", help="JSON-lines echo server / prober (see Agent)")
    agent.add_argument("--netns", default=None)
    clean = sub.add_parser("cleanup", help="delete netns and links named PREFIX*")
    clean.add_argument("--prefix", default=PREFIX)
    clean.add_argument("--node", action="append", default=[])
    args = parser.parse_args(argv)
    if args.command == "agent":
        return _agent_main(args.netns, sys.stdin, sys.stdout)
    for item in cleanup(args.prefix, [None, *args.node]):
        print(item)
    return 0


if __name__ == "__main__":
    # Daemon server threads may still block in accept(); exit without joining them.
    code = main()
    sys.stdout.flush()
    os._exit(code)
