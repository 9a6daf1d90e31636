"""The kernel classifier and the Python lookup model agree on every new flow (property test).

Random MapStates (small identity/address/port universes so entries actually collide) are
written into the real maps by the real writer; random first packets go through
BPF_PROG_TEST_RUN with conntrack cleared, and the verdict *and* reason must equal
``labelwall.policy.lookup.decide``; so must the event the packet emits: its peer identity,
CIDR identity and cookie (the cookie of the longest-prefix entry, which the classifier
finds in a group's slots or, for a group too large for its slots, in the trie).
The packets of a flow already judged are covered too: the later fragments of a
fragmented first packet (same datagram id and another one) and an ICMP error quoting the
first packet follow ``decide_later_fragment`` / ``decide_icmp_error``.

The subject's own addresses (lw_epaddr_v1) are drawn too, so a packet leaving it may carry
a source that is not its own (the model's source check, steps 0a-0c), and neighbour
discovery packets towards random destinations check the scope of the ND pass.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from labelwall.cluster import Direction, IPAddress, Protocol
from labelwall.datapath import codecs
from labelwall.datapath.events import EventStream
from labelwall.datapath.facade import Datapath
from labelwall.policy.lookup import (
    PORT_PROTOCOLS,
    Reason,
    decide,
    decide_icmp_error,
    decide_later_fragment,
)
from labelwall.policy.mapstate import MapState

from . import packets
from .conftest import fresh_datapath
from .helpers import (
    LO,
    expected_groups,
    expected_overflow,
    read_groups,
    read_overflow,
    run,
    write,
)
from .mapstate_strategies import ADDRS, SUBJECTS, Flow, flows, map_states

_datagram_ids = itertools.count(1)

pytestmark = [pytest.mark.root, pytest.mark.bpf]


@pytest.fixture(scope="module")
def shared_dp() -> Iterator[Datapath]:
    with fresh_datapath() as datapath:
        # every new flow reports an event; the bucket must never be what decides that
        datapath.set_config(codecs.DatapathConfig(events_per_s=1_000_000, events_burst=100_000))
        yield datapath


@st.composite
def targeted_flows(draw: st.DrawFn, state: MapState) -> Flow:
    """A flow aimed at one policy entry (its subject, direction, protocol and port)."""
    base = draw(flows())
    if not state.policy:
        return base
    key = draw(st.sampled_from(sorted(state.policy)))
    protocol = key.protocol if key.protocol != Protocol.ANY else base.protocol
    dport = key.port
    if key.named:
        numbered = [k.port for k, v in state.named_ports.items() if v == key.port]
        dport = draw(st.sampled_from(numbered)) if numbered else base.dport
    peers = [
        a
        for a, e in state.ipcache.items()
        if key.peer in (e.identity, e.cidr_identity) and a.version == base.subject_addr.version
    ]
    peer = draw(st.sampled_from(peers)) if peers else base.peer_addr
    return Flow(key.subject, key.direction, base.subject_addr, peer, protocol, base.sport, dport)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=map_states(), data=st.data())
def test_the_kernel_verdict_equals_the_lookup_model_for_every_new_flow(
    shared_dp: Datapath, state: MapState, data: st.DataObject
) -> None:
    dp = shared_dp
    write(dp, state)
    assert dp.read_state() == state  # the writer wrote exactly the desired state
    assert read_groups(dp) == expected_groups(state)  # and its group index agrees
    assert read_overflow(dp) == expected_overflow(state)
    cases = data.draw(st.lists(st.one_of(flows(), targeted_flows(state)), min_size=1, max_size=8))
    with dp.events() as events:
        events.poll(0)
        for f in cases:
            _check_flow(dp, events, state, f, frozenset({f.subject_addr}))


def _src_dst(f: Flow) -> tuple[IPAddress, IPAddress]:
    """The flow's first packet's source and destination (the subject's address is one)."""
    if f.direction is Direction.EGRESS:
        return f.subject_addr, f.peer_addr
    return f.peer_addr, f.subject_addr


_ON_LINK = ("fe80::1", "ff02::1", "ff02::2", "ff02::1:ff00:1", "ff02::1:fe00:1", "ff05::2")
ND_PEERS: list[IPAddress] = [a for a in ADDRS if a.version == 6]
ND_PEERS += [ipaddress.ip_address(a) for a in _ON_LINK]
ND_SOURCES: list[IPAddress] = [a for a in ADDRS if a.version == 6]
ND_SOURCES += [ipaddress.ip_address("fe80::5"), ipaddress.ip_address("::")]


@st.composite
def nd_flows(draw: st.DrawFn) -> Flow:
    """ND (hop limit 255, types 133..137 as dport) between random addresses."""
    return Flow(
        draw(st.sampled_from(SUBJECTS)),
        draw(st.sampled_from(list(Direction))),
        draw(st.sampled_from(ND_SOURCES)),
        draw(st.sampled_from(ND_PEERS)),
        Protocol.ICMPV6,
        0,
        draw(st.integers(133, 137)),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=map_states(), data=st.data())
def test_the_kernel_equals_the_model_for_forged_sources_and_neighbour_discovery(
    shared_dp: Datapath, state: MapState, data: st.DataObject
) -> None:
    dp = shared_dp
    write(dp, state)
    cases = data.draw(
        st.lists(
            st.tuples(
                st.one_of(flows(), targeted_flows(state), nd_flows()),
                st.frozensets(st.sampled_from(ADDRS), max_size=3),
            ),
            min_size=1,
            max_size=8,
        )
    )
    with dp.events() as events:
        events.poll(0)
        for f, own in cases:
            _check_flow(dp, events, state, f, own)


def _check_flow(
    dp: Datapath, events: EventStream, state: MapState, f: Flow, own: frozenset[IPAddress]
) -> None:
    """One first packet: verdict, reason and event fields equal the model's.

    ``own``: the subject's addresses; a Flow with protocol ICMPv6 and sport 0 whose dport
    is 133..137 is sent as neighbour discovery (hop limit 255)."""
    dp.set_endpoint(LO, f.subject, own)
    dp.clear_conntrack()  # the model decides new flows only
    if f.direction is Direction.EGRESS:
        src, dst = f.subject_addr, f.peer_addr
    else:
        src, dst = f.peer_addr, f.subject_addr
    nd = f.protocol is Protocol.ICMPV6 and f.sport == 0 and 133 <= f.dport <= 137
    if nd:
        body = packets.icmp(f.dport) + b"\0" * 16
        packet = packets.ipv6(str(src), str(dst), packets.ICMPV6, body, hop_limit=255)
    else:
        packet = packets.packet(src, dst, int(f.protocol), f.sport, f.dport)
    want = decide(
        state, f.subject, f.direction, f.peer_addr, dst, f.protocol, f.dport,
        src_addr=src, own_addrs=own, nd=nd,
    )  # fmt: skip
    got = run(dp, f.direction, packet)
    event(f"reason {want.reason.name}")
    assert (got.verdict == 1, got.reason) == (want.allowed, want.reason), (f, want)
    if want.reason is Reason.ICMP_ND:
        assert events.poll(0) == []  # the ND pass reports nothing, as NON_IP
        return
    (ev,) = events.poll(0)
    assert (ev.peer, ev.cidr_identity, ev.cookie) == (
        want.peer_identity,
        want.cidr_identity,
        want.cookie,
    ), (f, want)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=map_states(), data=st.data())
