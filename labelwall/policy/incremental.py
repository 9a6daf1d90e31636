"""Incremental compilation: one object changes, the map delta comes back (ARCHITECTURE §4).

Every update returns the MapDelta that turns the previous map state into the new one; it
equals ``mapstate.diff(compile(before), compile(after))`` when both compiles share the
registry (the property tests check it). A pod IP change touches only the ipcache and
named-port maps, never the policy map: identities do not depend on addresses.
"""

from __future__ import annotations

from collections.abc import Mapping

from labelwall.cluster import Namespace, Node, Pod
from labelwall.identity.allocator import IdentityRegistry, InMemoryRegistry, PublishedRegistry
from labelwall.identity.labels import LabelSet
from labelwall.policy.attribution import Naming
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import Compiled, CompileOptions, Engine, NeedsRebuild
from labelwall.policy.cookies import RuleRef
from labelwall.policy.mapstate import MapDelta, MapState, diff
from labelwall.policy.model import NetworkPolicy


class IncrementalCompiler:
    """Holds a compiled cluster and applies single-object upserts and deletes to it.

    ``published`` (Kubernetes mode, instead of ``registry``): the Identity objects that
    exist; ``set_published`` updates them. See ``compile_cluster``.
    """

    def __init__(
        self,
        state: ClusterState | None = None,
        options: CompileOptions = CompileOptions(),  # noqa: B008 - frozen value
        registry: IdentityRegistry | None = None,
        published: Mapping[LabelSet, int] | None = None,
    ) -> None:
        self.options = options
        if published is not None:
            if registry is not None:
                raise TypeError("pass registry or published, not both")
            registry = PublishedRegistry(published)
        self.registry: IdentityRegistry = registry if registry is not None else InMemoryRegistry()
        self._engine = Engine.build(state or ClusterState(), options, self.registry)
        self._compiled: Compiled | None = None

    @property
    def map_state(self) -> MapState:
        """A copy of the compiled maps right now."""
        return self._engine.map_state()

    @property
    def compiled(self) -> Compiled:
        """The full compile result (maps, identities, cookies, warnings, stats) right now."""
        if self._compiled is None:
            self._compiled = self._engine.compiled()
        return self._compiled

    @property
    def state(self) -> ClusterState:
        """The objects compiled right now."""
        return self._engine.state()

    def naming(self) -> Naming:
        """What names verdicts now (observe), a few ms where ``compiled`` takes 100s of ms."""
        e = self._engine
        cookies: dict[int, RuleRef] = {}
        for rs in e.rules.values():  # as Engine.compiled: the smallest ref of a cookie
            prev = cookies.get(rs.cookie)
            if prev is None or rs.ref < prev:
                cookies[rs.cookie] = rs.ref
        return Naming(
            cookies, {k: frozenset(ps.subjects) for k, ps in e.pol.items()}, e.state(),
            dict(e.num_ls), dict(e.ls_num), dict(e.cidrs.data), frozenset(self.options.exclude),
        )  # fmt: skip

    def identity_of(self, key: str) -> int | None:
        """The identity the maps give pod ``key`` (``init`` while unpublished)."""
        return self._engine.identity_of(key)

    def _done(self) -> MapDelta:
        self._compiled = None
        return self._engine.take_delta()

    # pods
    def upsert_pod(self, pod: Pod) -> MapDelta:
        """Pod added, relabelled, moved to other IPs, or its ports changed."""
        self._engine.set_pod(pod.key, pod)
        return self._done()

    def delete_pod(self, key: str) -> MapDelta:
        """Pod ``namespace/name`` gone."""
        self._engine.set_pod(key, None)
        return self._done()

    # namespaces
    def upsert_namespace(self, namespace: Namespace) -> MapDelta:
        """Namespace added or relabelled; its pods' identities follow."""
        self._engine.set_namespace(namespace.name, namespace)
        return self._done()

    def delete_namespace(self, name: str) -> MapDelta:
        """Namespace object gone (its pods keep the name and lose its labels)."""
        self._engine.set_namespace(name, None)
        return self._done()

    # nodes
    def upsert_node(self, node: Node) -> MapDelta:
        """Node added or its addresses changed."""
        self._engine.set_node(node.name, node)
        return self._done()

    def delete_node(self, name: str) -> MapDelta:
        """Node gone."""
        self._engine.set_node(name, None)
        return self._done()

    # identities (Kubernetes mode)
    def set_published(self, published: Mapping[LabelSet, int]) -> MapDelta:
        """The Identity objects that exist now; pods move between ``init`` and identities."""
        self._engine.set_published(published)
        return self._done()

    # policies
    def upsert_policy(self, policy: NetworkPolicy) -> MapDelta:
        """NetworkPolicy added or changed (a full recompile when it renumbers, see
        ``NeedsRebuild``; the delta is exact either way)."""
        return self._policy(policy.key, policy)

    def delete_policy(self, key: str) -> MapDelta:
        """NetworkPolicy ``namespace/name`` gone."""
        return self._policy(key, None)

    def _policy(self, key: str, policy: NetworkPolicy | None) -> MapDelta:
        try:
            self._engine.set_policy(key, policy)
        except NeedsRebuild:
            # Rare: a new prefix or port name would renumber an existing one (probe chains
            # met). Recompile from scratch with the same registry and diff.
            before = self._engine.map_state()
            state = self._engine.state()
            policies = dict(state.policies)
            if policy is None:
                policies.pop(key, None)
            else:
                policies[key] = policy
            new = ClusterState(state.namespaces, state.pods, state.nodes, policies)
            self._engine = Engine.build(new, self.options, self.registry)
            self._compiled = None
            return diff(before, self._engine.map_state())
        return self._done()
