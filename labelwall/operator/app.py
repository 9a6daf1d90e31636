"""`labelwall operator`: kopf indexes and handlers that trigger one level-triggered sync loop.

Handlers never write: kopf keeps in-memory indexes of Pods, Namespaces, NetworkPolicies and
Identities (``@kopf.index``), and ``@kopf.on.event`` handlers only mark the state dirty.
One task (started at startup) waits for the first event, which kopf delivers only after
every index is fully listed, then syncs whenever something changed, when an unused
identity's grace period ends, and every ``RESYNC_S`` seconds anyway. The sync itself
(labelwall/operator/sync.py) runs in a worker thread with the blocking Kubernetes client.

Two replicas: kopf cluster peering (the ClusterKopfPeering ``labelwall`` the chart ships)
pauses all but one replica's watches and handlers; independently of that, every write is
idempotent and conflict-safe (see sync.py), so even two active replicas agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
import urllib3
from kubernetes.client import CoreV1Api, CustomObjectsApi, NetworkingV1Api
from kubernetes.client.exceptions import ApiException

from labelwall.cluster import Namespace, Pod
from labelwall.config import Config, load_config
from labelwall.decode.kinds import NAMESPACE as NS
from labelwall.decode.kinds import NETWORK_POLICY as NP
from labelwall.decode.kinds import NODE, POD
from labelwall.errors import InvalidInputError
from labelwall.kube.client import NoClusterError, api_client
from labelwall.kube.objects import (
    GROUP,
    PLURAL,
    STATUS_ANNOTATION,
    VERSION,
    IdentityRecord,
    PolicyEntry,
    parse_namespace,
    parse_pod,
    parse_policy,
)
from labelwall.kube.registry import IdentityCache, KubeIdentityRegistry
from labelwall.operator.metrics import OperatorMetrics
from labelwall.operator.peering import ensure_peering, start_priority
from labelwall.operator.plan import degraded_condition
from labelwall.operator.sync import IndexSnapshot, Syncer

log = logging.getLogger("labelwall.operator")


class SyncLoopStoppedError(Exception):
    """The operator's sync loop ended (only a bug ends it): liveness fails, kubelet restarts."""


#: The ClusterKopfPeering object the chart creates (templates/operator/peering.yaml).
#: Coalesce a burst of events into one sync (seconds).
DEBOUNCE_S = 0.05
#: Sync at least this often even without events (seconds): a safety net, not the mechanism.
RESYNC_S = 60.0
#: Backoff after a failed sync: first delay, cap (seconds; doubles per failure).
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
#: Per-request timeouts of the sync's client, (connect, read) seconds.
REQUEST_TIMEOUT = (5.0, 30.0)

#: Failures a sync retries with backoff: the server or network is unwell, or throttling.
TRANSIENT = (ApiException, urllib3.exceptions.HTTPError, OSError, TimeoutError)

_INDEX_PODS = "lw_pods"
_INDEX_NAMESPACES = "lw_namespaces"
_INDEX_POLICIES = "lw_policies"
_INDEX_IDENTITIES = "lw_identities"


@dataclass
class OperatorState:
    """Shared by the handlers (event loop) and the sync loop."""

    syncer: Syncer
    metrics: OperatorMetrics
    config: Config
    trigger: asyncio.Event | None = None
    ready: asyncio.Event | None = None
    policy_generation: int = 0
    last_sync_monotonic: float | None = None
    last_error: str | None = None
    task: asyncio.Task[None] | None = None
    indexes: dict[str, Any] = field(default_factory=dict)
    #: node -> message of its agent's degraded condition (only nodes where it is True)
    degraded_nodes: dict[str, str] = field(default_factory=dict)

    def node_seen(self, name: str, degraded: str | None) -> None:
        """A Node event: a sync only when its degraded condition changed (a Node is
        updated on every kubelet heartbeat; those must not recompile every policy)."""
        if self.degraded_nodes.get(name) == degraded:
            return
        if degraded is None:
            self.degraded_nodes.pop(name, None)
        else:
            self.degraded_nodes[name] = degraded
        self.changed(affects_policies=True)

    def changed(self, affects_policies: bool) -> None:
        if affects_policies:
            self.policy_generation += 1
        if self.trigger is not None:
            self.trigger.set()
        if self.ready is not None:
            self.ready.set()


def _raw(body: Mapping[str, Any]) -> dict[str, Any]:
    # kopf's Body is a read-only mapping view; the parsers want plain data.
    return {k: body[k] for k in body}


def _values(index: Any) -> dict[Any, Any]:
    """A kopf Index (key -> store of values) as key -> the one value each key has."""
    out: dict[Any, Any] = {}
    for key in list(index):
        for value in index[key]:
            out[key] = value
    return out


