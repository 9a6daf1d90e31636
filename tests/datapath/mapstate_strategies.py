"""Hypothesis strategies for MapStates and flows over small universes (entries collide)."""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass

from hypothesis import strategies as st

from labelwall.cluster import Direction, IPAddress, IPNetwork, Protocol
from labelwall.identity.numbers import ANY, LOCAL_FLAG, Reserved
from labelwall.policy.lookup import decide
from labelwall.policy.mapstate import (
    IpcacheEntry,
    MapState,
    NamedPortKey,
    PolicyKey,
    SubjectFlags,
)

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
def crowded_group(draw: st.DrawFn) -> dict[PolicyKey, int]:
    """Up to 14 entries of one (subject, peer, direction): more than a group's 8 slots."""
    subject = draw(st.sampled_from(SUBJECTS))
    peer = draw(st.sampled_from(POLICY_PEERS))
    direction = draw(st.sampled_from(list(Direction)))
    keys = draw(st.lists(policy_keys(), max_size=14))
    return {
        PolicyKey(subject, peer, direction, k.protocol, k.port, k.port_bits, k.named): draw(
            st.integers(1, 2**32 - 1)
        )
        for k in keys
    }


@st.composite
def map_states(draw: st.DrawFn) -> MapState:
    # mostly isolated: a non-isolated subject never reaches the policy lookups
    flags = st.sampled_from([SubjectFlags(v) for v in (1, 2, 3, 3, 3, 0, 4, 7)])
    return MapState(
        subjects=draw(st.dictionaries(st.sampled_from(SUBJECTS), flags, min_size=1)),
        policy=draw(st.dictionaries(policy_keys(), st.integers(1, 2**32 - 1), max_size=20))
        | draw(crowded_group()),
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


def allowed(state: MapState, f: Flow) -> bool:
    """The lookup model's verdict on ``f`` in ``state``."""
    dst = f.peer_addr if f.direction is Direction.EGRESS else f.subject_addr
    return decide(state, f.subject, f.direction, f.peer_addr, dst, f.protocol, f.dport).allowed


def all_flows() -> list[Flow]:
    """Every flow over a slice of the universe (the writer's order properties check all)."""
    return [
        Flow(s, d, a, p, proto, 1234, port)
        for s, d, a, p, proto, port in itertools.product(
            SUBJECTS, list(Direction), ADDRS[:2], ADDRS[2:5], PROTOS[:2], PORTS[:3]
        )
    ]
