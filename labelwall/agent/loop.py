"""The agent's main loop: snapshots in, incremental writes out, drift repair on a timer.

One thread does all datapath work (sync, repair, endpoint retries), so writes never
interleave. A bad snapshot (source errors, two pods with one address, a compiler failure)
is logged and rejected: the previous good state stays enforced.

A full map is not a rejected snapshot: the writer fails closed and the reconciler keeps
which maps refused what (``Reconciler.full``); the loop reports it (an error log line per
map naming its size and what it needed, ``labelwall_agent_enforcement_degraded``, the
lab's status file) and, because every drift check (and every sync while degraded) diffs
the whole desired state, retries until the entries fit: a policy removed or a pod gone
heals it without a restart (the gauge returns to 0, an info line says so).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from labelwall.agent.desired import DesiredState, with_local_addresses
from labelwall.agent.metrics import AgentMetrics
from labelwall.agent.port import DatapathPort, RoutesPort
from labelwall.agent.reconcile import Reconciler, WriteStats
from labelwall.cluster import IPAddress
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import CompileOptions
from labelwall.source import ClusterSource, SourceSnapshot

log = logging.getLogger("labelwall.agent")

#: How often the maps are re-read and compared with the desired state (seconds).
DRIFT_INTERVAL_S = 1.0
#: Every how many drift checks the tc attachments are verified too (netlink per pod).
ATTACH_CHECK_EVERY = 5
#: How soon a pod with an address but no host route yet is retried (seconds).
PENDING_RETRY_S = 0.05


@dataclass(frozen=True)
class AgentSyncResult:
    ok: bool
    writes: int
    seconds: float
    errors: tuple[str, ...] = ()


def duplicate_addresses(state: ClusterState) -> list[str]:
    """Two pods claiming one address: which one's packets are they? Reject the snapshot."""
    owner: dict[IPAddress, str] = {}
    errors = []
    for key in sorted(state.pods):
        pod = state.pods[key]
        if pod.host_network:
            continue
        for ip in pod.ips:
            if ip in owner:
                errors.append(f"Pod {key}: IP {ip} is also the IP of Pod {owner[ip]}")
            else:
                owner[ip] = key
    return errors


