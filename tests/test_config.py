"""Tests for labelwall.config: defaults, camelCase parsing, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from labelwall.config import (
    Config,
    MapSizes,
    load_config,
)
from labelwall.datapath import mapspecs
from labelwall.errors import InvalidInputError
from labelwall.identity.labels import DEFAULT_EXCLUDE_LABELS


def _fields(exc: pytest.ExceptionInfo[InvalidInputError]) -> list[str]:
    return [e.field for e in exc.value.errors]


def test_no_path_gives_the_documented_defaults() -> None:
    c = load_config(None, env={"NODE_NAME": "node-a"})
    assert c.log_level == "info"
    assert c.identity.exclude_labels == DEFAULT_EXCLUDE_LABELS
    assert "pod-template-hash" in c.identity.exclude_labels
    assert c.identity.gc_grace_period_seconds == 300
    assert c.audit is False
    assert c.audit_namespaces == ()
    assert c.map_sizes == MapSizes(4096, 65536, 1 << 20, 1 << 20, 65536, 262144, 262144)
    assert (c.operator.metrics_port, c.operator.health_port) == (9964, 9965)
    assert (c.agent.metrics_port, c.agent.health_port) == (9962, 9963)
    assert c.agent.node_name == "node-a"
    assert c.agent.bpffs == "/sys/fs/bpf"


def test_default_map_sizes_are_the_sizes_the_loader_checks() -> None:
    by_name = {spec.name: spec.max_entries for spec in mapspecs.MAPS}
    sizes = MapSizes()
    assert sizes.endpoints == by_name["lw_endpoints_v1"]
    assert sizes.subjects == by_name["lw_subjects_v1"]
    assert sizes.policy == by_name["lw_policy_v1"]
    assert sizes.ipcache == by_name["lw_ipcache_v1"]
    assert sizes.cidrs == by_name["lw_cidrs_v1"]
    assert sizes.ports == by_name["lw_ports_v1"]
    assert sizes.conntrack == by_name["lw_ct_v3"]


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    p = tmp_path / "config.yaml"
    p.write_text("")
    assert load_config(str(p), env={}) == Config.from_mapping({}, env={})


def test_a_path_that_does_not_exist_is_an_error_naming_the_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(InvalidInputError, match=r"nope\.yaml"):
        load_config(missing)


def test_camel_case_keys_fill_every_field(tmp_path: Path) -> None:
    p = tmp_path / "config.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "logLevel": "debug",
                "identity": {"excludeLabels": ["a", "b/c"], "gcGracePeriodSeconds": 5},
                "audit": True,
                "auditNamespaces": ["x", "y"],
                "mapSizes": {
                    "endpoints": 1,
                    "subjects": 2,
                    "policy": 3,
                    "ipcache": 4,
                    "cidrs": 5,
                    "ports": 6,
                    "conntrack": 7,
                },
                "operator": {"metricsPort": 1001, "healthPort": 1002},
                "agent": {
                    "metricsPort": 2001,
                    "healthPort": 2002,
                    "nodeName": "from-file",
                    "bpffs": "/run/bpf",
                },
            }
        )
    )
    c = load_config(str(p), env={"NODE_NAME": "from-env"})
    assert c.log_level == "debug"
    assert c.identity.exclude_labels == ("a", "b/c")
    assert c.identity.gc_grace_period_seconds == 5
    assert c.audit is True
    assert c.audit_namespaces == ("x", "y")
    assert c.map_sizes == MapSizes(1, 2, 3, 4, 5, 6, 7)
    assert (c.operator.metrics_port, c.operator.health_port) == (1001, 1002)
    assert (c.agent.metrics_port, c.agent.health_port) == (2001, 2002)
    # The file wins over the environment; the chart never sets nodeName in the file.
    assert c.agent.node_name == "from-file"
    assert c.agent.bpffs == "/run/bpf"


def test_partial_sections_keep_defaults_for_missing_keys() -> None:
    c = Config.from_mapping({"mapSizes": {"policy": 1024}, "agent": {}}, env={})
    assert c.map_sizes.policy == 1024
    assert c.map_sizes.conntrack == MapSizes().conntrack
    assert c.agent.node_name == ""


def test_to_mapping_round_trips() -> None:
    c = Config.from_mapping(
        {"audit": True, "auditNamespaces": ["z"], "mapSizes": {"cidrs": 9}}, env={}
    )
    assert Config.from_mapping(c.to_mapping(), env={}) == c


def test_config_is_frozen() -> None:
    c = Config()
    with pytest.raises(AttributeError):
        c.audit = True  # type: ignore[misc]


def test_audit_mode_applies_to_all_namespaces_or_the_listed_ones() -> None:
    assert Config(audit=True).audits("any")
    listed = Config(audit_namespaces=("x",))
    assert listed.audits("x")
    assert not listed.audits("y")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"logLevels": "info"}, "logLevels"),
        ({"identity": {"exclude": []}}, "identity.exclude"),
        ({"mapSizes": {"lpm": 4}}, "mapSizes.lpm"),
        ({"operator": {"port": 1}}, "operator.port"),
        ({"agent": {"node": "n"}}, "agent.node"),
    ],
)
def test_unknown_keys_are_rejected_naming_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as exc:
        Config.from_mapping(data, env={})
    assert _fields(exc) == [field]
    assert "unknown field" in str(exc.value)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"logLevel": 3}, "logLevel"),
        ({"logLevel": "verbose"}, "logLevel"),
        ({"audit": "yes"}, "audit"),
        ({"auditNamespaces": "x"}, "auditNamespaces"),
        ({"auditNamespaces": ["x", 5]}, "auditNamespaces[1]"),
        ({"identity": {"excludeLabels": "pod-template-hash"}}, "identity.excludeLabels"),
        ({"identity": {"gcGracePeriodSeconds": "300"}}, "identity.gcGracePeriodSeconds"),
        ({"identity": {"gcGracePeriodSeconds": -1}}, "identity.gcGracePeriodSeconds"),
        ({"identity": []}, "identity"),
        ({"mapSizes": {"policy": "big"}}, "mapSizes.policy"),
        ({"mapSizes": {"conntrack": True}}, "mapSizes.conntrack"),
        ({"mapSizes": {"endpoints": 0}}, "mapSizes.endpoints"),
        ({"mapSizes": {"ipcache": 1.5}}, "mapSizes.ipcache"),
        ({"operator": {"metricsPort": 70000}}, "operator.metricsPort"),
        ({"operator": {"healthPort": 9964}}, "operator.healthPort"),
        ({"agent": {"healthPort": "9963"}}, "agent.healthPort"),
        ({"agent": {"bpffs": ""}}, "agent.bpffs"),
        ({"agent": {"nodeName": 7}}, "agent.nodeName"),
    ],
)
def test_wrong_types_and_values_are_rejected_naming_the_field(
    data: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidInputError) as exc:
        Config.from_mapping(data, env={})
    assert _fields(exc) == [field]
    assert field in str(exc.value)


def test_every_error_is_reported_at_once_with_the_file_name(tmp_path: Path) -> None:
    p = tmp_path / "config.yaml"
    p.write_text("logLevel: loud\nmapSizes: {policy: x}\nextra: 1\n")
    with pytest.raises(InvalidInputError) as exc:
        load_config(str(p), env={})
    assert sorted(_fields(exc)) == ["extra", "logLevel", "mapSizes.policy"]
    assert all(e.source == str(p) for e in exc.value.errors)


def test_a_top_level_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "config.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(InvalidInputError, match="must be a mapping"):
        load_config(str(p), env={})


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "config.yaml"
    p.write_text("logLevel: [\n")
    with pytest.raises(InvalidInputError, match="not valid YAML"):
        load_config(str(p), env={})


def test_service_cidrs_default_to_the_kubeadm_and_kind_ranges_and_round_trip() -> None:
    c = Config.from_mapping(None, env={})
    assert [str(n) for n in c.service_cidrs] == ["10.96.0.0/12", "fd00:10:96::/112"]
    mine = Config.from_mapping({"serviceCIDRs": ["10.43.0.0/16"]}, env={})
    assert [str(n) for n in mine.service_cidrs] == ["10.43.0.0/16"]
    assert Config.from_mapping(mine.to_mapping(), env={}) == mine
    assert Config.from_mapping({"serviceCIDRs": []}, env={}).service_cidrs == ()


@pytest.mark.parametrize(
    ("cidrs", "field"),
    [
        (["10.96.0.1/12"], "serviceCIDRs[0]"),  # host bits set
        (["10.96.0.0/12", "nope"], "serviceCIDRs[1]"),
        (["10.96.0.0/12", "10.96.0.0/12"], "serviceCIDRs[1]"),
        ([f"10.{i}.0.0/16" for i in range(65)], "serviceCIDRs"),
        ("10.96.0.0/12", "serviceCIDRs"),
    ],
)
def test_bad_service_cidrs_are_rejected_naming_the_entry(cidrs: object, field: str) -> None:
    with pytest.raises(InvalidInputError) as exc:
        Config.from_mapping({"serviceCIDRs": cidrs}, env={})
    assert _fields(exc) == [field]
