"""A full map fails closed: the subjects the new state isolates are isolated, and it heals.

The writer over dict maps made as small as a build with small size macros
(``DictMapIO.capacity``: E2BIG for hash maps, ENOSPC for tries, as the kernel answers);
the same cases on the kernel's maps are in test_writer_full_kernel.py (root).
"""

from __future__ import annotations

import contextlib
import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelwall.agent.port import MemoryDatapath
from labelwall.cluster import Direction, Protocol
from labelwall.datapath import codecs, mapspecs, reader
from labelwall.datapath.errors import MapFullError
from labelwall.datapath.mapio import DictMapIO
from labelwall.policy.mapstate import IpcacheEntry, MapState, PolicyKey, SubjectFlags, diff

from .mapstate_strategies import ADDRS, SUBJECTS, Flow, all_flows, allowed, map_states
from .test_writer_dict import classify

IN = Direction.INGRESS
ISO_IN = SubjectFlags.INGRESS_ISOLATED
IPCACHE, POLICY, SUBJ = mapspecs.IPCACHE_MAP, mapspecs.POLICY_MAP, mapspecs.SUBJECTS_MAP
ENDPOINT_OF = {300: 7, 301: 8}  # subject identity -> ifindex of one of its pods


def mirrored(dp: MemoryDatapath, ident: int) -> SubjectFlags:
    """The flags the classifier reads for a pod of ``ident`` (its endpoint's mirror)."""
    ep = reader.read_endpoints(dp.io)[ENDPOINT_OF[ident]]
    return SubjectFlags(ep.flags & int(ISO_IN | SubjectFlags.EGRESS_ISOLATED | SubjectFlags.AUDIT))


def with_endpoints(dp: MemoryDatapath) -> MemoryDatapath:
    for ident, ifindex in ENDPOINT_OF.items():
        dp.set_endpoint(ifindex, ident)
    return dp


def test_a_dict_map_refuses_a_new_key_when_full_as_the_kernel_does() -> None:
    io = DictMapIO(capacity={IPCACHE.name: 1, POLICY.name: 1})
    k1, k2 = b"\1" * IPCACHE.key_size, b"\2" * IPCACHE.key_size
    io.update(IPCACHE, k1, b"\0" * IPCACHE.value_size)
    io.update(IPCACHE, k1, b"\1" * IPCACHE.value_size)  # an overwrite still fits
    with pytest.raises(OSError, match="full") as hash_full:
        io.update(IPCACHE, k2, b"\0" * IPCACHE.value_size)
    assert hash_full.value.errno == errno.E2BIG
    io.update(POLICY, b"\1" * POLICY.key_size, b"\0" * POLICY.value_size)
    with pytest.raises(OSError, match="full") as trie_full:
        io.update(POLICY, b"\2" * POLICY.key_size, b"\0" * POLICY.value_size)
    assert trie_full.value.errno == errno.ENOSPC
    assert io.max_entries(IPCACHE) == 1
    assert io.max_entries(SUBJ) == SUBJ.max_entries


def six_pods_and_a_policy() -> tuple[MapState, MapState]:
    """The measured case: a new policy isolates 300 and admits 400, whose pods are 6."""
    before = MapState(ipcache={ADDRS[0]: IpcacheEntry(300), ADDRS[1]: IpcacheEntry(300)})
    peers = {a: IpcacheEntry(400) for a in ADDRS[2:6]}
    after = MapState(
        subjects={300: ISO_IN},
        policy={PolicyKey(300, 400, IN, Protocol.TCP, 80, 16): 1},
        ipcache={**before.ipcache, **peers},
    )
    return before, after


def test_a_full_ipcache_still_isolates_the_pod_the_new_policy_selects() -> None:
    before, after = six_pods_and_a_policy()
    dp = with_endpoints(MemoryDatapath(before, capacity={IPCACHE.name: 4}))
    with pytest.raises(MapFullError) as full:
        dp.apply(diff(before, after))
    assert (full.value.map_name, full.value.max_entries, full.value.needed) == (IPCACHE.name, 4, 6)
    assert "lw_ipcache_v1" in str(full.value)
    assert "4" in str(full.value)
    state = dp.read_state()
    assert state.subjects == {300: ISO_IN}
    assert mirrored(dp, 300) == ISO_IN
    # Today's code leaves 300 open: every flow to it passes. Now what the new state denies
    # is denied, and a peer whose address did not fit is denied too (the closed failure).
    for f in all_flows():
        if f.subject == 300 and not allowed(after, f):
            assert not classify(dp, f, mirrored(dp, 300)), f
    written = [a for a in ADDRS[2:6] if a in state.ipcache]
    assert len(written) == 2
    flow = Flow(300, IN, ADDRS[0], written[0], Protocol.TCP, 1234, 80)
    assert classify(dp, flow, mirrored(dp, 300))


