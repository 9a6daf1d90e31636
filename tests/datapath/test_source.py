"""Source validation and the scope of the ND pass, through BPF_PROG_TEST_RUN on the real object.

A packet leaving a pod (handle_from_pod) whose source is not one of that pod's addresses
(lw_epaddr_v1) is dropped with SOURCE_INVALID, counted, reported, and tracks nothing,
whatever the policy; ND passes without policy only towards where ND goes.
"""

from __future__ import annotations

import ipaddress
import itertools

import pytest

from labelwall.cluster import Direction, IPAddress, Protocol
from labelwall.datapath import abi
from labelwall.datapath.facade import Datapath
from labelwall.identity.numbers import ANY, LOCAL_FLAG, Reserved
from labelwall.policy.lookup import Reason
from labelwall.policy.mapstate import IpcacheEntry, MapState, PolicyKey, SubjectFlags

from . import packets as P  # noqa: N812 - P.TCP, P.ipv4(...) read like a header table
from .helpers import ALLOW, DROP, LO, Outcome, run, second_device, write

pytestmark = [pytest.mark.root, pytest.mark.bpf]

IN, OUT = Direction.INGRESS, Direction.EGRESS
A, B, C = 300, 400, 500  # the pod behind lo is A
BLOCK = LOCAL_FLAG | 1  # an ipBlock's CIDR identity
BOTH = SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED


def ip(s: str) -> IPAddress:
    return ipaddress.ip_address(s)


A4, A6 = ip("10.244.0.5"), ip("fd00:10:244::5")
B4, B6 = ip("10.244.1.7"), ip("fd00:10:244:1::7")
C4 = ip("10.244.2.9")  # "coredns"
HOST4, HOST6 = ip("10.0.0.1"), ip("fd00:10::1")
BLOCK_IN, WORLD4, WORLD6 = ip("203.0.113.9"), ip("8.8.8.8"), ip("2001:db8::8")
IPCACHE = {
    A4: IpcacheEntry(A),
    A6: IpcacheEntry(A),
    B4: IpcacheEntry(B),
    B6: IpcacheEntry(B),
    C4: IpcacheEntry(C),
    HOST4: IpcacheEntry(Reserved.HOST),
    HOST6: IpcacheEntry(Reserved.HOST),
}
_sports = itertools.count(30000)


def state(
    subjects: dict[int, SubjectFlags], policy: dict[PolicyKey, int] | None = None
) -> MapState:
    return MapState(
        subjects=subjects,
        policy=policy or {},
        ipcache=IPCACHE,
        cidrs={ipaddress.ip_network("203.0.113.0/24"): BLOCK},
    )


@pytest.fixture
def pod(dp: Datapath) -> Datapath:
    dp.set_endpoint(LO, A, (A4, A6))
    return dp


# ---- forged sources ----

FORGED = [B4, B6, BLOCK_IN, HOST4, HOST6, ip("fe80::5"), ip("::"), ip("10.244.0.6")]


@pytest.mark.parametrize("flags", [SubjectFlags.NONE, BOTH, BOTH | SubjectFlags.AUDIT],
                         ids=["not-isolated", "isolated", "audited"])  # fmt: skip
@pytest.mark.parametrize("src", FORGED, ids=str)
def test_a_forged_source_is_dropped_counted_reported_and_tracks_nothing_whatever_the_policy(
    pod: Datapath, src: IPAddress, flags: SubjectFlags
) -> None:
    # A's egress allows everything: the policy would admit the packet, the source may not.
    write(pod, state({A: flags}, {PolicyKey(A, ANY, OUT): 1, PolicyKey(B, ANY, IN): 2}))
    dst = B4 if src.version == 4 else B6
    for proto in (P.TCP, P.UDP, P.ICMP if src.version == 4 else P.ICMPV6):
        packet = P.packet(src, dst, proto, next(_sports), 80)
        with pod.events() as events:
            events.poll(0)
            assert run(pod, OUT, packet) == Outcome(DROP, Reason.SOURCE_INVALID)
            (ev,) = events.poll(100)
        assert (ev.reason, ev.verdict, ev.subject, ev.saddr, ev.dir) == (
            Reason.SOURCE_INVALID, abi.TcVerdict.DROP, A, src, OUT
        )  # fmt: skip
        assert pod.conntrack() == {}


