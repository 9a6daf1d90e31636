"""The conntrack model: which table a flow's entry is in, and the reason its packets get.

The specification of bpf_src/include/labelwall/conntrack.h (steps C1-C4 of
``labelwall.policy.lookup``); tests/datapath/test_ct_tables.py runs random packet sequences
through it and through the kernel and requires equal reasons and equal tables. Pure: no
clock (a test runs well within every timeout and within one second, so no bucket refills).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

from labelwall.policy.lookup import Reason, Verdict


class Table(Enum):
    NEW = "lw_ct_new_v1"  # allowed, no reply seen yet (or over budget when it was)
    EST = "lw_ct_v3"  # promoted after a reply: the one-lookup hot path


@dataclass
class Entry:
    table: Table
    forward: bool  # the orientation of the flow's first packet
    reply_seen: bool = False


K = TypeVar("K", bound=Hashable)


@dataclass
class VethConntrack(Generic[K]):
    """The conntrack entries of one veth and its promotion bucket (``budget`` promotions
    left: the burst, since the test never waits a second)."""

    budget: int
    flows: dict[K, Entry] = field(default_factory=dict)

    def packet(
        self, flow: K, forward: bool, bare_syn: bool, judge: Callable[[], Verdict]
    ) -> tuple[bool, Reason]:
        """One packet of ``flow`` in orientation ``forward`` (either; its reverse is the
        other), ``bare_syn``: a TCP SYN without ACK. ``judge``: the new-flow verdict
        (``lookup.decide``), asked only when conntrack does not decide.
        """
        entry = self.flows.get(flow)
        reply = entry is not None and entry.forward != forward
        if entry is not None and entry.table is Table.EST:  # C1
            return True, Reason.CT_REPLY if reply else Reason.CT_ESTABLISHED
        if entry is not None and not bare_syn:  # C2 (a bare SYN skips the new table)
            entry.reply_seen = entry.reply_seen or reply
            if not entry.reply_seen:
                return True, Reason.CT_ESTABLISHED
            if self.budget <= 0:  # C3
                return True, Reason.CT_UNPROMOTED
            self.budget -= 1
            entry.table = Table.EST
            return True, Reason.CT_REPLY if reply else Reason.CT_ESTABLISHED
        verdict = judge()  # C4: a new flow; an allowed one is tracked in the new table
        if verdict.allowed:
            self.flows[flow] = Entry(Table.NEW, forward)
        return verdict.allowed, verdict.reason
