"""Real packets through BPF_PROG_TEST_RUN on the real object, maps filled by the real writer."""

from __future__ import annotations

import ipaddress
import itertools
import struct
import time

import pytest

from labelwall.cluster import Direction, IPAddress, Protocol
from labelwall.datapath import abi, codecs, groups, mapspecs
from labelwall.datapath.facade import Datapath
from labelwall.identity.numbers import ANY, LOCAL_FLAG, Reserved
from labelwall.policy.lookup import Reason
from labelwall.policy.mapstate import (
    IpcacheEntry,
    MapState,
    NamedPortKey,
    PolicyKey,
    SubjectFlags,
)

from . import packets as P  # noqa: N812 - P.TCP, P.ipv4(...) read like a header table
from .helpers import (
    ALLOW,
    DROP,
    LO,
    Outcome,
    expected_groups,
    read_groups,
    read_overflow,
    run,
    second_device,
    write,
)

pytestmark = [pytest.mark.root, pytest.mark.bpf]

IN, OUT = Direction.INGRESS, Direction.EGRESS
A, B = 300, 400  # pod identities; the pod behind the veth under test is always A
L1, L2, L3 = LOCAL_FLAG | 1, LOCAL_FLAG | 2, LOCAL_FLAG | 3  # ipBlock CIDR identities


def ip(s: str) -> IPAddress:
    return ipaddress.ip_address(s)


A4, B4, A6, B6 = ip("10.244.0.5"), ip("10.244.1.7"), ip("fd00:10:244::5"), ip("fd00:10:244:1::7")
HOST4, WORLD4, WORLD6 = ip("10.0.0.1"), ip("8.8.8.8"), ip("2001:db8::8")
BLOCK_IN, BLOCK_EXCEPT = ip("203.0.113.9"), ip("203.0.113.200")
IPCACHE = {
    A4: IpcacheEntry(A),
    A6: IpcacheEntry(A),
    B4: IpcacheEntry(B),
    B6: IpcacheEntry(B),
    HOST4: IpcacheEntry(Reserved.HOST),
}
_sports = itertools.count(20000)


def state(
    subjects: dict[int, SubjectFlags] | None = None,
    policy: dict[PolicyKey, int] | None = None,
    **kw: object,
) -> MapState:
    return MapState(subjects=subjects or {}, policy=policy or {}, ipcache=IPCACHE, **kw)  # type: ignore[arg-type]


def flow(
    direction: Direction,
    peer: IPAddress,
    proto: int,
    dport: int,
    subject_addr: IPAddress = A4,
    flags: int = P.SYN,
    sport: int | None = None,
) -> bytes:
    """First packet of a new flow between the subject pod (A) and ``peer``, fresh sport."""
    sp = next(_sports) if sport is None else sport
    if direction is OUT:
        return P.packet(subject_addr, peer, proto, sp, dport, flags)
    return P.packet(peer, subject_addr, proto, sp, dport, flags)


@pytest.fixture
def pod(dp: Datapath) -> Datapath:
    dp.set_endpoint(LO, A, (A4, A6))  # the pod behind lo sends from its own addresses
    return dp


# ---- endpoints and non-IP ----


def test_a_packet_on_an_unknown_veth_is_dropped_fail_closed(dp: Datapath) -> None:
    assert run(dp, OUT, flow(OUT, B4, P.TCP, 80)) == Outcome(DROP, Reason.UNKNOWN_ENDPOINT)
    assert run(dp, IN, flow(IN, B4, P.TCP, 80)) == Outcome(DROP, Reason.UNKNOWN_ENDPOINT)


def test_arp_passes_an_isolated_pod(pod: Datapath) -> None:
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED}))
    arp = P.eth(P.ETH_P_ARP, b"\0" * 28)
    assert run(pod, IN, arp) == Outcome(ALLOW, Reason.NON_IP)
    assert run(pod, OUT, arp) == Outcome(ALLOW, Reason.NON_IP)


def test_icmpv6_neighbour_discovery_with_hop_limit_255_passes_an_isolated_pod(
    pod: Datapath,
) -> None:
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED}))
    for nd_type in range(133, 138):
        nd_in = P.ipv6(str(B6), str(A6), P.ICMPV6, P.icmp(nd_type) + b"\0" * 16, hop_limit=255)
        assert run(pod, IN, nd_in) == Outcome(ALLOW, Reason.ICMP_ND)
        # leaving the pod, ND passes towards where ND goes (link-local, the ND groups);
        # towards a routed address it is judged by policy (tests/datapath/test_source.py)
        for src, dst in [(A6, "fe80::1"), (A6, "ff02::1:ff00:1"), ("fe80::5", "ff02::2"),
                         ("::", "ff02::1:ff00:5"), ("fe80::5", "ff02::1")]:  # fmt: skip
            nd_out = P.ipv6(str(src), dst, P.ICMPV6, P.icmp(nd_type) + b"\0" * 16, hop_limit=255)
            assert run(pod, OUT, nd_out) == Outcome(ALLOW, Reason.ICMP_ND), (nd_type, src, dst)
    echo = P.ipv6(str(B6), str(A6), P.ICMPV6, P.icmp(128, ident=9), hop_limit=255)
    assert run(pod, IN, echo) == Outcome(DROP, Reason.POLICY_DENIED)


