"""Property tests: the lookup model over compiled maps agrees with the naive reference evaluator."""

from __future__ import annotations

import random
from collections.abc import Mapping
from itertools import product
from typing import TypeVar

import reference
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import (
    PROBE_PORTS,
    PROBE_PROTOCOLS,
    clusters_with_policies,
    world_addresses,
)

from labelwall.cluster import Direction, IPAddress, Pod, Protocol
from labelwall.identity.allocator import InMemoryRegistry
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import Compiled, CompileOptions, compile_cluster
from labelwall.policy.lookup import PORT_PROTOCOLS, decide

T = TypeVar("T")

SETTINGS = settings(max_examples=150, deadline=None)


def _probes() -> list[tuple[int, Protocol]]:
    return [
        (p, pr) for pr in PROBE_PROTOCOLS for p in (PROBE_PORTS if pr in PORT_PROTOCOLS else (0,))
    ]


def _model(
    c: Compiled, pod: Pod, d: Direction, peer: IPAddress, dst: IPAddress, pr: Protocol, port: int
) -> bool:
    return decide(c.map_state, c.pod_identity[pod.key], d, peer, dst, pr, port).allowed


def _explain(state: ClusterState, what: str) -> str:
    return f"{what}\npolicies={list(state.policies.values())}\npods={list(state.pods.values())}"


@SETTINGS
@given(clusters_with_policies())
def test_lookup_over_compiled_maps_agrees_with_reference_for_every_pod_pair(
    state: ClusterState,
) -> None:
    c = compile_cluster(state)
    pods = list(state.pods.values())
    for src, dst in product(pods, pods):
        for a, b in product(src.ips, dst.ips):
            if a.version != b.version:
                continue
            for port, pr in _probes():
                eg = _model(c, src, Direction.EGRESS, b, b, pr, port)
                assert eg == reference.egress_allowed(state, src, b, pr, port), _explain(
                    state, f"egress {src.key}->{dst.key} {pr.name}/{port} via {a}->{b}"
                )
                ing = _model(c, dst, Direction.INGRESS, a, b, pr, port)
                assert ing == reference.ingress_allowed(state, dst, a, b, pr, port), _explain(
                    state, f"ingress {src.key}->{dst.key} {pr.name}/{port} via {a}->{b}"
                )


@SETTINGS
@given(clusters_with_policies(), st.lists(world_addresses(), min_size=1, max_size=4))
def test_lookup_agrees_with_reference_for_traffic_to_and_from_world_addresses(
    state: ClusterState, world: list[IPAddress]
) -> None:
    c = compile_cluster(state)
    for pod in state.pods.values():
        for ip, w in product(pod.ips, world):
            if ip.version != w.version:
                continue
            for port, pr in _probes():
                assert _model(c, pod, Direction.EGRESS, w, w, pr, port) == reference.egress_allowed(
                    state, pod, w, pr, port
                ), _explain(state, f"egress {pod.key}->{w} {pr.name}/{port}")
                assert _model(
                    c, pod, Direction.INGRESS, w, ip, pr, port
                ) == reference.ingress_allowed(state, pod, w, ip, pr, port), _explain(
                    state, f"ingress {w}->{pod.key} {pr.name}/{port}"
                )


def _shuffled(state: ClusterState, seed: int) -> ClusterState:
    rng = random.Random(seed)

    def mix(d: Mapping[str, T]) -> dict[str, T]:
        items = list(d.items())
        rng.shuffle(items)
        return dict(items)

    return ClusterState(
        mix(state.namespaces), mix(state.pods), mix(state.nodes), mix(state.policies)
    )


@settings(max_examples=80, deadline=None)
@given(clusters_with_policies(), st.integers(0, 2**32))
def test_compile_result_does_not_depend_on_input_order(state: ClusterState, seed: int) -> None:
    a = compile_cluster(state)
    b = compile_cluster(_shuffled(state, seed))
    assert a.map_state == b.map_state
    assert a.identities == b.identities
    assert a.pod_identity == b.pod_identity
    assert a.cookies == b.cookies
    assert a.warnings == b.warnings


@settings(max_examples=80, deadline=None)
@given(clusters_with_policies())
def test_compile_with_a_shared_registry_is_reproducible(state: ClusterState) -> None:
    reg = InMemoryRegistry()
    assert (
        compile_cluster(state, registry=reg).map_state
        == compile_cluster(state, registry=reg).map_state
    )


@settings(max_examples=80, deadline=None)
@given(clusters_with_policies(), st.data())
def test_local_identities_compile_exactly_the_local_part_of_the_full_maps(
    state: ClusterState, data: st.DataObject
) -> None:
    full = compile_cluster(state)
    local = (
        frozenset(data.draw(st.sets(st.sampled_from(sorted(full.identities)))))
        if full.identities
        else frozenset()
    )
    part = compile_cluster(state, CompileOptions(local_identities=local))
    assert part.map_state.policy == {
        k: v for k, v in full.map_state.policy.items() if k.subject in local
    }
    assert part.map_state.subjects == {
        k: v for k, v in full.map_state.subjects.items() if k in local
    }
    assert part.map_state.ipcache == full.map_state.ipcache
    assert part.map_state.cidrs == full.map_state.cidrs
    assert part.map_state.named_ports == full.map_state.named_ports
