"""Kernel == model when the policy trie is too small for the desired state (property test).

The classifier is built with ``LW_POLICY_MAX=4`` (random states hold up to ~34 policy
entries, so most writes fail) and every random state is written from empty maps by the
real writer, failing closed. Then: the subject flags are the desired ones, the trie holds
a subset of the desired entries with its group index in step, the kernel's verdict and
reason on random first packets equal the lookup model's on what the maps hold, and the
kernel never passes a flow the desired state denies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from labelwall.cluster import Direction
from labelwall.datapath import codecs, mapspecs, sizing
from labelwall.datapath.errors import MapFullError
from labelwall.datapath.facade import Datapath
from labelwall.policy.lookup import decide
from labelwall.policy.mapstate import MapState, diff

from . import packets
from .conftest import lw_pins, require_root_bpf
from .helpers import LO, expected_groups, expected_overflow, read_groups, read_overflow, run
from .mapstate_strategies import Flow, flows, map_states

pytestmark = [pytest.mark.root, pytest.mark.bpf]

DEFINES = {"LW_POLICY_MAX": 4}


@pytest.fixture(scope="module")
def small_dp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Datapath]:
    require_root_bpf()
    if lw_pins():
        pytest.fail(f"stale labelwall pins in {mapspecs.PIN_ROOT}: {lw_pins()} (another run?)")
    obj = sizing.object_for(DEFINES, cache=tmp_path_factory.mktemp("bpf"))
    dp = None
    try:
        dp = Datapath.open(obj, maps=mapspecs.resized(DEFINES))
        dp.set_config(codecs.DatapathConfig(events_per_s=1_000_000, events_burst=100_000))
        yield dp
    finally:
        if dp is not None:
            dp.close()
        Datapath.unpin_all()
        assert lw_pins() == []


def _verdict(dp: Datapath, state: MapState, want: MapState, f: Flow) -> bool:
    dp.set_endpoint(LO, f.subject, frozenset({f.subject_addr}))  # its own address (source check)
    dp.clear_conntrack()
    src, dst = (
        (f.subject_addr, f.peer_addr) if f.direction is Direction.EGRESS
        else (f.peer_addr, f.subject_addr)
    )  # fmt: skip
    got = run(dp, f.direction, packets.packet(src, dst, int(f.protocol), f.sport, f.dport))
    model = decide(state, f.subject, f.direction, f.peer_addr, dst, f.protocol, f.dport)
    assert (got.verdict == 1, got.reason) == (model.allowed, model.reason), (f, model)
    if got.verdict == 1:
        desired = decide(want, f.subject, f.direction, f.peer_addr, dst, f.protocol, f.dport)
        assert desired.allowed, (f, desired)
    return got.verdict == 1


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(want=map_states(), data=st.data())
def test_a_too_small_policy_trie_fails_closed_and_the_kernel_agrees_with_the_model(
    small_dp: Datapath, want: MapState, data: st.DataObject
) -> None:
    dp = small_dp
    dp.apply(diff(dp.read_state(), MapState()))  # from empty maps (deletes always fit)
    refused: tuple[str, ...] = ()
    with contextlib.suppress(MapFullError):
        try:
            dp.apply(diff(MapState(), want))
        except MapFullError as full:
            refused = tuple(e.map_name for e in full.all)
            raise
    event(f"refused {refused}")
    assert set(refused) <= {mapspecs.POLICY_MAP.name}
    held = dp.read_state()
    assert held.subjects == want.subjects  # every isolation written
    assert held.policy.items() <= want.policy.items()
    assert (held.ipcache, held.cidrs, held.named_ports) == (
        want.ipcache, want.cidrs, want.named_ports)  # fmt: skip
    assert read_groups(dp) == expected_groups(held)  # the index follows what the trie holds
    assert read_overflow(dp) == expected_overflow(held)
    for f in data.draw(st.lists(flows(), min_size=1, max_size=8)):
        _verdict(dp, held, want, f)