@pytest.mark.parametrize("hop_limit", [254, 64, 1])
def test_icmpv6_neighbour_discovery_below_hop_limit_255_is_judged_by_policy(
    pod: Datapath, hop_limit: int
) -> None:
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED},
                     {PolicyKey(A, B, OUT, Protocol.ICMPV6, 0, 0): 4}))  # fmt: skip
    for nd_type in range(133, 138):
        body = P.icmp(nd_type) + b"\0" * 16
        nd_in = P.ipv6(str(WORLD6), str(A6), P.ICMPV6, body, hop_limit=hop_limit)
        assert run(pod, IN, nd_in) == Outcome(DROP, Reason.POLICY_DENIED)
        nd_out = P.ipv6(str(A6), str(WORLD6), P.ICMPV6, body, hop_limit=hop_limit)
        assert run(pod, OUT, nd_out) == Outcome(DROP, Reason.POLICY_DENIED)
    body = P.icmp(135) + b"\0" * 16  # a solicitation to B: A's egress policy allows ICMPv6
    allowed = P.ipv6(str(A6), str(B6), P.ICMPV6, body, hop_limit=hop_limit)
    assert run(pod, OUT, allowed) == Outcome(ALLOW, Reason.POLICY)


# IPv4 (0x0800) and IPv6 (0x86dd) aside: RARP, PPPoE session, MPLS, a local experimental type.
OTHER_ETHERTYPES = [0x8035, 0x8864, 0x8847, 0x88B5]


@pytest.mark.parametrize("ethertype", OTHER_ETHERTYPES, ids=hex)
def test_non_ip_frames_other_than_arp_are_dropped_by_a_pod_isolated_in_that_direction(
    pod: Datapath, ethertype: int
) -> None:
    frame = P.eth(ethertype, b"\0" * 46)
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED}))
    assert run(pod, IN, frame) == Outcome(DROP, Reason.UNSUPPORTED)
    assert run(pod, OUT, frame) == Outcome(ALLOW, Reason.NOT_ISOLATED)
    write(pod, state({A: SubjectFlags.EGRESS_ISOLATED}))
    assert run(pod, OUT, frame) == Outcome(DROP, Reason.UNSUPPORTED)
    assert run(pod, IN, frame) == Outcome(ALLOW, Reason.NOT_ISOLATED)
    write(pod, state({A: SubjectFlags.EGRESS_ISOLATED | SubjectFlags.AUDIT}))
    assert run(pod, OUT, frame) == Outcome(ALLOW, Reason.AUDIT)


# ---- isolation ----


@pytest.mark.parametrize("direction", [IN, OUT])
@pytest.mark.parametrize("peer", [B4, B6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("proto", [P.TCP, P.UDP, P.SCTP, "icmp"])
def test_a_pod_that_no_policy_isolates_accepts_every_new_flow(
    pod: Datapath, direction: Direction, peer: IPAddress, proto: int | str
) -> None:
    # Isolated in the *other* direction only: this direction stays open.
    other = SubjectFlags.EGRESS_ISOLATED if direction is IN else SubjectFlags.INGRESS_ISOLATED
    write(pod, state({A: other}))
    number = (P.ICMP if peer.version == 4 else P.ICMPV6) if proto == "icmp" else int(proto)
    subject_addr = A4 if peer.version == 4 else A6
    got = run(pod, direction, flow(direction, peer, number, 80, subject_addr))
    assert got == Outcome(ALLOW, Reason.NOT_ISOLATED)


@pytest.mark.parametrize("direction", [IN, OUT])
@pytest.mark.parametrize(("peer", "subject_addr"), [(B4, A4), (B6, A6)], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("proto", [P.TCP, P.UDP, P.SCTP])
def test_an_isolated_pod_accepts_exactly_the_allowed_peer_protocol_and_port(
    pod: Datapath, direction: Direction, peer: IPAddress, subject_addr: IPAddress, proto: int
) -> None:
    iso = SubjectFlags.INGRESS_ISOLATED if direction is IN else SubjectFlags.EGRESS_ISOLATED
    key = PolicyKey(A, B, direction, Protocol(proto), 8080, 16)
    write(pod, state({A: iso}, {key: 11}))
    assert run(pod, direction, flow(direction, peer, proto, 8080, subject_addr)) == Outcome(
        ALLOW, Reason.POLICY
    )
    assert run(pod, direction, flow(direction, peer, proto, 8081, subject_addr)) == Outcome(
        DROP, Reason.POLICY_DENIED
    )
    other_proto = P.UDP if proto != P.UDP else P.TCP
    assert run(pod, direction, flow(direction, peer, other_proto, 8080, subject_addr)) == Outcome(
        DROP, Reason.POLICY_DENIED
    )
    unknown_peer = WORLD4 if peer.version == 4 else WORLD6
    assert run(pod, direction, flow(direction, unknown_peer, proto, 8080, subject_addr)) == (
        Outcome(DROP, Reason.POLICY_DENIED)
    )


def test_a_wildcard_peer_entry_admits_pods_and_the_world(pod: Datapath) -> None:
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED},
                     {PolicyKey(A, ANY, IN, Protocol.TCP, 443, 16): 1}))  # fmt: skip
    assert run(pod, IN, flow(IN, B4, P.TCP, 443)).verdict is ALLOW
    assert run(pod, IN, flow(IN, WORLD4, P.TCP, 443)).verdict is ALLOW
    assert run(pod, IN, flow(IN, WORLD6, P.TCP, 443, A6)).verdict is ALLOW
    assert run(pod, IN, flow(IN, WORLD4, P.TCP, 444)).verdict is DROP


