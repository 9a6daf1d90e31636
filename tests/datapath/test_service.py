"""Egress through a Service, on the real object (issue 11 item 1): tc defers, netfilter judges.

handle_from_pod (BPF_PROG_TEST_RUN) passes a new flow from an egress-isolated pod to a
Service address untracked (SERVICE_DEFERRED), and judges everything else exactly as
before. handle_svc_nat cannot be test-run usefully (the kernel's netfilter test run leaves
``state->in`` unset at PRE_ROUTING, so the program sees no pod veth): it is exercised with
real packets and real DNAT in tests/lab/test_service_lab.py. Its links are created here
only inside a network namespace of the test's own.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import subprocess

import pytest

from labelwall.cluster import Direction, IPAddress, Protocol
from labelwall.datapath import libbpf, mapspecs, netfilter
from labelwall.datapath.facade import Datapath
from labelwall.identity.numbers import LOCAL_FLAG
from labelwall.lab.topology import in_netns
from labelwall.policy.lookup import Reason
from labelwall.policy.mapstate import IpcacheEntry, MapState, PolicyKey, SubjectFlags

from . import packets as P  # noqa: N812 - P.TCP, P.ipv4(...) read like a header table
from .helpers import ALLOW, DROP, LO, Outcome, run, write

pytestmark = [pytest.mark.root, pytest.mark.bpf]

IN, OUT = Direction.INGRESS, Direction.EGRESS
A, B = 300, 400  # the pod behind lo is A
SVC_BLOCK = LOCAL_FLAG | 7  # an ipBlock around the Service range (today's workaround)


def ip(s: str) -> IPAddress:
    return ipaddress.ip_address(s)


A4, A6 = ip("10.244.0.5"), ip("fd00:10:244::5")
B4, B6 = ip("10.244.1.7"), ip("fd00:10:244:1::7")
SVC4, SVC6 = ip("10.96.0.10"), ip("fd00:10:96::a")
CIDRS = netfilter.DEFAULT_SERVICE_CIDRS
_sports = itertools.count(41000)


def state(
    subjects: dict[int, SubjectFlags], policy: dict[PolicyKey, int] | None = None
) -> MapState:
    return MapState(
        subjects=subjects,
        policy=policy or {},
        ipcache={
            A4: IpcacheEntry(A),
            A6: IpcacheEntry(A),
            B4: IpcacheEntry(B),
            B6: IpcacheEntry(B),
        },
        cidrs={ipaddress.ip_network("10.96.0.0/12"): SVC_BLOCK},
    )


@pytest.fixture
def pod(dp: Datapath) -> Datapath:
    dp.set_endpoint(LO, A, (A4, A6))
    netfilter.write_cidrs(dp.io, CIDRS)  # what enable_services writes once the links are up
    return dp


ALLOW_B_80 = {
    PolicyKey(A, B, OUT, Protocol.TCP, 80, 16): 1,
    PolicyKey(A, B, OUT, Protocol.UDP, 53, 16): 2,
}


@pytest.mark.parametrize("svc", [SVC4, SVC6], ids=["ipv4", "ipv6"])
def test_a_new_flow_to_a_service_from_an_egress_isolated_pod_is_deferred_untracked(
    pod: Datapath, svc: IPAddress
) -> None:
    src = A4 if svc.version == 4 else A6
    # even with an ipBlock admitting the Service range (today's hole): judged after DNAT
    write(
        pod,
        state({A: SubjectFlags.EGRESS_ISOLATED}, {**ALLOW_B_80, PolicyKey(A, SVC_BLOCK, OUT): 3}),
    )
    for proto in (P.TCP, P.UDP):
        with pod.events() as events:
            events.poll(0)
            pkt = P.packet(src, svc, proto, next(_sports), 80)
            assert run(pod, OUT, pkt) == Outcome(ALLOW, Reason.SERVICE_DEFERRED)
            assert events.poll(50) == []  # netfilter reports the verdict, not tc
    assert pod.conntrack() == {}  # no entry before the verdict


def test_egress_to_a_service_is_judged_at_tc_as_before_when_it_is_not_deferred(
    pod: Datapath,
) -> None:
    # not egress-isolated: NOT_ISOLATED and tracked on the pre-DNAT tuple, as before
    write(pod, state({A: SubjectFlags.INGRESS_ISOLATED}))
    sport = next(_sports)
    assert run(pod, OUT, P.packet(A4, SVC4, P.TCP, sport, 80)) == Outcome(
        ALLOW, Reason.NOT_ISOLATED
    )
    ((key, _),) = pod.conntrack().items()
    assert {key.saddr, key.daddr} == {A4, SVC4}
    reply = P.packet(SVC4, A4, P.TCP, 80, sport, P.SYN | P.ACK)
    assert run(pod, IN, reply) == Outcome(ALLOW, Reason.CT_REPLY)
    # no Service CIDRs (no netfilter program: older kernels): judged at tc, fail closed
    pod.clear_conntrack()
    netfilter.write_cidrs(pod.io, ())
    write(pod, state({A: SubjectFlags.EGRESS_ISOLATED}, ALLOW_B_80))
    assert run(pod, OUT, P.packet(A4, SVC4, P.TCP, next(_sports), 80)) == Outcome(
        DROP, Reason.POLICY_DENIED
    )


def test_a_non_service_flow_takes_exactly_the_path_it_took_before(pod: Datapath) -> None:
    write(pod, state({A: SubjectFlags.EGRESS_ISOLATED}, ALLOW_B_80))
    for src, dst in ((A4, B4), (A6, B6)):
        sport = next(_sports)
        assert run(pod, OUT, P.packet(src, dst, P.TCP, sport, 80)) == Outcome(ALLOW, Reason.POLICY)
        assert run(pod, OUT, P.packet(src, dst, P.TCP, sport, 80, P.ACK)) == Outcome(
            ALLOW, Reason.CT_ESTABLISHED
        )
        assert run(pod, OUT, P.packet(src, dst, P.TCP, sport, 81)) == Outcome(
            DROP, Reason.POLICY_DENIED
        )
    world = ip("8.8.8.8")
    assert run(pod, OUT, P.packet(A4, world, P.UDP, 1, 53)) == Outcome(DROP, Reason.POLICY_DENIED)


def test_the_source_check_and_icmp_errors_come_before_the_deferral(pod: Datapath) -> None:
    write(pod, state({A: SubjectFlags.EGRESS_ISOLATED}, ALLOW_B_80))
    assert run(pod, OUT, P.packet(B4, SVC4, P.TCP, 1, 80)) == Outcome(DROP, Reason.SOURCE_INVALID)
    quoted = P.packet(SVC4, A4, P.UDP, 53, 40000)
    err = P.ipv4(str(A4), str(SVC4), P.ICMP, P.icmp_error(3, quoted, 3))
    assert run(pod, OUT, err) == Outcome(DROP, Reason.POLICY_DENIED)  # unrelated: by policy
    assert pod.conntrack() == {}


def test_a_first_fragment_to_a_service_takes_its_datagram_to_the_stack(pod: Datapath) -> None:
    write(pod, state({A: SubjectFlags.EGRESS_ISOLATED}, ALLOW_B_80))
    first = P.ipv4(str(A4), str(SVC4), P.UDP, P.udp(5000, 53, b"q" * 64), more_frags=True, ident=77)
    later = P.ipv4(str(A4), str(SVC4), P.UDP, b"r" * 64, frag_offset=9, ident=77)
    assert run(pod, OUT, first) == Outcome(ALLOW, Reason.SERVICE_DEFERRED)
    # the whole datagram is reassembled by netfilter and judged at -99
    assert run(pod, OUT, later) == Outcome(ALLOW, Reason.FRAGMENT_OF_ALLOWED)
    other = P.ipv4(str(A4), str(SVC4), P.UDP, b"r" * 64, frag_offset=9, ident=78)
    assert run(pod, OUT, other) == Outcome(DROP, Reason.FRAGMENT)


# ---- links ----


def test_links_attach_once_survive_a_reload_and_go_with_the_cidrs_first(dp: Datapath) -> None:
    ns = f"lwt-nf-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        with in_netns(ns):
            hook = dp.enable_services(CIDRS)
            assert (hook.active, hook.created, dp.service_cidrs()) == (True, 2, list(CIDRS))
            assert dp.services_attached()
            infos = []
            for path in mapspecs.NF_LINK_PINS.values():
                fd = libbpf.obj_get(path)
                try:
                    infos.append(libbpf.netfilter_link_info(fd))
                finally:
                    os.close(fd)
            assert [(i.pf, i.hooknum, i.priority, i.flags) for i in infos] == [
                (2, 0, -99, 0), (10, 0, -99, 0)
            ]  # fmt: skip
            # an agent restart: same program on the same maps, the pinned links are kept
            again = dp.enable_services(CIDRS[:1])
            assert (again.active, again.created, dp.service_cidrs()) == (True, 0, list(CIDRS[:1]))
            removed = dp.disable_services()
            assert sorted(removed) == sorted(mapspecs.NF_LINK_PINS.values())
            assert dp.service_cidrs() == []
            assert not dp.services_attached()
    finally:
        dp.disable_services()
        subprocess.run(["ip", "netns", "del", ns], check=True)
