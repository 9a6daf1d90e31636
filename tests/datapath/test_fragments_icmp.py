"""Fragments follow their first fragment; ICMP errors follow the flow they quote (issue 11).

Real packets through BPF_PROG_TEST_RUN on the real object, maps filled by the real writer.
"""

from __future__ import annotations

import ipaddress
import itertools
import time

import pytest

from labelwall.cluster import Direction, IPAddress, Protocol
from labelwall.datapath import abi, codecs, mapspecs
from labelwall.datapath.facade import Datapath
from labelwall.policy.lookup import Reason
from labelwall.policy.mapstate import IpcacheEntry, MapState, PolicyKey, SubjectFlags

from . import packets as P  # noqa: N812 - P.UDP, P.ipv4(...) read like a header table
from .helpers import ALLOW, DROP, LO, Outcome, run, second_device, write

pytestmark = [pytest.mark.root, pytest.mark.bpf]

IN, OUT = Direction.INGRESS, Direction.EGRESS
A, B = 300, 400  # the pod behind the veth under test is A


def ip(s: str) -> IPAddress:
    return ipaddress.ip_address(s)


A4, B4, A6, B6 = ip("10.244.0.5"), ip("10.244.1.7"), ip("fd00:10:244::5"), ip("fd00:10:244:1::7")
ROUTER4, ROUTER6 = ip("192.0.2.1"), ip("2001:db8::1")
IPCACHE = {a: IpcacheEntry(A) for a in (A4, A6)} | {b: IpcacheEntry(B) for b in (B4, B6)}
_ids = itertools.count(1000)
_sports = itertools.count(30000)


def state(subjects: dict[int, SubjectFlags], policy: dict[PolicyKey, int]) -> MapState:
    return MapState(subjects=subjects, policy=policy, ipcache=IPCACHE)


def udp_in_53(flags: SubjectFlags = SubjectFlags.INGRESS_ISOLATED) -> MapState:
    """A isolated for ingress, admitting UDP 53 from B only."""
    return state({A: flags}, {PolicyKey(A, B, IN, Protocol.UDP, 53, 16): 1})


def fragments(src: IPAddress, dst: IPAddress, dport: int, ident: int) -> list[bytes]:
    """An 8000-byte UDP datagram as the kernel fragments it for a 1500 MTU: first, middle, last.

    Offsets in 8-byte units; only the first fragment carries the UDP header.
    """
    first_payload = P.udp(40000, dport, b"\0" * 1464)
    if src.version == 4:
        return [
            P.ipv4(str(src), str(dst), P.UDP, first_payload, 0, True, ident=ident),
            P.ipv4(str(src), str(dst), P.UDP, b"\0" * 1480, 185, True, ident=ident),
            P.ipv4(str(src), str(dst), P.UDP, b"\0" * 96, 370, False, ident=ident),
        ]
    frag = 44
    return [
        P.ipv6(str(src), str(dst), frag, P.ipv6_frag(P.UDP, 0, True, ident) + first_payload),
        P.ipv6(str(src), str(dst), frag, P.ipv6_frag(P.UDP, 184, True, ident) + b"\0" * 1448),
        P.ipv6(str(src), str(dst), frag, P.ipv6_frag(P.UDP, 365, False, ident) + b"\0" * 96),
    ]


@pytest.fixture
def pod(dp: Datapath) -> Datapath:
    dp.set_endpoint(LO, A, (A4, A6))  # the addresses A may send from (source validation)
    return dp


# ---- fragments ----


@pytest.mark.parametrize(("a", "b"), [(A4, B4), (A6, B6)], ids=["ipv4", "ipv6"])
def test_later_fragments_of_an_allowed_datagram_pass_and_of_a_denied_one_drop(
    pod: Datapath, a: IPAddress, b: IPAddress
) -> None:
    write(pod, udp_in_53())
    first, middle, last = fragments(b, a, 53, ident := next(_ids))
    assert run(pod, IN, first) == Outcome(ALLOW, Reason.POLICY)
    assert run(pod, IN, middle) == Outcome(ALLOW, Reason.FRAGMENT_OF_ALLOWED)
    assert run(pod, IN, last) == Outcome(ALLOW, Reason.FRAGMENT_OF_ALLOWED)
    (key,) = pod.fragments()
    assert key == codecs.FragKey(a.version, P.UDP, int(IN), ident, b, a, LO)
    deadline = pod.fragments()[key] - time.monotonic_ns()
    assert 0 < deadline <= abi.FRAG_TIMEOUT_S * 1_000_000_000

    denied = fragments(b, a, 54, next(_ids))
    assert run(pod, IN, denied[0]) == Outcome(DROP, Reason.POLICY_DENIED)
    assert run(pod, IN, denied[1]) == Outcome(DROP, Reason.FRAGMENT)
    assert run(pod, IN, denied[2]) == Outcome(DROP, Reason.FRAGMENT)
    assert len(pod.fragments()) == 1  # a denied first fragment opens nothing


