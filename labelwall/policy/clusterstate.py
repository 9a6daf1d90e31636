"""The compiler's whole input: a cluster's namespaces, pods, nodes and NetworkPolicies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from labelwall.cluster import Namespace, Node, Pod
from labelwall.policy.model import NetworkPolicy


@dataclass(frozen=True)
class ClusterState:
    """Everything the compiler needs. Keys: namespace name, ``ns/name`` for pods and policies."""

    namespaces: Mapping[str, Namespace] = field(default_factory=dict)
    pods: Mapping[str, Pod] = field(default_factory=dict)
    nodes: Mapping[str, Node] = field(default_factory=dict)
    policies: Mapping[str, NetworkPolicy] = field(default_factory=dict)
