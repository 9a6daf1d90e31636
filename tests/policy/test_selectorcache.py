"""The peer rule is written once: the selector cache selects exactly the identities that
``peer_matches`` admits one by one, and both agree with the reference evaluator."""

from __future__ import annotations

import reference
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import NAMESPACES, clusters, peers

from labelwall.identity.labels import LabelSet, namespace_labels
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.model import LabelSelector, NetworkPolicy, Peer
from labelwall.policy.selectorcache import SelectorCache, peer_matches, peer_scope

SETTINGS = settings(max_examples=200, deadline=None)


def _cache(state: ClusterState) -> tuple[SelectorCache, dict[int, LabelSet]]:
    cache = SelectorCache()
    for name in NAMESPACES:
        ns = state.namespaces.get(name)
        if ns is not None:
            cache.set_namespace(name, namespace_labels(ns))
    idents: dict[int, LabelSet] = {}
    for pod in state.pods.values():
        if pod.host_network:
            continue
        ls = LabelSet.from_pod(pod, state.namespaces.get(pod.namespace))
        n = next((k for k, v in idents.items() if v == ls), len(idents) + 1)
        if n not in idents:
            idents[n] = ls
            cache.add_identity(n, ls)
    return cache, idents


@SETTINGS
@given(st.data())
def test_select_equals_peer_matches_one_by_one_and_the_reference(data: st.DataObject) -> None:
    state = data.draw(clusters())
    peer: Peer = data.draw(peers([]).filter(lambda p: p.ip_block is None))
    policy_ns = data.draw(st.sampled_from(sorted(state.namespaces)))
    cache, idents = _cache(state)
    scope = peer_scope(peer, policy_ns)
    assert scope is not None
    _, selected = cache.select(scope)
    one_by_one = {n for n, ls in idents.items() if peer_matches(peer, policy_ns, ls)}
    assert selected == one_by_one
    assert cache.selects_any(scope) == bool(one_by_one)
    policy = NetworkPolicy(policy_ns, "p", LabelSelector(), frozenset())
    for pod in state.pods.values():
        if pod.host_network or not pod.ips:
            continue
        ls = LabelSet.from_pod(pod, state.namespaces.get(pod.namespace))
        want = reference.peer_matches(state, policy, peer, pod.ips[0])
        assert peer_matches(peer, policy_ns, ls) == want, (peer, pod)


def test_peers_without_selectors_select_no_identity() -> None:
    assert peer_scope(Peer(), "shop") is None