@pytest.mark.parametrize(("a", "b"), [(A4, B4), (A6, B6)], ids=["ipv4", "ipv6"])
def test_a_fragment_entry_admits_only_its_own_datagram_id(
    pod: Datapath, a: IPAddress, b: IPAddress
) -> None:
    write(pod, udp_in_53())
    ident = next(_ids)
    first, middle, _ = fragments(b, a, 53, ident)
    _, other_middle, _ = fragments(b, a, 53, ident + 1)
    assert run(pod, IN, first).verdict is ALLOW
    assert run(pod, IN, other_middle) == Outcome(DROP, Reason.FRAGMENT)
    assert run(pod, IN, middle) == Outcome(ALLOW, Reason.FRAGMENT_OF_ALLOWED)


def test_a_later_fragment_before_its_first_is_dropped(pod: Datapath) -> None:
    write(pod, udp_in_53())
    first, middle, _ = fragments(B4, A4, 53, next(_ids))
    assert run(pod, IN, middle) == Outcome(DROP, Reason.FRAGMENT)  # out of order: no entry
    assert run(pod, IN, first) == Outcome(ALLOW, Reason.POLICY)


def test_a_fragment_entry_is_only_found_at_the_veth_that_made_it(pod: Datapath) -> None:
    write(pod, udp_in_53())
    first, middle, _ = fragments(B4, A4, 53, next(_ids))
    assert run(pod, IN, first).verdict is ALLOW
    with second_device() as other:
        pod.set_endpoint(other, A)
        assert run(pod, IN, middle, other) == Outcome(DROP, Reason.FRAGMENT)
        pod.delete_endpoint(other)


def test_a_pod_not_isolated_in_that_direction_opens_no_fragment_entries(pod: Datapath) -> None:
    write(pod, udp_in_53(SubjectFlags.EGRESS_ISOLATED))
    first, middle, _ = fragments(B4, A4, 99, next(_ids))
    assert run(pod, IN, first) == Outcome(ALLOW, Reason.NOT_ISOLATED)
    assert run(pod, IN, middle) == Outcome(ALLOW, Reason.NOT_ISOLATED)
    assert pod.fragments() == {}  # the table is left to the datagrams that need it


def test_an_expired_fragment_entry_admits_nothing(pod: Datapath) -> None:
    write(pod, udp_in_53())
    first, middle, _ = fragments(B4, A4, 53, next(_ids))
    assert run(pod, IN, first).verdict is ALLOW
    (key,) = pod.fragments()
    past = abi.FRAG_VALUE.codec.pack(1)  # deadline 1 ns after boot: long gone
    pod.io.update(mapspecs.FRAGS_MAP, codecs.encode_frag_key(key), past)
    assert run(pod, IN, middle) == Outcome(DROP, Reason.FRAGMENT)


def test_a_first_fragment_of_a_tracked_flow_opens_an_entry_for_its_later_fragments(
    pod: Datapath,
) -> None:
    # A egress allows UDP 53 to B; A admits nothing in: B's fragmented answer is a reply
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED},
                     {PolicyKey(A, B, OUT, Protocol.UDP, 53, 16): 1}))  # fmt: skip
    query = P.ipv4(str(A4), str(B4), P.UDP, P.udp(40000, 53))
    assert run(pod, OUT, query) == Outcome(ALLOW, Reason.POLICY)
    answer = [
        P.ipv4(str(B4), str(A4), P.UDP, P.udp(53, 40000, b"\0" * 1464), 0, True, ident=5),
        P.ipv4(str(B4), str(A4), P.UDP, b"\0" * 800, 185, False, ident=5),
    ]
    assert run(pod, IN, answer[0]) == Outcome(ALLOW, Reason.CT_REPLY)
    assert run(pod, IN, answer[1]) == Outcome(ALLOW, Reason.FRAGMENT_OF_ALLOWED)


# ---- related ICMP errors ----


def _open_udp_flow(pod: Datapath, a: IPAddress, b: IPAddress) -> bytes:
    """A (egress: UDP 53 to B allowed, ingress: nothing) sends a query; returns it."""
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED},
                     {PolicyKey(A, B, OUT, Protocol.UDP, 53, 16): 1}))  # fmt: skip
    query = P.packet(a, b, P.UDP, next(_sports), 53)
    assert run(pod, OUT, query) == Outcome(ALLOW, Reason.POLICY)
    return query