def test_an_any_port_entry_admits_every_port_of_its_protocol_only(pod: Datapath) -> None:
    write(pod, state({A: SubjectFlags.EGRESS_ISOLATED},
                     {PolicyKey(A, B, OUT, Protocol.UDP, 0, 0): 1}))  # fmt: skip
    assert run(pod, OUT, flow(OUT, B4, P.UDP, 1)).verdict is ALLOW
    assert run(pod, OUT, flow(OUT, B4, P.UDP, 65535)).verdict is ALLOW
    assert run(pod, OUT, flow(OUT, B4, P.TCP, 53)).verdict is DROP


def test_an_any_protocol_entry_admits_icmp_and_every_port(pod: Datapath) -> None:
    write(pod, state({A: SubjectFlags.EGRESS_ISOLATED}, {PolicyKey(A, B, OUT): 1}))
    assert run(pod, OUT, flow(OUT, B4, P.ICMP, 0)) == Outcome(ALLOW, Reason.POLICY)
    assert run(pod, OUT, flow(OUT, B6, P.ICMPV6, 0, A6)) == Outcome(ALLOW, Reason.POLICY)
    assert run(pod, OUT, flow(OUT, B4, P.SCTP, 9)) == Outcome(ALLOW, Reason.POLICY)


def test_a_protocol_only_entry_matches_icmp_by_protocol(pod: Datapath) -> None:
    write(pod, state({A: SubjectFlags.EGRESS_ISOLATED},
                     {PolicyKey(A, B, OUT, Protocol.ICMP, 0, 0): 1}))  # fmt: skip
    assert run(pod, OUT, flow(OUT, B4, P.ICMP, 0)).verdict is ALLOW
    assert run(pod, OUT, flow(OUT, B6, P.ICMPV6, 0, A6)).verdict is DROP


def test_a_port_range_admits_its_prefix_and_nothing_next_to_it(pod: Datapath) -> None:
    # 8000..8015 = 0x1f40/12 bits
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED},
                     {PolicyKey(A, B, IN, Protocol.TCP, 8000, 12): 5}))  # fmt: skip
    assert run(pod, IN, flow(IN, B4, P.TCP, 8000)).verdict is ALLOW
    assert run(pod, IN, flow(IN, B4, P.TCP, 8015)).verdict is ALLOW
    assert run(pod, IN, flow(IN, B4, P.TCP, 8016)).verdict is DROP
    assert run(pod, IN, flow(IN, B4, P.TCP, 7999)).verdict is DROP


def test_a_named_port_matches_the_number_the_destination_pod_gives_it(pod: Datapath) -> None:
    name_id = 7
    other = ip("10.244.2.2")
    write(
        pod,
        state(
            {A: SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED},
            {
                PolicyKey(A, B, IN, Protocol.TCP, name_id, 16, named=True): 1,
                PolicyKey(A, ANY, OUT, Protocol.TCP, name_id, 16, named=True): 2,
            },
            named_ports={
                NamedPortKey(A4, Protocol.TCP, 8080): name_id,  # ingress: named on the subject
                NamedPortKey(B4, Protocol.TCP, 9090): name_id,  # egress: named on the peer
            },
        ),
    )
    assert run(pod, IN, flow(IN, B4, P.TCP, 8080)) == Outcome(ALLOW, Reason.POLICY)
    assert run(pod, IN, flow(IN, B4, P.TCP, 9090)).verdict is DROP
    assert run(pod, IN, flow(IN, B4, P.UDP, 8080)).verdict is DROP
    assert run(pod, OUT, flow(OUT, B4, P.TCP, 9090)) == Outcome(ALLOW, Reason.POLICY)
    assert run(pod, OUT, flow(OUT, other, P.TCP, 9090)).verdict is DROP  # other pod: unnamed


def test_an_ip_block_admits_its_prefix_but_not_its_except_hole(pod: Datapath) -> None:
    write(
        pod,
        state(
            {A: SubjectFlags.EGRESS_ISOLATED},
            {PolicyKey(A, L1, OUT): 3, PolicyKey(A, L3, OUT, Protocol.TCP, 80, 16): 4},
            cidrs={
                ipaddress.ip_network("203.0.113.0/24"): L1,
                ipaddress.ip_network("203.0.113.128/25"): L2,  # except: no policy names L2
            },
        ),
    )
    assert run(pod, OUT, flow(OUT, BLOCK_IN, P.UDP, 53)) == Outcome(ALLOW, Reason.POLICY)
    assert run(pod, OUT, flow(OUT, BLOCK_EXCEPT, P.UDP, 53)) == Outcome(DROP, Reason.POLICY_DENIED)
    assert run(pod, OUT, flow(OUT, WORLD4, P.UDP, 53)).verdict is DROP


