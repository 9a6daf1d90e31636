"""`helm install` of the chart into a real kube-apiserver is accepted, and uninstalls cleanly.

The API server is private to this module (a fresh etcd + kube-apiserver, ~3 s): the
release creates cluster-scoped objects (CRDs, ClusterRoles, the ClusterKopfPeering
``labelwall``) that other suites sharing the session server create under other owners,
and helm refuses to adopt objects it did not create.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from labelwall.testenv import Binaries, TestEnv

from .harness import CHART, NAMESPACE, RELEASE, load_render

pytestmark = pytest.mark.apiserver

render = load_render()


@pytest.fixture(scope="module")
def helm_bin() -> str:
    try:
        path: str = render.helm_path()
    except render.HelmMissingError as e:
        pytest.fail(f"{e} (CI: .ci/run must run `bash tools/helm/build.sh` first)", pytrace=False)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, k8s_binaries: Binaries) -> Iterator[TestEnv]:
    env = TestEnv.start(tmp_path_factory.mktemp("helm-install") / "env", k8s_binaries)
    try:
        yield env
    finally:
        env.stop()


def helm(helm_bin: str, env: TestEnv, *args: str) -> subprocess.CompletedProcess[str]:
    home = env.directory / "helm-home"
    return subprocess.run(
        [helm_bin, *args, "--kubeconfig", str(env.kubeconfig)],
        capture_output=True, text=True, timeout=180, check=False,
        env={
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        },
    )  # fmt: skip


@pytest.fixture(scope="module")
def installed(helm_bin: str, server: TestEnv) -> TestEnv:
    out = helm(
        helm_bin, server, "install", RELEASE, str(CHART), "-n", NAMESPACE, "--create-namespace"
    )
    assert out.returncode == 0, out.stderr
    assert "STATUS: deployed" in out.stdout
    return server


def get(env: TestEnv, *args: str) -> Any:
    return json.loads(env.kubectl("get", *args, "-o", "json").stdout)


def test_helm_install_creates_established_crds(installed: TestEnv) -> None:
    for crd in ("identities.labelwall.io", "clusterkopfpeerings.kopf.dev"):
        installed.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        conditions = {
            c["type"]: c["status"] for c in get(installed, "crd", crd)["status"]["conditions"]
        }
        assert conditions["Established"] == "True"
        assert conditions["NamesAccepted"] == "True"


def test_helm_install_creates_every_rendered_object_in_the_api_server(installed: TestEnv) -> None:
    docs = render.template(namespace=NAMESPACE, include_crds=False)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "DaemonSet", "ClusterRole", "ClusterRoleBinding", "ServiceAccount",
            "ConfigMap", "ClusterKopfPeering"} <= kinds  # fmt: skip
    for doc in docs:
        meta = doc["metadata"]
        where = ["-n", meta["namespace"]] if "namespace" in meta else []
        resource = (
            f"{doc['kind'].lower()}.{doc['apiVersion'].split('/')[0]}"
            if "/" in doc["apiVersion"]
            else doc["kind"].lower()
        )
        obj = get(installed, resource, meta["name"], *where)
        assert obj["metadata"]["annotations"]["meta.helm.sh/release-name"] == RELEASE
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_installed_workloads_run_the_labelwall_commands_under_their_own_accounts(
    installed: TestEnv,
) -> None:
    sel = f"app.kubernetes.io/instance={RELEASE}"
    [deploy] = get(installed, "deployment", "-n", NAMESPACE, "-l", sel)["items"]
    [ds] = get(installed, "daemonset", "-n", NAMESPACE, "-l", sel)["items"]
    op = deploy["spec"]["template"]["spec"]
    ag = ds["spec"]["template"]["spec"]
    assert op["containers"][0]["command"][:2] == ["labelwall", "operator"]
    assert ag["containers"][0]["command"][:2] == ["labelwall", "agent"]
    assert ag["hostNetwork"] is True
    for spec in (op, ag):
        account = spec["serviceAccountName"]
        installed.kubectl("get", "serviceaccount", account, "-n", NAMESPACE)
        bindings = get(installed, "clusterrolebinding", "-l", sel)["items"]
        bound = [b for b in bindings if any(s["name"] == account for s in b["subjects"])]
        assert len(bound) == 1, [b["metadata"]["name"] for b in bindings]
        # The API server accepted the role as rendered (RBAC escalation checks included).
        role = get(installed, "clusterrole", bound[0]["roleRef"]["name"])
        assert role["rules"]
        # and the account really holds it: it can watch NetworkPolicies, not delete pods
        user = f"system:serviceaccount:{NAMESPACE}:{account}"
        assert (
            installed.kubectl(
                "auth", "can-i", "watch", "networkpolicies", "-A", "--as", user
            ).stdout.strip()
            == "yes"
        )
        assert (
            installed.kubectl(
                "auth", "can-i", "delete", "pods", "-A", "--as", user, check=False
            ).stdout.strip()
            == "no"
        )


def test_the_installed_config_map_is_the_config_file_both_processes_read(
    installed: TestEnv, tmp_path: Path
) -> None:
    from labelwall.config import load_config

    [cm] = get(installed, "configmap", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=config")[
        "items"
    ]
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"])
    config = load_config(str(path))
    assert config.agent.bpffs == yaml.safe_load(path.read_text())["agent"]["bpffs"]


def test_helm_upgrade_is_a_no_op_and_uninstall_removes_the_release(
    helm_bin: str, installed: TestEnv
) -> None:
    up = helm(helm_bin, installed, "upgrade", RELEASE, str(CHART), "-n", NAMESPACE)
    assert up.returncode == 0, up.stderr
    status = helm(helm_bin, installed, "status", RELEASE, "-n", NAMESPACE, "-o", "json")
    assert json.loads(status.stdout)["version"] == 2
    gone = helm(helm_bin, installed, "uninstall", RELEASE, "-n", NAMESPACE, "--wait=false")
    assert gone.returncode == 0, gone.stderr
    left = get(installed, "deployment,daemonset,clusterrole", "-A", "-l",
               f"app.kubernetes.io/instance={RELEASE}")["items"]  # fmt: skip
    assert left == []
    # helm keeps CRDs on uninstall (its documented policy): the Identity objects survive.
    installed.kubectl("get", "crd", "identities.labelwall.io")