def take_snapshot(state: OperatorState) -> IndexSnapshot:
    idx = state.indexes
    identities: dict[int, IdentityRecord] = _values(idx[_INDEX_IDENTITIES])
    return IndexSnapshot(
        pods=_values(idx[_INDEX_PODS]),
        namespaces=_values(idx[_INDEX_NAMESPACES]),
        policies=_values(idx[_INDEX_POLICIES]),
        identities=tuple(identities.values()),
        policy_generation=state.policy_generation,
        degraded_nodes=dict(state.degraded_nodes),
    )


async def sync_loop(state: OperatorState) -> None:
    assert state.trigger is not None
    assert state.ready is not None
    # kopf runs no non-indexing handler before every index is fully listed, so the first
    # event means the indexes are complete: never sync (or collect!) on a partial view.
    await state.ready.wait()
    failures = 0
    deadline: datetime.datetime | None = None
    while True:
        timeout = RESYNC_S
        if deadline is not None:
            until = (deadline - datetime.datetime.now(datetime.UTC)).total_seconds()
            timeout = min(timeout, max(0.0, until) + 0.05)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.trigger.wait(), timeout)
        await asyncio.sleep(DEBOUNCE_S)
        state.trigger.clear()
        snap = take_snapshot(state)
        started = time.monotonic()
        try:
            result = await asyncio.to_thread(state.syncer.run, snap)
        except TRANSIENT as e:
            failures += 1
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (failures - 1))
            state.metrics.sync_failures.inc()
            state.last_error = f"{type(e).__name__}: {e}"
            log.warning("sync failed (%s); retrying in %.1fs", state.last_error, delay)
            await asyncio.sleep(delay)
            state.trigger.set()
            continue
        state.metrics.sync_seconds.observe(time.monotonic() - started)
        state.last_sync_monotonic = time.monotonic()
        state.last_error = None
        failures = 0
        deadline = result.next_deadline
        if result.allocated or result.collected or result.policies_reported:
            log.info(
                "sync: %d allocated, %d status, %d collected, %d policies reported",
                result.allocated,
                result.status_written,
                result.collected,
                result.policies_reported,
            )


def build_registry(state: OperatorState) -> kopf.OperatorRegistry:
    """All handlers, registered on a private registry (no import-time global side effects)."""
    reg = kopf.OperatorRegistry()

    @kopf.on.login(registry=reg)
    def login(**kwargs: Any) -> Any:
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=reg)
    async def startup(settings: kopf.OperatorSettings, **kwargs: Any) -> None:
        configure(settings)
        for name in (_INDEX_PODS, _INDEX_NAMESPACES, _INDEX_POLICIES, _INDEX_IDENTITIES):
            state.indexes[name] = kwargs[name]
        state.trigger = asyncio.Event()
        state.ready = asyncio.Event()
        state.task = asyncio.create_task(sync_loop(state), name="labelwall-sync")

    @kopf.on.cleanup(registry=reg)
    async def cleanup(**_: Any) -> None:
        if state.task is not None:
            state.task.cancel()

    @kopf.on.probe(registry=reg, id="sync")
    def probe(**_: Any) -> dict[str, Any]:
        task = state.task
        if task is not None and task.done():
            # The loop only ends on a bug; fail liveness so the pod is restarted.
            raise SyncLoopStoppedError(
                f"sync loop stopped: {task.exception() if not task.cancelled() else 'cancelled'}"
            )
        age = None
        if state.last_sync_monotonic is not None:
            age = round(time.monotonic() - state.last_sync_monotonic, 3)
        return {"last_sync_age_s": age, "last_error": state.last_error}

    @kopf.index(POD.group, POD.version, POD.plural, registry=reg, id=_INDEX_PODS)
    def index_pods(body: kopf.Body, **_: Any) -> dict[str, Pod] | None:
        pod = parse_pod(_raw(body))
        return None if pod is None else {pod.key: pod}

    @kopf.index(NS.group, NS.version, NS.plural, registry=reg, id=_INDEX_NAMESPACES)
    def index_namespaces(body: kopf.Body, **_: Any) -> dict[str, Namespace] | None:
        ns = parse_namespace(_raw(body))
        return None if ns is None else {ns.name: ns}

    @kopf.index(NP.group, NP.version, NP.plural, registry=reg, id=_INDEX_POLICIES)
    def index_policies(body: kopf.Body, **_: Any) -> dict[str, PolicyEntry]:
        entry = parse_policy(_raw(body), STATUS_ANNOTATION)
        return {entry.key: entry}

    @kopf.index(GROUP, VERSION, PLURAL, registry=reg, id=_INDEX_IDENTITIES)
    def index_identities(body: kopf.Body, **_: Any) -> dict[int, IdentityRecord] | None:
        record = IdentityRecord.from_object(_raw(body))
        return None if record is None else {record.number: record}

    @kopf.on.event(POD.group, POD.version, POD.plural, registry=reg, id="lw_pod_changed")
    @kopf.on.event(NS.group, NS.version, NS.plural, registry=reg, id="lw_namespace_changed")
    @kopf.on.event(NP.group, NP.version, NP.plural, registry=reg, id="lw_policy_changed")
    def cluster_changed(**_: Any) -> None:
        state.changed(affects_policies=True)

    @kopf.on.event(NODE.group, NODE.version, NODE.plural, registry=reg, id="lw_node_changed")
    def node_changed(body: kopf.Body, **kwargs: Any) -> None:
        raw = _raw(body)
        name = str((raw.get("metadata") or {}).get("name") or "")
        gone = kwargs.get("type") == "DELETED"
        state.node_seen(name, None if gone else degraded_condition(raw))

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=reg, id="lw_identity_changed")
    def identity_changed(**_: Any) -> None:
        state.changed(affects_policies=False)

    del login, startup, cleanup, probe, index_pods, index_namespaces, index_policies
    del index_identities, cluster_changed, identity_changed, node_changed
    return reg