def test_an_ip_block_containing_a_pod_ip_matches_through_the_ipcache(pod: Datapath) -> None:
    cache = dict(IPCACHE)
    cache[B4] = IpcacheEntry(B, L3)
    policy = {PolicyKey(A, L3, OUT, Protocol.TCP, 80, 16): 4}
    write(pod, MapState(subjects={A: SubjectFlags.EGRESS_ISOLATED}, policy=policy, ipcache=cache))
    assert run(pod, OUT, flow(OUT, B4, P.TCP, 80)) == Outcome(ALLOW, Reason.POLICY)
    assert run(pod, OUT, flow(OUT, B6, P.TCP, 80, A6)).verdict is DROP


def test_the_node_itself_always_reaches_an_isolated_pod(pod: Datapath) -> None:
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED}))
    assert run(pod, IN, flow(IN, HOST4, P.TCP, 8080)) == Outcome(ALLOW, Reason.HOST)
    assert run(pod, OUT, flow(OUT, HOST4, P.UDP, 53)) == Outcome(ALLOW, Reason.HOST)


def test_audit_mode_turns_a_would_drop_into_a_pass_with_an_audit_event(pod: Datapath) -> None:
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED | SubjectFlags.AUDIT}))
    with pod.events() as events:
        events.poll(0)
        assert run(pod, IN, flow(IN, B4, P.TCP, 22)) == Outcome(ALLOW, Reason.AUDIT)
        got = events.poll(100)
    assert [(e.verdict, e.reason, e.subject, e.peer, e.dport) for e in got] == [
        (abi.TcVerdict.ALLOW, Reason.AUDIT, A, B, 22)
    ]


# ---- conntrack ----


def test_an_established_flow_passes_after_its_policy_is_removed(pod: Datapath) -> None:
    allow = state(
        {A: SubjectFlags.EGRESS_ISOLATED}, {PolicyKey(A, B, OUT, Protocol.TCP, 80, 16): 1}
    )
    write(pod, allow)
    assert run(pod, OUT, P.packet(A4, B4, P.TCP, 41000, 80)).reason is Reason.POLICY
    write(pod, state({A: SubjectFlags.EGRESS_ISOLATED}))
    assert run(pod, OUT, P.packet(A4, B4, P.TCP, 41000, 80, P.ACK)) == Outcome(
        ALLOW, Reason.CT_ESTABLISHED
    )
    assert run(pod, OUT, P.packet(A4, B4, P.TCP, 41001, 80)).verdict is DROP


@pytest.mark.parametrize(("a", "b"), [(A4, B4), (A6, B6)], ids=["ipv4", "ipv6"])
def test_the_reply_of_an_allowed_outgoing_flow_enters_an_ingress_isolated_pod(
    pod: Datapath, a: IPAddress, b: IPAddress
) -> None:
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED}))  # egress open: NOT_ISOLATED, tracked
    assert run(pod, OUT, P.packet(a, b, P.UDP, 5353, 53)).reason is Reason.NOT_ISOLATED
    assert run(pod, IN, P.packet(b, a, P.UDP, 53, 5353)) == Outcome(ALLOW, Reason.CT_REPLY)
    assert run(pod, IN, P.packet(b, a, P.UDP, 53, 5354)) == Outcome(DROP, Reason.POLICY_DENIED)
    assert run(pod, IN, P.packet(b, a, P.TCP, 53, 5353)) == Outcome(DROP, Reason.POLICY_DENIED)


def test_the_reply_of_an_allowed_incoming_flow_leaves_an_egress_isolated_pod(pod: Datapath) -> None:
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED},
                     {PolicyKey(A, B, IN, Protocol.SCTP, 3868, 16): 9}))  # fmt: skip
    assert run(pod, IN, P.packet(B4, A4, P.SCTP, 3000, 3868)).reason is Reason.POLICY
    assert run(pod, OUT, P.packet(A4, B4, P.SCTP, 3868, 3000)) == Outcome(ALLOW, Reason.CT_REPLY)
    assert run(pod, OUT, P.packet(A4, B4, P.SCTP, 3868, 3001)).verdict is DROP


def test_an_icmp_echo_reply_matches_its_request_by_echo_id(pod: Datapath) -> None:
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED},
                     {PolicyKey(A, B, OUT, Protocol.ICMP, 0, 0): 1}))  # fmt: skip
    request = P.ipv4(str(A4), str(B4), P.ICMP, P.icmp(8, ident=77))
    assert run(pod, OUT, request).reason is Reason.POLICY
    reply = P.ipv4(str(B4), str(A4), P.ICMP, P.icmp(0, ident=77))
    assert run(pod, IN, reply) == Outcome(ALLOW, Reason.CT_REPLY)
    other = P.ipv4(str(B4), str(A4), P.ICMP, P.icmp(0, ident=78))
    assert run(pod, IN, other).verdict is DROP


