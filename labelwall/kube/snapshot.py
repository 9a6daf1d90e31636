"""What the cluster source's watches hold, as one ``SourceSnapshot`` for the agent (pure).

The agent's own pods come from the node-scoped watch, every other pod from the
cluster-wide one. A policy whose newest version fails to parse stays at its last good
version: the API server validated every stored object, so a parse failure means our
validation is stricter than the server's, and silently dropping an isolating policy (or
freezing every other update) would be worse than enforcing the version before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from labelwall.cluster import Namespace, Node, Pod
from labelwall.identity.labels import LabelSet
from labelwall.kube.objects import IdentityRecord, PolicyEntry
from labelwall.kube.registry import IdentityCache
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.model import NetworkPolicy
from labelwall.source import SourceSnapshot


@dataclass(frozen=True)
class Listed:
    """What each watch holds now (every first LIST done)."""

    local_pods: Mapping[str, Pod]
    pods: Mapping[str, Pod]
    namespaces: Mapping[str, Namespace]
    nodes: Mapping[str, Node]
    policies: Mapping[str, PolicyEntry]
    identities: Mapping[int, IdentityRecord]


def keep_last_good(
    entries: Mapping[str, PolicyEntry], last_good: Mapping[str, NetworkPolicy]
) -> dict[str, NetworkPolicy]:
    """Each listed policy's newest version that parsed (``last_good`` remembers older ones).

    The result is also the next call's ``last_good``: a deleted policy is forgotten, and one
    that never parsed is enforced by no version at all (its errors are warnings).
    """
    kept: dict[str, NetworkPolicy] = {}
    for key, entry in sorted(entries.items()):
        policy = entry.policy if entry.policy is not None else last_good.get(key)
        if policy is not None:
            kept[key] = policy
    return kept


def build_snapshot(
    node: str, listed: Listed, last_good: Mapping[str, NetworkPolicy], revision: int
) -> tuple[SourceSnapshot, dict[str, NetworkPolicy]]:
    """The snapshot of ``listed`` for the agent of ``node``, and the new last good policies."""
    pods = {k: p for k, p in listed.pods.items() if p.node != node}
    pods.update(listed.local_pods)
    cache = IdentityCache()
    cache.rebase(listed.identities.values())
    published: dict[LabelSet, int] = cache.published()
    entries = listed.policies
    warnings = tuple(str(e) for key in sorted(entries) for e in entries[key].errors)
    policies = keep_last_good(entries, last_good)
    state = ClusterState(
        namespaces=dict(sorted(listed.namespaces.items())),
        pods=dict(sorted(pods.items())),
        nodes=dict(sorted(listed.nodes.items())),
        policies=policies,
    )
    return SourceSnapshot(state, published, revision, warnings=warnings), policies
