"""A LabNode is a value: the lab's addressing plan; a second node is another LabNode (no root)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from labelwall.errors import InvalidInputError
from labelwall.lab.layout import LabPaths
from labelwall.lab.node import LabNode
from labelwall.lab.objects import ObjectStore, PodPorts, lab_pods
from labelwall.manifests import SourceDoc


def _pod(name: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]},
        "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
    }


def _apply(node: LabNode, *objs: dict[str, Any]) -> ObjectStore:
    store = ObjectStore(node)
    docs = [SourceDoc("test", i, o) for i, o in enumerate(objs)]
    store.objects, _ = store.merged(docs)
    return store


def _rejected(node: LabNode, *objs: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidInputError) as caught:
        _apply(node, *objs)
    return [e.message for e in caught.value.errors]


def test_the_default_node_keeps_the_lab_addressing_plan() -> None:
    node = LabNode("lab", "lw-node")
    assert node.host_link == "lw-host0"
    assert node.addresses == ("10.244.0.1", "fd00:10:244::1")
    assert node.pod_cidr(4) == ipaddress.IPv4Network("10.244.0.0/16")
    assert node.pod_cidr(6) == ipaddress.IPv6Network("fd00:10:244::/48")
    assert (node.gateway_v4, node.gateway_v6) == ("169.254.1.1", "fe80::1")
    assert node.nowhere_v4 == "10.244.255.255"


def test_the_lab_paths_name_the_lab_node_after_the_prefix() -> None:
    node = LabPaths.from_env("/tmp/x", "lwq-").node
    assert (node.netns, node.host_link) == ("lwq-node", "lwq-host0")


def test_pods_are_checked_against_the_node_they_run_on() -> None:
    other = LabNode(
        "second", "lw2-node", "lw2-host0", host_v4="10.250.0.1", host_v6="fd00:250::1",
        pod_cidr_v4=ipaddress.IPv4Network("10.250.0.0/16"),
        pod_cidr_v6=ipaddress.IPv6Network("fd00:250::/48"),
    )  # fmt: skip
    store = _apply(other, _pod("a", "10.250.1.2"))
    assert lab_pods(store.state())["default/a"].ports == PodPorts(tcp=(80,))
    assert _rejected(other, _pod("b", "10.244.1.2")) == [
        "Invalid value: '10.244.1.2': the lab's pod CIDR is 10.250.0.0/16"
    ]
    assert _rejected(other, _pod("c", "10.250.0.1")) == [
        "Invalid value: '10.250.0.1': the lab's node holds it"
    ]
    _apply(LabNode("lab", None), _pod("b", "10.244.1.2"))  # the default node takes it