@pytest.mark.parametrize("peer", ["10.244.1.2", "10.244.1.9", "fd00:10:244::1", "fd00:10:244::9"])
@pytest.mark.parametrize(("sport", "dport"), [(40000, 80), (80, 40000)])
def test_one_conntrack_entry_serves_both_directions_whichever_end_sorts_first(
    pod: Datapath, peer: str, sport: int, dport: int
) -> None:
    a = A4 if ip(peer).version == 4 else A6
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED},
                     {PolicyKey(A, Reserved.WORLD, OUT, Protocol.UDP, dport, 16): 1}))  # fmt: skip
    assert run(pod, OUT, P.packet(a, ip(peer), P.UDP, sport, dport)).reason is Reason.POLICY
    (key,) = pod.conntrack()
    assert run(pod, OUT, P.packet(a, ip(peer), P.UDP, sport, dport)) == Outcome(
        ALLOW, Reason.CT_ESTABLISHED
    )
    assert run(pod, IN, P.packet(ip(peer), a, P.UDP, dport, sport)) == Outcome(
        ALLOW, Reason.CT_REPLY
    )
    assert list(pod.conntrack()) == [key]  # one entry, found from both ends
    assert run(pod, IN, P.packet(ip(peer), a, P.UDP, sport, dport)).verdict is DROP


def test_a_conntrack_entry_made_at_one_veth_is_not_found_at_another(pod: Datapath) -> None:
    # Pod A (behind lo, not isolated) spoofs isolated pod B's address: B:80 -> world:5555.
    # Source validation drops it and tracks nothing. Even when A's veth is allowed to send
    # from B4 (two veths claiming one address: a broken CNI), its entry must not make
    # world:5555 -> B:80 a "reply" at B's veth, nor B's answer.
    with second_device() as b_veth:
        pod.set_endpoint(b_veth, B, (B4,))
        both = SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED
        write(pod, state({B: both}))
        spoofed = P.packet(B4, WORLD4, P.TCP, 80, 5555, P.SYN | P.ACK)
        assert run(pod, OUT, spoofed) == Outcome(DROP, Reason.SOURCE_INVALID)
        assert pod.conntrack() == {}
        pod.set_endpoint(LO, A, (A4, A6, B4))
        assert run(pod, OUT, spoofed) == Outcome(ALLOW, Reason.NOT_ISOLATED)
        (key,) = pod.conntrack()
        assert key.ifindex == LO
        inbound = P.packet(WORLD4, B4, P.TCP, 5555, 80, P.ACK)
        assert run(pod, IN, inbound, b_veth) == Outcome(DROP, Reason.POLICY_DENIED)
        assert run(pod, OUT, spoofed, b_veth) == Outcome(DROP, Reason.POLICY_DENIED)
        # the same packets at the veth that made the entry are still its flow
        assert run(pod, IN, inbound) == Outcome(ALLOW, Reason.CT_REPLY)


def _ct_entry(dp: Datapath, sport: int) -> codecs.CtValue:
    """The flow's entry, its FLIPPED bit (orientation bookkeeping) cleared."""
    (entry,) = [v for k, v in dp.conntrack().items() if sport in (k.sport, k.dport)]
    return codecs.CtValue(entry.expires_ns, entry.flags & ~abi.CtFlags.FLIPPED)


def test_tcp_lifetime_grows_after_the_reply_and_shrinks_after_both_fins_or_a_rst(
    pod: Datapath,
) -> None:
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED}))
    ns = 1_000_000_000
    run(pod, OUT, P.packet(A4, B4, P.TCP, 42000, 80, P.SYN))
    syn = _ct_entry(pod, 42000)
    assert 50 * ns < syn.expires_ns - time.monotonic_ns() <= abi.CT_TCP_SYN_TIMEOUT_S * ns
    run(pod, IN, P.packet(B4, A4, P.TCP, 80, 42000, P.SYN | P.ACK))
    est = _ct_entry(pod, 42000)
    assert est.flags == abi.CtFlags.REPLY_SEEN
    assert est.expires_ns - time.monotonic_ns() > 3600 * ns
    assert run(pod, OUT, P.packet(A4, B4, P.TCP, 42000, 80, P.FIN | P.ACK)).reason is (
        Reason.CT_ESTABLISHED
    )
    # One FIN half-closes: the answer may still stream back, the lifetime stays long.
    half = _ct_entry(pod, 42000)
    assert half.flags == abi.CtFlags.REPLY_SEEN | abi.CtFlags.FIN_FWD
    assert half.expires_ns - time.monotonic_ns() > 3600 * ns
    assert run(pod, IN, P.packet(B4, A4, P.TCP, 80, 42000, P.ACK)).reason is Reason.CT_REPLY
    # The other side's FIN closes the flow: lifetime capped at the close timeout.
    assert run(pod, IN, P.packet(B4, A4, P.TCP, 80, 42000, P.FIN | P.ACK)).reason is (
        Reason.CT_REPLY
    )
    fin = _ct_entry(pod, 42000)
    assert fin.flags == (
        abi.CtFlags.REPLY_SEEN | abi.CtFlags.FIN_FWD | abi.CtFlags.FIN_REV | abi.CtFlags.CLOSING
    )
    assert 0 < fin.expires_ns - time.monotonic_ns() <= abi.CT_TCP_CLOSE_TIMEOUT_S * ns
    run(pod, OUT, P.packet(A4, B4, P.TCP, 42001, 80, P.SYN))
    assert run(pod, IN, P.packet(B4, A4, P.TCP, 80, 42001, P.RST)).reason is Reason.CT_REPLY
    rst = _ct_entry(pod, 42001)
    assert rst.flags & abi.CtFlags.CLOSING
    assert 0 < rst.expires_ns - time.monotonic_ns() <= abi.CT_TCP_CLOSE_TIMEOUT_S * ns


# ---- fragments, malformed and unusual headers ----