def test_the_kernel_equals_the_model_for_later_fragments_and_related_icmp_errors(
    shared_dp: Datapath, state: MapState, data: st.DataObject
) -> None:
    dp = shared_dp
    write(dp, state)
    cases = data.draw(st.lists(st.one_of(flows(), targeted_flows(state)), min_size=1, max_size=4))
    for f in cases:
        if f.protocol in PORT_PROTOCOLS:
            _check_fragments_and_error(dp, state, f)


def _check_fragments_and_error(dp: Datapath, state: MapState, f: Flow) -> None:
    """A fragmented first packet, its later fragments, another datagram's, an ICMP error."""
    dp.set_endpoint(LO, f.subject, frozenset({f.subject_addr}))
    dp.clear_conntrack()
    dp.clear_fragments()
    src, dst = _src_dst(f)
    ident = next(_datagram_ids)
    first, later, other = _fragments(src, dst, int(f.protocol), f.sport, f.dport, ident)
    want = decide(state, f.subject, f.direction, f.peer_addr, dst, f.protocol, f.dport)
    got = run(dp, f.direction, first)
    assert (got.verdict == 1, got.reason) == (want.allowed, want.reason), (f, want)
    for packet, seen in ((later, want), (other, None)):
        w = decide_later_fragment(state, f.subject, f.direction, seen)
        g = run(dp, f.direction, packet)
        event(f"later fragment {w.reason.name}")
        assert (g.verdict == 1, g.reason) == (w.allowed, w.reason), (f, seen, w)
    # the error goes back to the quoted packet's source, through the opposite hook
    back = Direction.INGRESS if f.direction is Direction.EGRESS else Direction.EGRESS
    icmp = Protocol.ICMP if src.version == 4 else Protocol.ICMPV6
    quoted = packets.packet(src, dst, int(f.protocol), f.sport, f.dport)
    body = packets.icmp_error(3 if src.version == 4 else 1, quoted)
    error = packets.ipv4(str(dst), str(src), 1, body) if src.version == 4 else (
        packets.ipv6(str(dst), str(src), 58, body)
    )  # fmt: skip
    w = decide_icmp_error(state, f.subject, back, f.peer_addr, src, icmp, want)
    g = run(dp, back, error)
    event(f"icmp error {w.reason.name}")
    assert (g.verdict == 1, g.reason) == (w.allowed, w.reason), (f, want, w)


def _fragments(
    src: IPAddress, dst: IPAddress, proto: int, sport: int, dport: int, ident: int
) -> tuple[bytes, bytes, bytes]:
    """First fragment (L4 header, more fragments), a later one, a later one of id + 1."""
    head = packets.l4(proto, sport, dport) + b"\0" * 24
    if src.version == 4:
        return (
            packets.ipv4(str(src), str(dst), proto, head, 0, True, ident=ident),
            packets.ipv4(str(src), str(dst), proto, b"\0" * 64, 4, False, ident=ident),
            packets.ipv4(str(src), str(dst), proto, b"\0" * 64, 4, False, ident=ident + 1),
        )
    return (
        packets.ipv6(str(src), str(dst), 44, packets.ipv6_frag(proto, 0, True, ident) + head),
        packets.ipv6(
            str(src), str(dst), 44, packets.ipv6_frag(proto, 4, False, ident) + b"\0" * 64
        ),
        packets.ipv6(
            str(src), str(dst), 44, packets.ipv6_frag(proto, 4, False, ident + 1) + b"\0" * 64
        ),
    )
