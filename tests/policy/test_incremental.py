"""Single updates to the incremental compiler, each checked against two full compiles."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import replace

import pytest
from builders import (
    block,
    cluster,
    cport,
    node,
    ns,
    ns_peer,
    pod,
    pods_peer,
    policy,
    port,
    rule,
    sel,
)

from labelwall.cluster import Labels
from labelwall.identity.allocator import InMemoryRegistry
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import compile_cluster
from labelwall.policy.incremental import IncrementalCompiler
from labelwall.policy.mapstate import MapDelta, diff

STATE = cluster(
    [ns("x", team="a"), ns("y", team="b")],
    [
        pod("x", "a", {"app": "a"}, ["10.244.0.1"], [cport(80, "http")]),
        pod("x", "b", {"app": "b"}, ["10.244.0.2"]),
        pod("y", "a", {"app": "a"}, ["10.244.1.1", "fd00:10:244::1"]),
    ],
    [
        policy(
            "x",
            "from-b",
            sel({"app": "a"}),
            ingress=[rule([ns_peer({"team": "b"}), pods_peer({"app": "b"})], [port("http")])],
        ),
        policy(
            "y",
            "egress",
            sel(),
            egress=[rule([block("10.244.0.0/16", "10.244.0.2/32")], [port(80, end=90)])],
        ),
    ],
    [node("n1", "192.168.0.1")],
)

Op = Callable[[IncrementalCompiler], MapDelta]


def run(op: Op, state: ClusterState = STATE) -> tuple[MapDelta, IncrementalCompiler]:
    reg = InMemoryRegistry()
    inc = IncrementalCompiler(state, registry=reg)
    before = compile_cluster(state, registry=reg).map_state
    delta = op(inc)
    after = compile_cluster(inc.state, registry=reg)
    assert delta == diff(before, after.map_state)
    assert inc.map_state == after.map_state
    assert inc.compiled.pod_identity == after.pod_identity
    return delta, inc


OPS: dict[str, Op] = {
    "pod added to an existing identity": lambda i: i.upsert_pod(
        pod("x", "a2", {"app": "a"}, ["10.244.0.9"])
    ),
    "pod added with a new identity": lambda i: i.upsert_pod(
        pod("y", "b", {"app": "b"}, ["10.244.1.2"])
    ),
    "pod relabelled": lambda i: i.upsert_pod(
        replace(STATE.pods["x/b"], labels=Labels({"app": "a"}))
    ),
    "pod deleted": lambda i: i.delete_pod("y/a"),
    "last pod of an identity deleted": lambda i: i.delete_pod("x/a"),
    "pod ports changed": lambda i: i.upsert_pod(
        replace(STATE.pods["x/a"], ports=(cport(8080, "http"),))
    ),
    "namespace relabelled into a selector": lambda i: i.upsert_namespace(ns("x", team="b")),
    "namespace relabelled out of a selector": lambda i: i.upsert_namespace(ns("y", team="c")),
    "namespace deleted": lambda i: i.delete_namespace("y"),
    "new namespace with a policy": lambda i: i.upsert_policy(
        policy("z", "p", sel(), ingress=[rule()])
    ),
    "policy added": lambda i: i.upsert_policy(policy("x", "deny", sel({"app": "b"}), ingress=[])),
    "policy changed": lambda i: i.upsert_policy(
        policy("x", "from-b", sel(), ingress=[rule([], [port(443)])])
    ),
    "policy deleted": lambda i: i.delete_policy("x/from-b"),
    "policy with a new prefix": lambda i: i.upsert_policy(
        policy("x", "cidr", sel(), egress=[rule([block("10.244.1.0/24")])])
    ),
    "policy deleted with its prefixes": lambda i: i.delete_policy("y/egress"),
    "node added on a pod address": lambda i: i.upsert_node(node("n2", "10.244.0.2")),
    "node deleted": lambda i: i.delete_node("n1"),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_each_update_returns_exactly_the_full_compile_diff(name: str) -> None:
    delta, _ = run(OPS[name])
    # A node address equal to a pod address loses to the pod; a policy in a namespace
    # without pods selects nothing.
    expect_empty = name in {"node added on a pod address", "new namespace with a policy"}
    assert delta.is_empty() is expect_empty


def test_a_pod_ip_change_touches_only_the_ipcache_and_named_ports() -> None:
    moved = replace(STATE.pods["x/a"], ips=(ipaddress.ip_address("10.244.0.77"),))
    delta, _ = run(lambda i: i.upsert_pod(moved))
    assert not delta.policy
    assert not delta.subjects
    assert delta.ipcache
    assert delta.named_ports


def test_a_namespace_relabel_renumbers_its_identities() -> None:
    delta, inc = run(OPS["namespace relabelled into a selector"])
    assert delta.subjects
    assert delta.policy
    ident = inc.compiled.pod_identity["x/b"]
    assert inc.compiled.identities[ident].namespace_labels["team"] == "b"


def test_an_unchanged_upsert_returns_an_empty_delta() -> None:
    delta, _ = run(lambda i: i.upsert_pod(STATE.pods["x/a"]))
    assert delta.is_empty()


def test_a_namespace_relabelled_into_a_remote_namespace_selector_gains_access() -> None:
    pol = policy("y", "from-c", sel({"app": "a"}), ingress=[rule([ns_peer({"team": "c"})])])
    state = cluster(STATE.namespaces.values(), STATE.pods.values(), [pol])
    delta, inc = run(lambda i: i.upsert_namespace(ns("x", team="c")), state)
    ya = inc.compiled.pod_identity["y/a"]
    xa = inc.compiled.pod_identity["x/a"]
    assert any(k.subject == ya and k.peer == xa for k in delta.policy.upserts)
