"""Pod network namespaces wired to a lab node like a routed CNI (no processes inside).

Topology (what ``create_pod`` builds for a ``LabNode``, shown with its default
addresses; every name is chosen by the caller and carries a prefix, so
``cleanup(prefix)`` can remove exactly what we made)::

    pod netns NAME                          node netns (node.netns; None = the host)
    eth0  10.244.x.y/32, fd00:10:244::z/128 <== veth ==> HOST_IFNAME (tc clsact: classifier)
      10.244.0.0/16    via 169.254.1.1          10.244.x.y/32        dev HOST_IFNAME
      fd00:10:244::/48 via fe80::1              fd00:10:244::z/128   dev HOST_IFNAME
      (no default route, ever)                  node.host_link (veth): 10.244.0.1/32,
                                                fd00:10:244::1/128  ("node" traffic)

The link-local gateway is resolved by a permanent neighbour entry pointing at the
host-side veth's MAC (and the node has one for the pod's addresses), so neither proxy
ARP nor proxy NDP, nor any per-link sysctl, is needed and no ARP/ND race slows the first
probe. Forwarding is a per-network-namespace sysctl: ``setup_node`` turns on
``net.ipv4.ip_forward`` and ``net.ipv6.conf.all.forwarding`` in the node netns and
remembers the old values; ``teardown_node`` restores only values it changed. When the
node is the real host (``netns=None``) that is a host-wide setting: restoring it while
another lab still runs would break that lab, so run one lab per node netns, or pass a
dedicated node netns (tests and benches do: nothing in the root netns is touched then).

What runs inside a pod (echo servers, the prober) is ``labelwall.lab.prober``; one pod
with both is ``labelwall.lab.sandbox``.

Usage::

    node = LabNode("lab", "lw-node")
    net = setup_node(node)
    a = create_pod("lw-a", "10.244.1.2", "fd00:10:244:1::2", node=node)
    delete_pod(a.name, node=node)
    teardown_node(net)                            # or cleanup("lw-") after a crash
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute, NetNS
from pyroute2 import netns as _netns
from pyroute2.netlink.exceptions import NetlinkError

from labelwall.lab.node import LabError, LabNode

POD_IFNAME = "eth0"
IFNAMSIZ = 15  # usable characters in a Linux interface name
NETNS_DIR = "/run/netns"

_NUD_PERMANENT = 0x80
_IFA_F_NODAD = 0x02  # no duplicate address detection: the address is usable at once
_FORWARDING_SYSCTLS = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding")

# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class PodNet:
    """One pod: its netns, the host side of its veth (where the classifier attaches)."""

    name: str  # netns name (/run/netns/NAME)
    host_ifname: str  # host-side veth, in the node netns
    host_ifindex: int  # its ifindex in the node netns: the endpoints-map key
    addresses: tuple[str, ...]  # IPv4 first, then IPv6 if any
    node: LabNode  # the node it is wired to


@dataclass(frozen=True)
class NodeNet:
    """The node side: a link with the node's addresses, forwarding switched on."""

    node: LabNode
    created_netns: bool  # setup_node created the netns, so teardown_node removes it
    restore: tuple[tuple[str, str], ...] = ()  # (sysctl path, old value) we changed


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
        raise LabError(f"interface name {ifname!r} must have 1..{IFNAMSIZ} characters")


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


def setup_node(node: LabNode) -> NodeNet:
    """The node side: create ``node.netns`` (if named and missing), ``node.host_link``
    with the node's /32 and /128 addresses, and forwarding for both families. Idempotent."""
    link = node.host_link
    _check_ifname(link)
    created = False
    if node.netns is not None and not netns_exists(node.netns):
        _create_netns(node.netns)
        created = True
    restore: list[tuple[str, str]] = []
    with in_netns(node.netns):
        for path in _FORWARDING_SYSCTLS:
            old = _sysctl_read(path)
            if old != "1":
                _sysctl_write(path, "1")
                restore.append((path, old))
    with _ipr(node.netns) as ipr:
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
        _add_addr(ipr, index, node.host_v4, 32)
        _add_addr(ipr, index, node.host_v6, 128)
    return NodeNet(node, created, tuple(restore))


def _host_peer(link: str) -> str:
    return (link + "p")[:IFNAMSIZ] if len(link) < IFNAMSIZ else link[:-1] + "p"