def configure(settings: kopf.OperatorSettings) -> None:
    """Explicit timeouts and backoffs instead of kopf's open-ended defaults."""
    # Watches: the server ends each watch after server_timeout; the client gives up on a
    # silent connection after client_timeout; a dead server is noticed within connect_timeout.
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    settings.watching.connect_timeout = 10
    settings.watching.reconnect_backoff = 1.0
    # Short requests (listing, peering patches).
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    settings.networking.error_backoffs = [1, 2, 4, 8, 16, 30]
    # kopf's own per-object progress storage is unused (no persistent handlers); events
    # it posts about its own failures are worth having, warnings and up.
    settings.posting.level = logging.WARNING


@dataclass(frozen=True)
class OperatorOptions:
    config: Config
    standalone: bool
    peering: str
    workers: int = 8


def make_state(options: OperatorOptions) -> OperatorState:
    client = api_client()
    cache = IdentityCache()
    registry = KubeIdentityRegistry(
        CustomObjectsApi(client), cache, request_timeout=REQUEST_TIMEOUT
    )
    metrics = OperatorMetrics()
    config = options.config
    syncer = Syncer(
        registry,
        CoreV1Api(client),
        NetworkingV1Api(client),
        metrics,
        exclude=config.identity.exclude_labels,
        grace=datetime.timedelta(seconds=config.identity.gc_grace_period_seconds),
        instance=os.environ.get("POD_NAME") or socket.gethostname(),
        workers=options.workers,
        request_timeout=REQUEST_TIMEOUT,
    )
    return OperatorState(syncer=syncer, metrics=metrics, config=config)


def run(options: OperatorOptions) -> int:
    """Run until SIGTERM/SIGINT."""
    state = make_state(options)
    state.metrics.serve(options.config.operator.metrics_port)
    reg = build_registry(state)
    # kopf waits silently for a missing peering object: create it or say we run alone.
    standalone = options.standalone or not ensure_peering(
        CustomObjectsApi(api_client()), options.peering
    )
    kopf.run(
        registry=reg,
        clusterwide=True,
        standalone=standalone,
        peering_name=None if standalone else options.peering,
        priority=start_priority(time.time()),
        liveness_endpoint=f"http://0.0.0.0:{options.config.operator.health_port}/healthz",
    )
    return 0


def main(config_path: str | None, standalone: bool, peering: str, workers: int) -> int:
    """Entry point of `labelwall operator` (its command line: ``labelwall/cli/operator.py``)."""
    try:
        config = load_config(config_path)
    except InvalidInputError as e:
        for err in e.errors:
            print(f"error: {err}", flush=True)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if config.log_level != "debug":
        # kopf logs every handler call and aiohttp every probe at INFO: noise at our scale.
        for noisy in ("kopf.objects", "kopf.activities", "aiohttp.access"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    # Start-up objects (kopf, the Kubernetes client: ~900 modules) live as long as the
    # process; frozen, a full collection walks only what the handlers allocate (see the
    # agent: unfrozen, a gen-2 pass paused it for 100-150 ms).
    gc.freeze()
    try:
        return run(OperatorOptions(config, standalone, peering, workers))
    except NoClusterError as e:
        print(f"error: {e}", flush=True)
        return 2
