"""Desired BPF map contents in host byte order, and the delta between two of them.

This is the contract between the compiler (``policy/compile.py``), the lookup model
(``policy/lookup.py``) and the datapath writer (``datapath/writer.py``). Each field
corresponds to one pinned map (names in ``bpf_src/include/labelwall/abi.h``):

- ``subjects``    -> ``lw_subjects_v1``  identity -> SubjectFlags (isolation, audit).
                     No entry: no policy selects the identity (not isolated).
- ``policy``      -> ``lw_policy_v1``    LPM trie. Key (subject, peer, direction, protocol,
                     port/port_bits, named). Presence = allow; value = rule cookie.
- ``ipcache``     -> ``lw_ipcache_v1``   exact pod/node address -> (identity, cidr identity).
- ``cidrs``       -> ``lw_cidrs_v1``     LPM trie of ipBlock prefixes -> cidr identity, for
                     addresses that are not in ``ipcache`` (their identity is WORLD).
- ``named_ports`` -> ``lw_ports_v1``     (pod address, protocol, port) -> name id, for named
                     ports; a policy entry with ``named=True`` has ``port`` = name id.

The endpoints map (host-veth ifindex -> identity) is node-local and owned by the agent.

``TABLES`` is that list of fields as typed descriptors (``MapTable``), in field order:
everything that goes over "every map" (diff, apply, the writer's plan, the agent, the CLI,
the benches) iterates it instead of spelling the names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import IntFlag
from typing import Any, Generic, TypeVar

from labelwall.cluster import Direction, IPAddress, IPNetwork, Protocol


class SubjectFlags(IntFlag):
    """Mirrors LW_SUBJECT_* in abi.h."""

    NONE = 0
    INGRESS_ISOLATED = 1
    EGRESS_ISOLATED = 2
    AUDIT = 4


@dataclass(frozen=True, order=True)
class PolicyKey:
    """One allow entry.

    ``protocol`` ANY: all protocols and ports (then ``port``/``port_bits`` are 0).
    Otherwise ``port_bits`` (0..16) is how many leading bits of ``port`` must match:
    16 = exactly ``port``, 0 = any port of ``protocol``; ranges (endPort) decompose into
    several prefix entries. ``named``: ``port`` is a name id from ``named_ports`` and
    ``port_bits`` is 16.
    """

    subject: int
    peer: int
    direction: Direction
    protocol: Protocol = Protocol.ANY
    port: int = 0
    port_bits: int = 0
    named: bool = False


@dataclass(frozen=True, order=True)
class IpcacheEntry:
    identity: int
    cidr_identity: int = 0  # longest policy prefix containing the address, 0 if none


@dataclass(frozen=True, order=True)
class NamedPortKey:
    address: IPAddress
    protocol: Protocol
    port: int


K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class MapState:
    subjects: Mapping[int, SubjectFlags] = field(default_factory=dict)
    policy: Mapping[PolicyKey, int] = field(default_factory=dict)
    ipcache: Mapping[IPAddress, IpcacheEntry] = field(default_factory=dict)
    cidrs: Mapping[IPNetwork, int] = field(default_factory=dict)
    named_ports: Mapping[NamedPortKey, int] = field(default_factory=dict)


@dataclass(frozen=True)
class MapChanges(Generic[K, V]):
    """Changes to one map: entries to insert or overwrite, keys to delete."""

    upserts: Mapping[K, V] = field(default_factory=dict)
    deletes: frozenset[K] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.upserts) or bool(self.deletes)

    def __len__(self) -> int:
        return len(self.upserts) + len(self.deletes)


@dataclass(frozen=True)
class MapDelta:
    subjects: MapChanges[int, SubjectFlags] = field(default_factory=MapChanges)
    policy: MapChanges[PolicyKey, int] = field(default_factory=MapChanges)
    ipcache: MapChanges[IPAddress, IpcacheEntry] = field(default_factory=MapChanges)
    cidrs: MapChanges[IPNetwork, int] = field(default_factory=MapChanges)
    named_ports: MapChanges[NamedPortKey, int] = field(default_factory=MapChanges)

    def is_empty(self) -> bool:
        return not any(t.changes(self) for t in TABLES)


@dataclass(frozen=True)
class MapTable(Generic[K, V]):
    """One MapState field: its name and typed access to it in a MapState and a MapDelta."""

    name: str  # the MapState / MapDelta field
    entries: Callable[[MapState], Mapping[K, V]]
    changes: Callable[[MapDelta], MapChanges[K, V]]


SUBJECTS: MapTable[int, SubjectFlags] = MapTable(
    "subjects", lambda s: s.subjects, lambda d: d.subjects
)
POLICY: MapTable[PolicyKey, int] = MapTable("policy", lambda s: s.policy, lambda d: d.policy)
IPCACHE: MapTable[IPAddress, IpcacheEntry] = MapTable(
    "ipcache", lambda s: s.ipcache, lambda d: d.ipcache
)
CIDRS: MapTable[IPNetwork, int] = MapTable("cidrs", lambda s: s.cidrs, lambda d: d.cidrs)
NAMED_PORTS: MapTable[NamedPortKey, int] = MapTable(
    "named_ports", lambda s: s.named_ports, lambda d: d.named_ports
)

#: Every map table, in MapState field order.
TABLES: tuple[MapTable[Any, Any], ...] = (SUBJECTS, POLICY, IPCACHE, CIDRS, NAMED_PORTS)

if [t.name for t in TABLES] != [f.name for f in fields(MapState)] or [
    f.name for f in fields(MapState)
] != [f.name for f in fields(MapDelta)]:  # a new field is one more MapTable here
    raise TypeError("mapstate.TABLES must list MapState's and MapDelta's fields in order")


def state_of(tables: Mapping[str, Mapping[Any, Any]]) -> MapState:
    """A MapState from per-table contents keyed by MapTable.name (missing: empty)."""
    return MapState(**{t.name: tables.get(t.name, {}) for t in TABLES})


def delta_of(tables: Mapping[str, MapChanges[Any, Any]]) -> MapDelta:
    """A MapDelta from per-table changes keyed by MapTable.name (missing: none)."""
    return MapDelta(**{t.name: tables.get(t.name, MapChanges()) for t in TABLES})


def diff_map(before: Mapping[K, V], after: Mapping[K, V]) -> MapChanges[K, V]:
    upserts = {k: v for k, v in after.items() if before.get(k) != v}
    deletes = frozenset(k for k in before if k not in after)
    return MapChanges(upserts, deletes)


def diff(before: MapState, after: MapState) -> MapDelta:
    """The delta that turns ``before`` into ``after`` (pure)."""
    return delta_of({t.name: diff_map(t.entries(before), t.entries(after)) for t in TABLES})


def apply_changes(state: Mapping[K, V], changes: MapChanges[K, V]) -> dict[K, V]:
    out = {k: v for k, v in state.items() if k not in changes.deletes}
    out.update(changes.upserts)
    return out


def apply(state: MapState, delta: MapDelta) -> MapState:
    """``apply(a, diff(a, b)) == b`` (pure)."""
    return state_of({t.name: apply_changes(t.entries(state), t.changes(delta)) for t in TABLES})
