"""The writer: its order never drops a flow allowed before and after; batches; idempotence."""

from __future__ import annotations

import ipaddress
import time

import pytest
from hypothesis import given, settings

from labelwall.agent.port import MemoryDatapath
from labelwall.cluster import Direction, Protocol
from labelwall.datapath import abi, codecs, mapspecs, reader
from labelwall.datapath.facade import TO_POD, Datapath
from labelwall.datapath.writer import plan, relaxed
from labelwall.policy.mapstate import (
    IpcacheEntry,
    MapChanges,
    MapDelta,
    MapState,
    PolicyKey,
    SubjectFlags,
    diff,
)

from . import packets
from .helpers import LO
from .mapstate_strategies import (
    ADDRS,
    Flow,
    all_flows,
    allowed,
    map_states,
)

IN, OUT = Direction.INGRESS, Direction.EGRESS
ISO_IN = SubjectFlags.INGRESS_ISOLATED


def test_relaxed_flags_are_isolated_only_where_both_are_and_audited_where_either_is() -> None:
    both = SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED
    assert relaxed(both, SubjectFlags.EGRESS_ISOLATED | SubjectFlags.AUDIT) == (
        SubjectFlags.EGRESS_ISOLATED | SubjectFlags.AUDIT
    )
    assert relaxed(SubjectFlags.AUDIT | ISO_IN, ISO_IN) == SubjectFlags.AUDIT | ISO_IN


def test_plan_adds_allows_before_isolating_and_removes_them_last() -> None:
    key_new, key_old = PolicyKey(300, 400, IN), PolicyKey(300, 401, IN)
    addr = ipaddress.ip_address("10.0.0.1")
    delta = MapDelta(
        subjects=MapChanges({300: ISO_IN}, frozenset({301})),
        policy=MapChanges({key_new: 1}, frozenset({key_old})),
        ipcache=MapChanges(
            {addr: IpcacheEntry(400)}, frozenset({ipaddress.ip_address("10.0.0.2")})
        ),
    )
    steps = [
        (s.table.name, bool(s.upserts), bool(s.deletes))
        for s in plan(delta, {300: SubjectFlags(0)})
    ]
    assert steps == [
        ("policy", True, False),
        ("subjects", False, True),  # 301 no longer selected: relaxing, early
        ("ipcache", True, False),
        ("ipcache", False, True),
        ("subjects", True, False),  # 300 becomes isolated once its allows exist
        ("policy", False, True),
    ]


def test_a_new_policy_never_drops_the_flow_it_allows_while_being_written() -> None:
    flow = Flow(300, IN, ADDRS[0], ADDRS[2], Protocol.TCP, 1, 80)
    before = MapState(ipcache={ADDRS[2]: IpcacheEntry(400)})
    after = MapState(
        subjects={300: ISO_IN},
        policy={PolicyKey(300, 400, IN, Protocol.TCP, 80, 16): 1},
        ipcache=before.ipcache,
    )
    writer = MemoryDatapath(before, record=True)
    writer.apply(diff(before, after))
    assert writer.read_state() == after
    assert all(allowed(s, flow) for s in writer.history)


@settings(max_examples=150, deadline=None)
@given(before=map_states(), after=map_states())
def test_policy_and_subject_changes_keep_every_flow_allowed_before_and_after(
    before: MapState, after: MapState
) -> None:
    # Same identity maps on both sides: only policy and subject flags change.
    after = MapState(after.subjects, after.policy, before.ipcache, before.cidrs, before.named_ports)
    writer = MemoryDatapath(before, record=True)
    writer.apply(diff(before, after))
    assert writer.read_state() == after
    for f in all_flows():
        if allowed(before, f) and allowed(after, f):
            assert all(allowed(s, f) for s in writer.history), f


# ---- the BPF writer on real maps ----