def test_the_pods_own_addresses_pass_as_before_and_are_tracked(pod: Datapath) -> None:
    write(pod, state({A: BOTH}, {PolicyKey(A, B, OUT, Protocol.TCP, 80, 16): 1}))
    for src, dst in ((A4, B4), (A6, B6)):
        sport = next(_sports)
        assert run(pod, OUT, P.packet(src, dst, P.TCP, sport, 80)) == Outcome(ALLOW, Reason.POLICY)
        assert run(pod, OUT, P.packet(src, dst, P.TCP, sport, 80, P.ACK)) == Outcome(
            ALLOW, Reason.CT_ESTABLISHED
        )
        assert run(pod, OUT, P.packet(src, dst, P.TCP, sport, 81)) == Outcome(
            DROP, Reason.POLICY_DENIED
        )
    assert len(pod.conntrack()) == 2


def test_packets_entering_a_pod_are_not_source_checked(pod: Datapath) -> None:
    # The source of an arriving packet is the peer's: policy judges it (ipcache, ipBlocks).
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED}, {PolicyKey(A, BLOCK, IN): 1}))
    assert run(pod, IN, P.packet(BLOCK_IN, A4, P.TCP, 999, 80)) == Outcome(ALLOW, Reason.POLICY)
    assert run(pod, IN, P.packet(B4, A4, P.TCP, 999, 80)) == Outcome(DROP, Reason.POLICY_DENIED)


def test_an_address_is_valid_only_at_the_veth_it_was_written_for(pod: Datapath) -> None:
    with second_device() as b_veth:
        pod.set_endpoint(b_veth, B, (B4,))
        write(pod, state({}))
        assert run(pod, OUT, P.packet(B4, C4, P.UDP, 999, 53), b_veth).reason is (
            Reason.NOT_ISOLATED
        )
        assert run(pod, OUT, P.packet(B4, C4, P.UDP, 998, 53)) == Outcome(
            DROP, Reason.SOURCE_INVALID
        )
        assert run(pod, OUT, P.packet(A4, C4, P.UDP, 998, 53), b_veth) == Outcome(
            DROP, Reason.SOURCE_INVALID
        )


def test_a_forged_reply_to_another_pods_open_flow_is_dropped_at_the_forgers_veth(
    pod: Datapath,
) -> None:
    # Victim B (its own veth) has an open DNS query to C; A forges C's answer to it.
    with second_device() as b_veth:
        pod.set_endpoint(b_veth, B, (B4,))
        write(pod, state({B: SubjectFlags.INGRESS_ISOLATED}))
        query = P.packet(B4, C4, P.UDP, 40000, 53)
        assert run(pod, OUT, query, b_veth) == Outcome(ALLOW, Reason.NOT_ISOLATED)
        (entry,) = pod.conntrack()
        answer = P.packet(C4, B4, P.UDP, 53, 40000)
        assert run(pod, OUT, answer) == Outcome(DROP, Reason.SOURCE_INVALID)
        assert list(pod.conntrack()) == [entry]  # nothing opened at the forger's veth
        # the genuine answer, arriving at the victim's veth, is still its flow's reply
        assert run(pod, IN, answer, b_veth) == Outcome(ALLOW, Reason.CT_REPLY)


def test_fragments_and_unsupported_chains_are_source_checked_too(pod: Datapath) -> None:
    write(pod, state({}))  # not isolated: these would pass with a genuine source
    frag = P.ipv4(str(B4), str(C4), P.UDP, b"\0" * 16, frag_offset=185)
    assert run(pod, OUT, frag) == Outcome(DROP, Reason.SOURCE_INVALID)
    own = P.ipv4(str(A4), str(C4), P.UDP, b"\0" * 16, frag_offset=185)
    assert run(pod, OUT, own) == Outcome(ALLOW, Reason.NOT_ISOLATED)
    chain = b"".join(P.ipv6_ext(60) for _ in range(9)) + P.ipv6_ext(P.TCP) + P.tcp(1, 80)
    assert run(pod, OUT, P.ipv6(str(B6), str(WORLD6), 60, chain)) == Outcome(
        DROP, Reason.SOURCE_INVALID
    )
    assert run(pod, OUT, P.ipv6(str(A6), str(WORLD6), 60, chain)) == Outcome(
        ALLOW, Reason.NOT_ISOLATED
    )