class Agent:
    def __init__(
        self,
        source: ClusterSource,
        datapath: DatapathPort,
        routes: RoutesPort,
        *,
        options: CompileOptions = CompileOptions(),  # noqa: B008 - frozen value
        node: str | None = None,
        grace_s: float = 300.0,
        published_mode: bool = False,
        metrics: AgentMetrics | None = None,
        drift_interval_s: float = DRIFT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.desired = DesiredState(options, grace_s, published_mode)
        self.reconciler = Reconciler(datapath, routes, node)
        self.routes = routes
        self.node = node
        self.metrics = metrics or AgentMetrics()
        self.drift_interval_s = drift_interval_s
        self.clock = clock
        self.started = False
        self.startup_writes: int | None = None
        self.last_good: SourceSnapshot | None = None
        self.heartbeat = clock()
        self.repairs = 0
        self.reported_full: tuple[tuple[str, int, int], ...] = ()  # (map, max, needed) logged
        #: Called in the loop thread after each good sync (observe: publish the flow view).
        self.on_synced: Callable[[DesiredState], None] | None = None
        #: Called by the process wiring before the datapath closes (observe: stop readers).
        self.on_stop: list[Callable[[], None]] = []

    # ---- one step each ----

    def start(self) -> None:
        """Adopt what the pinned maps hold (a previous agent's work is kept)."""
        self.reconciler.adopt()
        self.started = True
        log.info(
            "adopted pinned maps",
            extra={
                "entries": sum(len(v) for v in self.reconciler.applied.values()),
                "endpoints": len(self.reconciler.endpoints),
            },
        )

    def handle(self, snap: SourceSnapshot) -> AgentSyncResult:
        """Compile and write one snapshot; reject it (state unchanged) if it is bad."""
        t0 = time.perf_counter()
        for w in snap.warnings:
            log.warning("snapshot warning", extra={"revision": snap.revision, "warning": w})
        errors = list(snap.errors) or duplicate_addresses(snap.state)
        if errors:
            for e in errors:
                log.error("snapshot rejected", extra={"revision": snap.revision, "error": e})
            self.metrics.syncs.labels("rejected").inc()
            return AgentSyncResult(False, 0, time.perf_counter() - t0, tuple(errors))
        try:
            state = with_local_addresses(snap.state, self.node, self.routes.local_addresses())
            update = self.desired.update(state, self.clock(), snap.published)
        except Exception as exc:
            log.exception(
                "compile failed; keeping the previous state", extra={"revision": snap.revision}
            )
            self.metrics.syncs.labels("error").inc()
            good = self.last_good
            self.desired.rebuild(
                good.state if good else ClusterState(), good.published if good else None
            )
            return AgentSyncResult(
                False, 0, time.perf_counter() - t0, (f"{type(exc).__name__}: {exc}",)
            )
        compiled = time.perf_counter()
        first = self.startup_writes is None
        stats = self.reconciler.sync(self.desired, None if first else update.touched)
        seconds = time.perf_counter() - t0
        self.last_good = snap
        if self.on_synced is not None:
            self.on_synced(self.desired)
        self._record(stats)
        self.metrics.sync_seconds.observe(seconds)
        self.metrics.syncs.labels("ok" if stats.total or update.objects else "noop").inc()
        if first:
            self.startup_writes = stats.total
            self.metrics.startup_writes.set(stats.total)
            log.info(
                "first sync after start",
                extra={
                    "writes": stats.total,
                    "revision": snap.revision,
                    "ms": round(seconds * 1e3, 2),
                },
            )
        elif stats.total or update.objects:
            log.info(
                "synced",
                extra={
                    "revision": snap.revision,
                    "objects": update.objects,
                    "writes": stats.total,
                    "attached": stats.attached,
                    "detached": stats.detached,
                    "ms": round(seconds * 1e3, 2),
                    "compile_ms": round((compiled - t0) * 1e3, 2),
                },
            )
        return AgentSyncResult(True, stats.total, seconds)

    def repair(self) -> WriteStats:
        """Rewrite whatever differs from the desired state (entries removed or changed by hand)."""
        if self.last_good is not None and self.desired.ghosts:
            # Expire ghosts whose grace ran out (compiles only what changed).
            nxt = self.desired.next_expiry()
            if nxt is not None and nxt <= self.clock():
                self.handle(self.last_good)
        self.repairs += 1
        t0 = time.perf_counter()
        stats = self.reconciler.repair(self.desired, self.repairs % ATTACH_CHECK_EVERY == 0)
        log.debug("drift check", extra={"ms": round((time.perf_counter() - t0) * 1e3, 2)})
        self._record(stats)
        if stats.total:
            self.metrics.drift.inc(stats.total)
            log.warning(
                "drift repaired",
                extra={"upserts": dict(stats.upserts), "deletes": dict(stats.deletes)},
            )
        return stats

    def _record(self, stats: WriteStats) -> None:
        m = self.metrics
        m.record_writes(stats.upserts, stats.deletes)
        sizes = {t: len(v) for t, v in self.reconciler.applied.items()}
        sizes["endpoints"] = len(self.reconciler.endpoints)
        m.record_sizes(sizes)
        m.endpoints.set(len(self.reconciler.endpoints))
        m.pending.set(len(self.reconciler.pending))
        self._record_full()

    def _record_full(self) -> None:
        """Metric and log lines for the maps that refused entries (only when that changes)."""
        full = self.reconciler.full
        self.metrics.record_full({e.map_name: max(0, e.needed - e.max_entries) for e in full})
        now = tuple((e.map_name, e.max_entries, e.needed) for e in full)
        if now == self.reported_full:
            return
        for name, size, needed in now:
            log.error(
                "map full: enforcement degraded, failing closed (isolated pods stay isolated "
                "and may lose allowed traffic); retrying",
                extra={"map": name, "max_entries": size, "needed": needed},
            )
        if not now:
            log.info(
                "map space returned: the desired state is written whole",
                extra={"maps": ",".join(n for n, _, _ in self.reported_full)},
            )
        self.reported_full = now

    @property
    def degraded(self) -> tuple[str, ...]:
        """What the full maps refused, one line each (empty when enforcement is whole)."""
        return tuple(str(e) for e in self.reconciler.full)

    def _on_change(self) -> None:
        snap = self.source.snapshot()
        result = self.handle(snap)
        self._report(snap, result.ok, result.errors)

    def _retry_pending(self) -> None:
        self._record(self.reconciler.sync(self.desired, {}))
        if not self.reconciler.pending and self.last_good is not None:
            self._report(self.last_good, True, ())

    def _repair_and_report(self) -> None:
        """A drift check; the status follows when it changed degraded (retry of full maps)."""
        was = self.degraded
        self.repair()
        if self.degraded != was and self.last_good is not None:
            self._report(self.last_good, True, ())

    def _guarded(self, step: Callable[[], object]) -> None:
        """A failing write or netlink call must not end the agent: log, retry next turn.

        The next drift check re-reads the maps, so a half-done write is completed then.
        """
        try:
            step()
        except Exception:
            log.exception("agent step failed; retrying at the next check")
            self.metrics.syncs.labels("error").inc()

    def _report(self, snap: SourceSnapshot, ok: bool, errors: tuple[str, ...]) -> None:
        """Tell sources that want it (the lab's directory) what is enforced now."""
        synced = getattr(self.source, "synced", None)
        if synced is not None:
            try:
                synced(snap, ok, errors, len(self.reconciler.pending), self.degraded)
            except OSError as exc:
                log.warning("cannot report status", extra={"error": str(exc)})

    # ---- the loop ----

    def run(self, stop: threading.Event) -> None:
        changed = threading.Event()
        if not self.started:
            self.start()
        self.source.start(changed)
        next_repair = self.clock() + self.drift_interval_s
        try:
            while not stop.is_set():
                self.heartbeat = self.clock()
                wait = next_repair - self.clock()
                if self.reconciler.pending:
                    wait = min(wait, PENDING_RETRY_S)
                if changed.wait(max(0.0, wait)):
                    changed.clear()
                    if stop.is_set():
                        break
                    self._guarded(self._on_change)
                    continue
                if self.clock() >= next_repair:
                    self._guarded(self._repair_and_report)
                    next_repair = self.clock() + self.drift_interval_s
                elif self.reconciler.pending and self.last_good is not None:
                    self._guarded(self._retry_pending)
        finally:
            self.source.stop()
