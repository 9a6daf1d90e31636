"""Conntrack that one pod cannot flood (issue 11 item 5): two tables, a promotion budget.

Real packets through BPF_PROG_TEST_RUN on the real object (conntrack.h): allowed first
packets are tracked in lw_ct_new_v1; a reply moves the flow to lw_ct_v3 within the
endpoint's budget; a flood of new flows evicts only unreplied entries. The property test
at the end requires the kernel to equal ``labelwall.policy.ctmodel`` (steps C1-C4 of
``labelwall.policy.lookup``) on random packet sequences.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelwall.cluster import Direction, Protocol
from labelwall.datapath import codecs, libbpf, mapspecs, testrun
from labelwall.datapath.facade import Datapath
from labelwall.policy.ctmodel import Table, VethConntrack
from labelwall.policy.lookup import Reason, decide
from labelwall.policy.mapstate import IpcacheEntry, MapState, PolicyKey, SubjectFlags

from . import packets as P  # noqa: N812 - P.TCP, P.ipv4(...) read like a header table
from .conftest import fresh_datapath
from .helpers import ALLOW, DROP, LO, Outcome, run, second_device, write

pytestmark = [pytest.mark.root, pytest.mark.bpf]

IN, OUT = Direction.INGRESS, Direction.EGRESS
A, B = 300, 400  # the pod behind lo is A
A4, B4 = ipaddress.ip_address("10.244.0.5"), ipaddress.ip_address("10.244.1.7")
IPCACHE = {A4: IpcacheEntry(A), B4: IpcacheEntry(B)}
ISOLATED_IN = {A: SubjectFlags.INGRESS_ISOLATED}


def _state(
    subjects: dict[int, SubjectFlags], policy: dict[PolicyKey, int] | None = None
) -> MapState:
    return MapState(subjects=subjects, policy=policy or {}, ipcache=IPCACHE)


def _config(dp: Datapath, per_s: int = 0, burst: int = 0) -> None:
    dp.set_config(codecs.DatapathConfig(ct_promote_per_s=per_s, ct_promote_burst=burst))


@pytest.fixture
def pod(dp: Datapath) -> Datapath:
    dp.set_endpoint(LO, A, (A4,))
    return dp


def _ports(flow: tuple[int, int, int]) -> tuple[int, int]:
    a, b = sorted(flow[1:])
    return a, b


def _tables(dp: Datapath) -> dict[tuple[int, int], Table]:
    """{(smaller port, larger port): the table holding that flow}."""
    new, est = dp.conntrack_tables()
    out = {_ports((0, k.sport, k.dport)): Table.NEW for k in new}
    out.update({_ports((0, k.sport, k.dport)): Table.EST for k in est})
    return out


def test_a_flow_is_tracked_as_new_and_moves_to_the_replied_table_with_its_reply(
    pod: Datapath,
) -> None:
    write(pod, _state(ISOLATED_IN))
    assert run(pod, OUT, P.packet(A4, B4, P.TCP, 41000, 80, P.SYN)).reason is Reason.NOT_ISOLATED
    assert _tables(pod) == {(80, 41000): Table.NEW}
    assert run(pod, OUT, P.packet(A4, B4, P.TCP, 41000, 80, P.ACK)) == Outcome(
        ALLOW, Reason.CT_ESTABLISHED
    )
    assert _tables(pod) == {(80, 41000): Table.NEW}  # no reply yet
    reply = P.packet(B4, A4, P.TCP, 80, 41000, P.SYN | P.ACK)
    assert run(pod, IN, reply) == Outcome(ALLOW, Reason.CT_REPLY)
    assert _tables(pod) == {(80, 41000): Table.EST}  # promoted: one lookup from now on
    assert run(pod, IN, P.packet(B4, A4, P.TCP, 80, 41000, P.ACK)) == Outcome(
        ALLOW, Reason.CT_REPLY
    )


def test_over_its_budget_a_replied_flow_keeps_working_from_the_new_table_until_it_refills(
    pod: Datapath,
) -> None:
    _config(pod, per_s=2, burst=1)
    write(pod, _state(ISOLATED_IN))
    for sport in (42000, 42001):
        run(pod, OUT, P.packet(A4, B4, P.UDP, sport, 53))
    assert run(pod, IN, P.packet(B4, A4, P.UDP, 53, 42000)).reason is Reason.CT_REPLY
    over = P.packet(B4, A4, P.UDP, 53, 42001)
    assert run(pod, IN, over) == Outcome(ALLOW, Reason.CT_UNPROMOTED)  # passes, counted
    assert run(pod, OUT, P.packet(A4, B4, P.UDP, 42001, 53)) == Outcome(ALLOW, Reason.CT_UNPROMOTED)
    assert _tables(pod) == {(53, 42000): Table.EST, (53, 42001): Table.NEW}
    time.sleep(0.6)  # 2/s: one promotion back after 0.5 s
    assert run(pod, IN, over) == Outcome(ALLOW, Reason.CT_REPLY)
    assert _tables(pod) == {(53, 42000): Table.EST, (53, 42001): Table.EST}


def test_the_budget_is_per_veth(pod: Datapath) -> None:
    _config(pod, per_s=1, burst=1)
    with second_device() as other:
        pod.set_endpoint(other, B, (B4,))
        write(pod, _state({A: SubjectFlags.INGRESS_ISOLATED, B: SubjectFlags.INGRESS_ISOLATED}))
        run(pod, OUT, P.packet(A4, B4, P.UDP, 43000, 53))
        run(pod, OUT, P.packet(A4, B4, P.UDP, 43001, 53))
        assert run(pod, IN, P.packet(B4, A4, P.UDP, 53, 43000)).reason is Reason.CT_REPLY
        assert run(pod, IN, P.packet(B4, A4, P.UDP, 53, 43001)).reason is Reason.CT_UNPROMOTED
        # B's veth has its own bucket: A spending its own changes nothing there
        run(pod, OUT, P.packet(B4, A4, P.UDP, 43002, 53), other)
        assert run(pod, IN, P.packet(A4, B4, P.UDP, 53, 43002), other).reason is Reason.CT_REPLY


def test_a_flood_of_new_flows_evicts_only_unreplied_entries(pod: Datapath) -> None:
    """More unanswered flows than lw_ct_new_v1 holds; an idle replied flow survives."""
    write(pod, _state(ISOLATED_IN))
    run(pod, OUT, P.packet(A4, B4, P.TCP, 44000, 8080, P.SYN))
    run(pod, IN, P.packet(B4, A4, P.TCP, 8080, 44000, P.SYN | P.ACK))
    fd = pod.prog_fd(mapspecs.PROG_FROM_POD)
    flows = mapspecs.CT_NEW_MAX + mapspecs.CT_NEW_MAX // 4
    start = time.monotonic()
    for i in range(flows):  # one new UDP flow per packet: 16 bits of dport, then sport
        dport, sport = 1 + i % 60000, 10000 + i // 60000
        r = testrun.run(fd, P.packet(A4, B4, P.UDP, sport, dport), LO, 1)
        assert r.retval == testrun.TC_ACT_OK
        assert time.monotonic() - start < 120, "flood too slow"
    size = libbpf.map_info(pod.map_fds[mapspecs.CT_NEW_MAP.name]).max_entries
    new, est = pod.conntrack_tables()
    assert size // 2 < len(new) <= size  # the flood filled the new table, and only it
    assert [tuple(sorted((k.sport, k.dport))) for k in est] == [(8080, 44000)]
    answer = P.packet(B4, A4, P.TCP, 8080, 44000, P.ACK)
    assert run(pod, IN, answer) == Outcome(ALLOW, Reason.CT_REPLY)


def test_a_connection_opened_before_its_pod_is_isolated_keeps_its_replies(
    pod: Datapath,
) -> None:
    """Why flows of a pod that no policy isolates are tracked too (conntrack.h)."""
    write(pod, _state({}))
    assert run(pod, OUT, P.packet(A4, B4, P.TCP, 45000, 5432, P.SYN)).reason is (
        Reason.NOT_ISOLATED
    )
    assert run(pod, IN, P.packet(B4, A4, P.TCP, 5432, 45000, P.SYN | P.ACK)).reason is (
        Reason.CT_REPLY
    )
    write(pod, _state(ISOLATED_IN))  # an ingress policy lands on the running client
    assert run(pod, IN, P.packet(B4, A4, P.TCP, 5432, 45000, P.ACK)) == Outcome(
        ALLOW, Reason.CT_REPLY
    )
    assert run(pod, IN, P.packet(B4, A4, P.TCP, 5432, 45001, P.ACK)) == Outcome(
        DROP, Reason.POLICY_DENIED
    )


def test_an_icmp_error_about_an_unreplied_flow_passes_as_related(pod: Datapath) -> None:
    write(pod, _state(ISOLATED_IN))
    run(pod, OUT, P.packet(A4, B4, P.UDP, 46000, 9999))  # in lw_ct_new_v1: nobody answered
    quoted = P.packet(A4, B4, P.UDP, 46000, 9999)
    error = P.ipv4(str(B4), str(A4), P.ICMP, P.icmp_error(3, quoted, code=3))
    assert run(pod, IN, error) == Outcome(ALLOW, Reason.ICMP_RELATED)


def test_a_bare_syn_is_judged_again_even_with_a_new_entry(pod: Datapath) -> None:
    allow = {PolicyKey(A, B, OUT, Protocol.TCP, 80, 16): 1}
    write(pod, _state({A: SubjectFlags.EGRESS_ISOLATED}, allow))
    syn = P.packet(A4, B4, P.TCP, 47000, 80, P.SYN)
    assert run(pod, OUT, syn).reason is Reason.POLICY
    assert run(pod, OUT, syn).reason is Reason.POLICY  # a retransmit: the policy again
    write(pod, _state({A: SubjectFlags.EGRESS_ISOLATED}))
    assert run(pod, OUT, syn) == Outcome(DROP, Reason.POLICY_DENIED)
    # the flow's other packets still follow its entry
    assert run(pod, OUT, P.packet(A4, B4, P.TCP, 47000, 80, P.ACK)).reason is (
        Reason.CT_ESTABLISHED
    )


# ---- the kernel equals the model (property test) ----

#: (protocol, A's port, B's port): the flows of one example.
FLOWS = [(P.TCP, 40000, 80), (P.UDP, 5353, 53), (P.TCP, 40001, 53)]
FLAGS = [P.SYN, P.SYN | P.ACK, P.ACK]


@pytest.fixture(scope="module")
def shared_dp() -> Iterator[Datapath]:
    with fresh_datapath() as dp:
        dp.set_endpoint(LO, A, (A4,))
        yield dp


def _policies() -> st.SearchStrategy[dict[PolicyKey, int]]:
    keys = [
        PolicyKey(A, B, d, Protocol(proto), port, 16)
        for d in (IN, OUT)
        for proto, port in ((P.TCP, 80), (P.UDP, 53), (P.TCP, 53), (P.TCP, 40000))
    ]
    return st.sets(st.sampled_from(keys)).map(lambda ks: {k: i + 1 for i, k in enumerate(ks)})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    flags=st.sampled_from([SubjectFlags(f) for f in range(4)]),
    policy=_policies(),
    burst=st.integers(1, 3),
    steps=st.lists(
        st.tuples(st.integers(0, len(FLOWS) - 1), st.booleans(), st.sampled_from(FLAGS)),
        min_size=1,
        max_size=12,
    ),
)
def test_the_kernel_tables_and_reasons_equal_the_conntrack_model(
    shared_dp: Datapath,
    flags: SubjectFlags,
    policy: dict[PolicyKey, int],
    burst: int,
    steps: list[tuple[int, bool, int]],
) -> None:
    dp = shared_dp
    state = _state({A: flags} if flags else {}, policy)
    write(dp, state)
    dp.clear_conntrack()  # and the buckets: each example starts with a full one
    _config(dp, per_s=1, burst=burst)  # 1/s: no refill within an example (< 1 s)
    model: VethConntrack[int] = VethConntrack(budget=burst)
    started = time.monotonic()
    for i, forward, tcp_flags in steps:
        proto, a_port, b_port = FLOWS[i]
        flags_byte = tcp_flags if proto == P.TCP else 0
        direction = OUT if forward else IN
        src, dst, sport, dport = (A4, B4, a_port, b_port) if forward else (B4, A4, b_port, a_port)

        judge = functools.partial(decide, state, A, direction, B4, dst, Protocol(proto), dport)
        want = model.packet(i, forward, flags_byte == P.SYN, judge)
        got = run(dp, direction, P.packet(src, dst, proto, sport, dport, flags_byte or P.SYN))
        assert (got.verdict is ALLOW, got.reason) == want, (i, forward, tcp_flags, model)
        expected = {_ports(FLOWS[f]): e.table for f, e in model.flows.items()}
        assert _tables(dp) == expected, (steps, model)
    assert time.monotonic() - started < 1.0, "the example outran the no-refill assumption"
