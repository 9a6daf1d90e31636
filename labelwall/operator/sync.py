"""One level-triggered sync: allocate, update status, collect, report policies (blocking I/O).

Every write is idempotent and conflict-safe, so two replicas (or a paused kopf peer that
still holds a stale view) cannot corrupt the registry: numbers are claimed by create (409
decides), status patches write values computed from the whole cluster, garbage
collection re-reads the object and the pods of its namespace from the server and deletes
with uid+resourceVersion preconditions, and policy annotations are merge patches of a
value that is a function of the cluster.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import CoreV1Api, NetworkingV1Api, V1ObjectReference
from kubernetes.client.exceptions import ApiException

from labelwall.cluster import Namespace, Pod
from labelwall.decode.kinds import NETWORK_POLICY
from labelwall.kube.events import Poster, event_body
from labelwall.kube.objects import (
    STATUS_ANNOTATION,
    IdentityRecord,
    PolicyEntry,
    format_time,
    parse_namespace,
    parse_pod,
)
from labelwall.kube.registry import KubeIdentityRegistry, allocate_concurrently
from labelwall.operator.metrics import OperatorMetrics
from labelwall.operator.plan import (
    IdentityPlan,
    PolicyReport,
    identity_usage,
    plan_identities,
    policy_reports,
    still_used,
)

log = logging.getLogger("labelwall.operator.sync")

#: Who posts our Events (source.component / reportingController).
COMPONENT = "labelwall-operator"


@dataclass(frozen=True)
class IndexSnapshot:
    """A consistent copy of the operator's indexes, taken on the event loop."""

    pods: Mapping[str, Pod]
    namespaces: Mapping[str, Namespace]
    policies: Mapping[str, PolicyEntry]
    identities: tuple[IdentityRecord, ...]
    #: Bumped by handlers whenever pods, namespaces or policies change (policy reports
    #: are recomputed only then: identities alone never change what a policy selects).
    policy_generation: int = 0
    #: Node name -> message, for nodes whose agent reports a full map (plan.py).
    degraded_nodes: Mapping[str, str] = field(default_factory=dict)


@dataclass
class OperatorSyncResult:
    allocated: int = 0
    status_written: int = 0
    collected: int = 0
    policies_reported: int = 0
    next_deadline: datetime.datetime | None = None
    errors: list[str] = field(default_factory=list)