def teardown_node(net: NodeNet) -> None:
    """Undo ``setup_node``: the link, the sysctls it changed, the netns it created."""
    netns = net.node.netns
    if netns is not None and not netns_exists(netns):
        return
    with _ipr(netns) as ipr:
        _delete_link(ipr, net.node.host_link)
    with in_netns(netns):
        for path, old in net.restore:
            _sysctl_write(path, old)
    if net.created_netns and netns is not None:
        _remove_netns(netns)


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
    node: LabNode,
    host_ifname: str | None = None,
) -> PodNet:
    """Create netns ``name`` wired to ``node`` like a routed CNI pod (see module doc).

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
    with _ipr(node.netns) as ipr:
        if _ifindex(ipr, host_ifname) is not None:
            raise LabError(f"link {host_ifname!r} exists already in node netns {node.netns!r}")
    _create_netns(name)
    try:
        return _wire_pod(name, str(v4), str(v6) if v6 else None, node, host_ifname)
    except BaseException:
        delete_pod(name, node=node, host_ifname=host_ifname)
        raise


def _wire_pod(name: str, v4: str, v6: str | None, node: LabNode, host_ifname: str) -> PodNet:
    nsfd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
    try:
        with _ipr(node.netns) as ipr:
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
        gw4, gw6 = node.gateway_v4, node.gateway_v6
        pod.route("add", dst=f"{gw4}/32", oif=eth0, scope=253)  # scope link
        pod.neigh("add", dst=gw4, lladdr=host_mac, ifindex=eth0, state=_NUD_PERMANENT)
        pod.route("add", dst=str(node.pod_cidr_v4), gateway=gw4, oif=eth0)
        if v6:
            _add_addr(pod, eth0, v6, 128)
            pod.neigh(
                "add", dst=gw6, lladdr=host_mac, ifindex=eth0, state=_NUD_PERMANENT,
                family=socket.AF_INET6,
            )  # fmt: skip
            pod.route(
                "add", dst=str(node.pod_cidr_v6), gateway=gw6, oif=eth0,
                family=socket.AF_INET6,
            )  # fmt: skip
    with _ipr(node.netns) as ipr:
        ipr.link("set", index=host_index, state="up")
        for address, bits, host_src in ((v4, 32, node.host_v4), (v6, 128, node.host_v6)):
            if address is None:
                continue
            family = socket.AF_INET6 if bits == 128 else socket.AF_INET
            route: dict[str, Any] = {"dst": f"{address}/{bits}", "oif": host_index}
            if _has_addr(ipr, host_src):
                route["prefsrc"] = host_src  # node-originated traffic comes from host_link
            ipr.route("add", family=family, **route)
            ipr.neigh(
                "add", dst=address, lladdr=pod_mac, ifindex=host_index, state=_NUD_PERMANENT,
                family=family,
            )  # fmt: skip
    return PodNet(name, host_ifname, host_index, addresses, node)


def delete_pod(name: str, *, node: LabNode, host_ifname: str | None = None) -> bool:
    """Remove the pod netns and its host-side veth (routes go with it). Idempotent;
    returns whether anything was there."""
    host_ifname = host_ifname or name
    found = False
    if node.netns is None or netns_exists(node.netns):
        with _ipr(node.netns) as ipr:
            found = _delete_link(ipr, host_ifname)
    return _remove_netns(name) or found


def pod_from_existing(name: str, *, node: LabNode, host_ifname: str | None = None) -> PodNet:
    """Describe a pod made earlier (e.g. by another process of the lab)."""
    host_ifname = host_ifname or name
    with _ipr(node.netns) as ipr:
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


def list_netns(prefix: str) -> list[str]:
    return sorted(n for n in _netns.listnetns() if n.startswith(prefix))


def list_links(prefix: str, node: str | None = None) -> list[str]:
    """Links named ``prefix*`` in netns ``node`` (None: the caller's)."""
    with _ipr(node) as ipr:
        names = [str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()]
    return sorted(n for n in names if n.startswith(prefix))


def cleanup(prefix: str, nodes: Sequence[str | None] = (None,)) -> list[str]:
    """Delete every link named ``prefix*`` in each netns of ``nodes`` (None: the caller's)
    and every netns named ``prefix*``; returns what was removed. For `lab down` after a
    crash: only names with our prefix are touched. Probe helpers exit by themselves once their
    parent is gone (stdin EOF); a netns kept alive by a foreign process loses its name
    here and disappears when that process exits."""
    if not prefix:
        raise LabError("cleanup needs a non-empty prefix")
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
