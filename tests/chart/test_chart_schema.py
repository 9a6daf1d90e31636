"""values.schema.json rejects unknown keys and wrong types: helm template fails, naming them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from .chart_helpers import CHART, render

BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown top-level key", {"mapsizes": {"policy": 1}}, "mapsizes"),
    ("unknown nested key", {"operator": {"replica": 2}}, "replica"),
    ("unknown map size", {"mapSizes": {"lpm": 4}}, "lpm"),
    ("map size as string", {"mapSizes": {"policy": "big"}}, "/mapSizes/policy"),
    ("map size zero", {"mapSizes": {"conntrack": 0}}, "/mapSizes/conntrack"),
    ("log level not in enum", {"logLevel": "verbose"}, "/logLevel"),
    ("audit as string", {"audit": "yes"}, "/audit"),
    ("audit namespace not a name", {"auditNamespaces": ["Bad_NS"]}, "/auditNamespaces/0"),
    ("exclude labels not a list", {"identity": {"excludeLabels": "app"}}, "excludeLabels"),
    ("negative grace period", {"identity": {"gcGracePeriodSeconds": -1}}, "gcGracePeriod"),
    ("port out of range", {"agent": {"metricsPort": 70000}}, "/agent/metricsPort"),
    ("replicas as string", {"operator": {"replicas": "2"}}, "/operator/replicas"),
    ("capability not allowed", {"agent": {"capabilities": ["SYS_PTRACE"]}}, "capabilities"),
    ("pull policy not in enum", {"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ("toleration operator", {"agent": {"tolerations": [{"operator": "Maybe"}]}}, "tolerations"),
    ("unknown toleration key", {"agent": {"tolerations": [{"op": "Exists"}]}}, "op"),
    ("resources unknown key", {"agent": {"resources": {"request": {}}}}, "request"),
    ("relative bpffs path", {"agent": {"bpffs": "sys/fs/bpf"}}, "/agent/bpffs"),
    ("seccomp profile", {"agent": {"seccompProfile": "Localhost"}}, "seccompProfile"),
    ("metrics not an object", {"metrics": True}, "/metrics"),
]


@pytest.mark.parametrize(
    ("values", "needle"), [(v, n) for _, v, n in BAD_VALUES], ids=[i for i, _, _ in BAD_VALUES]
)
def test_bad_values_are_rejected_by_helm(
    helm: str, tmp_path: Path, values: dict[str, Any], needle: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(render.HelmFailedError) as exc:
        render.template([path])
    assert "schema" in exc.value.stderr or "values don't meet" in exc.value.stderr
    assert needle in exc.value.stderr


def test_set_flag_with_a_wrong_type_is_rejected(helm: str) -> None:
    with pytest.raises(render.HelmFailedError) as exc:
        render.template(set_values=["mapSizes.policy=abc"])
    assert "/mapSizes/policy" in exc.value.stderr


def _objects(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if schema.get("type") == "object" or "properties" in schema:
        out.append((path, schema))
    for key, sub in schema.get("properties", {}).items():
        out += _objects(sub, f"{path}.{key}")
    if isinstance(schema.get("items"), dict):
        out += _objects(schema["items"], f"{path}[]")
    return out


def test_every_object_in_the_schema_forbids_unknown_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    for path, obj in _objects(schema):
        extra = obj.get("additionalProperties")
        # A free-form map (nodeSelector) types its values instead; the Kubernetes affinity
        # sub-objects are validated by the API server.
        if path.endswith("nodeSelector"):
            assert extra == {"type": "string"}, path
        elif path.split(".")[-1] in ("nodeAffinity", "podAffinity", "podAntiAffinity"):
            continue
        else:
            assert extra is False, path


def test_schema_covers_every_value_and_default_values_validate() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(schema["properties"]) == set(values)
    for key, sub in values.items():
        if isinstance(sub, dict) and schema["properties"][key].get("type") == "object":
            assert set(schema["properties"][key]["properties"]) == set(sub), key
