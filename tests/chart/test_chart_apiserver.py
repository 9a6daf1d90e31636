"""The chart against a real kube-apiserver: CRDs are accepted and behave as documented, and
every rendered manifest passes server-side validation (dry run)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from labelwall.testenv import TestEnv

from .chart_helpers import CHART, CI_VALUES, render

pytestmark = pytest.mark.apiserver

NAMESPACE = "labelwall-chart-test"
# High numbers, far from where hash-derived identities of other tests are likely to land;
# every object is deleted again.
ID_A = "16777001"


@pytest.fixture(scope="module")
def crds(apiserver: TestEnv) -> TestEnv:
    # --force-conflicts: other suites apply the same files with their own field manager.
    apiserver.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    for name in ("identities.labelwall.io", "clusterkopfpeerings.kopf.dev"):
        apiserver.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    ns = apiserver.kubectl("get", "namespace", NAMESPACE, check=False)
    if ns.returncode != 0:
        apiserver.kubectl("create", "namespace", NAMESPACE)
    return apiserver


def _identity(name: str, labels: dict[str, str], namespace: str = "shop") -> str:
    pod_labels = {k: v for k, v in labels.items() if not k.startswith("labelwall.io/")}
    return yaml.safe_dump(
        {
            "apiVersion": "labelwall.io/v1alpha1",
            "kind": "Identity",
            "metadata": {
                "name": name,
                "labels": {**pod_labels, "labelwall.io/namespace": namespace},
            },
            "spec": {
                "namespace": namespace,
                "labels": labels,
                "summary": ",".join(f"{k}={v}" for k, v in sorted(pod_labels.items())),
            },
        }
    )


@pytest.fixture
def identity(crds: TestEnv) -> Iterator[TestEnv]:
    crds.kubectl("create", "-f", "-", stdin=_identity(ID_A, {"app": "web", "tier": "front"}))
    try:
        yield crds
    finally:
        crds.kubectl("delete", "identity", ID_A, "--ignore-not-found", "--wait=false")


@pytest.mark.parametrize(
    "values", [None, *CI_VALUES], ids=["defaults", *[p.name for p in CI_VALUES]]
)
def test_rendered_manifests_pass_server_side_validation(crds: TestEnv, values: Path | None) -> None:
    text = render.template_text(
        [] if values is None else [values], namespace=NAMESPACE, include_crds=False
    )
    result = crds.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", stdin=text)
    applied = [line for line in result.stdout.splitlines() if "(server dry run)" in line]
    assert len(applied) == len([d for d in yaml.safe_load_all(text) if d]), result.stdout
    kinds = {line.split("/")[0].split(".")[0] for line in applied}
    assert {"daemonset", "deployment", "configmap"} <= kinds, result.stdout


def test_identity_columns_and_label_selection(identity: TestEnv) -> None:
    table = identity.kubectl("get", "identities", ID_A).stdout.splitlines()
    assert table[0].split() == ["NAME", "ID", "NAMESPACE", "LABELS", "PODS", "AGE"]
    assert table[1].split()[:4] == [ID_A, ID_A, "shop", "app=web,tier=front"]
    names = identity.kubectl("get", "lwid", "-l", "app=web", "-o", "name").stdout.split()
    assert f"identity.labelwall.io/{ID_A}" in names
    by_category = identity.kubectl("get", "labelwall", "-o", "name").stdout.split()
    assert f"identity.labelwall.io/{ID_A}" in by_category


@pytest.mark.parametrize(
    "patch",
    [
        {"spec": {"labels": {"app": "db"}}},
        {"spec": {"namespace": "other"}},
        {"spec": {"summary": "app=db"}},
    ],
    ids=["labels", "namespace", "summary"],
)
def test_identity_spec_cannot_change(identity: TestEnv, patch: dict[str, object]) -> None:
    result = identity.kubectl(
        "patch", "identity", ID_A, "--type=merge", "-p", json.dumps(patch), check=False
    )
    assert result.returncode != 0
    assert "immutable" in result.stderr


def test_identity_status_is_a_subresource(identity: TestEnv) -> None:
    status = {
        "pods": 3,
        "lastUsed": "2026-01-01T00:00:00Z",
        "conditions": [
            {
                "type": "Published",
                "status": "True",
                "reason": "Claimed",
                "message": "ok",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    identity.kubectl(
        "patch", "identity", ID_A, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip
    # A status written through the main resource is ignored (status subresource on).
    identity.kubectl("patch", "identity", ID_A, "--type=merge", "-p", '{"status":{"pods":9}}')
    obj = json.loads(identity.kubectl("get", "identity", ID_A, "-o", "json").stdout)
    assert obj["status"]["pods"] == 3


@pytest.mark.parametrize("name", ["12", "0", "web", "16777216", "0300"])
def test_identity_names_outside_the_cluster_range_are_rejected(crds: TestEnv, name: str) -> None:
    result = crds.kubectl("create", "-f", "-", stdin=_identity(name, {"app": "x"}), check=False)
    assert result.returncode != 0
    assert "256..16777215" in result.stderr


def test_a_second_create_of_one_number_conflicts(identity: TestEnv) -> None:
    result = identity.kubectl(
        "create", "-f", "-", stdin=_identity(ID_A, {"app": "other"}), check=False
    )
    assert result.returncode != 0
    assert "AlreadyExists" in result.stderr
