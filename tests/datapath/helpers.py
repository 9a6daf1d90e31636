"""Shared helpers for packet tests: write a MapState through the real writer, run, explain."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple, Protocol

import pytest

from labelwall.cluster import Direction
from labelwall.datapath import abi, codecs, groups, mapspecs, reader
from labelwall.datapath.facade import FROM_POD, TO_POD, Datapath
from labelwall.datapath.mapio import MapIO
from labelwall.lab.topology import in_netns
from labelwall.policy.lookup import Reason
from labelwall.policy.mapstate import MapState, PolicyKey, diff

PROGRAM = {Direction.EGRESS: FROM_POD, Direction.INGRESS: TO_POD}
LO = 1  # BPF_PROG_TEST_RUN puts the skb on the device named by __sk_buff.ifindex


class Outcome(NamedTuple):
    verdict: abi.TcVerdict
    reason: Reason


def write(dp: Datapath, state: MapState) -> None:
    """Make the kernel maps equal ``state`` through the real (ordered, batched) writer."""
    dp.apply(diff(dp.read_state(), state))


def run(dp: Datapath, direction: Direction, packet: bytes, ifindex: int = LO) -> Outcome:
    """Verdict and the reason the classifier counted for it (from the per-CPU counters).

    ``ifindex`` is the host veth the hook runs on (an existing device: the test run needs it).
    """
    before = dp.counters()
    result = dp.test_run(PROGRAM[direction], packet, ifindex)
    after = dp.counters()
    changed = [
        key
        for key, c in after.items()
        if c.packets != (before[key].packets if key in before else 0)
    ]
    assert len(changed) == 1, f"expected one counter to move, got {changed}"
    counted_dir, reason = changed[0]
    assert counted_dir is direction
    return Outcome(result.verdict, reason)


@contextmanager
def second_device() -> Iterator[int]:
    """Run the body in a private netns of ours holding a veth; yields that veth's ifindex.

    A test run resolves ``__sk_buff.ifindex`` in the calling thread's netns, where lo is
    still 1, so LO and the yielded ifindex are two hooks' veths. Netns deleted afterwards.
    """
    ip = shutil.which("ip")
    if ip is None:
        pytest.fail("iproute2 `ip` is not installed (CI: apt-get install iproute2)")
    ns = f"lwt-dp-{os.getpid()}"
    subprocess.run([ip, "netns", "add", ns], check=True)
    try:
        subprocess.run(
            [ip, "-n", ns, "link", "add", "lwta", "type", "veth", "peer", "name", "lwtb"],
            check=True,
        )
        out = subprocess.run(
            [ip, "-n", ns, "-o", "link", "show", "lwta"], check=True, capture_output=True, text=True
        ).stdout
        with in_netns(ns):
            yield int(out.split(":", 1)[0])
    finally:
        subprocess.run([ip, "netns", "del", ns], check=True)


class HasMapIO(Protocol):
    """A Datapath (kernel maps) or a MemoryDatapath (dict maps)."""

    @property
    def io(self) -> MapIO: ...


def read_groups(dp: HasMapIO) -> dict[groups.GroupKey, bytes]:
    """lw_polgrp_v1 as the maps hold it."""
    raw = reader.read_raw(dp.io, mapspecs.POLGRP_MAP)
    return {groups.decode_group_key(k): v for k, v in raw}


def _grouped(state: MapState) -> dict[groups.GroupKey, dict[PolicyKey, int]]:
    out: dict[groups.GroupKey, dict[PolicyKey, int]] = {}
    for key, cookie in state.policy.items():
        out.setdefault(groups.group_of(key), {})[key] = cookie
    return out


def expected_groups(state: MapState) -> dict[groups.GroupKey, bytes]:
    """The group index ``state.policy`` implies (groups.encode_group of each group)."""
    return {g: groups.encode_group(e.items()) for g, e in _grouped(state).items()}


def read_overflow(dp: HasMapIO) -> dict[PolicyKey, int]:
    """lw_polovf_v1 as the maps hold it."""
    table = codecs.POLICY
    return reader.read_table(dp.io, dataclasses.replace(table, spec=mapspecs.POLOVF_MAP))


def expected_overflow(state: MapState) -> dict[PolicyKey, int]:
    """The entries of the groups that do not fit their slots."""
    return {k: v for e in _grouped(state).values() if groups.overflows(e) for k, v in e.items()}


ALLOW = abi.TcVerdict.ALLOW
DROP = abi.TcVerdict.DROP
