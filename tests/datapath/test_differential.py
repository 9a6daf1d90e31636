"""The kernel classifier and the Python lookup model agree on every new flow (property test).

Random MapStates (small identity/address/port universes so entries actually collide) are
written into the real maps by the real writer; random first packets go through
BPF_PROG_TEST_RUN with conntrack cleared, and the verdict *and* reason must equal
``labelwall.policy.lookup.decide``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from labelwall.cluster import Direction, IPAddress, IPNetwork, Protocol
from labelwall.datapath.facade import Datapath
from labelwall.identity.numbers import ANY, LOCAL_FLAG, Reserved
from labelwall.policy.lookup import decide
from labelwall.policy.mapstate import (
    IpcacheEntry,
    MapState,
    NamedPortKey,
    PolicyKey,
    SubjectFlags,
)

from . import packets
from .conftest import fresh_datapath
from .helpers import LO, run, write

pytestmark = [pytest.mark.root, pytest.mark.bpf]

SUBJECTS = [300, 301]
L1, L2, L3 = LOCAL_FLAG | 1, LOCAL_FLAG | 2, LOCAL_FLAG | 3
PEER_IDS = [300, 301, 400, int(Reserved.HOST), int(Reserved.WORLD), L1, L2, L3]
POLICY_PEERS = [int(ANY), 300, 400, L1, L2, L3, int(Reserved.WORLD)]
ADDRS: list[IPAddress] = [
    ipaddress.ip_address(a)
    for a in (
        "10.1.2.3",
        "10.1.2.200",
        "10.1.9.9",
        "10.2.0.1",
        "192.0.2.1",
        "fd00:1::1",
        "fd00:1::8000:1",
        "fd00:2::1",
        "2001:db8::1",
    )
]
NETS: list[IPNetwork] = [
    ipaddress.ip_network(n)
    for n in (
        "10.1.0.0/16",
        "10.1.2.0/24",
        "10.1.2.128/25",
        "0.0.0.0/0",
        "fd00:1::/32",
        "fd00:1::8000:0/97",
        "::/0",
    )
]
PROTOS = [Protocol.TCP, Protocol.UDP, Protocol.SCTP, Protocol.ICMP, Protocol.ICMPV6]
PORT_PROTOS = [Protocol.TCP, Protocol.UDP, Protocol.SCTP]
PORTS = [53, 80, 443, 8000, 8001, 8080]
NAME_IDS = [1, 2]


@st.composite
def policy_keys(draw: st.DrawFn) -> PolicyKey:
    subject = draw(st.sampled_from(SUBJECTS))
    peer = draw(st.sampled_from(POLICY_PEERS))
    direction = draw(st.sampled_from(list(Direction)))
    protocol = draw(st.sampled_from([Protocol.ANY, *PROTOS]))
    if protocol == Protocol.ANY:
        return PolicyKey(subject, peer, direction)
    if protocol in PORT_PROTOS and draw(st.booleans()):
        return PolicyKey(subject, peer, direction, protocol, draw(st.sampled_from(NAME_IDS)), 16,
                         named=True)  # fmt: skip
    bits = draw(st.sampled_from([0, 4, 12, 15, 16]))
    mask = ((0xFFFF << (16 - bits)) & 0xFFFF) if bits else 0
    return PolicyKey(subject, peer, direction, protocol, draw(st.sampled_from(PORTS)) & mask, bits)


@st.composite
def map_states(draw: st.DrawFn) -> MapState:
    # mostly isolated: a non-isolated subject never reaches the policy lookups
    flags = st.sampled_from([SubjectFlags(v) for v in (1, 2, 3, 3, 3, 0, 4, 7)])
    return MapState(
        subjects=draw(st.dictionaries(st.sampled_from(SUBJECTS), flags, min_size=1)),
        policy=draw(st.dictionaries(policy_keys(), st.integers(1, 2**32 - 1), max_size=20)),
        ipcache=draw(
            st.dictionaries(
                st.sampled_from(ADDRS),
                min_size=3,
                values=st.builds(
                    IpcacheEntry,
                    st.sampled_from(PEER_IDS[:4]),
                    st.sampled_from([0, L1, L2, L3]),
                ),
            )
        ),
        cidrs=draw(st.dictionaries(st.sampled_from(NETS), st.sampled_from([L1, L2, L3]))),
        named_ports=draw(
            st.dictionaries(
                st.builds(
                    NamedPortKey,
                    st.sampled_from(ADDRS),
                    st.sampled_from(PORT_PROTOS),
                    st.sampled_from(PORTS),
                ),
                st.sampled_from(NAME_IDS),
            )
        ),
    )


@dataclass(frozen=True)
class Flow:
    subject: int
    direction: Direction
    subject_addr: IPAddress
    peer_addr: IPAddress
    protocol: Protocol
    sport: int
    dport: int


@st.composite
def flows(draw: st.DrawFn) -> Flow:
    subject_addr = draw(st.sampled_from(ADDRS))
    peer = draw(st.sampled_from([a for a in ADDRS if a.version == subject_addr.version]))
    return Flow(
        draw(st.sampled_from(SUBJECTS)),
        draw(st.sampled_from(list(Direction))),
        subject_addr,
        peer,
        draw(st.sampled_from(PROTOS)),
        draw(st.integers(1, 65535)),
        draw(st.sampled_from(PORTS)),
    )


@pytest.fixture(scope="module")
def shared_dp() -> Iterator[Datapath]:
    with fresh_datapath() as datapath:
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
    cases = data.draw(st.lists(st.one_of(flows(), targeted_flows(state)), min_size=1, max_size=8))
    for f in cases:
        dp.set_endpoint(LO, f.subject)
        dp.clear_conntrack()  # the model decides new flows only
        if f.direction is Direction.EGRESS:
            src, dst = f.subject_addr, f.peer_addr
        else:
            src, dst = f.peer_addr, f.subject_addr
        packet = packets.packet(src, dst, int(f.protocol), f.sport, f.dport)
        want = decide(state, f.subject, f.direction, f.peer_addr, dst, f.protocol, f.dport)
        got = run(dp, f.direction, packet)
        event(f"reason {want.reason.name}")
        assert (got.verdict == 1, got.reason) == (want.allowed, want.reason), (f, want)
