"""The test environment is a real API server: kubectl, RBAC, restarts, and clean teardown."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from labelwall.testenv import Binaries, TestEnv, service_account_kubeconfig
from labelwall.testenv.env import STATE_FILE
from labelwall.testenv.processes import is_running

pytestmark = pytest.mark.apiserver


def _apply(env: TestEnv, *objs: Mapping[str, object]) -> None:
    env.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objs))


def _namespace(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def test_kubectl_apply_creates_a_namespace_and_a_pod_whose_status_a_test_can_set(
    apiserver: TestEnv,
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "tenv-apply", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "example.invalid/web:1"}]},
    }
    _apply(apiserver, _namespace("tenv-apply"), pod)

    # No kubelet runs: the test plays its part and writes the status subresource.
    status = {
        "status": {"phase": "Running", "podIP": "10.244.1.7", "podIPs": [{"ip": "10.244.1.7"}]}
    }
    apiserver.kubectl(
        "patch", "pod", "web-0", "-n", "tenv-apply", "--subresource=status",
        "--type=merge", "-p", json.dumps(status),
    )  # fmt: skip

    got = json.loads(
        apiserver.kubectl("get", "pod", "web-0", "-n", "tenv-apply", "-o", "json").stdout
    )
    assert got["metadata"]["labels"] == {"app": "web"}
    assert got["status"]["phase"] == "Running"
    assert got["status"]["podIP"] == "10.244.1.7"
    # The API server is shared by the session: select within this test's namespace only.
    selected = apiserver.kubectl(
        "get", "pods", "-n", "tenv-apply", "-l", "app=web", "-o", "name"
    ).stdout.split()
    assert selected == ["pod/web-0"]
    other = apiserver.kubectl(
        "get", "pods", "-n", "tenv-apply", "-l", "app=db", "-o", "name"
    ).stdout.split()
    assert other == []


def test_rbac_denies_a_service_account_without_rules(apiserver: TestEnv) -> None:
    kubeconfig = service_account_kubeconfig(apiserver, "tenv-rbac-deny", "nobody")

    result = apiserver.kubectl(
        "get", "pods", "-n", "tenv-rbac-deny", kubeconfig=kubeconfig, check=False
    )

    assert result.returncode != 0
    assert "forbidden" in result.stderr
    assert "system:serviceaccount:tenv-rbac-deny:nobody" in result.stderr


def test_rbac_allows_exactly_what_a_role_grants_a_service_account(apiserver: TestEnv) -> None:
    ns = "tenv-rbac-allow"
    kubeconfig = service_account_kubeconfig(apiserver, ns, "reader")
    _apply(
        apiserver,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "pod-reader", "namespace": ns},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "reader-reads-pods", "namespace": ns},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "pod-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}],
        },
    )

    allowed = apiserver.kubectl("get", "pods", "-n", ns, kubeconfig=kubeconfig, check=False)
    other_resource = apiserver.kubectl(
        "get", "secrets", "-n", ns, kubeconfig=kubeconfig, check=False
    )
    other_namespace = apiserver.kubectl(
        "get", "pods", "-n", "default", kubeconfig=kubeconfig, check=False
    )

    assert allowed.returncode == 0, allowed.stderr
    assert other_resource.returncode != 0
    assert "forbidden" in other_resource.stderr
    assert other_namespace.returncode != 0
    assert "forbidden" in other_namespace.stderr


def test_the_apiserver_restarts_on_the_same_url_while_etcd_keeps_the_data(
    apiserver: TestEnv,
) -> None:
    _apply(
        apiserver,
        _namespace("tenv-restart"),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "survivor", "namespace": "tenv-restart"},
            "data": {"k": "v"},
        },
    )
    before = json.loads(
        apiserver.kubectl("get", "cm", "survivor", "-n", "tenv-restart", "-o", "json").stdout
    )
    etcd_pid, old_apiserver_pid, server = (
        apiserver.etcd_pid,
        apiserver.apiserver_pid,
        apiserver.server,
    )

    apiserver.stop_apiserver()
    down = apiserver.kubectl("get", "ns", "tenv-restart", check=False, timeout_s=30)
    apiserver.start_apiserver()

    assert down.returncode != 0
    assert old_apiserver_pid is not None
    assert not is_running(old_apiserver_pid)
    assert apiserver.apiserver_pid != old_apiserver_pid
    assert apiserver.etcd_pid == etcd_pid
    assert apiserver.server == server
    after = json.loads(
        apiserver.kubectl("get", "cm", "survivor", "-n", "tenv-restart", "-o", "json").stdout
    )
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["data"] == {"k": "v"}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labelwall.cli.testenv", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_testenv_up_and_down_leave_no_processes_or_files_behind(
    tmp_path: Path, k8s_binaries: Binaries
) -> None:
    directory = tmp_path / "env"
    pids: list[int] = []
    try:
        up = _cli("up", "--dir", str(directory))
        assert up.returncode == 0, up.stderr
        state = json.loads((directory / STATE_FILE).read_text())
        pids = [state["etcd_pid"], state["apiserver_pid"]]
        # `up` has exited; the servers outlive it and answer with the written kubeconfig.
        assert all(is_running(p) for p in pids)
        namespaces = subprocess.run(
            [str(k8s_binaries.kubectl), f"--kubeconfig={directory / 'kubeconfig'}",
             f"--cache-dir={directory / 'kubectl-cache'}", "get", "ns", "default", "-o", "name"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert namespaces.stdout.strip() == "namespace/default", namespaces.stderr

        down = _cli("down", "--dir", str(directory))

        assert down.returncode == 0, down.stderr
        assert not any(is_running(p) for p in pids)
        assert not directory.exists()
    finally:
        if directory.exists():
            _cli("down", "--dir", str(directory))
