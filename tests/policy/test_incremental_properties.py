"""Property tests: incremental deltas equal the diff of two full compiles sharing a registry."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import (
    NAMESPACES,
    POD_NAMES,
    VALUES,
    clusters,
    clusters_with_policies,
    container_ports,
    labels_st,
    policies,
    v4,
    v6,
)

from labelwall.cluster import Labels, Namespace, Node, Pod
from labelwall.identity.allocator import InMemoryRegistry
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import compile_cluster
from labelwall.policy.incremental import IncrementalCompiler
from labelwall.policy.mapstate import MapDelta, diff


def _op(data: st.DataObject, inc: IncrementalCompiler, step: int) -> tuple[str, MapDelta]:
    state = inc.state
    kinds = ["pod-add", "ns", "policy", "node"]
    if state.pods:
        kinds += ["pod-relabel", "pod-ip", "pod-delete", "pod-ports"]
    if state.policies:
        kinds += ["policy-delete"]
    kind = data.draw(st.sampled_from(kinds), label="op")
    pods = sorted(state.pods)
    if kind == "pod-add":
        ns = data.draw(st.sampled_from(NAMESPACES))
        name = data.draw(st.sampled_from((*POD_NAMES, f"n{step}")))
        ips = data.draw(st.sampled_from(((v4(100 + step),), (v4(100 + step), v6(100 + step)), ())))
        pod = Pod(ns, name, Labels(data.draw(labels_st)), ips, data.draw(container_ports()))
        return f"upsert {pod}", inc.upsert_pod(pod)
    if kind == "pod-relabel":
        pod = state.pods[data.draw(st.sampled_from(pods))]
        pod = replace(pod, labels=Labels(data.draw(labels_st)))
        return f"relabel {pod}", inc.upsert_pod(pod)
    if kind == "pod-ports":
        pod = replace(
            state.pods[data.draw(st.sampled_from(pods))], ports=data.draw(container_ports())
        )
        return f"ports {pod}", inc.upsert_pod(pod)
    if kind == "pod-ip":
        pod = state.pods[data.draw(st.sampled_from(pods))]
        if pod.host_network:
            return "noop", MapDelta()
        pod = replace(pod, ips=(v4(200 + step), v6(200 + step))[: data.draw(st.integers(0, 2))])
        return f"ip {pod}", inc.upsert_pod(pod)
    if kind == "pod-delete":
        key = data.draw(st.sampled_from(pods))
        return f"delete pod {key}", inc.delete_pod(key)
    if kind == "ns":
        name = data.draw(st.sampled_from(NAMESPACES))
        if data.draw(st.booleans()):
            labels = data.draw(
                st.dictionaries(st.sampled_from(("team", "env")), st.sampled_from(VALUES))
            )
            return f"ns {name} {labels}", inc.upsert_namespace(Namespace(name, Labels(labels)))
        return f"delete ns {name}", inc.delete_namespace(name)
    if kind == "node":
        if data.draw(st.booleans()):
            node = Node(
                "node-2",
                (
                    ipaddress.ip_address(
                        data.draw(st.sampled_from(("192.168.0.2", str(v4(1)), str(v4(300)))))
                    ),
                ),
            )
            return f"node {node}", inc.upsert_node(node)
        return "delete node-2", inc.delete_node("node-2")
    if kind == "policy-delete":
        key = data.draw(st.sampled_from(sorted(state.policies)))
        return f"delete policy {key}", inc.delete_policy(key)
    if not state.namespaces:
        state = ClusterState({"x": Namespace("x")}, state.pods, state.nodes, state.policies)
    name = data.draw(st.sampled_from(("p0", "p1", f"q{step}")))
    pol = data.draw(policies(state, name))
    return f"policy {pol}", inc.upsert_policy(pol)


@settings(max_examples=120, deadline=None)
@given(clusters_with_policies(), st.data())
def test_incremental_deltas_equal_the_diff_of_full_compiles(
    state: ClusterState, data: st.DataObject
) -> None:
    reg = InMemoryRegistry()
    inc = IncrementalCompiler(state, registry=reg)
    before = compile_cluster(state, registry=reg).map_state
    assert inc.map_state == before
    for step in range(data.draw(st.integers(1, 8), label="steps")):
        what, delta = _op(data, inc, step)
        after = compile_cluster(inc.state, registry=reg)
        assert delta == diff(before, after.map_state), what
        assert inc.map_state == after.map_state, what
        assert inc.compiled.identities == after.identities, what
        assert inc.compiled.cookies == after.cookies, what
        before = after.map_state


@settings(max_examples=120, deadline=None)
@given(clusters_with_policies(), st.data())
def test_a_pod_ip_change_changes_no_policy_map_entry(
    state: ClusterState, data: st.DataObject
) -> None:
    movable = sorted(k for k, p in state.pods.items() if not p.host_network)
    if not movable:
        return
    inc = IncrementalCompiler(state)
    pod = state.pods[data.draw(st.sampled_from(movable))]
    n = data.draw(st.integers(0, 2))
    delta = inc.upsert_pod(replace(pod, ips=(v4(500), v6(500))[:n]))
    assert not delta.policy
    assert not delta.subjects
    assert not delta.cidrs
    if pod.ips or n:
        assert delta.ipcache


@settings(max_examples=60, deadline=None)
@given(clusters(), st.data())
def test_policies_added_one_by_one_reach_the_full_compile(
    state: ClusterState, data: st.DataObject
) -> None:
    pols = [data.draw(policies(state, f"p{i}")) for i in range(data.draw(st.integers(1, 4)))]
    reg = InMemoryRegistry()
    inc = IncrementalCompiler(state, registry=reg)
    for pol in pols:
        inc.upsert_policy(pol)
    full = ClusterState(state.namespaces, state.pods, state.nodes, {p.key: p for p in pols})
    assert inc.map_state == compile_cluster(full, registry=reg).map_state