class Syncer:
    """Holds the clients and what the last sync wrote; ``run`` is called from one thread."""

    def __init__(
        self,
        registry: KubeIdentityRegistry,
        core: CoreV1Api,
        networking: NetworkingV1Api,
        metrics: OperatorMetrics,
        *,
        exclude: tuple[str, ...],
        grace: datetime.timedelta,
        instance: str,
        workers: int = 8,
        request_timeout: tuple[float, float] = (5.0, 30.0),
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.registry = registry
        self.core = core
        self.networking = networking
        self.metrics = metrics
        self.exclude = exclude
        self.grace = grace
        self.instance = instance
        self.workers = workers
        self.timeout = request_timeout
        self.clock = clock
        self._reported_generation: int | None = None

    def run(self, snap: IndexSnapshot) -> OperatorSyncResult:
        result = OperatorSyncResult()
        self.registry.cache.rebase(snap.identities)
        conflicts_before = self.registry.conflicts
        usage = identity_usage(snap.pods.values(), snap.namespaces, self.exclude)

        def plan_now() -> IdentityPlan:
            cache = self.registry.cache
            return plan_identities(
                usage, cache.records(), cache.published(), self.clock(), self.grace
            )

        plan = plan_now()
        if plan.allocate:
            created_before = self.registry.created
            allocate_concurrently(plan.allocate, self.registry, workers=self.workers)
            result.allocated = self.registry.created - created_before
            self.metrics.allocated.inc(result.allocated)
            # The new objects have no status yet: plan again so they get theirs now,
            # not one watch round trip later.
            plan = plan_now()
        self.metrics.conflicts.inc(self.registry.conflicts - conflicts_before)

        if plan.status:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="lw-status") as pool:
                written = pool.map(
                    lambda u: self.registry.patch_status(u.number, u.patch()), plan.status
                )
                result.status_written = sum(1 for r in written if r is not None)

        for record in plan.collect:
            if self._collect(record):
                result.collected += 1
                self.metrics.collected.inc()
        result.next_deadline = plan.next_deadline

        records = self.registry.cache.records()
        in_use = sum(1 for r in records.values() if (r.pods or 0) > 0)
        self.metrics.identities.labels(type="in_use").set(in_use)
        self.metrics.identities.labels(type="unused").set(len(records) - in_use)

        if self._reported_generation != snap.policy_generation:
            result.policies_reported = self._report_policies(snap)
            self._reported_generation = snap.policy_generation
        return result

    # --- garbage collection ---------------------------------------------------------------

    def _collect(self, candidate: IdentityRecord) -> bool:
        """Delete an identity unused for the grace period, re-checked against the server."""
        fresh = self.registry.read(candidate.number)
        if fresh is None:
            return False
        now = self.clock()
        if (
            fresh.pods != 0
            or fresh.last_used is None
            or fresh.last_used + self.grace > now
            or fresh.labelset is None
        ):
            return False
        # The indexes may be stale (a paused replica, a missed watch event): ask the server
        # for the pods and the namespace this identity's label set is made of.
        namespace = fresh.labelset.namespace
        pods_raw = self.core.list_namespaced_pod(
            namespace, _preload_content=False, _request_timeout=self.timeout
        )
        items = _json(pods_raw).get("items", [])
        pods = [p for p in (parse_pod(o) for o in items) if p is not None]
        try:
            ns_obj = self.core.read_namespace(
                namespace, _preload_content=False, _request_timeout=self.timeout
            )
            ns = parse_namespace(_json(ns_obj))
        except ApiException as e:
            if e.status != 404:
                raise
            ns = None
        if still_used(fresh, pods, ns, self.exclude):
            return False
        deleted = self.registry.delete(fresh)
        if deleted:
            log.info(
                "garbage-collected identity %d (%s): unused since %s",
                fresh.number,
                fresh.labelset,
                format_time(fresh.last_used),
            )
        return deleted

    # --- policies -------------------------------------------------------------------------

    def _report_policies(self, snap: IndexSnapshot) -> int:
        if not snap.policies:
            for outcome in ("compiled", "warnings", "invalid"):
                self.metrics.policies.labels(outcome=outcome).set(0)
            return 0
        reports = policy_reports(
            snap.policies,
            snap.pods,
            snap.namespaces,
            self.registry.cache.published(),
            self.exclude,
            snap.degraded_nodes,
        )
        counts = {"compiled": 0, "warnings": 0, "invalid": 0}
        written = 0
        for key, report in sorted(reports.items()):
            counts[report.outcome] += 1
            entry = snap.policies[key]
            value = report.annotation()
            if entry.status_annotation == value:
                continue
            if self._annotate(entry, value):
                self._event(entry, report)
                written += 1
        for outcome, n in counts.items():
            self.metrics.policies.labels(outcome=outcome).set(n)
        return written

    def _annotate(self, entry: PolicyEntry, value: str) -> bool:
        try:
            self.networking.patch_namespaced_network_policy(
                entry.name,
                entry.namespace,
                {"metadata": {"annotations": {STATUS_ANNOTATION: value}}},
                _request_timeout=self.timeout,
            )
        except ApiException as e:
            if e.status == 404:
                return False  # deleted meanwhile; its DELETED event triggers another sync
            raise
        return True

    def _event(self, entry: PolicyEntry, report: PolicyReport) -> None:
        kind, reason, message = report.event()
        now = self.clock()
        involved = V1ObjectReference(
            api_version=NETWORK_POLICY.api_version,
            kind=NETWORK_POLICY.name,
            name=entry.name,
            namespace=entry.namespace,
            uid=entry.uid,
        )
        poster = Poster(COMPONENT, self.instance)
        body = event_body(poster, involved, entry.namespace, kind, reason, message, now)
        try:
            self.core.create_namespaced_event(entry.namespace, body, _request_timeout=self.timeout)
        except ApiException as e:
            # The annotation is the record; an Event is best effort (e.g. namespace gone).
            log.warning("could not post event on NetworkPolicy %s: %s", entry.key, e.reason)


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data
