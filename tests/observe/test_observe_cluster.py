"""`labelwall observe` against a real kube-apiserver: RBAC decides, errors name the node.

No kubelet runs here, so no port-forward can complete: these tests cover what the API
server decides (who may find the agents and open a port-forward) and that a node whose
agent cannot be reached is named while the others are still tried.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from labelwall.cli.main import main
from labelwall.testenv import TestEnv
from labelwall.testenv.serviceaccount import service_account_kubeconfig

pytestmark = pytest.mark.apiserver

NS = "lw-observe"
LABELS = {"app.kubernetes.io/name": "labelwall", "app.kubernetes.io/component": "agent"}


def _agent_pod(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": LABELS},
        "spec": {"nodeName": node, "containers": [{"name": "agent", "image": "labelwall"}]},
    }


def _role(name: str, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": name, "namespace": NS}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": name, "namespace": NS},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NS}]},
    ]  # fmt: skip


LIST_PODS = {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}
PORTFORWARD = {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create", "get"]}


@pytest.fixture(scope="module")
def users(apiserver: TestEnv) -> dict[str, Path]:
    apiserver.kubectl("create", "namespace", NS)
    docs = [_agent_pod("agent-a", "node-a"), _agent_pod("agent-b", "node-b")]
    docs += _role("lister", [LIST_PODS]) + _role("reader", [LIST_PODS, PORTFORWARD])
    apiserver.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    return {
        name: service_account_kubeconfig(apiserver, NS, name)
        for name in ("nobody", "lister", "reader")
    }


def observe(kubeconfig: Path, *extra: str) -> list[str]:
    return ["observe", "--kubeconfig", str(kubeconfig), "--agent-namespace", NS, *extra]


def test_a_user_without_rbac_gets_a_clear_error_not_flows(
    users: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(observe(users["nobody"])) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "forbidden" in err
    assert f"`list` on pods in namespace {NS}" in err


def test_a_user_who_may_list_but_not_port_forward_is_told_per_node(
    users: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(observe(users["lister"], "-o", "json")) == 1
    out, err = capsys.readouterr()
    assert out == ""
    for node in ("node-a", "node-b"):
        assert f"node {node}: agent pod {NS}/agent-{node[-1]}: forbidden" in err
    assert "pods/portforward" in err


def test_an_unreachable_agent_is_named_and_the_other_nodes_still_tried(
    users: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # RBAC allows it; the API server cannot reach a kubelet for these nodes (none runs)
    assert main(observe(users["reader"])) == 1
    err = capsys.readouterr().err
    print(err)  # shown with -rA: what a user reads
    lines = [line for line in err.splitlines() if line.startswith("error: node ")]
    assert [line.split(":")[1].strip() for line in lines] == ["node node-a", "node node-b"]
    assert "forbidden" not in err


def test_bad_flags_exit_2_before_any_request(
    users: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(observe(users["reader"], "--until", "soon")) == 2
    assert "--until" in capsys.readouterr().err
