"""Prometheus metrics: map entries and pressure, degraded enforcement, sync latency, writes,
datapath counters."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from labelwall.cluster import Direction
from labelwall.datapath import codecs, mapspecs
from labelwall.policy.lookup import DROP_REASONS, Reason

#: MapState field -> pinned map, for the ``map`` label and the fill ratio's denominator.
MAP_SPECS: dict[str, mapspecs.MapSpec] = {
    **{c.table.name: c.spec for c in codecs.TABLE_CODECS},
    "endpoints": mapspecs.ENDPOINTS_MAP,
}

#: Maps the classifier fills itself: their pressure is counted at scrape time.
KERNEL_WRITTEN = (mapspecs.CT_MAP, mapspecs.CT_NEW_MAP)

CounterReader = Callable[[], Mapping[tuple[Direction, Reason], codecs.Counter]]


class DatapathCounters(Collector):
    """Reads the per-CPU verdict counters at scrape time (summed over CPUs by the reader)."""

    def __init__(self, read: CounterReader) -> None:
        self.read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        packets = CounterMetricFamily(
            "labelwall_datapath_packets",
            "Packets classified by the datapath, by direction (of the pod) and reason",
            labels=["direction", "reason", "verdict"],
        )
        nbytes = CounterMetricFamily(
            "labelwall_datapath_bytes",
            "Bytes classified by the datapath, by direction (of the pod) and reason",
            labels=["direction", "reason", "verdict"],
        )
        try:
            counters = self.read()
        except OSError:
            counters = {}
        for (direction, reason), c in sorted(counters.items()):
            verdict = "drop" if reason in DROP_REASONS else "pass"
            labels = [direction.name.lower(), reason.name.lower(), verdict]
            packets.add_metric(labels, c.packets)
            nbytes.add_metric(labels, c.bytes)
        yield packets
        yield nbytes


class AgentMetrics:
    """``max_entries``: pinned map name -> its size as loaded (a build with the config's
    mapSizes differs from the shipped defaults in ``MAP_SPECS``)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        max_entries: Mapping[str, int] | None = None,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.max_entries = {s.name: s.max_entries for s in MAP_SPECS.values()}
        self.max_entries.update(max_entries or {})
        r = self.registry
        self.entries = Gauge(
            "labelwall_map_entries", "Entries in each pinned map (as last written)", ["map"],
            registry=r,
        )  # fmt: skip
        self.fill = Gauge(
            "labelwall_map_fill_ratio", "Entries / max_entries of each pinned map", ["map"],
            registry=r,
        )  # fmt: skip
        self.sync_seconds = Histogram(
            "labelwall_agent_sync_duration_seconds",
            "Time from a new snapshot to its changes written and attached",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.writes = Counter(
            "labelwall_agent_map_writes", "Map entries written, by map and operation",
            ["map", "op"], registry=r,
        )  # fmt: skip
        self.syncs = Counter(
            "labelwall_agent_syncs", "Snapshots handled, by result (ok, noop, rejected, error)",
            ["result"], registry=r,
        )  # fmt: skip
        self.drift = Counter(
            "labelwall_agent_drift_repaired_entries",
            "Entries rewritten because the maps differed from the desired state",
            registry=r,
        )
        self.startup_writes = Gauge(
            "labelwall_agent_startup_writes",
            "Entries written by the first sync after start (0 = the maps were already right)",
            registry=r,
        )
        self.pressure = Gauge(
            "labelwall_bpf_map_pressure",
            "Fill of each pinned map: entries / max_entries as loaded (1 = full)", ["map"],
            registry=r,
        )  # fmt: skip
        self.degraded = Gauge(
            "labelwall_agent_enforcement_degraded",
            "1 while a full map refuses entries the desired state needs (isolated pods stay "
            "isolated and may lose allowed traffic), 0 when everything is written",
            registry=r,
        )
        self.refused = Gauge(
            "labelwall_agent_map_refused_entries",
            "Entries a full map could not take at the last sync (needed - max_entries)",
            ["map"], registry=r,
        )  # fmt: skip
        self.endpoints = Gauge("labelwall_agent_endpoints", "Local pods enforced", registry=r)
        self.pending = Gauge(
            "labelwall_agent_pending_endpoints",
            "Local pods with an address but no host route (not enforced yet)", registry=r,
        )  # fmt: skip

    def add_datapath(self, read: CounterReader) -> None:
        self.registry.register(DatapathCounters(read))

    def add_kernel_written(self, count: Callable[[mapspecs.MapSpec], int]) -> None:
        """Entries and pressure of the maps the classifier writes itself (conntrack), read
        at scrape time: ``count(spec)`` is the map's entries now (a batch read)."""
        for spec in KERNEL_WRITTEN:
            size = self.max_entries.get(spec.name, spec.max_entries)

            def entries(spec: mapspecs.MapSpec = spec) -> float:
                try:
                    return float(count(spec))
                except OSError:
                    return float("nan")

            def pressure(
                entries: Callable[[], float] = entries, size: int = size
            ) -> float:  # fmt: skip
                return entries() / size

            self.entries.labels(spec.name).set_function(entries)
            self.fill.labels(spec.name).set_function(pressure)
            self.pressure.labels(spec.name).set_function(pressure)

    def record_writes(self, upserts: Mapping[str, int], deletes: Mapping[str, int]) -> None:
        for m, n in upserts.items():
            self.writes.labels(MAP_SPECS[m].name, "upsert").inc(n)
        for m, n in deletes.items():
            self.writes.labels(MAP_SPECS[m].name, "delete").inc(n)

    def record_sizes(self, sizes: Mapping[str, int]) -> None:
        for m, n in sizes.items():
            name = MAP_SPECS[m].name
            self.entries.labels(name).set(n)
            self.fill.labels(name).set(n / self.max_entries[name])
            self.pressure.labels(name).set(n / self.max_entries[name])

    def record_full(self, full: Mapping[str, int]) -> None:
        """{pinned map name: entries refused} of the last sync (empty: nothing refused)."""
        self.degraded.set(1 if full else 0)
        for name in self.max_entries:
            self.refused.labels(name).set(full.get(name, 0))