def test_a_non_first_ipv4_fragment_is_dropped_by_an_isolated_pod_only(pod: Datapath) -> None:
    frag = P.ipv4(str(B4), str(A4), P.UDP, b"\0" * 16, frag_offset=185)
    write(pod, state({A: SubjectFlags.EGRESS_ISOLATED}))
    assert run(pod, IN, frag) == Outcome(ALLOW, Reason.NOT_ISOLATED)
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED}, {PolicyKey(A, B, IN): 1}))
    assert run(pod, IN, frag) == Outcome(DROP, Reason.FRAGMENT)


def test_a_first_ipv4_fragment_is_judged_by_its_ports(pod: Datapath) -> None:
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED},
                     {PolicyKey(A, B, IN, Protocol.UDP, 53, 16): 1}))  # fmt: skip
    first = P.ipv4(str(B4), str(A4), P.UDP, P.udp(999, 53, b"\0" * 32), more_frags=True)
    assert run(pod, IN, first) == Outcome(ALLOW, Reason.POLICY)
    first_bad = P.ipv4(str(B4), str(A4), P.UDP, P.udp(999, 54, b"\0" * 32), more_frags=True)
    assert run(pod, IN, first_bad).verdict is DROP


def test_ipv6_fragments_non_first_dropped_first_judged_by_ports(pod: Datapath) -> None:
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED},
                     {PolicyKey(A, B, IN, Protocol.TCP, 80, 16): 1}))  # fmt: skip
    first = P.ipv6(str(B6), str(A6), 44, P.ipv6_frag(P.TCP, 0, True) + P.tcp(999, 80))
    assert run(pod, IN, first) == Outcome(ALLOW, Reason.POLICY)
    # another datagram (id 2): its first fragment was never seen (test_fragments_icmp.py
    # pins that id 1's own later fragments now follow their allowed first fragment)
    later = P.ipv6(str(B6), str(A6), 44, P.ipv6_frag(P.TCP, 100, False, ident=2) + b"\0" * 32)
    assert run(pod, IN, later) == Outcome(DROP, Reason.FRAGMENT)


def test_ipv6_extension_headers_are_skipped_up_to_the_bound(pod: Datapath) -> None:
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED},
                     {PolicyKey(A, B, IN, Protocol.TCP, 80, 16): 1}))  # fmt: skip
    hop_by_hop, dest_opts, routing = 0, 60, 43
    # hop-by-hop -> destination options -> routing (16 bytes) -> destination options -> TCP
    chain = (
        P.ipv6_ext(dest_opts)
        + P.ipv6_ext(routing)
        + P.ipv6_ext(dest_opts, b"\0" * 14)
        + P.ipv6_ext(P.TCP)
    )
    allowed = P.ipv6(str(B6), str(A6), hop_by_hop, chain + P.tcp(999, 80))
    assert run(pod, IN, allowed) == Outcome(ALLOW, Reason.POLICY)
    denied = P.ipv6(str(B6), str(A6), hop_by_hop, P.ipv6_ext(P.TCP) + P.tcp(999, 81))
    assert run(pod, IN, denied) == Outcome(DROP, Reason.POLICY_DENIED)
    too_long = b"".join(P.ipv6_ext(dest_opts) for _ in range(9)) + P.ipv6_ext(P.TCP)
    refused = P.ipv6(str(B6), str(A6), dest_opts, too_long + P.tcp(999, 80))
    assert run(pod, IN, refused) == Outcome(DROP, Reason.UNSUPPORTED)


def _patched(packet: bytes, offset: int, data: bytes) -> bytes:
    return packet[:offset] + data + packet[offset + len(data) :]


@pytest.mark.parametrize(
    "packet",
    [
        P.ipv4("10.244.1.7", "10.244.0.5", P.TCP, P.tcp(1, 80)[:10]),  # TCP cut at 10 bytes
        P.ipv4("10.244.1.7", "10.244.0.5", P.UDP, b"\0" * 4),  # UDP cut at 4 bytes
        _patched(P.ipv4("10.244.1.7", "10.244.0.5", P.TCP, P.tcp(1, 80)), 16, b"\0\x0a"),  # tot_len
        _patched(P.ipv4("10.244.1.7", "10.244.0.5", P.TCP, P.tcp(1, 80)), 14, b"\x65"),  # version
        P.ipv4("10.244.1.7", "10.244.0.5", P.TCP, P.tcp(1, 80), ihl=4),  # IHL below 5
        P.ipv6("fd00:10:244:1::7", "fd00:10:244::5", P.TCP, b"\0" * 6),  # TCP cut, IPv6
        P.ipv6("fd00:10:244:1::7", "fd00:10:244::5", 0, b"\x06\x05" + b"\0" * 6),  # ext past end
    ],
    ids=["tcp", "udp", "ipv4-tot-len", "ipv4-version", "ihl", "ipv6-tcp", "ipv6-ext"],
)
def test_a_truncated_or_malformed_header_never_passes_an_isolated_pod(
    pod: Datapath, packet: bytes
) -> None:
    # (A packet shorter than its IP header cannot be tested here: BPF_PROG_TEST_RUN refuses
    # it with EINVAL on this kernel. The classifier treats it like these: MALFORMED.)
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED}, {PolicyKey(A, ANY, IN): 1}))
    assert run(pod, IN, packet) == Outcome(DROP, Reason.MALFORMED)
    write(pod, state({A: SubjectFlags.EGRESS_ISOLATED}))
    assert run(pod, IN, packet) == Outcome(ALLOW, Reason.NOT_ISOLATED)


