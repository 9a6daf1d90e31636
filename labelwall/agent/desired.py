"""Gather the compiler's inputs from level-triggered snapshots; keep the desired maps it returns.

Each ``update`` turns a snapshot into the compiler's input (``compiler_input``: the
snapshot plus ghosts, below), hands the compiler the published Identity objects in
Kubernetes mode, feeds it only the objects that changed (namespaces first, so pods see
their namespace's labels; policies last) and composes the deltas into one set of changed
keys per map. A mirror of the compiled maps is kept up to date from those deltas, so the
full desired state is available for restart adoption and drift checks without
recompiling.

Every map entry comes from the compiler (``policy/compile.py``), including the reserved
``init`` identity of pods whose Identity object is not published yet: the same input gives
``compile_cluster`` - and so ``matrix`` and ``explain`` - the same maps the agent writes.

One agent-level input rule:

- **Identity grace (ghosts).** A pod that disappears stays in the compiler's input,
  without addresses or ports, for ``grace_s`` seconds. A pod deleted and re-created (new
  IP, same labels) then keeps its identity, so only the ipcache changes and the policy map
  is not written; a ghost has no address, so it is nobody's peer and nobody's endpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from labelwall.cluster import IPAddress, Namespace, Node, Pod
from labelwall.identity.labels import LabelSet
from labelwall.identity.numbers import Reserved
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import CompileOptions
from labelwall.policy.incremental import IncrementalCompiler
from labelwall.policy.mapstate import TABLES as MAP_TABLES
from labelwall.policy.mapstate import MapDelta, MapState

TABLES = tuple(t.name for t in MAP_TABLES)
_GONE = object()


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


def with_local_addresses(
    state: ClusterState, node: str | None, local: frozenset[IPAddress]
) -> ClusterState:
    """``state`` with ``node``'s addresses extended by the addresses found on the node itself.

    The Node object names its InternalIP; the agent also finds the gateway addresses the
    CNI puts on host-side veths (agent/routes.py: why). They are ``host`` on this node
    only, like every Node address (other nodes do not see them: remote nodes keep the
    Node object's addresses). No node name, or nothing local: ``state`` unchanged.
    """
    if node is None or not local:
        return state
    current = state.nodes.get(node)
    have = current.addresses if current is not None else ()
    extra = sorted(local - set(have), key=lambda a: (a.version, int(a)))
    if not extra:
        return state
    nodes = dict(state.nodes)
    nodes[node] = Node(node, (*have, *extra))
    return replace(state, nodes=nodes)


def compiler_input(
    state: ClusterState,
    compiled: ClusterState,
    ghosts: dict[str, float],
    now: float,
    grace_s: float,
    keep_ghost: Mapping[str, bool] | None = None,
) -> ClusterState:
    """The compiler's next input: ``state`` plus the ghosts of pods that left it.

    ``compiled`` is the compiler's current input. A pod that left ``state`` becomes a ghost
    (address- and port-less) until ``now`` passes its expiry in ``ghosts`` (updated here);
    pods back in ``state`` stop being ghosts. ``keep_ghost[key]`` False: the pod leaves at
    once (hostNetwork pods and pods without an identity of their own always do). A
    namespace stays while a pod of the input needs it.
    """
    pods = dict(state.pods)
    for key in state.pods:
        ghosts.pop(key, None)
    for key, pod in compiled.pods.items():
        if key in state.pods:
            continue
        if key in ghosts:
            if ghosts[key] <= now:
                del ghosts[key]
            else:
                pods[key] = pod
        elif grace_s > 0 and not pod.host_network and (keep_ghost or {}).get(key, True):
            ghosts[key] = now + grace_s
            pods[key] = replace(pod, ips=(), ports=())
    namespaces: dict[str, Namespace] = dict(state.namespaces)
    needed = {p.namespace for p in pods.values()}
    for name, ns in compiled.namespaces.items():
        if name not in namespaces and name in needed:
            namespaces[name] = ns
    return ClusterState(namespaces, pods, state.nodes, state.policies)


class DesiredState:
    """The compiler fed from snapshots; ``maps`` is the full desired map content."""

    def __init__(
        self,
        options: CompileOptions = CompileOptions(),  # noqa: B008 - frozen value
        grace_s: float = 300.0,
        published_mode: bool = False,
    ) -> None:
        self.options = options
        self.grace_s = grace_s
        self.published_mode = published_mode
        self.compiler = IncrementalCompiler(
            ClusterState(), options, published={} if published_mode else None
        )
        # Entries of the empty input (the init subject in Kubernetes mode): written on the
        # first update.
        empty = self.compiler.map_state
        self.mirror: dict[str, dict[Any, Any]] = {
            t.name: dict(t.entries(empty)) for t in MAP_TABLES
        }
        self._unannounced: dict[str, set[Any]] = {t: set(self.mirror[t]) for t in TABLES}
        self.state = ClusterState()  # the last snapshot state compiled (no ghosts)
        self.ghosts: dict[str, float] = {}  # pod key -> monotonic expiry

    # ---- queries ----

    def value(self, table: str, key: Any) -> Any:
        """The desired value of ``key`` (``None`` when absent)."""
        return self.mirror[table].get(key)

    def map_state(self) -> MapState:
        return MapState(
            subjects=dict(self.mirror["subjects"]),
            policy=dict(self.mirror["policy"]),
            ipcache=dict(self.mirror["ipcache"]),
            cidrs=dict(self.mirror["cidrs"]),
            named_ports=dict(self.mirror["named_ports"]),
        )

    def labelset(self, pod: Pod) -> LabelSet:
        ns = self.state.namespaces.get(pod.namespace)
        return LabelSet.from_pod(pod, ns, self.options.exclude)

    def identity_of(self, pod: Pod) -> int | None:
        """The identity the compiler gives a pod of the last state (init for unpublished)."""
        return self.compiler.identity_of(pod.key)

    # ---- updates ----

    def update(
        self, state: ClusterState, now: float, published: Mapping[LabelSet, int] | None = None
    ) -> Update:
        """Compile the changes from the last state to ``state``; returns the touched keys.

        Raises whatever the compiler raises; the caller then calls ``rebuild`` with the last
        good state (the compiler may be half-updated).
        """
        c = self.compiler
        deltas: list[MapDelta] = []
        if self.published_mode:
            deltas.append(c.set_published(published or {}))
        old = c.state
        init = int(Reserved.INIT)
        new = compiler_input(
            state,
            old,
            self.ghosts,
            now,
            self.grace_s,
            {k: c.identity_of(k) != init for k in old.pods.keys() - state.pods.keys()},
        )
        n = 0
        for name, ns in new.namespaces.items():
            if old.namespaces.get(name) != ns:
                deltas.append(c.upsert_namespace(ns))
                n += 1
        for name, node in new.nodes.items():
            if old.nodes.get(name) != node:
                deltas.append(c.upsert_node(node))
                n += 1
        for key, pod in new.pods.items():
            if old.pods.get(key) != pod:
                deltas.append(c.upsert_pod(pod))
                n += 1
        for key, pol in new.policies.items():
            if old.policies.get(key) != pol:
                deltas.append(c.upsert_policy(pol))
                n += 1
        for key in old.policies.keys() - new.policies.keys():
            deltas.append(c.delete_policy(key))
            n += 1
        for key in old.pods.keys() - new.pods.keys():
            deltas.append(c.delete_pod(key))
            n += 1
        for name in old.nodes.keys() - new.nodes.keys():
            deltas.append(c.delete_node(name))
            n += 1
        for name in old.namespaces.keys() - new.namespaces.keys():
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
        keys = {t: set(touched[t]) | self._unannounced[t] for t in TABLES}
        self._unannounced = {t: set() for t in TABLES}
        self.state = state
        return Update({t: frozenset(v) for t, v in keys.items()}, n)

    def next_expiry(self) -> float | None:
        return min(self.ghosts.values(), default=None)

    def rebuild(self, state: ClusterState, published: Mapping[LabelSet, int] | None) -> None:
        """Start over from ``state`` with a fresh compiler (after a compiler failure)."""
        fresh = DesiredState(self.options, self.grace_s, self.published_mode)
        fresh.update(state, 0.0, published)
        self.__dict__.update(fresh.__dict__)
