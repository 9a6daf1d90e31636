"""The rendered RBAC is exactly the least-privilege rules the operator and agent use."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .chart_helpers import Docs, render

Rule = tuple[str, str, str]  # (apiGroup, resource, verb)

OPERATOR: set[Rule] = {
    *((g, r, v) for g, r in [("", "namespaces"), ("", "pods"), ("", "nodes")]
      for v in ("get", "list", "watch")),
    *(("networking.k8s.io", "networkpolicies", v) for v in ("get", "list", "watch", "patch")),
    *(("labelwall.io", r, v) for r in ("identities", "identities/status")
      for v in ("get", "list", "watch", "create", "update", "patch", "delete")),
    *((g, "events", v) for g in ("", "events.k8s.io") for v in ("create", "patch")),
    *(("kopf.dev", "clusterkopfpeerings", v) for v in ("get", "list", "watch", "patch")),
    *(("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("get", "list", "watch")),
}  # fmt: skip

AGENT: set[Rule] = {
    *(("", r, v) for r in ("pods", "namespaces", "nodes") for v in ("get", "list", "watch")),
    *(("networking.k8s.io", "networkpolicies", v) for v in ("get", "list", "watch")),
    *(("labelwall.io", "identities", v) for v in ("get", "list", "watch", "create")),
    ("", "events", "create"),
    ("", "nodes/status", "patch"),  # the LabelwallEnforcementDegraded condition
    *(("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("get", "list", "watch")),
}  # fmt: skip


def _flatten(rules: list[dict[str, list[str]]]) -> set[Rule]:
    out = set()
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, "no resourceNames/nonResourceURLs"
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                for v in rule["verbs"]:
                    assert "*" not in (g, r, v), "wildcards are not least privilege"
                    out.add((g, r, v))
    return out


@pytest.mark.parametrize(("component", "expected"), [("operator", OPERATOR), ("agent", AGENT)])
def test_cluster_role_is_exactly_the_documented_rules(
    default_docs: Docs, component: str, expected: set[Rule]
) -> None:
    assert _flatten(render.cluster_role_rules(default_docs, component)) == expected


def test_agent_cannot_write_what_the_operator_owns(default_docs: Docs) -> None:
    agent = _flatten(render.cluster_role_rules(default_docs, "agent"))
    for verb in ("update", "patch", "delete"):
        assert ("labelwall.io", "identities", verb) not in agent
    assert not any(r == "identities/status" for _, r, _ in agent)
    assert not any(g == "kopf.dev" for g, _, _ in agent), "agents run kopf standalone"
    assert not any(v in ("create", "update", "patch", "delete") for g, r, v in agent if r == "pods")


@pytest.mark.parametrize("component", ["operator", "agent"])
def test_binding_grants_the_role_to_the_component_service_account(
    default_docs: Docs, component: str
) -> None:
    role = render.one(default_docs, "ClusterRole", component)
    binding = render.one(default_docs, "ClusterRoleBinding", component)
    sa = render.one(default_docs, "ServiceAccount", component)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": sa["metadata"]["name"],
            "namespace": "labelwall-system",
        }
    ]
    workload = render.one(default_docs, "Deployment" if component == "operator" else "DaemonSet",
                          component)  # fmt: skip
    assert workload["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_rbac_create_false_renders_no_cluster_roles(rendered: Callable[..., Docs]) -> None:
    docs = rendered(set_values=["rbac.create=false"])
    assert render.find(docs, "ClusterRole") == []
    assert render.find(docs, "ClusterRoleBinding") == []
    assert len(render.find(docs, "ServiceAccount")) == 2


def test_render_cli_prints_the_rules_as_json(helm: str) -> None:
    import json
    import subprocess
    import sys

    from .chart_helpers import REPO

    out = subprocess.run(
        [sys.executable, str(REPO / "tools" / "helm" / "render.py"), "rbac", "agent"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert _flatten(json.loads(out)) == AGENT
