"""The classifier's verdict records (lw_events_v1) as policy.flows.VerdictEvent values.

The kernel stamps events with CLOCK_MONOTONIC_COARSE ns; ``boot_offset_ns`` (wall clock
minus monotonic, taken when the reader starts) turns them into wall-clock times, which is
what flows from several nodes are merged by.
"""

from __future__ import annotations

import time

from labelwall.cluster import Direction
from labelwall.datapath import abi, codecs
from labelwall.datapath.events import EventStream
from labelwall.policy.flows import VerdictEvent


def boot_offset_ns() -> int:
    return time.time_ns() - time.monotonic_ns()


def to_verdict_event(ev: codecs.Event, offset_ns: int) -> VerdictEvent | None:
    """None for a record of no hook direction (never written by the classifier)."""
    if ev.dir not in (Direction.INGRESS, Direction.EGRESS):
        return None
    return VerdictEvent(
        time_ns=ev.ts_ns + offset_ns,
        direction=Direction(ev.dir),
        allowed=ev.verdict == abi.TcVerdict.ALLOW,
        reason=ev.reason,
        cookie=ev.cookie,
        subject=ev.subject,
        peer=ev.peer,
        cidr_identity=ev.cidr_identity,
        proto=ev.proto,
        sport=ev.sport,
        dport=ev.dport,
        saddr=ev.saddr,
        daddr=ev.daddr,
        tcp_flags=ev.tcp_flags,
        icmp_type=ev.icmp_type,
        icmp_code=ev.icmp_code,
    )


class VerdictReader:
    """Drains the ring buffer: ``poll`` returns what arrived within ``timeout_ms``."""

    def __init__(self, stream: EventStream) -> None:
        self.stream = stream
        self.offset_ns = boot_offset_ns()

    def poll(self, timeout_ms: int) -> list[VerdictEvent]:
        out = []
        for ev in self.stream.poll(timeout_ms):
            v = to_verdict_event(ev, self.offset_ns)
            if v is not None:
                out.append(v)
        return out

    def close(self) -> None:
        self.stream.close()
