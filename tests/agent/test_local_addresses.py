"""The node's own addresses (a CNI gateway on a host veth included) are ``host`` on that node."""

from __future__ import annotations

import ipaddress

from builders import cluster, node, ns, pod

from labelwall.agent.desired import with_local_addresses
from labelwall.agent.loop import Agent
from labelwall.agent.port import MemoryDatapath, StaticRoutes
from labelwall.datapath import reader
from labelwall.identity.numbers import Reserved
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import CompileOptions
from labelwall.source import SourceSnapshot as Snapshot

from .test_reconcile import ListSource

IP = ipaddress.ip_address
GATEWAY = IP("10.244.1.1")  # what ptp puts on every host-side veth of node n1


def shop() -> ClusterState:
    return cluster(
        [ns("shop")],
        [pod("shop", "web", {"app": "web"}, ["10.244.1.10"], node="n1")],
        nodes=[node("n1", "10.250.0.11"), node("n2", "10.250.0.12")],
    )


def test_local_addresses_extend_only_this_nodes_addresses() -> None:
    out = with_local_addresses(shop(), "n1", frozenset({GATEWAY, IP("10.250.0.11")}))
    assert out.nodes["n1"].addresses == (IP("10.250.0.11"), GATEWAY)
    assert out.nodes["n2"] == shop().nodes["n2"]
    assert out.pods == shop().pods


def test_a_node_the_input_does_not_name_yet_gets_its_local_addresses() -> None:
    out = with_local_addresses(cluster([ns("shop")]), "n1", frozenset({GATEWAY}))
    assert out.nodes["n1"].addresses == (GATEWAY,)


def test_without_a_node_name_or_local_addresses_the_state_is_unchanged() -> None:
    state = shop()
    assert with_local_addresses(state, None, frozenset({GATEWAY})) is state
    assert with_local_addresses(state, "n1", frozenset()) is state


def test_the_agent_writes_the_cni_gateway_as_host_so_kubelet_probes_pass() -> None:
    dp = MemoryDatapath()
    routes = StaticRoutes({IP("10.244.1.10"): 10}, local={GATEWAY, IP("10.250.0.11")})
    agent = Agent(
        ListSource(Snapshot(ClusterState())),
        dp,
        routes,
        options=CompileOptions(node="n1"),  # as app.py builds it for its node
        node="n1",
        clock=lambda: 0.0,
    )
    agent.start()
    assert agent.handle(Snapshot(shop())).ok
    ipcache = reader.read_state(dp.io).ipcache
    assert ipcache[GATEWAY].identity == int(Reserved.HOST)
    assert ipcache[IP("10.250.0.11")].identity == int(Reserved.HOST)
    assert ipcache[IP("10.250.0.12")].identity == int(Reserved.REMOTE_NODE)
