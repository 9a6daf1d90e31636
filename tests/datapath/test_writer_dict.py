"""The one writer over dict maps (DictMapIO): groups, overflow, mirror, batches, no root.

The kernel-map versions of these are in test_writer.py (root); here the same writer runs
over ``DictMapIO``, and each intermediate state is also judged through the group index
the way the classifier reads it (``classify``: slots, else the overflow trie).
"""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from labelwall.agent.port import MemoryDatapath
from labelwall.cluster import Direction, IPAddress, Protocol
from labelwall.datapath import abi, codecs, groups, mapspecs, reader
from labelwall.datapath.mapio import DictMapIO
from labelwall.datapath.writer import MapWriter
from labelwall.identity.numbers import ANY, Reserved
from labelwall.policy.lookup import PORT_PROTOCOLS, lpm_cidr, lpm_policy
from labelwall.policy.mapstate import (
    IpcacheEntry,
    MapChanges,
    MapDelta,
    MapState,
    NamedPortKey,
    PolicyKey,
    SubjectFlags,
    diff,
)

from .helpers import expected_groups, expected_overflow, read_groups, read_overflow
from .mapstate_strategies import (
    ADDRS,
    NETS,
    Flow,
    all_flows,
    allowed,
    map_states,
)

IN, OUT = Direction.INGRESS, Direction.EGRESS
ISO_IN = SubjectFlags.INGRESS_ISOLATED


def classify(dp: MemoryDatapath, f: Flow, flags: SubjectFlags | None = None) -> bool:
    """The classifier's policy decision read from the maps it reads (policy.h): the
    endpoint-free parts of lookup.py, but the policy match through lw_polgrp_v1's slots
    or, for an OVERFLOW group, the lw_polovf_v1 trie (never lw_policy_v1). ``flags``:
    the subject's flags as its endpoint mirrors them (default: lw_subjects_v1's)."""
    state = reader.read_state(dp.io)
    if flags is None:
        flags = state.subjects.get(f.subject, SubjectFlags.NONE)
    iso = SubjectFlags.INGRESS_ISOLATED if f.direction is IN else SubjectFlags.EGRESS_ISOLATED
    if not flags & iso:
        return True
    entry = state.ipcache.get(f.peer_addr)
    peer, cidr = (
        (entry.identity, entry.cidr_identity)
        if entry is not None
        else (int(Reserved.WORLD), lpm_cidr(state, f.peer_addr))
    )
    if peer == Reserved.HOST:
        return True
    dst: IPAddress = f.peer_addr if f.direction is OUT else f.subject_addr
    port = f.dport if f.protocol in PORT_PROTOCOLS else 0
    name_id = (
        state.named_ports.get(NamedPortKey(dst, f.protocol, port), 0)
        if f.protocol in PORT_PROTOCOLS
        else 0
    )
    index = read_groups(dp)
    overflow = MapState(policy=read_overflow(dp))
    for p in [peer] + ([cidr] if cidr else []) + [int(ANY)]:
        raw = index.get(groups.GroupKey(f.subject, p, f.direction))
        if raw is None:
            continue
        gflags, slots = groups.decode_group(raw)
        if not gflags & abi.GroupFlags.OVERFLOW:
            hit = groups.match_slots(slots, int(f.protocol), port, name_id) is not None
        else:
            key = PolicyKey(f.subject, p, f.direction, f.protocol, port, 16)
            hit = lpm_policy(overflow, key) is not None
            if not hit and name_id and gflags & abi.GroupFlags.NAMED:
                named = PolicyKey(f.subject, p, f.direction, f.protocol, name_id, 16, True)
                hit = lpm_policy(overflow, named) is not None
        if hit:
            return True
    return bool(flags & SubjectFlags.AUDIT)


@settings(max_examples=60, deadline=None)
@given(states=st.lists(map_states(), min_size=2, max_size=3))
def test_successive_deltas_leave_exactly_the_last_state_and_its_index(
    states: list[MapState],
) -> None:
    dp = MemoryDatapath()
    applied = MapState()
    for s in states:
        dp.apply(diff(applied, s))
        applied = s
    assert dp.read_state() == states[-1]
    assert read_groups(dp) == expected_groups(states[-1])
    assert read_overflow(dp) == expected_overflow(states[-1])


@settings(max_examples=60, deadline=None)
@given(before=map_states(), after=map_states())
def test_the_group_index_never_drops_a_flow_allowed_before_and_after_while_written(
    before: MapState, after: MapState
) -> None:
    after = MapState(after.subjects, after.policy, before.ipcache, before.cidrs, before.named_ports)
    dp = MemoryDatapath(before)
    flows = [f for f in all_flows() if allowed(before, f) and allowed(after, f)]
    seen: list[Flow] = []

    def check() -> None:
        seen.extend(f for f in flows if not classify(dp, f))

    dp.io.on_write = check
    dp.apply(diff(before, after))
    assert seen == []
    assert all(classify(dp, f) == allowed(after, f) for f in all_flows())


