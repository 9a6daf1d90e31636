"""`labelwall observe` on 2 real nodes: flows from both agents through the API server.

The session's 2-node cluster (tests/testenv/conftest.py: kubelet, containerd, CNI,
kube-proxy; labelwall installed by its chart). A server pod on node-1 is isolated by a
default deny plus a policy admitting role=good; two clients on node-2 connect to it, one
admitted and one not. `labelwall observe` is then run as a user runs it (the CLI, the
cluster's kubeconfig, the chart's agent namespace by default): the agents are read through
each pod's port-forward (API server -> kubelet -> containerd -> 127.0.0.1 in the agent's
netns), and the flows must come from both nodes with the verdict and the policies behind
it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest
import yaml

from .nodes_helpers import Env, kubectl

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.netns]

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"
NS = "tenv-observe"


def _pod(name: str, node: str, labels: dict[str, str], args: list[str]) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "agnhost",
        "image": AGNHOST,
        "imagePullPolicy": "Never",
        "args": args,
    }
    if args[0] == "netexec":
        container["readinessProbe"] = {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
        },
    }


def _policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def _connect(env: Env, pod: str, target: str) -> bool:
    res = subprocess.run(
        [kubectl(), f"--kubeconfig={env.contract['kubeconfig']}", "exec", "-n", NS, pod,
         "--", "/agnhost", "connect", target, "--timeout=2s"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return res.returncode == 0


def _observe(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labelwall.cli.main", "observe",
         "--kubeconfig", env.contract["kubeconfig"], *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_observe_reads_both_nodes_and_names_the_policies_behind_each_verdict(
    cluster: Env,
) -> None:
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        _pod("srv", "node-1", {"app": "srv"}, ["netexec", "--http-port=8080"]),
        _pod("good", "node-2", {"role": "good"}, ["pause"]),
        _pod("bad", "node-2", {"role": "bad"}, ["pause"]),
        _policy("deny-all", {"podSelector": {}, "policyTypes": ["Ingress"]}),
        _policy(
            "allow-good",
            {
                "podSelector": {"matchLabels": {"app": "srv"}},
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"role": "good"}}}],
                        "ports": [{"port": 8080}],
                    }
                ],
            },
        ),
    ]
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    try:
        cluster.kubectl(
            "wait", "-n", NS, "--for=condition=Ready", "pod/srv", "pod/good", "pod/bad",
            "--timeout=90s",
        )  # fmt: skip
        pods = json.loads(cluster.kubectl("get", "pods", "-n", NS, "-o", "json"))["items"]
        ip = {p["metadata"]["name"]: p["status"]["podIP"] for p in pods}
        target = f"{ip['srv']}:8080"
        # The new pods' identities reach node-1 within a second or so: bounded retries.
        deadline = time.monotonic() + 30
        while not _connect(cluster, "good", target):
            assert time.monotonic() < deadline, "good never reached srv"
            time.sleep(0.5)
        assert not _connect(cluster, "bad", target), "bad reached srv through a default deny"

        res = _observe(cluster, "-n", NS, "--protocol", "tcp", "-o", "json")
        assert res.returncode == 0, res.stderr
        flows = [json.loads(line)["flow"] for line in res.stdout.splitlines()]
        nodes = {f["node_name"] for f in flows}
        assert nodes == {"node-1", "node-2"}, nodes

        def at(node: str, src: str, direction: str, verdict: str) -> list[dict[str, Any]]:
            return [
                f for f in flows
                if f["node_name"] == node and f["source"].get("pod_name") == src
                and f["traffic_direction"] == direction.upper() and f["verdict"] == verdict
                and f["destination"].get("pod_name") == "srv" and not f["is_reply"]
            ]  # fmt: skip

        # node-2 saw both clients leave (neither is egress-isolated) ...
        assert at("node-2", "good", "egress", "FORWARDED")
        assert at("node-2", "bad", "egress", "FORWARDED")
        # ... and node-1 admitted good by allow-good and dropped bad, naming every policy
        # that isolates srv for ingress.
        allowed = at("node-1", "good", "ingress", "FORWARDED")
        assert allowed, flows
        assert [(p["namespace"], p["name"]) for p in allowed[-1]["ingress_allowed_by"]] == [
            (NS, "allow-good")
        ]
        dropped = at("node-1", "bad", "ingress", "DROPPED")
        assert dropped, flows
        assert dropped[-1]["drop_reason_desc"] == "POLICY_DENIED"
        assert sorted(p["name"] for p in dropped[-1]["ingress_denied_by"]) == [
            "allow-good",
            "deny-all",
        ]
        # Filters run on the merged stream: one node, one verdict.
        res = _observe(cluster, "-n", NS, "--node-name", "node-1", "--verdict", "DROPPED",
                       "-o", "json")  # fmt: skip
        assert res.returncode == 0, res.stderr
        only = [json.loads(line)["flow"] for line in res.stdout.splitlines()]
        assert only
        assert {(f["node_name"], f["verdict"]) for f in only} == {("node-1", "DROPPED")}
        # The compact line a user reads names the policies.
        res = _observe(cluster, "--pod", f"{NS}/bad", "--verdict", "DROPPED", "--last", "1")
        assert res.returncode == 0, res.stderr
        assert "denied by" in res.stdout, res.stdout
        assert f"{NS}/deny-all" in res.stdout, res.stdout
    finally:
        cluster.kubectl("delete", "namespace", NS, "--wait=false")
