"""Kernel == model with Service CIDRs (lookup.py step S): tc defers what the model defers.

The property test of test_differential.py, with random Service CIDRs in lw_svcnet_v1:
every first packet's verdict and reason at tc equal ``decide(..., service_cidrs=...)``
(SERVICE_DEFERRED for egress of an egress-isolated subject into one of them, everything
else exactly as without them), a deferred packet reports no event and opens no conntrack
entry, and a later fragment of a deferred first fragment follows it to the stack.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from labelwall.cluster import Direction, IPNetwork, Protocol
from labelwall.datapath import codecs, netfilter
from labelwall.datapath.events import EventStream
from labelwall.datapath.facade import Datapath
from labelwall.policy.lookup import Reason, decide, decide_later_fragment
from labelwall.policy.mapstate import MapState

from . import packets
from .conftest import fresh_datapath
from .helpers import LO, run, write
from .mapstate_strategies import NETS, Flow, flows, map_states

pytestmark = [pytest.mark.root, pytest.mark.bpf]

SERVICE_NETS: list[IPNetwork] = [
    *NETS,
    *(ipaddress.ip_network(n) for n in ("10.2.0.0/16", "192.0.2.0/24", "fd00:2::/32")),
]
_ids = itertools.count(5000)


@pytest.fixture(scope="module")
def shared_dp() -> Iterator[Datapath]:
    with fresh_datapath() as datapath:
        datapath.set_config(codecs.DatapathConfig(events_per_s=1_000_000, events_burst=100_000))
        yield datapath


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    state=map_states(),
    cidrs=st.lists(st.sampled_from(SERVICE_NETS), max_size=3, unique=True),
    data=st.data(),
)
def test_the_kernel_defers_to_netfilter_exactly_what_the_model_defers(
    shared_dp: Datapath, state: MapState, cidrs: list[IPNetwork], data: st.DataObject
) -> None:
    dp = shared_dp
    write(dp, state)
    netfilter.write_cidrs(dp.io, cidrs)
    assert sorted(dp.service_cidrs(), key=str) == sorted(cidrs, key=str)
    cases = data.draw(st.lists(flows(), min_size=1, max_size=8))
    with dp.events() as events:
        events.poll(0)
        for f in cases:
            _check(dp, events, state, cidrs, f)


def _check(
    dp: Datapath, events: EventStream, state: MapState, cidrs: list[IPNetwork], f: Flow
) -> None:
    dp.set_endpoint(LO, f.subject, (f.subject_addr,))
    dp.clear_conntrack()
    dp.clear_fragments()
    src, dst = (f.subject_addr, f.peer_addr) if f.direction is Direction.EGRESS else (
        f.peer_addr, f.subject_addr
    )  # fmt: skip
    want = decide(
        state, f.subject, f.direction, f.peer_addr, dst, f.protocol, f.dport,
        src_addr=src, own_addrs=(f.subject_addr,), service_cidrs=cidrs,
    )  # fmt: skip
    got = run(dp, f.direction, packets.packet(src, dst, int(f.protocol), f.sport, f.dport))
    event(f"reason {want.reason.name}")
    assert (got.verdict == 1, got.reason) == (want.allowed, want.reason), (f, cidrs, want)
    # a deferred packet is reported by netfilter once judged, not by tc
    assert len(events.poll(0)) == (0 if want.reason is Reason.SERVICE_DEFERRED else 1)
    tracked = bool(dp.conntrack())
    assert tracked == (want.allowed and want.reason is not Reason.SERVICE_DEFERRED), (f, want)
    if f.protocol not in (Protocol.UDP, Protocol.TCP) or src.version != 4:
        return
    # a fragmented first packet and its later fragment
    dp.clear_conntrack()
    ident = next(_ids) & 0xFFFF
    l4 = packets.l4(int(f.protocol), f.sport, f.dport) + b"\0" * 16
    first = packets.ipv4(str(src), str(dst), int(f.protocol), l4, more_frags=True, ident=ident)
    later = packets.ipv4(str(src), str(dst), int(f.protocol), b"\0" * 16, 5, ident=ident)
    got_first = run(dp, f.direction, first)
    assert (got_first.verdict == 1, got_first.reason) == (want.allowed, want.reason)
    w = decide_later_fragment(state, f.subject, f.direction, want)
    got_later = run(dp, f.direction, later)
    assert (got_later.verdict == 1, got_later.reason) == (w.allowed, w.reason), (f, want)
    events.poll(0)
