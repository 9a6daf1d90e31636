"""A node that cannot enforce a policy whole says so in the policy's status (issue 11 item 3).

Against the real kube-apiserver: the agent's Kubernetes source, told of a full map (as the
agent's sync loop tells it), sets the LabelwallEnforcementDegraded condition on its Node
once; the operator (watching Nodes) names that node in the `labelwall.io/status` of every
policy selecting a pod on it, with a Warning Event, and drops it again when the agent
reports the space back. One write per transition on each side, never per sync.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from labelwall.kube.client import api_client
from labelwall.kube.events import DEGRADED_CONDITION
from labelwall.kube.source import KubernetesSource
from labelwall.policy.clusterstate import ClusterState
from labelwall.source import SourceSnapshot
from labelwall.testenv import TestEnv

from .operator_harness import OperatorProcess, apply, namespace, pod, wait_for

pytestmark = [pytest.mark.apiserver, pytest.mark.slow]

FULL = "lw_ipcache_v1: 4 max_entries, 6 needed"


@pytest.fixture
def node(crds: TestEnv) -> Iterator[str]:
    name = f"lwdeg-{os.getpid()}"
    apply(crds, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
    try:
        yield name
    finally:
        crds.kubectl("delete", "node", name, "--ignore-not-found")


def _status(env: TestEnv, ns: str, name: str) -> dict[str, Any] | None:
    out = env.kubectl(
        "get", "networkpolicy", name, "-n", ns,
        "-o", "jsonpath={.metadata.annotations.labelwall\\.io/status}", check=False,
    ).stdout  # fmt: skip
    return json.loads(out) if out else None


def _condition(env: TestEnv, node: str) -> dict[str, Any] | None:
    obj = json.loads(env.kubectl("get", "node", node, "-o", "json").stdout)
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == DEGRADED_CONDITION:
            return dict(c)
    return None


def test_a_degraded_node_is_named_in_the_status_of_the_policies_selecting_its_pods(
    crds: TestEnv,
    operators: Callable[..., OperatorProcess],
    fresh_ns: Callable[[str], str],
    node: str,
) -> None:
    ns = fresh_ns("degraded")
    op = operators()
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}},
    }
    other = {**policy, "metadata": {"name": "db", "namespace": ns},
             "spec": {"podSelector": {"matchLabels": {"app": "db"}}}}  # fmt: skip
    apply(crds, namespace(ns), pod(ns, "web", {"app": "web"}, node=node),
          pod(ns, "db", {"app": "db"}, node="elsewhere"), policy, other)  # fmt: skip
    wait_for(lambda: _status(crds, ns, "web"), 30, f"the first status\n{op.tail()}")
    assert "degradedNodes" not in (_status(crds, ns, "web") or {})

    agent = KubernetesSource(node=node, client=api_client(str(crds.kubeconfig)))
    snap = SourceSnapshot(ClusterState(), {}, 1, ())
    agent.synced(snap, True, (), 0, (FULL,))  # what the agent's loop does on a full map
    cond = _condition(crds, node)
    assert cond is not None
    assert (cond["status"], cond["reason"]) == ("True", "MapFull")
    assert FULL in cond["message"]
    status = wait_for(
        lambda: (s := _status(crds, ns, "web")) and s.get("degradedNodes") and s,
        30,
        f"degradedNodes in the status\n{op.tail()}",
    )
    assert status["degradedNodes"] == [node]
    assert "degradedNodes" not in (_status(crds, ns, "db") or {})  # its pod runs elsewhere
    events = json.loads(crds.kubectl("get", "events", "-n", ns, "-o", "json").stdout)["items"]
    warned = [e for e in events if e["reason"] == "NotEnforcedWhole"]
    assert warned
    assert node in warned[0]["message"]
    assert warned[0]["involvedObject"]["name"] == "web"

    agent.synced(snap, True, (), 0, (FULL,))  # the same state again: no write at all
    agent.synced(snap, True, (), 0, ())  # space returned
    cond = _condition(crds, node)
    assert cond is not None
    assert (cond["status"], cond["reason"]) == ("False", "MapSpaceReturned")
    wait_for(
        lambda: (s := _status(crds, ns, "web")) is not None and "degradedNodes" not in s,
        30,
        f"degradedNodes gone\n{op.tail()}",
    )
