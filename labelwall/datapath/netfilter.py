"""Egress through a Service: attach handle_svc_nat at PRE_ROUTING and fill lw_svcnet_v1.

The tc classifier sees a pod's packet before kube-proxy's DNAT, so for a new flow from an
egress-isolated pod to a Service address it passes the packet on untracked and the
netfilter program (bpf_src/include/labelwall/netfilter.h) judges it right after DNAT,
on the backend pod. That program lives in its own object (``labelwall_nf.bpf.o``) that
reuses the classifier's pinned maps, so a kernel without BPF_PROG_TYPE_NETFILTER still
loads the classifier.

One BPF link per address family (NFPROTO_IPV4, NFPROTO_IPV6) at NF_INET_PRE_ROUTING,
priority ``PRIORITY`` (just after NF_IP_PRI_NAT_DST), in the network
namespace of the calling process (the node's: the agent runs on the host network). Links
are pinned (``mapspecs.NF_LINK_PINS``), so an agent restart neither detaches nor
re-creates them: ``attach`` keeps a pinned link whose program is the same code on the same
maps and replaces any other (new link first, then the old pin: no gap).

The fail-closed order is this module's job: lw_svcnet_v1 is written only after both links
are attached (``enable``), and emptied before they are detached (``disable``, and
``loader.unpin_all``), because tc defers exactly the destinations in that map. On a kernel
that refuses the program or the link, the map is left empty and tc judges Service
addresses itself (denied unless an ipBlock admits them); ``enable`` says why.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pylibbpf

from labelwall.cluster import IPNetwork
from labelwall.datapath import codecs, libbpf, loader, mapspecs
from labelwall.datapath.errors import DatapathError, ProgramNotFoundError
from labelwall.datapath.mapio import MapIO

OBJECT_NAME = "labelwall_nf.bpf.o"
NF_INET_PRE_ROUTING = 0
NFPROTO = {4: 2, 6: 10}  # address family -> NFPROTO_IPV4 / NFPROTO_IPV6
PRIORITY = -99  # NF_IP_PRI_NAT_DST (-100) + 1: right after kube-proxy's DNAT
# No BPF_F_NETFILTER_IP_DEFRAG: it would reassemble every datagram the node forwards (the
# classifier judges fragments itself); conntrack, which any DNAT needs, defragments anyway.
FLAGS = 0
SVCNET_VALUE = b"\0\0\0\0"  # struct lw_svcnet_value: flags 0

#: The defaults of the agent's ``serviceCIDRs`` (config.py), as networks.
DEFAULT_SERVICE_CIDRS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(c) for c in mapspecs.DEFAULT_SERVICE_CIDRS
)


def object_path() -> Path:
    """The shipped netfilter object (built next to labelwall.bpf.o by bpf_src/build.py)."""
    ref = resources.files("labelwall.datapath").joinpath("bpf").joinpath(OBJECT_NAME)
    return Path(str(ref))


@dataclass(frozen=True)
class ServiceHook:
    """What ``enable`` achieved: ``active`` means Service egress is judged after DNAT."""

    active: bool
    reason: str = ""  # why not, when not active
    created: int = 0  # links created by this call (0: the pinned ones were kept)
    cidrs: tuple[IPNetwork, ...] = ()


def load_program(path: Path, endpoints_map_id: int) -> int:
    """Load the netfilter object onto the pinned maps; the fd of handle_svc_nat (ours)."""
    obj = pylibbpf.BpfObject(str(path))
    obj.load()  # reuses every pin (the classifier's maps); raises on kernels without it
    try:
        return loader.find_program(mapspecs.PROG_SVC_NAT, endpoints_map_id)
    finally:
        del obj  # the program lives on through our fd (and the links)


def _pinned_link(path: str) -> int | None:
    try:
        return libbpf.obj_get(path)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise


def _link_is_current(link_fd: int, pf: int, new: libbpf.ProgInfo, endpoints_map_id: int) -> bool:
    """The pinned link runs the same code, on our maps, at our hook and priority."""
    info = libbpf.netfilter_link_info(link_fd)
    if info.type != libbpf.BPF_LINK_TYPE_NETFILTER:
        return False
    if (info.pf, info.hooknum, info.priority) != (pf, NF_INET_PRE_ROUTING, PRIORITY):
        return False
    prog_fd = libbpf.prog_fd_by_id(info.prog_id)
    if prog_fd is None:
        return False
    try:
        old = libbpf.prog_info(prog_fd)
    finally:
        os.close(prog_fd)
    return old.tag == new.tag and endpoints_map_id in old.map_ids


def attach(prog_fd: int, endpoints_map_id: int) -> int:
    """Both links of ``prog_fd``, pinned; returns how many were (re)created (0: kept)."""
    new = libbpf.prog_info(prog_fd)
    created = 0
    for family, pf in NFPROTO.items():
        path = mapspecs.NF_LINK_PINS[family]
        old_fd = _pinned_link(path)
        if old_fd is not None:
            try:
                if _link_is_current(old_fd, pf, new, endpoints_map_id):
                    continue
            finally:
                os.close(old_fd)
        link_fd = libbpf.link_create_netfilter(prog_fd, pf, NF_INET_PRE_ROUTING, PRIORITY, FLAGS)
        try:
            # the new hook runs before the old pin goes: no moment without one
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            libbpf.obj_pin(link_fd, path)
        finally:
            os.close(link_fd)
        created += 1
    return created


def attached(endpoints_map_id: int) -> bool:
    """Both links are pinned and run a program that uses our maps."""
    for family in NFPROTO:
        fd = _pinned_link(mapspecs.NF_LINK_PINS[family])
        if fd is None:
            return False
        try:
            info = libbpf.netfilter_link_info(fd)
        finally:
            os.close(fd)
        prog_fd = libbpf.prog_fd_by_id(info.prog_id)
        if prog_fd is None:
            return False
        try:
            if endpoints_map_id not in libbpf.prog_info(prog_fd).map_ids:
                return False
        finally:
            os.close(prog_fd)
    return True


def write_cidrs(io: MapIO, cidrs: Iterable[IPNetwork]) -> None:
    """Make lw_svcnet_v1 hold exactly ``cidrs`` (new entries first, then the stale ones)."""
    spec = mapspecs.SVCNET_MAP
    want = {codecs.encode_cidr_key(n) for n in cidrs}
    have = {k for k, _ in io.items(spec)}
    if len(want) > io.max_entries(spec):
        raise DatapathError(
            f"serviceCIDRs: {len(want)} prefixes, map {spec.name} holds {io.max_entries(spec)}"
        )
    for k in sorted(want - have):
        io.update(spec, k, SVCNET_VALUE)
    for k in sorted(have - want):
        io.delete(spec, k)


def read_cidrs(io: MapIO) -> list[IPNetwork]:
    return sorted(
        (codecs.decode_cidr_key(k) for k, _ in io.items(mapspecs.SVCNET_MAP)),
        key=lambda n: (n.version, n),
    )


def enable(io: MapIO, cidrs: Iterable[IPNetwork], obj: Path, endpoints_map_id: int) -> ServiceHook:
    """Links first, then the CIDRs; on any refusal, no CIDRs (tc judges: fail closed)."""
    nets = tuple(cidrs)
    if not nets:
        write_cidrs(io, ())
        return ServiceHook(False, "serviceCIDRs is empty")
    try:
        prog_fd = load_program(obj, endpoints_map_id)
    except (OSError, RuntimeError, ProgramNotFoundError, pylibbpf.BpfException) as e:
        write_cidrs(io, ())
        return ServiceHook(False, f"the kernel refused the netfilter program ({obj.name}): {e}")
    try:
        created = attach(prog_fd, endpoints_map_id)
    except OSError as e:
        write_cidrs(io, ())
        return ServiceHook(False, f"the kernel refused the netfilter link: {e}")
    finally:
        os.close(prog_fd)
    write_cidrs(io, nets)
    return ServiceHook(True, "", created, nets)


def disable(io: MapIO | None = None) -> list[str]:
    """CIDRs emptied first (tc then judges Service addresses), then the links unpinned."""
    if io is not None:
        write_cidrs(io, ())
    else:
        loader.clear_service_cidrs()
    removed = []
    for path in mapspecs.NF_LINK_PINS.values():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            removed.append(path)
    return removed