def test_a_full_policy_trie_still_isolates_and_heals_when_the_map_grows() -> None:
    before = MapState(policy={PolicyKey(301, 400, IN, Protocol.TCP, 22, 16): 9})
    rules = {PolicyKey(300, 400, IN, Protocol.TCP, 80 + i, 16): i + 1 for i in range(5)}
    after = MapState(subjects={300: ISO_IN}, policy={**before.policy, **rules})
    dp = with_endpoints(MemoryDatapath(before, capacity={POLICY.name: 4}))
    with pytest.raises(MapFullError) as full:
        dp.apply(diff(before, after))
    assert (full.value.map_name, full.value.max_entries, full.value.needed) == (POLICY.name, 4, 6)
    assert mirrored(dp, 300) == ISO_IN
    assert len(dp.read_state().policy) == 4  # 3 of the 5 new rules fitted
    dp.io.capacity[POLICY.name] = 8  # space returns: the agent's retry completes the delta
    dp.apply(diff(dp.read_state(), after))
    assert dp.read_state() == after
    assert mirrored(dp, 300) == ISO_IN


def test_a_full_policy_trie_heals_when_a_policy_is_removed() -> None:
    old = {PolicyKey(301, 400, IN, Protocol.TCP, 22 + i, 16): 9 for i in range(3)}
    new = {PolicyKey(300, 400, IN, Protocol.TCP, 80 + i, 16): i + 1 for i in range(3)}
    before = MapState(subjects={301: ISO_IN}, policy=old)
    both = MapState(subjects={300: ISO_IN, 301: ISO_IN}, policy=old | new)
    dp = with_endpoints(MemoryDatapath(before, capacity={POLICY.name: 4}))
    with pytest.raises(MapFullError):
        dp.apply(diff(before, both))
    assert mirrored(dp, 300) == ISO_IN
    assert mirrored(dp, 301) == ISO_IN
    only_new = MapState(subjects={300: ISO_IN}, policy=new)  # 301's policy removed
    dp.apply(diff(dp.read_state(), only_new))
    assert dp.read_state() == only_new
    assert mirrored(dp, 301) == SubjectFlags.NONE


def test_a_full_subjects_map_isolates_the_new_identity_through_its_endpoints() -> None:
    before = MapState(subjects={301: ISO_IN})
    dp = with_endpoints(MemoryDatapath(before, capacity={SUBJ.name: 1}))
    with pytest.raises(MapFullError) as full:
        dp.apply(diff(before, MapState(subjects={300: ISO_IN, 301: ISO_IN})))
    assert full.value.map_name == SUBJ.name
    assert 300 not in dp.read_state().subjects
    assert mirrored(dp, 300) == ISO_IN  # the classifier reads the mirror
    dp.set_endpoint(9, 300)  # a new pod of the refused identity starts isolated too
    assert reader.read_endpoints(dp.io)[9] == codecs.Endpoint.mirroring(300, ISO_IN)


def test_every_full_map_of_one_delta_is_named() -> None:
    before, after = six_pods_and_a_policy()
    extra: dict[PolicyKey, int] = {PolicyKey(300, 400, IN, Protocol.TCP, 81, 16): 2}
    after = MapState(after.subjects, {**after.policy, **extra}, after.ipcache)
    dp = MemoryDatapath(before, capacity={IPCACHE.name: 4, POLICY.name: 1})
    with pytest.raises(MapFullError) as full:
        dp.apply(diff(before, after))
    assert [e.map_name for e in full.value.all] == [POLICY.name, IPCACHE.name]


@settings(max_examples=120, deadline=None)
@given(
    before=map_states(),
    after=map_states(),
    room=st.integers(0, 3),
    subjects_room=st.integers(0, 1),
)
def test_a_full_policy_or_subjects_map_never_passes_a_flow_the_new_state_denies(
    before: MapState, after: MapState, room: int, subjects_room: int
) -> None:
    # Identity maps as before (the ipcache/cidr fallback is argued in writer.py); the
    # policy trie and the subjects map get a little room beyond what ``before`` holds.
    after = MapState(after.subjects, after.policy, before.ipcache, before.cidrs, before.named_ports)
    capacity = {
        POLICY.name: len(before.policy) + room,
        SUBJ.name: len(before.subjects) + subjects_room,
    }
    dp = with_endpoints(MemoryDatapath(before, capacity=capacity))
    with contextlib.suppress(MapFullError):
        dp.apply(diff(before, after))
    for ident in SUBJECTS:
        want = after.subjects.get(ident, SubjectFlags.NONE)
        assert mirrored(dp, ident) & ~SubjectFlags.AUDIT == want & ~SubjectFlags.AUDIT
    for f in all_flows():
        if classify(dp, f, mirrored(dp, f.subject)):
            assert allowed(after, f), f
    dp.io.capacity.clear()  # space returns: one retry converges
    dp.apply(diff(dp.read_state(), after))
    assert dp.read_state() == after
    assert all(mirrored(dp, i) == after.subjects.get(i, SubjectFlags.NONE) for i in SUBJECTS)