@pytest.mark.root
@pytest.mark.bpf
def test_the_bpf_writer_round_trips_100k_ipcache_entries_in_batches(dp: Datapath) -> None:
    base = int(ipaddress.ip_address("10.0.0.0"))
    entries = {
        ipaddress.ip_address(base + i): IpcacheEntry(256 + i % 5000, i % 3) for i in range(100_000)
    }
    start = time.perf_counter()
    dp.apply(MapDelta(ipcache=MapChanges(entries)))
    elapsed = time.perf_counter() - start
    assert dp.read_state().ipcache == entries
    assert mapspecs.IPCACHE_MAP.name not in dp.writer._no_batch  # the batch path was taken
    print(f"wrote {len(entries) / elapsed:,.0f} ipcache entries/s")
    dp.apply(MapDelta(ipcache=MapChanges(deletes=frozenset(entries))))
    assert dp.read_state().ipcache == {}


@pytest.mark.root
@pytest.mark.bpf
def test_deleting_absent_keys_is_a_no_op_in_batches_and_per_entry(dp: Datapath) -> None:
    a, b = ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("10.0.0.2")
    key = PolicyKey(300, 0, IN)
    dp.apply(MapDelta(ipcache=MapChanges({b: IpcacheEntry(5)}), policy=MapChanges({key: 1})))
    dp.apply(
        MapDelta(
            ipcache=MapChanges(deletes=frozenset({a, b})),
            policy=MapChanges(deletes=frozenset({key, PolicyKey(301, 0, IN)})),
        )
    )
    assert dp.read_state() == MapState()


@pytest.mark.root
@pytest.mark.bpf
def test_endpoints_are_set_read_and_deleted(dp: Datapath) -> None:
    dp.set_endpoint(7, 300)
    dp.set_endpoint(8, 301)
    dp.set_endpoint(7, 302)
    assert dp.endpoints() == {7: 302, 8: 301}
    dp.delete_endpoint(7)
    dp.delete_endpoint(7)
    assert dp.endpoints() == {8: 301}


def _mirrors(dp: Datapath) -> dict[int, codecs.Endpoint]:
    return reader.read_endpoints(dp.io)


@pytest.mark.root
@pytest.mark.bpf
def test_endpoints_mirror_their_subject_flags_through_every_write(dp: Datapath) -> None:
    both = SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED
    dp.set_endpoint(7, 300)
    dp.set_endpoint(8, 301)
    assert _mirrors(dp) == {7: codecs.Endpoint.mirroring(300, SubjectFlags.NONE),
                            8: codecs.Endpoint.mirroring(301, SubjectFlags.NONE)}  # fmt: skip
    dp.apply(diff(MapState(), MapState(subjects={300: both, 301: ISO_IN})))
    assert _mirrors(dp) == {7: codecs.Endpoint.mirroring(300, both),
                            8: codecs.Endpoint.mirroring(301, ISO_IN)}  # fmt: skip
    dp.set_endpoint(9, 300)  # a new pod of an isolated identity starts isolated
    assert _mirrors(dp)[9] == codecs.Endpoint.mirroring(300, both)
    dp.apply(diff(dp.read_state(), MapState(subjects={301: SubjectFlags.AUDIT})))
    assert _mirrors(dp) == {7: codecs.Endpoint.mirroring(300, SubjectFlags.NONE),
                            8: codecs.Endpoint.mirroring(301, SubjectFlags.AUDIT),
                            9: codecs.Endpoint.mirroring(300, SubjectFlags.NONE)}  # fmt: skip


@pytest.mark.root
@pytest.mark.bpf
def test_an_endpoint_without_the_mirror_is_judged_by_the_subjects_map_and_repaired_at_open(
    dp: Datapath,
) -> None:
    dp.apply(diff(MapState(), MapState(subjects={300: ISO_IN})))
    dp.writer.upsert_raw(  # as written by a version without the mirror
        mapspecs.ENDPOINTS_MAP,
        [codecs.encode_u32(LO)],
        [codecs.encode_endpoint(codecs.Endpoint(300))],
    )
    syn = packets.packet(ADDRS[2], ADDRS[0], packets.TCP, 1234, 80)
    assert dp.test_run(TO_POD, syn, LO).verdict is abi.TcVerdict.DROP  # still isolated
    again = Datapath.open()
    try:
        assert _mirrors(again)[LO] == codecs.Endpoint.mirroring(300, ISO_IN)
        assert again.test_run(TO_POD, syn, LO).verdict is abi.TcVerdict.DROP
    finally:
        again.close()
