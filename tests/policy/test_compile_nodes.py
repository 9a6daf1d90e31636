"""Only a pod's own node is `host` (always allowed); other nodes are `remote-node`, under policy."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from builders import block, cluster, node, ns, pod, policy, rule

from labelwall.cluster import Direction, Protocol
from labelwall.identity.numbers import Reserved
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import CompileOptions, compile_cluster
from labelwall.policy.incremental import IncrementalCompiler
from labelwall.policy.lookup import Reason, Verdict, decide
from labelwall.policy.mapstate import diff
from labelwall.policy.model import NetworkPolicy

ING, EG = Direction.INGRESS, Direction.EGRESS
ADDR = ipaddress.ip_address
N1, N2, HOSTNET_N2 = "192.168.0.1", "192.168.0.2", "192.168.0.22"


def _state(*extra_policies: NetworkPolicy) -> ClusterState:
    deny_all = policy("x", "deny", ingress=[], egress=[], types=[ING, EG])
    return cluster(
        [ns("x")],
        [
            pod("x", "a", {"app": "a"}, ["10.244.1.10"], node="n1"),
            pod("kube-system", "proxy", {}, [HOSTNET_N2], node="n2", host_network=True),
        ],
        [deny_all, *extra_policies],
        [node("n1", N1), node("n2", N2)],
    )


def _verdict(
    state: ClusterState, direction: Direction, peer: str, node_name: str = "n1"
) -> Verdict:
    c = compile_cluster(state, CompileOptions(node=node_name))
    a, me = c.pod_identity["x/a"], ADDR("10.244.1.10")
    dst = me if direction is ING else ADDR(peer)
    return decide(c.map_state, a, direction, ADDR(peer), dst, Protocol.TCP, 10250)


def test_the_pods_own_node_is_host_and_always_allowed() -> None:
    v = _verdict(_state(), ING, N1)
    assert (v.allowed, v.reason) == (True, Reason.HOST)
    assert _verdict(_state(), EG, N1).allowed


def test_another_node_is_remote_node_and_an_isolated_pod_denies_it_both_ways() -> None:
    for direction in (ING, EG):
        v = _verdict(_state(), direction, N2)
        assert (v.allowed, v.reason, v.peer_identity) == (
            False, Reason.POLICY_DENIED, int(Reserved.REMOTE_NODE),
        )  # fmt: skip
    # A hostNetwork pod on another node is that node, not this one.
    assert not _verdict(_state(), ING, HOSTNET_N2).allowed


def test_an_ipblock_can_admit_remote_nodes() -> None:
    allow = policy("x", "nodes", ingress=[rule([block("192.168.0.0/24")])])
    v = _verdict(_state(allow), ING, N2)
    assert (v.allowed, v.reason) == (True, Reason.POLICY)


def test_without_a_node_every_node_is_local_as_in_the_lab() -> None:
    c = compile_cluster(_state())
    assert c.map_state.ipcache[ADDR(N2)].identity == Reserved.HOST
    assert c.pod_identity["kube-system/proxy"] == Reserved.HOST


def test_incremental_node_and_hostnetwork_moves_equal_full_compiles() -> None:
    opts = CompileOptions(node="n1")
    state = _state()
    inc = IncrementalCompiler(state, opts)
    before = compile_cluster(state, opts).map_state
    assert inc.map_state == before
    moved = replace(state.pods["kube-system/proxy"], node="n1")
    delta = inc.upsert_pod(moved)
    pods = {**state.pods, moved.key: moved}
    after = compile_cluster(replace(state, pods=pods), opts).map_state
    assert delta == diff(before, after)
    assert after.ipcache[ADDR(HOSTNET_N2)].identity == Reserved.HOST
    delta = inc.delete_node("n2")
    final = compile_cluster(replace(state, pods=pods, nodes={"n1": state.nodes["n1"]}), opts)
    assert delta == diff(after, final.map_state)


def test_a_port_with_two_names_warns_that_one_name_is_not_matched() -> None:
    from builders import cport, port

    from labelwall.policy.compile import SHADOWED_PORT_NAME

    web = pod(
        "x", "w", {"app": "w"}, ["10.244.1.20"], [cport(8080, "http"), cport(8080, "metrics")]
    )
    uses_both = policy("x", "p", ingress=[rule([], [port("http")]), rule([], [port("metrics")])])
    c = compile_cluster(cluster([ns("x")], [web], [uses_both]))
    shadowed = [w for w in c.warnings if w.code == SHADOWED_PORT_NAME]
    assert len(shadowed) == 1
    assert "x/w" in shadowed[0].message