def test_ipv4_options_are_skipped(pod: Datapath) -> None:
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED},
                     {PolicyKey(A, B, IN, Protocol.TCP, 80, 16): 1}))  # fmt: skip
    assert run(pod, IN, P.ipv4(str(B4), str(A4), P.TCP, P.tcp(1, 80), ihl=7)).verdict is ALLOW
    assert run(pod, IN, P.ipv4(str(B4), str(A4), P.TCP, P.tcp(1, 81), ihl=7)).verdict is DROP


def test_a_vlan_tagged_frame_does_not_sneak_ip_past_an_isolated_pod(pod: Datapath) -> None:
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED}))
    inner = P.ipv4(str(B4), str(A4), P.TCP, P.tcp(1, 80))[12:]  # ethertype + IP
    tagged = P.MAC_DST + P.MAC_SRC + struct.pack("!HH", P.ETH_P_8021Q, 5) + inner
    assert run(pod, IN, tagged) == Outcome(DROP, Reason.UNSUPPORTED)


# ---- counters and events ----


def test_counters_add_packets_and_bytes_per_direction_and_reason(pod: Datapath) -> None:
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED}))
    packet = flow(IN, B4, P.TCP, 80)
    for _ in range(3):
        pod.test_run("handle_to_pod", packet, LO)
    counters = pod.counters()
    assert counters[(IN, Reason.POLICY_DENIED)] == codecs.Counter(3, 3 * len(packet))
    assert (OUT, Reason.POLICY_DENIED) not in counters


def test_events_carry_identities_tuple_direction_verdict_reason_and_cookie(pod: Datapath) -> None:
    write(pod, state({A: SubjectFlags.EGRESS_ISOLATED},
                     {PolicyKey(A, B, OUT, Protocol.TCP, 443, 16): 0xC0FFEE}))  # fmt: skip
    with pod.events() as events:
        events.poll(0)
        pod.test_run("handle_from_pod", P.packet(A6, B6, P.TCP, 50000, 443), LO)
        pod.test_run("handle_from_pod", P.packet(A6, B6, P.TCP, 50000, 443, P.ACK), LO)
        pod.test_run("handle_from_pod", P.packet(A4, WORLD4, P.UDP, 50001, 53), LO)
        got = events.poll(100)
    allow, drop = got  # the established second packet reports nothing
    assert (allow.subject, allow.peer, allow.cookie, allow.verdict, allow.reason) == (
        A, B, 0xC0FFEE, abi.TcVerdict.ALLOW, Reason.POLICY
    )  # fmt: skip
    assert (allow.family, allow.proto, allow.saddr, allow.daddr, allow.sport, allow.dport) == (
        6, P.TCP, A6, B6, 50000, 443
    )  # fmt: skip
    assert (drop.dir, drop.peer, drop.verdict, drop.reason, drop.daddr, drop.ifindex) == (
        OUT, Reserved.WORLD, abi.TcVerdict.DROP, Reason.POLICY_DENIED, WORLD4, LO
    )  # fmt: skip


def test_events_carry_the_icmp_type_and_code_and_none_for_other_protocols(
    pod: Datapath,
) -> None:
    write(pod, state({A: SubjectFlags.EGRESS_ISOLATED}))  # every new flow out is dropped
    sent = [
        P.ipv4(str(A4), str(B4), P.ICMP, P.icmp(8, ident=5)),  # echo request
        P.ipv4(str(A4), str(B4), P.ICMP, P.icmp(13, code=0)),  # timestamp request
        P.ipv6(str(A6), str(B6), P.ICMPV6, P.icmp(128, ident=6)),  # echo request
        P.ipv6(str(A6), str(B6), P.ICMPV6, P.icmp(1, code=4)),  # unreachable, no quote
        P.packet(A4, B4, P.UDP, 50000, 53),
    ]
    with pod.events() as events:
        events.poll(0)
        for packet in sent:
            pod.test_run("handle_from_pod", packet, LO)
        got = events.poll(100)
    assert [(e.proto, e.icmp_type, e.icmp_code) for e in got] == [
        (P.ICMP, 8, 0), (P.ICMP, 13, 0), (P.ICMPV6, 128, 0), (P.ICMPV6, 1, 4),
        (P.UDP, None, None),
    ]  # fmt: skip


def test_the_first_reply_of_every_protocol_is_reported_once(pod: Datapath) -> None:
    """UDP, ICMP echo and SCTP replies are flows too (is_reply); TCP's is its SYN-ACK."""
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED}))  # egress open: tracked, NOT_ISOLATED
    flows = [
        (P.packet(A4, B4, P.UDP, 5353, 53), P.packet(B4, A4, P.UDP, 53, 5353)),
        (P.ipv4(str(A4), str(B4), P.ICMP, P.icmp(8, ident=9)),
         P.ipv4(str(B4), str(A4), P.ICMP, P.icmp(0, ident=9))),
        (P.packet(A6, B6, P.SCTP, 3000, 3868), P.packet(B6, A6, P.SCTP, 3868, 3000)),
        (P.packet(A4, B4, P.TCP, 40000, 80), P.packet(B4, A4, P.TCP, 80, 40000, P.SYN | P.ACK)),
    ]  # fmt: skip
    for out, back in flows:
        with pod.events() as events:
            events.poll(0)
            pod.test_run("handle_from_pod", out, LO)
            pod.test_run("handle_to_pod", back, LO)
            pod.test_run("handle_to_pod", back, LO)  # a second reply: no new record
            got = events.poll(100)
        assert [(e.dir, e.reason) for e in got] == [
            (OUT, Reason.NOT_ISOLATED), (IN, Reason.CT_REPLY)
        ], (out, got)  # fmt: skip
    tcp_reply = got[1]
    assert tcp_reply.tcp_flags == P.SYN | P.ACK


