"""The agent's Source in a cluster: watched Pods, Namespaces, Nodes, policies and Identities.

Pods of the agent's own node come from a watch with the field selector
``spec.nodeName=NODE`` (the pods it enforces, delivered without waiting on the cluster-wide
stream); every other pod comes from a cluster-wide watch (peers in policies and ipcache
entries). Identities come from a watch of the Identity objects: ``SourceSnapshot.published``
holds only numbers whose object exists, so the agent gives other pods ``init``.

``synced`` (called by the agent loop after each sync) posts an Event on the agent's Node
when a full map degrades enforcement and when it is whole again. The Node, not the
NetworkPolicies: a map is a node's resource shared by every policy there (as the kubelet
reports disk pressure on the Node), and a policy's ``labelwall.io/status`` keeps one
writer, the operator; reporting full maps there would need the agents to publish their
state for the operator to merge (not done yet).
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from kubernetes.client import (
    ApiClient,
    CoreV1Api,
    CustomObjectsApi,
    NetworkingV1Api,
    V1ObjectReference,
)
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from labelwall.cluster import Namespace, Node, Pod
from labelwall.kube.client import api_client
from labelwall.kube.events import Poster, degraded_condition_patch, event_body
from labelwall.kube.objects import (
    GROUP,
    PLURAL,
    STATUS_ANNOTATION,
    VERSION,
    IdentityRecord,
    PolicyEntry,
    parse_namespace,
    parse_node,
    parse_pod,
    parse_policy,
)
from labelwall.kube.reflector import Reflector
from labelwall.kube.snapshot import Listed, build_snapshot
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.model import NetworkPolicy
from labelwall.source import SourceSnapshot

log = logging.getLogger("labelwall.agent")

#: Who posts the agent's Events (source.component / reportingController).
COMPONENT = "labelwall-agent"
#: Node Events are namespaced; the kubelet posts its Node events in "default" too.
NODE_EVENTS_NAMESPACE = "default"
#: Event reasons: a full map refuses entries / every entry written again.
MAP_FULL, MAP_SPACE_RETURNED = "MapFull", "MapSpaceReturned"


def _pod(obj: Mapping[str, Any]) -> tuple[str, Pod] | None:
    pod = parse_pod(obj)
    return None if pod is None else (pod.key, pod)


def _namespace(obj: Mapping[str, Any]) -> tuple[str, Namespace] | None:
    ns = parse_namespace(obj)
    return None if ns is None else (ns.name, ns)


def _node(obj: Mapping[str, Any]) -> tuple[str, Node] | None:
    node = parse_node(obj)
    return None if node is None else (node.name, node)


def _policy(obj: Mapping[str, Any]) -> tuple[str, PolicyEntry] | None:
    entry = parse_policy(obj, STATUS_ANNOTATION)
    # The operator's status annotation is not policy: keeping it would make every status
    # write look like a policy change and cost the agent a recompile that writes nothing.
    return entry.key, replace(entry, status_annotation=None)


def _identity(obj: Mapping[str, Any]) -> tuple[int, IdentityRecord] | None:
    record = IdentityRecord.from_object(obj)
    return None if record is None else (record.number, record)


class KubernetesSource:
    """``labelwall.source.ClusterSource`` backed by list+watch of the API server."""

    def __init__(
        self,
        node: str | None = None,
        client: ApiClient | None = None,
        *,
        watch_timeout_s: int = 30,
        resync_s: float = 300.0,
    ) -> None:
        #: The node whose pods this agent enforces (the chart sets NODE_NAME).
        self.node = node if node is not None else os.environ.get("NODE_NAME", "")
        self.client = client if client is not None else api_client()
        core, net = CoreV1Api(self.client), NetworkingV1Api(self.client)
        self.core = core
        self._degraded: tuple[str, ...] = ()  # what the last Node Event said
        custom = CustomObjectsApi(self.client)
        self._changed: threading.Event | None = None
        self._lock = threading.Lock()
        self._revision = 0
        #: The last version of each policy that parsed (see labelwall/kube/snapshot.py).
        self._last_good: dict[str, NetworkPolicy] = {}
        self._snapshot_lock = threading.Lock()
        opts: dict[str, Any] = {"watch_timeout_s": watch_timeout_s, "resync_s": resync_s}

        def list_identities(**kwargs: Any) -> Any:
            return custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)

        self.local_pods: Reflector[str, Pod] = Reflector(
            "local-pods", core.list_pod_for_all_namespaces, _pod, self._bump,
            field_selector=f"spec.nodeName={self.node}", **opts,
        )  # fmt: skip
        self.pods: Reflector[str, Pod] = Reflector(
            "pods", core.list_pod_for_all_namespaces, _pod, self._bump, **opts
        )
        self.namespaces: Reflector[str, Namespace] = Reflector(
            "namespaces", core.list_namespace, _namespace, self._bump, **opts
        )
        self.nodes: Reflector[str, Node] = Reflector(
            "nodes", core.list_node, _node, self._bump, **opts
        )
        self.policies: Reflector[str, PolicyEntry] = Reflector(
            "networkpolicies", net.list_network_policy_for_all_namespaces, _policy, self._bump,
            **opts,
        )  # fmt: skip
        self.identities: Reflector[int, IdentityRecord] = Reflector(
            "identities", list_identities, _identity, self._bump, **opts
        )
        self._reflectors: tuple[Reflector[Any, Any], ...] = (
            self.local_pods, self.pods, self.namespaces, self.nodes, self.policies,
            self.identities,
        )  # fmt: skip

    def _bump(self) -> None:
        with self._lock:
            self._revision += 1
            changed = self._changed
        if changed is not None:
            changed.set()

    # --- ClusterSource --------------------------------------------------------------------------

    def start(self, changed: threading.Event) -> None:
        with self._lock:
            self._changed = changed
        for r in self._reflectors:
            r.start()

    def listed(self) -> bool:
        """True once every watch has completed its first LIST."""
        return all(r.synced.is_set() for r in self._reflectors)

    def snapshot(self) -> SourceSnapshot:
        with self._lock:
            revision = self._revision
        if not self.listed():
            # A partial view would remove pods and identities that merely are not listed
            # yet; until every LIST is in, report nothing new (the agent keeps its state).
            return SourceSnapshot(ClusterState(), {}, revision, ("waiting for the initial LISTs",))
        listed = Listed(
            local_pods=self.local_pods.items(),
            pods=self.pods.items(),
            namespaces=self.namespaces.items(),
            nodes=self.nodes.items(),
            policies=self.policies.items(),
            identities=self.identities.items(),
        )
        with self._snapshot_lock:
            snap, self._last_good = build_snapshot(self.node, listed, self._last_good, revision)
        return snap

    def synced(
        self,
        snap: SourceSnapshot,
        ok: bool,
        errors: tuple[str, ...],
        pending: int,
        degraded: tuple[str, ...] = (),
    ) -> None:
        """Post a Node Event when ``degraded`` (one line per full map) changes."""
        if degraded == self._degraded or not self.node:
            return
        was, self._degraded = self._degraded, degraded
        if degraded:
            kind, reason = "Warning", MAP_FULL
            message = (
                "; ".join(degraded) + ". Pods that policy isolates stay isolated and may lose "
                "allowed traffic until the entries fit (remove policies or pods, or raise "
                "mapSizes)."
            )
        elif was:
            kind, reason = "Normal", MAP_SPACE_RETURNED
            message = "Every map entry is written again: enforcement is whole."
        else:
            return
        now = datetime.datetime.now(datetime.UTC)
        involved = V1ObjectReference(api_version="v1", kind="Node", name=self.node)
        poster = Poster(COMPONENT, self.node, host=self.node)
        body = event_body(poster, involved, NODE_EVENTS_NAMESPACE, kind, reason, message, now)
        try:
            # A short timeout: this runs on the agent's one datapath thread.
            self.core.create_namespaced_event(NODE_EVENTS_NAMESPACE, body, _request_timeout=3)
        except (ApiException, HTTPError, OSError) as e:  # best effort: the log line and
            # the metric are the record
            log.warning("could not post a Node event", extra={"reason": reason, "error": str(e)})
        try:  # the condition the operator reads into the policies' status (events.py)
            patch = degraded_condition_patch(bool(degraded), reason, message, now)
            self.core.patch_node_status(self.node, patch, _request_timeout=3)
        except (ApiException, HTTPError, OSError) as e:
            log.warning("could not set the Node condition", extra={"error": str(e)})

    def stop(self) -> None:
        # Signal every watch first, then wait a bounded total: stopping them one by one
        # waited for each blocked read in turn (~27 s, past a pod's termination grace).
        for r in self._reflectors:
            r.request_stop()
        deadline = time.monotonic() + 3.0
        for r in self._reflectors:
            r.join(timeout_s=max(0.0, deadline - time.monotonic()))


def make_source() -> KubernetesSource:
    """What ``labelwall agent --source kubernetes`` builds (node from $NODE_NAME)."""
    return KubernetesSource()
