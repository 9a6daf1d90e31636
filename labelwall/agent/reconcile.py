"""Make the node's datapath match the desired state: map writes, endpoints, tc attachments.

Write order for one sync (why: no flow allowed before and after a change is ever dropped,
and an endpoint never points at an identity whose entries are not complete):

 1. map upserts (the writer orders them: policy, relaxed subjects, ipcache, final subjects)
 2. endpoints: new or relabelled pods get their entry (with the addresses the pod may
    send from: status.podIPs, written before the entry), new pods are attached only after
    their entry exists (an attached veth without an entry would be classified as unknown);
    pods that left are detached, then their entry is deleted (and its addresses after it)
 3. map deletes (entries of identities no endpoint or address uses any more)

Only differences are written: ``applied`` mirrors what the maps hold (read back from the
kernel on start), so a restart with nothing changed writes zero entries, and ``repair``
rewrites only what drifted.

A full map (``MapFullError``) does not stop a sync: the writer has already failed closed
(datapath/writer.py), ``applied`` is read back from the maps, the endpoints are still
synced (a pod whose endpoint the full lw_endpoints_v1 refuses is attached anyway when
the desired state isolates it: a veth without an entry drops everything, closed), and
``full`` says which maps refused what. While ``full`` is set every sync diffs everything
(so the refused entries are retried, not only the keys a snapshot touched); it empties
when a sync writes the whole desired state.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from labelwall.agent.desired import DesiredState
from labelwall.agent.port import DatapathPort, RoutesPort
from labelwall.cluster import IPAddress, Pod
from labelwall.datapath.errors import MapFullError
from labelwall.policy.mapstate import (
    TABLES,
    MapChanges,
    MapDelta,
    MapState,
    SubjectFlags,
    delta_of,
)

log = logging.getLogger("labelwall.agent")


@dataclass
class WriteStats:
    """Entries written by one operation, per map (``endpoints`` included)."""

    upserts: dict[str, int] = field(default_factory=dict)
    deletes: dict[str, int] = field(default_factory=dict)
    attached: int = 0
    detached: int = 0

    @property
    def total(self) -> int:
        return sum(self.upserts.values()) + sum(self.deletes.values())

    def add(self, table: str, upserts: int, deletes: int) -> None:
        if upserts:
            self.upserts[table] = self.upserts.get(table, 0) + upserts
        if deletes:
            self.deletes[table] = self.deletes.get(table, 0) + deletes


def _split(delta: Mapping[str, MapChanges[Any, Any]]) -> tuple[MapDelta, MapDelta]:
    ups = delta_of({t: MapChanges(upserts=dict(ch.upserts)) for t, ch in delta.items()})
    dels = delta_of({t: MapChanges(deletes=ch.deletes) for t, ch in delta.items()})
    return ups, dels


def _by_map(errors: list[MapFullError]) -> tuple[MapFullError, ...]:
    """The last error of each map (the latest count of what it needed), by map name."""
    last = {e.map_name: e for e in errors}
    return tuple(last[name] for name in sorted(last))


def state_dicts(state: MapState) -> dict[str, dict[Any, Any]]:
    return {t.name: dict(t.entries(state)) for t in TABLES}


class Reconciler:
    """Holds what the maps contain (``applied``) and writes the difference to the desired state."""

    def __init__(
        self,
        datapath: DatapathPort,
        routes: RoutesPort,
        node: str | None = None,
    ) -> None:
        self.dp = datapath
        self.routes = routes
        self.node = node or None
        self.applied: dict[str, dict[Any, Any]] = {t.name: {} for t in TABLES}
        self.endpoints: dict[int, int] = {}  # ifindex -> identity, as in the endpoints map
        # ifindex -> addresses its pod may send from, as in lw_epaddr_v1 (source check)
        self.endpoint_addrs: dict[int, frozenset[IPAddress]] = {}
        self.want_addrs: dict[int, frozenset[IPAddress]] = {}  # from desired_endpoints
        self.attached: set[int] = set()
        self.pending: set[str] = set()  # local pods with an address but no host route yet
        self.full: tuple[MapFullError, ...] = ()  # maps that refused entries in the last sync
        self._refused: list[MapFullError] = []  # collected during one sync

    # ---- start ----

    def adopt(self) -> None:
        """Read the pinned maps back: what a previous agent wrote is kept, not flushed."""
        self.applied = state_dicts(self.dp.read_state())
        self.endpoints = self.dp.endpoints()
        self.endpoint_addrs = self.dp.endpoint_addresses()
        self.attached = {i for i in self.endpoints if self._is_attached(i)}

    # ---- map writes ----

    def _changes(
        self, desired: DesiredState, keys: Mapping[str, frozenset[Any]] | None
    ) -> dict[str, MapChanges[Any, Any]]:
        """Differences between desired and applied, over ``keys`` (None: every key)."""
        out: dict[str, MapChanges[Any, Any]] = {}
        full = desired.map_state() if keys is None else None
        for table in TABLES:
            t = table.name
            have = self.applied[t]
            if full is not None:
                want: Mapping[Any, Any] = table.entries(full)
                cand = set(want) | set(have)
            else:
                assert keys is not None
                cand = set(keys.get(t, ()))
            ups: dict[Any, Any] = {}
            dels: set[Any] = set()
            for k in cand:
                v = want.get(k) if full is not None else desired.value(t, k)
                if v is None:
                    if k in have:
                        dels.add(k)
                elif have.get(k) != v:
                    ups[k] = v
            out[t] = MapChanges(ups, frozenset(dels))
        return out

    def _write(self, delta: MapDelta, stats: WriteStats) -> None:
        if delta.is_empty():
            return
        try:
            self.dp.apply(delta)
        except MapFullError as full:
            self._refused.extend(full.all)
            self.adopt_maps_only()  # what the failed-closed writes left
            return
        for table in TABLES:
            ch: MapChanges[Any, Any] = table.changes(delta)
            mirror = self.applied[table.name]
            for k in ch.deletes:
                mirror.pop(k, None)
            mirror.update(ch.upserts)
            stats.add(table.name, len(ch.upserts), len(ch.deletes))

    # ---- endpoints ----

    def _is_attached(self, ifindex: int) -> bool:
        try:
            return self.dp.is_attached(ifindex)
        except Exception:  # a vanished link (LookupError, netlink ENODEV)
            return False

    def local_pods(self, desired: DesiredState) -> list[Pod]:
        return [
            p
            for p in desired.state.pods.values()
            if p.ips and not p.host_network and (self.node is None or p.node in (None, self.node))
        ]

    def desired_endpoints(self, desired: DesiredState) -> dict[int, int]:
        routes = self.routes.host_routes()
        want: dict[int, int] = {}
        addrs: dict[int, frozenset[IPAddress]] = {}
        pending: set[str] = set()
        for pod in self.local_pods(desired):
            ifindex = next((routes[ip] for ip in pod.ips if ip in routes), None)
            ident = desired.identity_of(pod)
            if ifindex is None or ident is None:
                pending.add(pod.key)
                continue
            want[ifindex] = ident
            addrs[ifindex] = frozenset(pod.ips)  # status.podIPs: what it may send from
        self.pending = pending
        self.want_addrs = addrs
        return want

    def _isolated(self, desired: DesiredState, ident: int) -> bool:
        flags = desired.value("subjects", ident) or SubjectFlags.NONE
        return bool(flags & (SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED))

    def _sync_endpoints(
        self, desired: DesiredState, want: Mapping[int, int], stats: WriteStats, check: bool
    ) -> None:
        for ifindex, ident in sorted(want.items()):
            addrs = self.want_addrs.get(ifindex, frozenset())
            if self.endpoints.get(ifindex) != ident or self.endpoint_addrs.get(ifindex) != addrs:
                try:
                    self.dp.set_endpoint(ifindex, ident, addrs)
                except MapFullError as full:
                    self._refused.extend(full.all)
                    # No entry: attached, the veth drops everything (closed), which only
                    # a pod the desired state isolates must get; others keep passing.
                    if ifindex not in self.attached and self._isolated(desired, ident):
                        self._attach(ifindex, stats)
                    continue
                self.endpoints[ifindex] = ident
                self.endpoint_addrs[ifindex] = addrs
                stats.add("endpoints", 1, 0)
            if ifindex not in self.attached or (check and not self._is_attached(ifindex)):
                # Entry first, then the classifier: it never sees this veth without one.
                self._attach(ifindex, stats)
        for ifindex in sorted(set(self.endpoints) - set(want)):
            if ifindex in self.attached:
                try:
                    self.dp.detach(ifindex)
                except Exception as exc:  # usually ENODEV: the veth went
                    # with its pod's namespace, and its filters with it.
                    log.debug("detach skipped", extra={"ifindex": ifindex, "error": str(exc)})
                self.attached.discard(ifindex)
                stats.detached += 1
            self.dp.delete_endpoint(ifindex)
            del self.endpoints[ifindex]
            self.endpoint_addrs.pop(ifindex, None)
            stats.add("endpoints", 0, 1)
        self.attached &= set(self.endpoints) | set(want)

    def _attach(self, ifindex: int, stats: WriteStats) -> None:
        try:
            self.dp.attach(ifindex)
        except Exception as exc:  # link gone (pod deleted): retried
            log.warning("attach failed", extra={"ifindex": ifindex, "error": str(exc)})
            return
        self.attached.add(ifindex)
        stats.attached += 1

    # ---- entry points ----

    def sync(self, desired: DesiredState, keys: Mapping[str, frozenset[Any]] | None) -> WriteStats:
        """Write what changed: ``keys`` from DesiredState.update, or None for a full diff
        (always while a map is full: the refused entries are retried too)."""
        stats = WriteStats()
        self._refused = []
        ups, dels = _split(self._changes(desired, None if self.full else keys))
        self._write(ups, stats)
        self._sync_endpoints(desired, self.desired_endpoints(desired), stats, check=False)
        self._write(dels, stats)
        self.full = _by_map(self._refused)
        return stats

    def repair(self, desired: DesiredState, check_attached: bool = True) -> WriteStats:
        """Re-read the kernel maps and rewrite whatever differs from the desired state.

        ``check_attached`` also asks the kernel whether each veth still has our filters
        (one netlink round trip per pod, the slow part; the loop does it less often).
        """
        self.adopt_maps_only()
        stats = WriteStats()
        self._refused = []
        ups, dels = _split(self._changes(desired, None))
        self._write(ups, stats)
        self.endpoints = self.dp.endpoints()
        self.endpoint_addrs = self.dp.endpoint_addresses()
        self._sync_endpoints(desired, self.desired_endpoints(desired), stats, check=check_attached)
        self._write(dels, stats)
        self.full = _by_map(self._refused)
        return stats

    def adopt_maps_only(self) -> None:
        self.applied = state_dicts(self.dp.read_state())
