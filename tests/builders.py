"""Small builders for frozen cluster and policy values, so tests read like YAML."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from labelwall.cluster import ContainerPort, Direction, Labels, Namespace, Node, Pod, Protocol
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.model import (
    IPBlock,
    LabelSelector,
    NetworkPolicy,
    Operator,
    Peer,
    PortSpec,
    Requirement,
    Rule,
)

ALL = LabelSelector()


def ns(name: str, **labels: str) -> Namespace:
    return Namespace(name, Labels(labels))


def pod(
    namespace: str,
    name: str,
    labels: Mapping[str, str] | None = None,
    ips: Iterable[str] = (),
    ports: Iterable[ContainerPort] = (),
    *,
    node: str | None = None,
    host_network: bool = False,
) -> Pod:
    return Pod(
        namespace,
        name,
        Labels(labels or {}),
        tuple(ipaddress.ip_address(ip) for ip in ips),
        tuple(ports),
        node,
        host_network,
    )


def cport(port: int, name: str | None = None, protocol: Protocol = Protocol.TCP) -> ContainerPort:
    return ContainerPort(port, protocol, name)


def node(name: str, *addresses: str) -> Node:
    return Node(name, tuple(ipaddress.ip_address(a) for a in addresses))


def sel(labels: Mapping[str, str] | None = None, *exprs: Requirement) -> LabelSelector:
    return LabelSelector(Labels(labels or {}), tuple(exprs))


def req(key: str, op: str, *values: str) -> Requirement:
    return Requirement(key, Operator(op), frozenset(values))


def pods_peer(labels: Mapping[str, str] | None = None) -> Peer:
    return Peer(pod_selector=sel(labels))


def ns_peer(labels: Mapping[str, str] | None = None) -> Peer:
    return Peer(namespace_selector=sel(labels))


def both_peer(ns_labels: Mapping[str, str], pod_labels: Mapping[str, str]) -> Peer:
    return Peer(pod_selector=sel(pod_labels), namespace_selector=sel(ns_labels))


def block(cidr: str, *excepts: str) -> Peer:
    return Peer(
        ip_block=IPBlock(
            ipaddress.ip_network(cidr, strict=False),
            tuple(ipaddress.ip_network(e, strict=False) for e in excepts),
        )
    )


def port(
    p: int | str | None = None, protocol: Protocol = Protocol.TCP, end: int | None = None
) -> PortSpec:
    return PortSpec(protocol, p, end)


def rule(peers: Iterable[Peer] = (), ports: Iterable[PortSpec] = ()) -> Rule:
    return Rule(tuple(peers), tuple(ports))


def policy(
    namespace: str,
    name: str,
    selector: LabelSelector = ALL,
    *,
    ingress: Iterable[Rule] | None = None,
    egress: Iterable[Rule] | None = None,
    types: Iterable[Direction] | None = None,
) -> NetworkPolicy:
    """policyTypes defaults as the API server defaults them (Ingress, + Egress if egress rules)."""
    ing = tuple(ingress or ())
    eg = tuple(egress or ())
    if types is None:
        t = {Direction.INGRESS}
        if eg:
            t.add(Direction.EGRESS)
    else:
        t = set(types)
    return NetworkPolicy(namespace, name, selector, frozenset(t), ing, eg)


def cluster(
    namespaces: Iterable[Namespace] = (),
    pods: Iterable[Pod] = (),
    policies: Iterable[NetworkPolicy] = (),
    nodes: Iterable[Node] = (),
) -> ClusterState:
    return ClusterState(
        namespaces={n.name: n for n in namespaces},
        pods={p.key: p for p in pods},
        nodes={n.name: n for n in nodes},
        policies={p.key: p for p in policies},
    )
