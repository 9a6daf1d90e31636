"""Attach/detach the classifier on an interface with tc clsact, through pyroute2 netlink.

Idempotent: the clsact qdisc is created once (EEXIST is success) and each hook gets one
bpf filter at a fixed priority and handle, installed with ``replace`` so re-attaching swaps
the program atomically. Detach removes only our filters; the clsact qdisc stays (other
filters may share it). pyroute2 covers everything needed here, so no iproute2 fallback.
"""

from __future__ import annotations

import errno
import sys
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

PARENT_INGRESS = "ffff:fff2"  # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS): from the pod
PARENT_EGRESS = "ffff:fff3"  # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS): to the pod
PARENT_CODES = {PARENT_INGRESS: 0xFFFFFFF2, PARENT_EGRESS: 0xFFFFFFF3}
PRIO = 1  # low number = runs first
HANDLE = ":1"


class LinkNotFoundError(LookupError):
    pass


@dataclass(frozen=True)
class Hook:
    parent: str  # PARENT_INGRESS / PARENT_EGRESS
    prog_fd: int
    name: str  # filter name shown by `tc filter show`


def _ifindex(ipr: Any, link: str | int) -> int:
    if isinstance(link, int):
        return link
    found = ipr.link_lookup(ifname=link)
    if not found:
        raise LinkNotFoundError(f"no such interface: {link}")
    return int(found[0])


def attach(link: str | int, hooks: list[Hook]) -> None:
    with IPRoute() as ipr:
        idx = _ifindex(ipr, link)
        try:
            ipr.tc("add", "clsact", idx)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise
        for h in hooks:
            ipr.tc(
                "replace-filter", "bpf", idx, HANDLE, fd=h.prog_fd, name=h.name,
                parent=h.parent, classid=1, direct_action=True, prio=PRIO,
            )  # fmt: skip


def detach(link: str | int, parents: list[str]) -> None:
    with IPRoute() as ipr:
        idx = _ifindex(ipr, link)
        for parent in parents:
            try:
                ipr.tc("del-filter", "bpf", idx, HANDLE, parent=parent, prio=PRIO)
            except NetlinkError as e:
                # ENOENT: no filter; EINVAL: no clsact qdisc at all. Both mean detached.
                if e.code not in (errno.ENOENT, errno.EINVAL):
                    raise


TCA_BPF_ID = 11  # linux/pkt_cls.h: the attached program's id (u32); pyroute2 leaves it UNKNOWN


def _bpf_id(options: Any) -> int | None:
    """TCA_BPF_ID of one filter's TCA_OPTIONS, read from the raw attribute (host order)."""
    for name, value in options["attrs"]:
        if name == "UNKNOWN" and value["header"]["type"] == TCA_BPF_ID:
            start = value.offset + 4  # past the nlattr header (len u16, type u16)
            return int.from_bytes(bytes(value.data[start : start + 4]), sys.byteorder)
    return None


def attached_programs(link: str | int, parent: str) -> list[tuple[str, int | None]]:
    """(name, program id) of the bpf filters on one hook (empty when nothing is attached)."""
    out: list[tuple[str, int | None]] = []
    for f in _filters(link, parent):
        options = f.get_attr("TCA_OPTIONS")
        if options is not None and options.get_attr("TCA_BPF_NAME"):
            out.append((str(options.get_attr("TCA_BPF_NAME")), _bpf_id(options)))
    return out


def _filters(link: str | int, parent: str) -> list[Any]:
    with IPRoute() as ipr:
        idx = _ifindex(ipr, link)
        try:
            return list(ipr.get_filters(idx, parent=PARENT_CODES[parent]))
        except NetlinkError as e:
            if e.code == errno.EINVAL:
                return []
            raise


def attached_names(link: str | int, parent: str) -> list[str]:
    """Names of the bpf filters on one hook (empty when nothing is attached)."""
    with IPRoute() as ipr:
        idx = _ifindex(ipr, link)
        try:
            filters = ipr.get_filters(idx, parent=PARENT_CODES[parent])
        except NetlinkError as e:
            if e.code == errno.EINVAL:
                return []
            raise
        names = [f.get_nested("TCA_OPTIONS", "TCA_BPF_NAME") for f in filters]
        return [str(n) for n in names if n]
