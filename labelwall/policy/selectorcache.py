"""Which identities a selector peer selects: the NetworkPolicy peer rule, written once.

Cilium's ``SelectorCache`` is the analogue. A selector peer has a *scope*: the namespaces
it looks in (the policy's own namespace, or those a namespaceSelector matches) and the
pods it takes there (a podSelector, or every pod). ``peer_scope`` turns a peer into that
scope; ``PeerScope.admits`` answers for one label set, and ``SelectorCache`` answers for
every known identity through label indexes. Both read the same scope, so "does this peer
admit that pod" and "which identities does this peer select" cannot disagree.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from labelwall.identity.labels import LabelSet
from labelwall.policy.model import LabelSelector, Peer
from labelwall.policy.selectors import LabelIndex, matches


@dataclass(frozen=True)
class PeerScope:
    """Where a selector peer looks: ``namespace`` (a fixed name) or ``namespace_selector``
    (exactly one is set), and which pods there: ``pod_selector`` None = every pod."""

    namespace: str | None
    namespace_selector: LabelSelector | None
    pod_selector: LabelSelector | None

    def admits_namespace(self, name: str, labels: Mapping[str, str]) -> bool:
        if self.namespace_selector is None:
            return name == self.namespace
        return matches(self.namespace_selector, labels)

    def admits_pods(self, pod_labels: Mapping[str, str]) -> bool:
        return self.pod_selector is None or matches(self.pod_selector, pod_labels)

    def admits(self, ls: LabelSet) -> bool:
        return self.admits_namespace(ls.namespace, ls.namespace_labels) and self.admits_pods(
            ls.pod_labels
        )


def peer_scope(peer: Peer, policy_namespace: str) -> PeerScope | None:
    """The scope of a selector peer (ARCHITECTURE §4); None for peers no identity matches.

    podSelector only: pods in the policy's namespace; namespaceSelector only: every pod in
    matching namespaces; both: pods matching podSelector in namespaces matching
    namespaceSelector. ipBlock peers match by address, never by identity.
    """
    if peer.ip_block is not None:
        return None
    if peer.namespace_selector is None:
        if peer.pod_selector is None:
            return None
        return PeerScope(policy_namespace, None, peer.pod_selector)
    return PeerScope(None, peer.namespace_selector, peer.pod_selector)


def peer_matches(peer: Peer, policy_namespace: str, ls: LabelSet) -> bool:
    """Whether a peer of a policy in ``policy_namespace`` admits pods with label set ``ls``."""
    scope = peer_scope(peer, policy_namespace)
    return scope is not None and scope.admits(ls)


class SelectorCache:
    """Namespaces by their labels and identities by namespace and pod labels.

    Owns the answer to "which identities does this peer select" (``select``) and "does it
    select any" (``selects_any``); the compiler keeps it in step with namespaces and
    identities through ``set_namespace``, ``add_identity`` and ``remove_identity``.
    """

    def __init__(self) -> None:
        self.namespaces: LabelIndex[str] = LabelIndex()
        self._identities: dict[str, LabelIndex[int]] = {}
        #: (namespace, pod selector) -> identities, valid until the next upkeep call;
        #: thousands of policies repeat a few selectors (``{}``, ``app: X``).
        self._memo: dict[tuple[str, LabelSelector], frozenset[int]] = {}

    # ---- upkeep ----

    def has_namespace(self, name: str) -> bool:
        return name in self.namespaces

    def set_namespace(self, name: str, labels: Mapping[str, str]) -> None:
        self._memo.clear()
        self.namespaces.add(name, labels)

    def namespace_labels(self, name: str) -> Mapping[str, str]:
        return self.namespaces.labels(name)

    def add_identity(self, n: int, ls: LabelSet) -> None:
        self._memo.clear()
        self._identities.setdefault(ls.namespace, LabelIndex()).add(n, ls.pod_labels)

    def remove_identity(self, n: int, ls: LabelSet) -> None:
        self._memo.clear()
        idx = self._identities[ls.namespace]
        idx.remove(n)
        if not len(idx):
            del self._identities[ls.namespace]

    # ---- queries ----

    def subjects(self, namespace: str, pod_selector: LabelSelector) -> set[int]:
        """Identities in ``namespace`` whose pod labels ``pod_selector`` matches."""
        return set(self._select(namespace, pod_selector))

    def _select(self, namespace: str, pod_selector: LabelSelector) -> frozenset[int]:
        key = (namespace, pod_selector)
        got = self._memo.get(key)
        if got is None:
            idx = self._identities.get(namespace)
            got = frozenset(idx.select(pod_selector)) if idx is not None else frozenset()
            self._memo[key] = got
        return got

    def scope_namespaces(self, scope: PeerScope) -> Iterable[str]:
        """The known-or-named namespaces a scope looks in."""
        if scope.namespace_selector is None:
            assert scope.namespace is not None
            return (scope.namespace,)
        return self.namespaces.select(scope.namespace_selector)

    def _in_namespace(self, scope: PeerScope, namespace: str) -> Collection[int]:
        idx = self._identities.get(namespace)
        if idx is None:
            return ()
        if scope.pod_selector is None:
            return idx.owners()
        return self._select(namespace, scope.pod_selector)

    def select(self, scope: PeerScope) -> tuple[list[str], set[int]]:
        """The namespaces ``scope`` looks in and the identities it selects there."""
        namespaces = list(self.scope_namespaces(scope))
        selected: set[int] = set()
        for ns in namespaces:
            selected.update(self._in_namespace(scope, ns))
        return namespaces, selected

    def selects_any(self, scope: PeerScope) -> bool:
        return any(self._in_namespace(scope, ns) for ns in self.scope_namespaces(scope))
