"""Drive the IncrementalCompiler from level-triggered snapshots: object diffs in, map changes out.

Each ``update`` compares the new cluster state with the one compiled last, feeds only the
objects that changed to the IncrementalCompiler (namespaces first, so pods see their
namespace's labels; policies last) and composes the deltas into one set of changed keys
per map. A mirror of the compiled maps is kept up to date from those deltas, so the full
desired state is available for restart adoption and drift checks without recompiling.

Two agent-level rules on top of the compiler:

- **Identity grace (ghosts).** A pod that disappears stays in the compiler, without
  addresses, for ``grace_s`` seconds. A pod deleted and re-created (new IP, same labels)
  then keeps its identity, so only the ipcache changes and the policy map is not written;
  a ghost has no address, so it is nobody's peer and nobody's endpoint.
- **init.** With ``published`` label sets (Kubernetes mode), a pod whose label set has no
  Identity object yet is left out of the compiler; its addresses map to the reserved
  ``init`` identity (isolated peers do not admit it) and so does its endpoint. ``init``
  as a subject is isolated both ways (fail closed): until its identity is published, such
  a pod only talks to its own node, whatever policies will select it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from labelwall.cluster import IPAddress, Pod
from labelwall.identity.allocator import IdentityRegistry, InMemoryRegistry
from labelwall.identity.labels import LabelSet
from labelwall.identity.numbers import Reserved
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import CompileOptions
from labelwall.policy.incremental import IncrementalCompiler
from labelwall.policy.mapstate import TABLES as MAP_TABLES
from labelwall.policy.mapstate import (
    IpcacheEntry,
    MapDelta,
    MapState,
    SubjectFlags,
)

TABLES = tuple(t.name for t in MAP_TABLES)
#: ``init`` pods wait for their Identity object isolated both ways: only their node passes.
INIT_FLAGS = SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED
_GONE = object()


class PublishedRegistry:
    """A read-only registry over the Identity objects that exist (Kubernetes mode)."""

    def __init__(self) -> None:
        self.by_labels: dict[LabelSet, int] = {}
        self.by_number: dict[int, LabelSet] = {}

    def set(self, published: Mapping[LabelSet, int]) -> None:
        self.by_labels = dict(published)
        self.by_number = {n: ls for ls, n in published.items()}

    def get(self, number: int) -> LabelSet | None:
        return self.by_number.get(number)

    def claim(self, number: int, labelset: LabelSet) -> bool:
        return self.by_labels.get(labelset) == number

    def find(self, labelset: LabelSet) -> int | None:
        return self.by_labels.get(labelset)


@dataclass(frozen=True)
class Update:
    """What one ``update`` changed: the keys it touched per map (values: see ``value``)."""

    touched: Mapping[str, frozenset[Any]]
    objects: int  # objects fed to the compiler

    def is_empty(self) -> bool:
        return not any(self.touched.values())


def compose(deltas: Iterable[MapDelta]) -> dict[str, dict[Any, Any]]:
    """Later deltas win; a key deleted last maps to the ``_GONE`` marker."""
    out: dict[str, dict[Any, Any]] = {t: {} for t in TABLES}
    for d in deltas:
        for table in MAP_TABLES:
            t, ch = table.name, table.changes(d)
            for k in ch.deletes:
                out[t][k] = _GONE
            out[t].update(ch.upserts)
    return out


class DesiredState:
    """The compiler plus ghosts and init pods; ``maps`` is the full desired map content."""

    def __init__(
        self,
        options: CompileOptions = CompileOptions(),  # noqa: B008 - frozen value
        grace_s: float = 300.0,
        published_mode: bool = False,
    ) -> None:
        self.options = options
        self.grace_s = grace_s
        self.published_mode = published_mode
        self.registry: IdentityRegistry = (
            PublishedRegistry() if published_mode else InMemoryRegistry()
        )
        self.compiler = IncrementalCompiler(ClusterState(), options, self.registry)
        self.mirror: dict[str, dict[Any, Any]] = {t: {} for t in TABLES}
        self.state = ClusterState()  # the last snapshot state compiled (no ghosts)
        self.ghosts: dict[str, float] = {}  # pod key -> monotonic expiry
        self.init_pods: dict[str, Pod] = {}
        self.init_ips: dict[IPAddress, IpcacheEntry] = {}
        #: Subject entries the agent adds on top of the compiler's (init is fail-closed).
        self.fixed_subjects: dict[int, SubjectFlags] = (
            {int(Reserved.INIT): INIT_FLAGS} if published_mode else {}
        )
        self._fixed_announced = False

    # ---- queries ----

    def value(self, table: str, key: Any) -> Any:
        """The desired value of ``key`` (``None`` when absent), init overlay included."""
        v = self.mirror[table].get(key)
        if v is None and table == "ipcache":
            return self.init_ips.get(key)
        if v is None and table == "subjects":
            return self.fixed_subjects.get(key)
        return v

    def map_state(self) -> MapState:
        ipcache = dict(self.init_ips)
        ipcache.update(self.mirror["ipcache"])
        return MapState(
            subjects={**self.fixed_subjects, **self.mirror["subjects"]},
            policy=dict(self.mirror["policy"]),
            ipcache=ipcache,
            cidrs=dict(self.mirror["cidrs"]),
            named_ports=dict(self.mirror["named_ports"]),
        )

    def labelset(self, pod: Pod) -> LabelSet:
        ns = self.state.namespaces.get(pod.namespace)
        return LabelSet.from_pod(pod, ns, self.options.exclude)

    def identity_of(self, pod: Pod) -> int | None:
        """The identity of a pod of the last state (init for unpublished ones)."""
        if pod.key in self.init_pods:
            return int(Reserved.INIT)
        return self.registry.find(self.labelset(pod))

    # ---- updates ----

    def update(
        self, state: ClusterState, now: float, published: Mapping[LabelSet, int] | None = None
    ) -> Update:
        """Compile the changes from the last state to ``state``; returns the touched keys.

        Raises whatever the compiler raises; the caller then calls ``rebuild`` with the last
        good state (the compiler may be half-updated).
        """
        if isinstance(self.registry, PublishedRegistry):
            self.registry.set(published or {})
        state, init = self._split_init(state)
        old = self.compiler.state
        deltas: list[MapDelta] = []
        c = self.compiler
        n = 0
        for name, ns in state.namespaces.items():
            if old.namespaces.get(name) != ns:
                deltas.append(c.upsert_namespace(ns))
                n += 1
        for name, node in state.nodes.items():
            if old.nodes.get(name) != node:
                deltas.append(c.upsert_node(node))
                n += 1
        for key, pod in state.pods.items():
            if old.pods.get(key) != pod:
                self.ghosts.pop(key, None)
                deltas.append(c.upsert_pod(pod))
                n += 1
        for key, pol in state.policies.items():
            if old.policies.get(key) != pol:
                deltas.append(c.upsert_policy(pol))
                n += 1
        for key in old.policies.keys() - state.policies.keys():
            deltas.append(c.delete_policy(key))
            n += 1
        for key, pod in old.pods.items():
            if key in state.pods:
                continue
            if key in self.ghosts:
                if self.ghosts[key] <= now:
                    del self.ghosts[key]
                    deltas.append(c.delete_pod(key))
                    n += 1
            elif self.grace_s > 0 and not pod.host_network:
                self.ghosts[key] = now + self.grace_s
                deltas.append(c.upsert_pod(replace(pod, ips=(), ports=())))
                n += 1
            else:
                deltas.append(c.delete_pod(key))
                n += 1
        for name in old.nodes.keys() - state.nodes.keys():
            deltas.append(c.delete_node(name))
            n += 1
        # A namespace goes only once no pod (ghosts included) needs it.
        in_use = {p.namespace for p in self.compiler.state.pods.values()}
        for name in old.namespaces.keys() - state.namespaces.keys():
            if name not in in_use:
                deltas.append(c.delete_namespace(name))
                n += 1
        touched = compose(deltas)
        for t in TABLES:
            mirror = self.mirror[t]
            for k, v in touched[t].items():
                if v is _GONE:
                    mirror.pop(k, None)
                else:
                    mirror[k] = v
        keys = {t: set(touched[t]) for t in TABLES}
        keys["ipcache"] |= self._set_init(init)
        if not self._fixed_announced:
            keys["subjects"] |= set(self.fixed_subjects)
            self._fixed_announced = True
        self.state = ClusterState(
            namespaces=state.namespaces,
            pods={**state.pods, **init},
            nodes=state.nodes,
            policies=state.policies,
        )
        return Update({t: frozenset(v) for t, v in keys.items()}, n)

    def next_expiry(self) -> float | None:
        return min(self.ghosts.values(), default=None)

    def rebuild(self, state: ClusterState, published: Mapping[LabelSet, int] | None) -> None:
        """Start over from ``state`` with a fresh compiler (after a compiler failure)."""
        fresh = DesiredState(self.options, self.grace_s, self.published_mode)
        fresh.update(state, 0.0, published)
        self.__dict__.update(fresh.__dict__)

    # ---- helpers ----

    def _split_init(self, state: ClusterState) -> tuple[ClusterState, dict[str, Pod]]:
        if not self.published_mode:
            return state, {}
        keep: dict[str, Pod] = {}
        init: dict[str, Pod] = {}
        for key, pod in state.pods.items():
            ls = LabelSet.from_pod(pod, state.namespaces.get(pod.namespace), self.options.exclude)
            if pod.host_network or self.registry.find(ls) is not None:
                keep[key] = pod
            else:
                init[key] = pod
        return ClusterState(state.namespaces, keep, state.nodes, state.policies), init

    def _set_init(self, init: dict[str, Pod]) -> set[IPAddress]:
        want = {ip: IpcacheEntry(int(Reserved.INIT)) for pod in init.values() for ip in pod.ips}
        changed = {
            ip for ip in want.keys() | self.init_ips.keys() if want.get(ip) != self.init_ips.get(ip)
        }
        self.init_ips = want
        self.init_pods = init
        return changed