def test_events_are_rate_limited_per_cpu_and_the_excess_is_counted(pod: Datapath) -> None:
    pod.set_config(codecs.DatapathConfig(events_per_s=1, events_burst=3))
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED}))
    packet = flow(IN, B4, P.TCP, 80)
    with pod.events() as events:
        events.poll(0)
        for _ in range(20):
            pod.test_run("handle_to_pod", packet, LO)
        got = events.poll(100)
    assert 1 <= len(got) <= 4  # the bucket holds 3 (+1 refilled if a second passed)
    assert pod.event_rate().suppressed >= 16


# ---- the policy group index (lw_polgrp_v1) ----


def _cookie_of(pod: Datapath, packet: bytes) -> tuple[abi.TcVerdict, int]:
    with pod.events() as events:
        events.poll(0)
        result = pod.test_run("handle_from_pod", packet, LO)
        (ev,) = events.poll(100)
    return result.verdict, ev.cookie


@pytest.mark.parametrize("extra", [0, 9], ids=["in-slots", "overflowing-to-the-trie"])
def test_the_longest_prefix_entry_of_a_group_decides_and_reports_its_cookie(
    pod: Datapath, extra: int
) -> None:
    """Exact port over range over any-port over any-protocol, in slots and in the trie."""
    policy = {
        PolicyKey(A, B, OUT): 1,
        PolicyKey(A, B, OUT, Protocol.TCP, 0, 0): 2,
        PolicyKey(A, B, OUT, Protocol.TCP, 8000, 10): 3,  # 8000-8063
        PolicyKey(A, B, OUT, Protocol.TCP, 8001, 16): 4,
        **{PolicyKey(A, B, OUT, Protocol.UDP, 1000 + i, 16): 100 + i for i in range(extra)},
    }
    write(pod, state({A: SubjectFlags.EGRESS_ISOLATED}, policy))
    ((flags, _slots),) = [
        groups.decode_group(v)
        for g, v in read_groups(pod).items()
        if g == groups.GroupKey(A, B, OUT)
    ]
    assert bool(flags & abi.GroupFlags.OVERFLOW) is (len(policy) > abi.GROUP_SLOTS)
    assert read_overflow(pod) == (policy if extra else {})
    assert _cookie_of(pod, flow(OUT, B4, P.TCP, 8001)) == (ALLOW, 4)
    assert _cookie_of(pod, flow(OUT, B4, P.TCP, 8063)) == (ALLOW, 3)
    assert _cookie_of(pod, flow(OUT, B4, P.TCP, 8064)) == (ALLOW, 2)
    assert _cookie_of(pod, flow(OUT, B4, P.SCTP, 8001)) == (ALLOW, 1)
    if extra:
        assert _cookie_of(pod, flow(OUT, B4, P.UDP, 1008)) == (ALLOW, 108)


def test_a_group_that_shrinks_back_into_its_slots_leaves_the_trie_fallback(pod: Datapath) -> None:
    many = {PolicyKey(A, B, IN, Protocol.TCP, 2000 + i, 16): 1 + i for i in range(12)}
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED}, many))
    few = {k: v for k, v in many.items() if k.port < 2003}
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED}, few))
    assert read_groups(pod) == expected_groups(pod.read_state())
    ((flags, slots),) = [groups.decode_group(v) for v in read_groups(pod).values()]
    assert (flags, sorted(s.port for s in slots)) == (abi.GroupFlags.NONE, [2000, 2001, 2002])
    assert run(pod, IN, flow(IN, B4, P.TCP, 2002)) == Outcome(ALLOW, Reason.POLICY)
    assert run(pod, IN, flow(IN, B4, P.TCP, 2003)) == Outcome(DROP, Reason.POLICY_DENIED)
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED}))
    assert read_groups(pod) == {}


def test_reopening_rebuilds_a_missing_group_index_from_the_trie(pod: Datapath) -> None:
    policy = {PolicyKey(A, B, IN, Protocol.TCP, 80, 16): 5}
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED}, policy))
    group_keys = [groups.encode_group_key(g) for g in read_groups(pod)]
    pod.writer.delete_raw(mapspecs.POLGRP_MAP, group_keys)  # as if pinned by an older version
    assert run(pod, IN, flow(IN, B4, P.TCP, 80)).verdict is DROP
    again = Datapath.open()
    try:
        assert read_groups(again) == expected_groups(again.read_state())
        assert run(again, IN, flow(IN, B4, P.TCP, 80)) == Outcome(ALLOW, Reason.POLICY)
    finally:
        again.close()
