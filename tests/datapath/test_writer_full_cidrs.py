"""A full lw_cidrs_v1 fails closed too (issue 11 item 3): no address falls back to a
shorter ipBlock prefix than the new state gives it.

The measured hole: an ipBlock 10.0.0.0/8 is allowed, a new policy adds ``except
10.1.0.0/16``; the trie has room for one prefix, so the /16 is refused and 10.1.2.3 still
matches the /8, allowed. Now the /8 around the refused /16 is deleted as well, which makes
room for the /16; the /8 is then the refused one: its addresses are world without a CIDR
identity (denied, the closed failure) until it fits, and MapFullError reports it.
Dict maps as small as a small build (the kernel case is below, root).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from labelwall.agent.port import MemoryDatapath
from labelwall.cluster import Direction, IPAddress, Protocol
from labelwall.datapath import mapspecs, sizing
from labelwall.datapath.errors import MapFullError
from labelwall.datapath.facade import Datapath
from labelwall.identity.numbers import LOCAL_FLAG
from labelwall.policy.lookup import Reason
from labelwall.policy.mapstate import MapState, PolicyKey, SubjectFlags, diff

from . import packets as P  # noqa: N812
from .conftest import lw_pins, require_root_bpf
from .helpers import LO, run, write
from .mapstate_strategies import Flow
from .test_writer_dict import classify

IN = Direction.INGRESS
CIDRS = mapspecs.CIDRS_MAP
L1, L2 = LOCAL_FLAG | 1, LOCAL_FLAG | 2
SUBJECT_ADDR = ipaddress.ip_address("10.244.0.5")
BLOCK, HOLE = ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("10.1.0.0/16")
IN_HOLE, IN_BLOCK = ipaddress.ip_address("10.1.2.3"), ipaddress.ip_address("10.2.0.1")
ALLOW_BLOCK = {PolicyKey(300, L1, IN, Protocol.TCP, 80, 16): 1}
BEFORE = MapState(subjects={300: SubjectFlags.INGRESS_ISOLATED}, policy=ALLOW_BLOCK,
                  cidrs={BLOCK: L1})  # fmt: skip
AFTER = MapState(subjects=BEFORE.subjects, policy=ALLOW_BLOCK, cidrs={BLOCK: L1, HOLE: L2})


def flow(peer: IPAddress) -> Flow:
    return Flow(300, IN, SUBJECT_ADDR, peer, Protocol.TCP, 40000, 80)


def test_a_prefix_the_full_trie_refuses_takes_the_prefixes_around_it_out_too() -> None:
    dp = MemoryDatapath(BEFORE, capacity={CIDRS.name: 1})
    dp.set_endpoint(7, 300)
    assert classify(dp, flow(IN_HOLE))  # before: the block has no hole yet
    with pytest.raises(MapFullError) as full:
        dp.apply(diff(BEFORE, AFTER))
    assert (full.value.map_name, full.value.max_entries, full.value.needed) == (CIDRS.name, 1, 2)
    # the /8 around the refused /16 came out, then the /16 fitted and the /8 did not
    assert dp.read_state().cidrs == {HOLE: L2}
    assert not classify(dp, flow(IN_HOLE))  # the except hole is closed (was: open)
    assert not classify(dp, flow(IN_BLOCK))  # and the block with it: the closed failure
    dp.io.capacity[CIDRS.name] = 4  # space returns: the retry writes both, longest first
    dp.apply(diff(dp.read_state(), AFTER))
    assert dp.read_state() == AFTER
    assert classify(dp, flow(IN_BLOCK))
    assert not classify(dp, flow(IN_HOLE))


def test_prefixes_not_around_the_refused_one_stay() -> None:
    other = ipaddress.ip_network("192.168.0.0/16")
    before = MapState(subjects=BEFORE.subjects, policy=ALLOW_BLOCK,
                      cidrs={BLOCK: L1, other: L1})  # fmt: skip
    after = MapState(subjects=BEFORE.subjects, policy=ALLOW_BLOCK,
                     cidrs={**before.cidrs, HOLE: L2})  # fmt: skip
    dp = MemoryDatapath(before, capacity={CIDRS.name: 2})
    with pytest.raises(MapFullError):
        dp.apply(diff(before, after))
    assert dp.read_state().cidrs == {other: L1, HOLE: L2}  # only the /8 around it is out


@pytest.fixture
def kernel_dp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Datapath]:
    """The classifier built with a one-prefix lw_cidrs_v1 (as the agent builds it from
    mapSizes.cidrs: 1); unpinned afterwards."""
    require_root_bpf()
    if lw_pins():
        pytest.fail(f"stale labelwall pins in {mapspecs.PIN_ROOT}: {lw_pins()} (another run?)")
    monkeypatch.setenv("LABELWALL_BPF_CACHE", str(tmp_path / "cache"))
    defines = sizing.defines_for({CIDRS.name: 1})
    dp = None
    try:
        dp = Datapath.open(sizing.object_for(defines), maps=mapspecs.resized(defines))
        yield dp
    finally:
        if dp is not None:
            dp.close()
        Datapath.unpin_all()


@pytest.mark.root
@pytest.mark.bpf
def test_a_full_kernel_cidr_trie_drops_the_except_hole_then_heals(kernel_dp: Datapath) -> None:
    dp = kernel_dp
    dp.set_endpoint(LO, 300, (SUBJECT_ADDR,))
    write(dp, BEFORE)
    hole = P.packet(IN_HOLE, SUBJECT_ADDR, P.TCP, 40000, 80)
    assert run(dp, IN, hole).reason is Reason.POLICY
    dp.clear_conntrack()
    with pytest.raises(MapFullError):
        dp.apply(diff(dp.read_state(), AFTER))
    assert run(dp, IN, hole).reason is Reason.POLICY_DENIED
