"""Successive deltas leave exactly the last state in the kernel, from any state before.

One datapath serves every example (loading the BPF object costs about 3 s, and 40 fresh
loads made this the slowest test in CI); each example starts from the state the previous one
left, so it also covers deltas between two non-empty kernels.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelwall.datapath import reader
from labelwall.datapath.facade import Datapath
from labelwall.policy.mapstate import MapState, diff

from .conftest import fresh_datapath
from .helpers import expected_groups, expected_overflow, read_groups, read_overflow
from .mapstate_strategies import map_states

pytestmark = [pytest.mark.root, pytest.mark.bpf]


@pytest.fixture(scope="module")
def shared_dp() -> Iterator[Datapath]:
    with fresh_datapath() as datapath:
        yield datapath


@settings(max_examples=60, deadline=None)
@given(states=st.lists(map_states(), min_size=2, max_size=3))
def test_successive_deltas_leave_exactly_the_last_state_in_the_kernel(
    shared_dp: Datapath, states: list[MapState]
) -> None:
    dp = shared_dp
    applied = dp.read_state()  # what the previous example left (empty at first)
    for s in states:
        dp.apply(diff(applied, s))
        applied = s
    assert dp.read_state() == states[-1]
    assert read_groups(dp) == expected_groups(states[-1])
    assert read_overflow(dp) == expected_overflow(states[-1])
    assert reader.read_endpoints(dp.io) == {}  # no endpoint was set: nothing to mirror
