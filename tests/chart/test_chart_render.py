"""The chart lints and renders with every values file, and renders what the contracts say."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from labelwall.config import Config, MapSizes, load_config

from .chart_helpers import CHART, CI_VALUES, Docs, render

VALUES_FILES = [None, *CI_VALUES]
IDS = ["defaults", *[p.name for p in CI_VALUES]]


def _containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def _container(obj: dict[str, Any], name: str) -> dict[str, Any]:
    (c,) = [c for c in _containers(obj["spec"]["template"]["spec"]) if c["name"] == name]
    return c


def test_ci_values_files_exist() -> None:
    assert {p.name for p in CI_VALUES} >= {"full-values.yaml", "minimal-values.yaml"}


@pytest.mark.parametrize("values", VALUES_FILES, ids=IDS)
def test_helm_lint_passes_strictly(helm: str, values: Path | None) -> None:
    args = [helm, "lint", "--strict", str(CHART)]
    if values is not None:
        args += ["--values", str(values)]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("values", VALUES_FILES, ids=IDS)
def test_helm_template_renders_every_component(
    rendered: Callable[..., Docs], values: Path | None
) -> None:
    docs = rendered([] if values is None else [values])
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {k for k, _ in kinds} >= {
        "CustomResourceDefinition",
        "ConfigMap",
        "ServiceAccount",
        "Deployment",
        "DaemonSet",
        "ClusterKopfPeering",
    }
    for d in docs:
        assert d["metadata"]["name"], d
        assert len(d["metadata"]["name"]) <= 63


@pytest.mark.parametrize("values", VALUES_FILES, ids=IDS)
def test_rendered_config_parses_with_load_config(
    rendered: Callable[..., Docs], values: Path | None, tmp_path: Path
) -> None:
    docs = rendered([] if values is None else [values])
    path = tmp_path / "config.yaml"
    path.write_text(render.config_text(docs))
    config = load_config(str(path), env={"NODE_NAME": "node-1"})
    user = yaml.safe_load(values.read_text()) if values is not None else {}
    chart_defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    merged = {**chart_defaults["mapSizes"], **user.get("mapSizes", {})}
    assert config.map_sizes == Config.from_mapping({"mapSizes": merged}).map_sizes
    assert config.agent.node_name == "node-1"


def test_full_values_flow_into_the_config_file(full_docs: Docs, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(render.config_text(full_docs))
    c = load_config(str(path), env={})
    assert c.log_level == "debug"
    assert c.identity.exclude_labels == (
        "pod-template-hash",
        "controller-revision-hash",
        "example.com/build-id",
    )
    assert c.identity.gc_grace_period_seconds == 45
    assert c.audit is True
    assert c.audit_namespaces == ("staging", "canary")
    assert c.map_sizes == MapSizes(1024, 8192, 131072, 65536, 2048, 4096, 524288, 131072)
    assert (c.conntrack.promote_per_second, c.conntrack.promote_burst) == (500, 1000)
    assert (c.operator.metrics_port, c.operator.health_port) == (19964, 19965)
    assert (c.agent.metrics_port, c.agent.health_port) == (19962, 19963)
    assert c.agent.bpffs == "/run/labelwall/bpf"


def test_chart_defaults_equal_the_config_defaults(default_docs: Docs, tmp_path: Path) -> None:
    # One set of defaults: values.yaml must not drift from labelwall.config (and hence from
    # the map sizes the loader checks).
    path = tmp_path / "config.yaml"
    path.write_text(render.config_text(default_docs))
    assert load_config(str(path), env={}) == Config.from_mapping({}, env={})


def test_a_config_change_changes_the_pod_checksum(rendered: Callable[..., Docs]) -> None:
    def checksums(docs: Docs) -> list[str]:
        return [
            render.one(docs, kind, comp)["spec"]["template"]["metadata"]["annotations"][
                "checksum/config"
            ]
            for kind, comp in (("Deployment", "operator"), ("DaemonSet", "agent"))
        ]

    before = checksums(rendered())
    after = checksums(rendered(set_values=["mapSizes.policy=2048"]))
    assert before[0] != after[0]
    assert before[1] != after[1]


# ---- agent DaemonSet -------------------------------------------------------------------


def test_agent_adds_exactly_the_documented_capabilities(default_docs: Docs) -> None:
    agent = _container(render.one(default_docs, "DaemonSet", "agent"), "agent")
    caps = agent["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"]
    # SYS_ADMIN: the loader looks its programs up by id (a real kubelet node showed it).
    assert caps["add"] == ["BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN"]


def test_every_capability_in_values_has_a_reason_on_the_line_above() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    start = lines.index("  capabilities:")
    items = []
    for i in range(start + 1, len(lines)):
        stripped = lines[i].strip()
        if not (stripped.startswith("- ") or stripped.startswith("#")):
            break
        if stripped.startswith("- "):
            items.append(stripped[2:])
            assert lines[i - 1].strip().startswith("#"), f"no reason above {stripped}"
    assert items == ["BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN"]


def test_agent_runs_on_the_host_network_with_its_node_name(default_docs: Docs) -> None:
    ds = render.one(default_docs, "DaemonSet", "agent")
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert spec["tolerations"] == [{"operator": "Exists"}]
    agent = _container(ds, "agent")
    assert agent["command"] == [
        "labelwall",
        "agent",
        "--config",
        "/etc/labelwall/config.yaml",
        "--source",
        "kubernetes",
        "--flows-port",  # 127.0.0.1 only (labelwall/agent/flowring.py), issue 12
        "9966",
        "--flows-buffer",
        "4096",
    ]
    env = {e["name"]: e for e in agent["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_agent_is_unprivileged_and_read_only(default_docs: Docs) -> None:
    ds = render.one(default_docs, "DaemonSet", "agent")
    sc = _container(ds, "agent")["securityContext"]
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsUser"] == 0
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_bpffs_is_mounted_from_the_host_with_the_right_propagation(default_docs: Docs) -> None:
    ds = render.one(default_docs, "DaemonSet", "agent")
    spec = ds["spec"]["template"]["spec"]
    (vol,) = [v for v in spec["volumes"] if v["name"] == "bpffs"]
    assert vol["hostPath"] == {"path": "/sys/fs/bpf", "type": "DirectoryOrCreate"}
    (agent_mount,) = [m for m in _container(ds, "agent")["volumeMounts"] if m["name"] == "bpffs"]
    assert agent_mount["mountPath"] == "/sys/fs/bpf"
    assert agent_mount["mountPropagation"] == "HostToContainer"
    init = _container(ds, "mount-bpffs")
    (init_mount,) = init["volumeMounts"]
    assert init_mount["mountPropagation"] == "Bidirectional"
    assert "mount -t bpf bpf '/sys/fs/bpf'" in init["command"][-1]


@pytest.mark.parametrize("values", VALUES_FILES, ids=IDS)
def test_only_privileged_containers_use_bidirectional_propagation(
    rendered: Callable[..., Docs], values: Path | None
) -> None:
    # Pod validation: "Bidirectional mount propagation is available only to privileged
    # containers"; a render that breaks it would lint fine and fail at apply.
    docs = rendered([] if values is None else [values])
    for d in docs:
        if d["kind"] not in ("DaemonSet", "Deployment"):
            continue
        for c in _containers(d["spec"]["template"]["spec"]):
            for m in c.get("volumeMounts", []):
                if m.get("mountPropagation") == "Bidirectional":
                    assert c["securityContext"]["privileged"] is True, c["name"]


def test_bpffs_init_container_is_optional(rendered: Callable[..., Docs]) -> None:
    docs = rendered(set_values=["agent.mountBpffs=false"])
    spec = render.one(docs, "DaemonSet", "agent")["spec"]["template"]["spec"]
    assert "initContainers" not in spec


def test_init_script_recognises_a_mounted_bpffs(default_docs: Docs, tmp_path: Path) -> None:
    # Run the init container's script against a stand-in path: a plain directory is not
    # bpffs, so the script must try to mount (we replace `mount` with a recorder).
    init = _container(render.one(default_docs, "DaemonSet", "agent"), "mount-bpffs")
    script = init["command"][-1].replace("/sys/fs/bpf", str(tmp_path))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "mount").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/mount-args\n')
    (bindir / "mount").chmod(0o755)
    proc = subprocess.run(
        ["sh", "-ec", script],
        capture_output=True,
        text=True,
        env={"PATH": f"{bindir}:/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "mount-args").read_text().split() == ["-t", "bpf", "bpf", str(tmp_path)]


def test_agent_has_resources_probes_and_a_metrics_port(default_docs: Docs) -> None:
    agent = _container(render.one(default_docs, "DaemonSet", "agent"), "agent")
    assert set(agent["resources"]) == {"requests", "limits"}
    ports = {p["name"]: p["containerPort"] for p in agent["ports"]}
    assert ports == {"metrics": 9962, "health": 9963}
    assert agent["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


# ---- operator Deployment ----------------------------------------------------------------


def test_operator_is_non_root_read_only_without_capabilities(default_docs: Docs) -> None:
    dep = render.one(default_docs, "Deployment", "operator")
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    op = _container(dep, "operator")
    sc = op["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert op["command"] == ["labelwall", "operator", "--config", "/etc/labelwall/config.yaml"]
    assert op["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in op["ports"]} == {
        "metrics": 9964,
        "health": 9965,
    }


def test_operator_replicas_come_from_values(full_docs: Docs) -> None:
    assert render.one(full_docs, "Deployment", "operator")["spec"]["replicas"] == 2
    (peering,) = render.find(full_docs, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "labelwall"


def test_config_is_mounted_where_the_commands_read_it(default_docs: Docs) -> None:
    cm_name = render.one(default_docs, "ConfigMap", "config")["metadata"]["name"]
    for kind, comp in (("Deployment", "operator"), ("DaemonSet", "agent")):
        obj = render.one(default_docs, kind, comp)
        vols = {v["name"]: v for v in obj["spec"]["template"]["spec"]["volumes"]}
        assert vols["config"]["configMap"]["name"] == cm_name
        mounts = {m["name"]: m for m in _container(obj, comp)["volumeMounts"]}
        assert mounts["config"]["mountPath"] == "/etc/labelwall"
        assert mounts["config"]["readOnly"] is True


# ---- metrics ----------------------------------------------------------------------------


def test_metrics_services_follow_metrics_enabled(rendered: Callable[..., Docs]) -> None:
    on = render.find(rendered(), "Service")
    assert sorted(s["spec"]["ports"][0]["port"] for s in on) == [9962, 9964]
    assert all(s["spec"]["ports"][0]["targetPort"] == "metrics" for s in on)
    assert render.find(rendered(set_values=["metrics.enabled=false"]), "Service") == []


def test_notes_say_how_to_check_it_works(helm: str, tmp_path: Path) -> None:
    # helm template does not print NOTES.txt; render it as a ConfigMap in a copy of the chart.
    import shutil

    chart = tmp_path / "labelwall"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "notes-under-test.yaml").write_text(
        '{{- define "lw.notes" }}' + notes + "{{- end }}\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ include "lw.notes" . | toJson }}\n'
    )
    docs = render.template(chart=chart, set_values=["auditNamespaces={staging}"])
    text = next(d for d in docs if d["metadata"]["name"] == "notes")["data"]["notes"]
    assert "kubectl get identities" in text
    assert "logs ds/labelwall-agent" in text
    assert "curl -s localhost:9962/metrics" in text
    assert "AUDIT MODE is on (staging)" in text
