"""The operator's Prometheus metrics, in their own registry (served on operator.metricsPort)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from labelwall.identity.numbers import Reserved

#: Sync latency buckets, seconds: a sync is tens of ms idle, seconds for a 1,000-pod burst.
SYNC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class OperatorMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.identities = Gauge(
            "labelwall_operator_identities",
            "Identities by type: in_use / unused (Identity objects) and reserved (built in).",
            ["type"],
            registry=r,
        )
        self.identities.labels(type="reserved").set(len(Reserved))
        self.policies = Gauge(
            "labelwall_operator_policies",
            "NetworkPolicies by compile outcome: compiled, warnings, invalid.",
            ["outcome"],
            registry=r,
        )
        self.sync_seconds = Histogram(
            "labelwall_operator_sync_seconds",
            "Duration of one level-triggered sync (allocation, status, GC, policy reports).",
            buckets=SYNC_BUCKETS,
            registry=r,
        )
        self.sync_failures = Counter(
            "labelwall_operator_sync_failures",
            "Syncs that failed (API unreachable, timeouts); each is retried with backoff.",
            registry=r,
        )
        self.allocated = Counter(
            "labelwall_operator_identities_allocated",
            "Identity objects this operator created.",
            registry=r,
        )
        self.conflicts = Counter(
            "labelwall_operator_allocation_conflicts",
            "Identity creates answered 409 (number already held: same or another label set).",
            registry=r,
        )
        self.collected = Counter(
            "labelwall_operator_identities_collected",
            "Identities garbage-collected after the grace period.",
            registry=r,
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve GET /metrics on ``port`` in a daemon thread."""
        start_http_server(port, addr=addr, registry=self.registry)
