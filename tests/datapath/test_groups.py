"""The group index (datapath/groups.py) on the CPU: slot matching equals the lookup model."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from labelwall.cluster import Direction, Protocol
from labelwall.datapath import abi, groups
from labelwall.policy.lookup import lpm_policy
from labelwall.policy.mapstate import MapState, PolicyKey

from .mapstate_strategies import NAME_IDS, PORTS, PROTOS, crowded_group


@settings(max_examples=400, deadline=None)
@given(
    entries=crowded_group(),
    protocol=st.sampled_from(PROTOS),
    port=st.sampled_from([*PORTS, 0, 1, 65535]),
    name_id=st.sampled_from([0, *NAME_IDS]),
)
def test_slot_matching_equals_the_lookup_models_trie_match(
    entries: dict[PolicyKey, int], protocol: Protocol, port: int, name_id: int
) -> None:
    flags, slots = groups.decode_group(groups.encode_group(entries.items()))
    assert bool(flags & abi.GroupFlags.OVERFLOW) is groups.overflows(entries)
    assert bool(flags & abi.GroupFlags.NAMED) is any(k.named for k in entries)
    if groups.overflows(entries) or not entries:
        return  # the classifier matches those in lw_polovf_v1 (or finds no group)
    g = groups.group_of(next(iter(entries)))
    state = MapState(policy=entries)
    hit = lpm_policy(state, PolicyKey(g.subject, g.peer, g.direction, protocol, port, 16))
    if hit is None and name_id:
        named = PolicyKey(g.subject, g.peer, g.direction, protocol, name_id, 16, True)
        hit = lpm_policy(state, named)
    expected = None if hit is None else hit[1]
    assert groups.match_slots(slots, int(protocol), port, name_id) == expected


def test_a_group_round_trips_its_key_and_orders_port_slots_before_named_ones() -> None:
    g = groups.GroupKey(300, 400, Direction.INGRESS)
    assert groups.decode_group_key(groups.encode_group_key(g)) == g
    entries = {
        PolicyKey(300, 400, g.direction, Protocol.TCP, 1, 16, named=True): 1,
        PolicyKey(300, 400, g.direction): 2,
        PolicyKey(300, 400, g.direction, Protocol.TCP, 80, 16): 3,
    }
    _, slots = groups.decode_group(groups.encode_group(entries.items()))
    assert [s.cookie for s in slots] == [3, 2, 1]