def test_tries_fall_back_to_one_write_per_entry_and_hash_maps_stay_batched() -> None:
    writer = MapWriter(DictMapIO())
    writer.apply(
        MapDelta(
            policy=MapChanges({PolicyKey(300, 400, IN): 1}),
            ipcache=MapChanges({ADDRS[0]: IpcacheEntry(400)}),
            cidrs=MapChanges({NETS[0]: 500}),
        )
    )
    assert mapspecs.POLICY_MAP.name in writer._no_batch
    assert mapspecs.CIDRS_MAP.name in writer._no_batch
    assert mapspecs.IPCACHE_MAP.name not in writer._no_batch
    assert reader.read_state(writer.io) == MapState(
        policy={PolicyKey(300, 400, IN): 1},
        ipcache={ADDRS[0]: IpcacheEntry(400)},
        cidrs={NETS[0]: 500},
    )


def test_deleting_absent_keys_is_a_no_op_in_batches_and_per_entry() -> None:
    dp = MemoryDatapath(MapState(ipcache={ADDRS[0]: IpcacheEntry(400)}, cidrs={NETS[0]: 5}))
    dp.apply(
        MapDelta(
            ipcache=MapChanges(deletes=frozenset({ADDRS[1], ADDRS[0], ADDRS[2]})),
            cidrs=MapChanges(deletes=frozenset({NETS[1], NETS[0]})),
        )
    )
    assert dp.read_state() == MapState()


def test_endpoints_mirror_their_subject_flags_through_every_write() -> None:
    both = SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED
    dp = MemoryDatapath()
    dp.set_endpoint(7, 300)
    dp.set_endpoint(8, 301)
    mirror = codecs.Endpoint.mirroring
    assert reader.read_endpoints(dp.io) == {7: mirror(300, SubjectFlags.NONE),
                                            8: mirror(301, SubjectFlags.NONE)}  # fmt: skip
    dp.apply(diff(MapState(), MapState(subjects={300: both, 301: ISO_IN})))
    assert reader.read_endpoints(dp.io) == {7: mirror(300, both), 8: mirror(301, ISO_IN)}
    dp.set_endpoint(9, 300)
    assert reader.read_endpoints(dp.io)[9] == mirror(300, both)
    dp.apply(diff(dp.read_state(), MapState(subjects={301: SubjectFlags.AUDIT})))
    assert reader.read_endpoints(dp.io) == {7: mirror(300, SubjectFlags.NONE),
                                            8: mirror(301, SubjectFlags.AUDIT),
                                            9: mirror(300, SubjectFlags.NONE)}  # fmt: skip
    dp.delete_endpoint(8)
    assert set(dp.endpoints()) == {7, 9}


def test_sync_at_open_rebuilds_a_stale_index_and_mirror() -> None:
    state = MapState(
        subjects={300: ISO_IN},
        policy={PolicyKey(300, 400 + i, IN, Protocol.TCP, 80 + i, 16): i + 1 for i in range(3)}
        | {PolicyKey(301, 400, IN, Protocol.TCP, p, 16): p for p in range(1000, 1012)},
    )
    dp = MemoryDatapath(state)
    dp.set_endpoint(7, 300)
    dp.io.maps[mapspecs.POLGRP_MAP.name].clear()  # as pinned by a version without the index
    dp.io.maps[mapspecs.POLOVF_MAP.name].clear()
    dp.io.update(mapspecs.ENDPOINTS_MAP, codecs.encode_u32(7),
                 codecs.encode_endpoint(codecs.Endpoint(300)))  # fmt: skip
    reopened = MapWriter(dp.io)  # what Datapath.open does on the pinned maps
    reopened.sync_policy_index()
    reopened.sync_endpoints()
    assert read_groups(dp) == expected_groups(state)
    assert read_overflow(dp) == expected_overflow(state)
    assert reader.read_endpoints(dp.io)[7] == codecs.Endpoint.mirroring(300, ISO_IN)


def test_endpoint_addresses_are_written_before_the_entry_and_removed_after_it() -> None:
    a4, a6, b4 = (ipaddress.ip_address(a) for a in ("10.0.0.1", "fd00::1", "10.0.0.2"))
    dp = MemoryDatapath()
    seen: list[tuple[bool, set[IPAddress]]] = []  # (entry present, addresses) per write

    def record() -> None:
        has_entry = codecs.encode_u32(7) in dp.io.maps.get(mapspecs.ENDPOINTS_MAP.name, {})
        addrs = {
            codecs.decode_epaddr_key(k)[1] for k in dp.io.maps.get(mapspecs.EPADDR_MAP.name, {})
        }
        seen.append((has_entry, addrs))

    dp.io.on_write = record
    dp.set_endpoint(7, 300, (a4, a6))
    assert seen == [(False, {a4}), (False, {a4, a6}), (True, {a4, a6})]
    seen.clear()
    dp.set_endpoint(7, 300, (a6, b4))  # b4 in before the entry is rewritten, a4 out after
    assert seen == [(True, {a4, a6, b4}), (True, {a4, a6, b4}), (True, {a6, b4})]
    seen.clear()
    dp.delete_endpoint(7)
    assert seen[0] == (False, {a6, b4})
    assert seen[-1] == (False, set())
    assert dp.endpoint_addresses() == {}
