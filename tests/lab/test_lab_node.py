"""The lab registers its own Node (issue 11 item 8): its addresses are ``host``.

Without a Node object the lab node's addresses were `world`, so node -> an isolated pod
(the kubelet probe path) was denied in the lab while a real cluster passes it, and `lab
probe` had no node row to show it. Now the lab writes a Node named after its node with
its addresses as InternalIP when the YAML declares none, and `lab probe` probes every
pod from the node too; measured == expected.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from labelwall.cli.lab import lab_state
from labelwall.cluster import Protocol
from labelwall.identity.numbers import Reserved
from labelwall.lab.control import Lab
from labelwall.lab.fanout import node_source
from labelwall.lab.layout import LabPaths
from labelwall.lab.objects import ObjectStore
from labelwall.lab.truth import measure
from labelwall.policy.compile import compile_cluster

from .helpers import as_docs, sync_to

NS = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "nodes"}}


def _pod(name: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "nodes", "labels": {"app": name}},
        "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
    }


DENY_ALL = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "iso-admits-nothing", "namespace": "nodes"},
    "spec": {"podSelector": {"matchLabels": {"app": "iso"}}, "policyTypes": ["Ingress"]},
}
OBJECTS = [NS, _pod("iso", "10.244.50.1"), _pod("open", "10.244.50.2"), DENY_ALL]
NODE = LabPaths.from_env("/tmp/unused", "lwt-").node


def test_the_lab_state_has_its_node_as_host_unless_the_yaml_declares_a_node() -> None:
    store = ObjectStore(NODE)
    new, state = store.merged(as_docs(OBJECTS))
    assert sorted(state.nodes) == [NODE.name]
    assert {str(a) for a in state.nodes[NODE.name].addresses} == set(NODE.addresses)
    ipcache = compile_cluster(state).map_state.ipcache
    assert ipcache[ipaddress.ip_address(NODE.host_v4)].identity == Reserved.HOST
    addresses = [{"type": "InternalIP", "address": "192.0.2.1"}]
    declared = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                "status": {"addresses": addresses}}  # fmt: skip
    store.objects = new
    _, state = store.merged(as_docs([declared]))
    assert sorted(state.nodes) == ["n1"]  # the YAML's Node, not the lab's


@pytest.mark.root
@pytest.mark.bpf
@pytest.mark.netns
def test_the_node_reaches_an_isolated_pod_and_lab_probe_shows_the_node_rows(lab: Lab) -> None:
    sync_to(lab, OBJECTS)
    node = node_source(lab.paths.node)
    (r,) = lab.probe([{"src": node, "dst": "nodes/iso", "port": 80, "protocol": "TCP"}], 1.0)
    assert r["outcome"] == "ok", r  # today: timeout (the node's address was world)
    (r,) = lab.probe([{"src": "nodes/open", "dst": "nodes/iso", "port": 80, "protocol": "TCP"}])
    assert r["outcome"] == "timeout", r  # a pod is still denied
    cells = measure(lab, lab_state(lab), [(80, Protocol.TCP)])
    rows = [m for m in cells if m.cell.src == node]
    assert sorted(m.cell.dst for m in rows) == ["nodes/iso", "nodes/open"]
    assert all(m.measured and m.cell.allowed for m in rows), rows
    assert not [m for m in cells if m.mismatch]
