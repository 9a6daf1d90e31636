"""The grouped matrix (bit sets per group of interchangeable pods) equals the per-pair one."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from builders import cluster, cport, ns, pod, policy
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import PORT_NAMES, PORT_NUMBERS, PROTOCOLS, clusters_with_policies

from labelwall.cluster import Node, Protocol
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import compile_cluster
from labelwall.policy.matrix import PortProto, reachability
from labelwall.policy.reachgroups import ALLOWED, BLOCKED, NO_CELL, NO_PORT, GroupedMatrix

PORTS: list[PortProto] = [
    *[(n, p) for n in PORT_NUMBERS[:2] for p in PROTOCOLS],
    *[(name, Protocol.TCP) for name in PORT_NAMES],
    (53, Protocol.UDP),
]


def _assert_same(state: ClusterState, per_node: bool) -> None:
    c = compile_cluster(state)
    m = GroupedMatrix(c, PORTS, per_node=per_node)
    ref = reachability(c, PORTS, per_node=per_node)
    cells = {(x.src, x.dst, x.port, x.protocol): x.allowed for x in ref}
    pods = m.pods
    for pp in PORTS:
        for src, row in zip(pods, m.rows(pods, pods, pp), strict=True):
            for dst, ch in zip(pods, row, strict=True):
                want = cells.get((src, dst, pp[0], pp[1]))
                got = None if ch == NO_CELL else ch == ALLOWED
                assert got == want, (src, dst, pp, ch)
                assert m.allows(src, dst, pp) == want
    for x in ref[:40]:
        full = m.cell(x.src, x.dst, (x.port, x.protocol))
        assert full == x


@settings(max_examples=120, deadline=None)
@given(clusters_with_policies())
def test_grouped_equals_ungrouped_in_the_one_node_view(state: ClusterState) -> None:
    _assert_same(state, per_node=False)


@settings(max_examples=80, deadline=None)
@given(clusters_with_policies(), st.data())
def test_grouped_equals_ungrouped_per_node(state: ClusterState, data: st.DataObject) -> None:
    names = ("n1", "n2")
    pods = {k: replace(p, node=data.draw(st.sampled_from(names))) for k, p in state.pods.items()}
    base = next(iter(state.nodes.values()))
    nodes = {
        "n1": Node("n1", base.addresses),
        "n2": Node("n2", (ipaddress.ip_address("192.168.0.2"),)),
    }
    _assert_same(ClusterState(state.namespaces, pods, nodes, state.policies), per_node=True)


def test_pods_alike_share_one_group_and_a_missing_named_port_is_its_own_mark() -> None:
    state = cluster(
        [ns("x")],
        [
            pod("x", "a1", {"app": "a"}, ["10.244.0.1"], [cport(80, "http")]),
            pod("x", "a2", {"app": "a"}, ["10.244.0.2"], [cport(80, "http")]),
            pod("x", "b", {"app": "b"}, ["10.244.0.3"]),
        ],
        [policy("x", "deny", ingress=[])],
    )
    m = GroupedMatrix(state, [("http", Protocol.TCP)])
    assert len(m.groups) == 2
    row = m.row("x/a1", ["x/a1", "x/a2", "x/b"], ("http", Protocol.TCP))
    # itself (loopback) allowed; its twin blocked by the deny; b declares no port "http".
    assert row == ALLOWED + BLOCKED + NO_PORT
