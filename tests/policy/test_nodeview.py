"""Offline answers per node: each side of a flow is judged with the maps of the node it runs on."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from builders import cluster, node, ns, pod, policy
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import clusters_with_policies

from labelwall.cluster import Direction, Node, Protocol
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import CompileOptions, compile_cluster
from labelwall.policy.lookup import decide
from labelwall.policy.matrix import address_pair, explain, reachability

ING, EG = Direction.INGRESS, Direction.EGRESS
KUBELET = (10250, Protocol.TCP)


def _two_nodes() -> ClusterState:
    deny_ingress = policy("x", "deny", ingress=[], types=[ING])
    return cluster(
        [ns("x"), ns("kube-system")],
        [
            pod("x", "a", {"app": "a"}, ["10.244.1.10"], node="n1"),
            pod("kube-system", "local", {}, ["192.168.0.11"], node="n1", host_network=True),
            pod("kube-system", "remote", {}, ["192.168.0.22"], node="n2", host_network=True),
        ],
        [deny_ingress],
        [node("n1", "192.168.0.1", "192.168.0.11"), node("n2", "192.168.0.2", "192.168.0.22")],
    )


def _allowed(state: ClusterState, per_node: bool) -> dict[tuple[str, str], bool]:
    return {(c.src, c.dst): c.allowed for c in reachability(state, [KUBELET], per_node=per_node)}


def test_a_hostnetwork_pod_on_another_node_is_judged_by_policy_not_passed_as_host() -> None:
    cells = _allowed(_two_nodes(), per_node=True)
    assert cells[("kube-system/local", "x/a")] is True  # its own node: host, always passes
    assert cells[("kube-system/remote", "x/a")] is False  # remote-node: the deny applies


def test_without_the_per_node_view_every_node_is_local() -> None:
    # The single view the lab (one node) enforces; kept for it, wrong for a real cluster.
    assert _allowed(_two_nodes(), per_node=False)[("kube-system/remote", "x/a")] is True


def test_explain_judges_the_ingress_side_on_the_destination_node() -> None:
    report = explain(_two_nodes(), "kube-system/remote", "x/a", 10250, Protocol.TCP, per_node=True)
    assert report.ingress.verdict.allowed is False
    assert report.ingress.isolated is True
    assert report.ingress.policies == ("x/deny",)


NODE_NAMES = ("n1", "n2")


@st.composite
def multi_node_clusters(draw: st.DrawFn) -> ClusterState:
    """Random clusters with policies whose pods are spread over two nodes."""
    state = draw(clusters_with_policies())
    pods = {
        key: replace(p, node=draw(st.sampled_from(NODE_NAMES))) for key, p in state.pods.items()
    }
    base = next(iter(state.nodes.values()))
    nodes = {
        "n1": Node("n1", base.addresses),
        "n2": Node("n2", (ipaddress.ip_address("192.168.0.2"),)),
    }
    return ClusterState(state.namespaces, pods, nodes, state.policies)


@settings(max_examples=60, deadline=None)
@given(multi_node_clusters())
def test_the_offline_matrix_equals_what_each_nodes_agent_enforces(state: ClusterState) -> None:
    agents = {n: compile_cluster(state, CompileOptions(node=n)) for n in NODE_NAMES}
    for cell in reachability(state, [(80, Protocol.TCP)], per_node=True):
        if cell.src == cell.dst:
            continue
        src, dst = state.pods[cell.src], state.pods[cell.dst]
        addrs = address_pair(src, dst)
        assert addrs is not None
        assert src.node is not None
        assert dst.node is not None
        at_src, at_dst = agents[src.node], agents[dst.node]
        egress = decide(
            at_src.map_state, at_src.pod_identity[src.key], EG, addrs[1], addrs[1],
            Protocol.TCP, 80,
        )  # fmt: skip
        ingress = decide(
            at_dst.map_state, at_dst.pod_identity[dst.key], ING, addrs[0], addrs[1],
            Protocol.TCP, 80,
        )  # fmt: skip
        assert cell.allowed == (egress.allowed and ingress.allowed), (cell.src, cell.dst)
