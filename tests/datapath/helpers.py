"""Shared helpers for packet tests: write a MapState through the real writer, run, explain."""

from __future__ import annotations

from typing import NamedTuple

from labelwall.cluster import Direction
from labelwall.datapath import abi
from labelwall.datapath.facade import FROM_POD, TO_POD, Datapath
from labelwall.policy.lookup import Reason
from labelwall.policy.mapstate import MapState, diff

PROGRAM = {Direction.EGRESS: FROM_POD, Direction.INGRESS: TO_POD}
LO = 1  # BPF_PROG_TEST_RUN puts the skb on the device named by __sk_buff.ifindex


class Outcome(NamedTuple):
    verdict: abi.Verdict
    reason: Reason


def write(dp: Datapath, state: MapState) -> None:
    """Make the kernel maps equal ``state`` through the real (ordered, batched) writer."""
    dp.apply(diff(dp.read_state(), state))


def run(dp: Datapath, direction: Direction, packet: bytes) -> Outcome:
    """Verdict and the reason the classifier counted for it (from the per-CPU counters)."""
    before = dp.counters()
    result = dp.test_run(PROGRAM[direction], packet, LO)
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


ALLOW = abi.Verdict.ALLOW
DROP = abi.Verdict.DROP
