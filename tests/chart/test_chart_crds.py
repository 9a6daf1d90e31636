"""The CRDs carry the Identity contract (names, scope, columns, immutability) and kopf peering."""

from __future__ import annotations

from typing import Any

import yaml

from .chart_helpers import CHART


def _crd(name: str) -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load((CHART / "crds" / f"{name}.yaml").read_text())
    assert crd["metadata"]["name"] == name
    return crd


def test_identity_crd_names_scope_and_version() -> None:
    crd = _crd("identities.labelwall.io")
    spec = crd["spec"]
    assert spec["group"] == "labelwall.io"
    assert spec["scope"] == "Cluster"
    assert spec["names"] == {
        "kind": "Identity",
        "listKind": "IdentityList",
        "plural": "identities",
        "singular": "identity",
        "shortNames": ["lwid"],
        "categories": ["labelwall"],
    }
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_identity_printer_columns() -> None:
    (version,) = _crd("identities.labelwall.io")["spec"]["versions"]
    cols = [(c["name"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert cols == [
        ("ID", ".metadata.name"),
        ("NAMESPACE", ".spec.namespace"),
        ("LABELS", ".spec.summary"),
        ("PODS", ".status.pods"),
        ("AGE", ".metadata.creationTimestamp"),
    ]


def test_identity_spec_is_immutable_and_status_has_conditions() -> None:
    (version,) = _crd("identities.labelwall.io")["spec"]["versions"]
    root = version["schema"]["openAPIV3Schema"]
    spec = root["properties"]["spec"]
    assert spec["required"] == ["labels", "namespace"]
    assert [r["rule"] for r in spec["x-kubernetes-validations"]] == ["self == oldSelf"]
    for field in ("labels", "namespace", "summary"):
        rules = spec["properties"][field]["x-kubernetes-validations"]
        assert [r["rule"] for r in rules] == ["self == oldSelf"], field
    assert spec["properties"]["labels"]["additionalProperties"]["type"] == "string"
    status = root["properties"]["status"]["properties"]
    assert status["pods"]["type"] == "integer"
    assert status["lastUsed"]["format"] == "date-time"
    cond = status["conditions"]
    assert cond["x-kubernetes-list-map-keys"] == ["type"]
    assert set(cond["items"]["required"]) == {
        "type",
        "status",
        "lastTransitionTime",
        "reason",
        "message",
    }
    assert cond["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    # The object's name is the identity number in the cluster range.
    (name_rule,) = root["x-kubernetes-validations"]
    assert "16777215" in name_rule["rule"]
    assert "256" in name_rule["rule"]


def test_kopf_peering_crd_is_cluster_scoped_with_free_status() -> None:
    crd = _crd("clusterkopfpeerings.kopf.dev")
    spec = crd["spec"]
    assert (spec["group"], spec["scope"]) == ("kopf.dev", "Cluster")
    assert spec["names"]["plural"] == "clusterkopfpeerings"
    (version,) = spec["versions"]
    assert version["name"] == "v1"
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True