def test_a_pod_whose_addresses_are_removed_sends_nothing_and_arp_still_passes(
    pod: Datapath,
) -> None:
    write(pod, state({}))
    pod.set_endpoint(LO, A, (A6,))
    assert run(pod, OUT, P.packet(A4, B4, P.UDP, 1, 53)) == Outcome(DROP, Reason.SOURCE_INVALID)
    assert run(pod, OUT, P.packet(A6, B6, P.UDP, 1, 53)) == Outcome(ALLOW, Reason.NOT_ISOLATED)
    assert pod.endpoint_addresses() == {LO: frozenset({A6})}
    assert run(pod, OUT, P.eth(P.ETH_P_ARP, b"\0" * 28)) == Outcome(ALLOW, Reason.NON_IP)
    pod.delete_endpoint(LO)
    assert pod.endpoint_addresses() == {}


def test_mld_reports_from_link_local_or_unspecified_sources_are_judged_not_source_dropped(
    pod: Datapath,
) -> None:
    # DAD's MLD report (ICMPv6 143 to ff02::16, hop limit 1) leaves from fe80:: or ::
    for src in ("fe80::5", "::"):
        mld = P.ipv6(src, "ff02::16", P.ICMPV6, P.icmp(143) + b"\0" * 20, hop_limit=1)
        write(pod, state({}))
        assert run(pod, OUT, mld) == Outcome(ALLOW, Reason.NOT_ISOLATED)
        pod.clear_conntrack()  # (that allow was tracked; the next packet is a new flow)
        write(pod, state({A: BOTH}))
        assert run(pod, OUT, mld) == Outcome(DROP, Reason.POLICY_DENIED)
    to_peer = P.ipv6("fe80::5", str(B6), P.ICMPV6, P.icmp(143) + b"\0" * 20, hop_limit=1)
    assert run(pod, OUT, to_peer) == Outcome(DROP, Reason.SOURCE_INVALID)


# ---- neighbour discovery ----


def _nd(src: IPAddress | str, dst: IPAddress | str, nd_type: int = 135) -> bytes:
    return P.ipv6(str(src), str(dst), P.ICMPV6, P.icmp(nd_type) + b"\0" * 16, hop_limit=255)


@pytest.mark.parametrize("nd_type", range(133, 138))
def test_nd_leaving_a_pod_towards_a_routed_address_is_judged_by_policy(
    pod: Datapath, nd_type: int
) -> None:
    write(pod, state({A: BOTH}))
    for dst in (B6, WORLD6, ip("ff05::1"), ip("ff02::3"), ip("ff02::1:fe00:1")):
        assert run(pod, OUT, _nd(A6, dst, nd_type)) == Outcome(DROP, Reason.POLICY_DENIED), dst
    for dst in (B6, WORLD6, ip("ff05::1")):
        # from a link-local source, only real ND or link-scoped traffic may leave
        assert run(pod, OUT, _nd("fe80::5", dst, nd_type)) == Outcome(
            DROP, Reason.SOURCE_INVALID
        ), dst
    write(pod, state({A: BOTH}, {PolicyKey(A, B, OUT, Protocol.ICMPV6, 0, 0): 7}))
    assert run(pod, OUT, _nd(A6, B6, nd_type)) == Outcome(ALLOW, Reason.POLICY)
    write(pod, state({}))
    assert run(pod, OUT, _nd(A6, WORLD6, nd_type)) == Outcome(ALLOW, Reason.NOT_ISOLATED)


def test_nd_towards_the_node_link_local_and_the_nd_groups_passes_an_isolated_pod(
    pod: Datapath,
) -> None:
    write(pod, state({A: BOTH}))
    for dst in (HOST6, ip("fe80::1"), ip("febf::1"), ip("ff02::1"), ip("ff02::2"),
                ip("ff02::1:ff00:5"), ip("ff02::1:ffab:cdef")):  # fmt: skip
        for src in (A6, ip("fe80::5"), ip("::")):
            assert run(pod, OUT, _nd(src, dst)) == Outcome(ALLOW, Reason.ICMP_ND), (src, dst)
    # arriving ND (hop limit 255: sent on this link, i.e. by the node) is unchanged
    assert run(pod, IN, _nd("fe80::1", A6)) == Outcome(ALLOW, Reason.ICMP_ND)
    assert run(pod, IN, _nd(B6, A6)) == Outcome(ALLOW, Reason.ICMP_ND)