def _error(src: IPAddress, dst: IPAddress, type_: int, quoted: bytes) -> bytes:
    if src.version == 4:
        return P.ipv4(str(src), str(dst), P.ICMP, P.icmp_error(type_, quoted))
    return P.ipv6(str(src), str(dst), P.ICMPV6, P.icmp_error(type_, quoted))


@pytest.mark.parametrize(
    ("a", "b", "router", "types"),
    [(A4, B4, ROUTER4, (3, 11, 12)), (A6, B6, ROUTER6, (1, 2, 3, 4))],
    ids=["icmp", "icmpv6"],
)
def test_an_icmp_error_about_a_tracked_flow_passes_with_it(
    pod: Datapath, a: IPAddress, b: IPAddress, router: IPAddress, types: tuple[int, ...]
) -> None:
    query = _open_udp_flow(pod, a, b)
    for type_ in types:  # from the peer, and from a router on the way (packet too big)
        for sender in (b, router):
            error = _error(sender, a, type_, query)
            assert run(pod, IN, error) == Outcome(ALLOW, Reason.ICMP_RELATED), (type_, sender)
    assert len(pod.conntrack()) == 1  # an error opens no flow of its own


@pytest.mark.parametrize(("a", "b"), [(A4, B4), (A6, B6)], ids=["icmp", "icmpv6"])
def test_an_icmp_error_about_an_untracked_flow_is_judged_by_policy(
    pod: Datapath, a: IPAddress, b: IPAddress
) -> None:
    _open_udp_flow(pod, a, b)
    unreachable = 3 if a.version == 4 else 1
    other = P.packet(a, b, P.UDP, next(_sports), 54)  # never sent: no entry
    assert run(pod, IN, _error(b, a, unreachable, other)) == Outcome(DROP, Reason.POLICY_DENIED)
    proto = Protocol.ICMP if a.version == 4 else Protocol.ICMPV6
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED},
                     {PolicyKey(A, B, IN, proto, 0, 0): 2}))  # fmt: skip
    assert run(pod, IN, _error(b, a, unreachable, other)) == Outcome(ALLOW, Reason.POLICY)


@pytest.mark.parametrize(("a", "b"), [(A4, B4), (A6, B6)], ids=["icmp", "icmpv6"])
def test_forged_or_truncated_quotes_of_a_tracked_flow_stay_judged_by_policy(
    pod: Datapath, a: IPAddress, b: IPAddress
) -> None:
    query = _open_udp_flow(pod, a, b)
    unreachable = 3 if a.version == 4 else 1
    ip_len = 20 if a.version == 4 else 40
    third = ip("10.244.2.9") if a.version == 4 else ip("fd00:10:244:2::9")
    cases = {
        "quote cut inside its ports": _error(b, a, unreachable, query[: 14 + ip_len + 2]),
        "quote cut inside its IP header": _error(b, a, unreachable, query[: 14 + ip_len - 4]),
        "error sent to someone else": _error(b, third, unreachable, query),
        "an error about an error": _error(b, a, unreachable, _error(a, b, unreachable, query)),
    }
    for what, error in cases.items():
        assert run(pod, IN, error) == Outcome(DROP, Reason.POLICY_DENIED), what


def test_an_error_the_pod_sends_about_a_tracked_inbound_flow_passes_its_egress(
    pod: Datapath,
) -> None:
    # A admits UDP 53 from B and may send nothing: its port-unreachable answer still leaves
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED},
                     {PolicyKey(A, B, IN, Protocol.UDP, 53, 16): 1}))  # fmt: skip
    query = P.packet(B6, A6, P.UDP, next(_sports), 53)
    assert run(pod, IN, query) == Outcome(ALLOW, Reason.POLICY)
    assert run(pod, OUT, _error(A6, B6, 1, query)) == Outcome(ALLOW, Reason.ICMP_RELATED)
    assert run(pod, OUT, _error(A6, ip("fd00:10:244:2::9"), 1, query)).verdict is DROP


def test_an_error_leaving_the_pod_with_a_forged_source_drops_before_the_related_pass(
    pod: Datapath,
) -> None:
    # The related-flow lookup reads the quoted packet, not the error's own source: without
    # the source check first, A could send errors about its own flows from any address.
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED},
                     {PolicyKey(A, B, IN, Protocol.UDP, 53, 16): 1}))  # fmt: skip
    query = P.packet(B6, A6, P.UDP, next(_sports), 53)
    assert run(pod, IN, query) == Outcome(ALLOW, Reason.POLICY)
    forged = _error(ip("fd00:10:244:2::9"), B6, 1, query)
    assert run(pod, OUT, forged) == Outcome(DROP, Reason.SOURCE_INVALID)
    assert run(pod, OUT, _error(A6, B6, 1, query)) == Outcome(ALLOW, Reason.ICMP_RELATED)
