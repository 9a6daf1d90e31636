"""KubernetesSource (the agent's cluster source) against a real API server."""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Callable, Iterator

import pytest
from kubernetes.client import CustomObjectsApi

from labelwall.cluster import Labels
from labelwall.identity.allocator import allocate
from labelwall.identity.labels import LabelSet
from labelwall.kube.client import api_client
from labelwall.kube.registry import KubeIdentityRegistry
from labelwall.kube.source import KubernetesSource
from labelwall.policy.clusterstate import ClusterState
from labelwall.source import SourceSnapshot
from labelwall.testenv import TestEnv

from .operator_harness import apply, namespace, pod, set_pod_ip, wait_for

pytestmark = pytest.mark.apiserver

NODE = "node-src"


@pytest.fixture
def source(crds: TestEnv) -> Iterator[tuple[KubernetesSource, threading.Event]]:
    client = api_client(str(crds.kubeconfig))
    # A short watch timeout so the test also crosses watch reconnects.
    src = KubernetesSource(NODE, client, watch_timeout_s=3)
    changed = threading.Event()
    src.start(changed)
    try:
        yield src, changed
    finally:
        src.stop()
        client.close()  # type: ignore[no-untyped-call]


def _snap_where(
    src: KubernetesSource, check: Callable[[SourceSnapshot], bool], what: str
) -> SourceSnapshot:
    def probe() -> SourceSnapshot | None:
        snap = src.snapshot()
        return snap if src.listed() and check(snap) else None

    return wait_for(probe, 30, what)


def test_snapshots_follow_pods_created_relabelled_deleted_and_policies_added(
    crds: TestEnv,
    source: tuple[KubernetesSource, threading.Event],
    fresh_ns: Callable[[str], str],
) -> None:
    src, changed = source
    ns = fresh_ns("src")
    apply(
        crds,
        namespace(ns, {"team": "a"}),
        pod(ns, "local", {"app": "web"}, node=NODE),
        pod(ns, "remote", {"app": "db"}, node="node-other"),
    )
    set_pod_ip(crds, ns, "local", "10.244.9.1")
    set_pod_ip(crds, ns, "remote", "10.244.9.2")
    snap = _snap_where(
        src,
        lambda s: all(
            (p := s.state.pods.get(f"{ns}/{n}")) is not None and p.ips for n in ("local", "remote")
        ),
        "both pods with IPs",
    )
    assert changed.is_set()
    assert snap.state.pods[f"{ns}/local"].ips == (ipaddress.ip_address("10.244.9.1"),)
    assert snap.state.pods[f"{ns}/local"].node == NODE
    assert snap.state.pods[f"{ns}/remote"].node == "node-other"
    assert snap.state.namespaces[ns].labels["team"] == "a"

    crds.kubectl("label", "pod", "local", "-n", ns, "app=api", "--overwrite")
    _snap_where(src, lambda s: s.state.pods[f"{ns}/local"].labels["app"] == "api", "relabel")

    crds.kubectl("delete", "pod", "remote", "-n", ns, "--force", "--grace-period=0")
    _snap_where(src, lambda s: f"{ns}/remote" not in s.state.pods, "remote pod gone")

    apply(
        crds,
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "deny", "namespace": ns},
            "spec": {"podSelector": {}},
        },
    )
    snap = _snap_where(src, lambda s: f"{ns}/deny" in s.state.policies, "policy")
    assert snap.errors == ()
    assert snap.revision > 0


def test_published_holds_exactly_the_label_sets_whose_identity_exists(
    crds: TestEnv,
    source: tuple[KubernetesSource, threading.Event],
    fresh_ns: Callable[[str], str],
) -> None:
    src, _ = source
    ns = fresh_ns("src-pub")
    ls = LabelSet(ns, Labels({"app": "web"}), Labels({"kubernetes.io/metadata.name": ns}))
    other = LabelSet(ns, Labels({"app": "db"}), Labels({"kubernetes.io/metadata.name": ns}))
    _snap_where(src, lambda s: s.published is not None, "first snapshot")
    assert src.snapshot().published is not None
    assert ls not in (src.snapshot().published or {})

    client = api_client(str(crds.kubeconfig))
    try:
        number = allocate(ls, KubeIdentityRegistry(CustomObjectsApi(client)))
    finally:
        client.close()  # type: ignore[no-untyped-call]
    snap = _snap_where(src, lambda s: ls in (s.published or {}), "identity published")
    assert snap.published is not None
    assert snap.published[ls] == number
    assert other not in snap.published

    crds.kubectl("delete", "identity", str(number))
    _snap_where(src, lambda s: ls not in (s.published or {}), "identity unpublished")


def test_a_full_map_and_its_recovery_are_posted_as_events_on_the_agents_node(
    crds: TestEnv,
) -> None:
    from kubernetes.client import CoreV1Api

    from labelwall.kube.source import MAP_FULL, MAP_SPACE_RETURNED, NODE_EVENTS_NAMESPACE

    node = f"node-full-{os.getpid()}"
    client = api_client(str(crds.kubeconfig))
    try:
        src = KubernetesSource(node, client)  # not started: synced needs no watch
        snap = SourceSnapshot(ClusterState())
        line = "map lw_ipcache_v1 is full: it holds 4 entries and needed 6"
        src.synced(snap, True, (), 0, (line,))
        src.synced(snap, True, (), 0, (line,))  # unchanged: no second Event
        src.synced(snap, True, (), 0, ())

        def events() -> list[tuple[str, str, str]] | None:
            got = CoreV1Api(client).list_namespaced_event(
                NODE_EVENTS_NAMESPACE, field_selector=f"involvedObject.name={node}"
            )
            out = sorted(
                ((e.last_timestamp, e.reason), (str(e.type), str(e.reason), str(e.message)))
                for e in got.items
            )
            return [x for _, x in out] if len(out) >= 2 else None

        got = wait_for(events, 30, "two Node events")
        assert [(t, r) for t, r, _ in got] == [
            ("Warning", MAP_FULL),
            ("Normal", MAP_SPACE_RETURNED),
        ]
        assert line in got[0][2]
    finally:
        client.close()  # type: ignore[no-untyped-call]
