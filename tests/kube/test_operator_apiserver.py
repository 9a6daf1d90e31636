"""`labelwall operator` as a subprocess against a real kube-apiserver (kubectl does the rest)."""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from labelwall.kube.objects import CANONICAL_ANNOTATION, parse_time
from labelwall.testenv import TestEnv, service_account_kubeconfig

from .operator_harness import (
    REPO,
    OperatorProcess,
    apply,
    by_summary,
    identities,
    namespace,
    pod,
    pods_of,
    set_pod_ip,
    wait_for,
)

pytestmark = [pytest.mark.apiserver, pytest.mark.slow]

Start = Callable[..., OperatorProcess]
HELM_RENDER = REPO / "tools" / "helm" / "render.py"


def _settled(env: TestEnv, ns: str, want: dict[str, int]) -> Callable[[], list[dict[str, Any]]]:
    """A check: the namespace's identities are exactly ``want`` (summary -> status.pods)."""

    def check() -> list[dict[str, Any]]:
        items = identities(env, ns)
        return items if pods_of(items) == want else []

    return check


def test_applied_pods_get_one_identity_per_label_set_listed_with_columns_and_selectable(
    crds: TestEnv, operators: Start, fresh_ns: Callable[[str], str]
) -> None:
    ns = fresh_ns("op-basic")
    op = operators()
    apply(
        crds,
        namespace(ns, {"team": "shop"}),
        # pod-template-hash is on the default exclude list: web-1 and web-2 share one identity.
        pod(ns, "web-1", {"app": "web", "pod-template-hash": "aaa"}),
        pod(ns, "web-2", {"app": "web", "pod-template-hash": "bbb"}),
        pod(ns, "db-1", {"app": "db", "tier": "data"}),
    )
    for i, name in enumerate(("web-1", "web-2", "db-1")):
        set_pod_ip(crds, ns, name, f"10.244.7.{i + 1}")

    items = wait_for(
        _settled(crds, ns, {"app=web": 2, "app=db,tier=data": 1}), 30, f"identities in {ns}"
    )
    web = by_summary(items)["app=web"]
    assert web["spec"]["namespace"] == ns
    assert web["spec"]["labels"]["app"] == "web"
    assert web["spec"]["labels"]["labelwall.io/ns.team"] == "shop"
    assert web["spec"]["labels"]["labelwall.io/namespace"] == ns
    assert web["metadata"]["labels"] == {
        "app": "web",
        "labelwall.io/ns.team": "shop",
        "labelwall.io/namespace": ns,
    }
    assert json.loads(web["metadata"]["annotations"][CANONICAL_ANNOTATION])["podLabels"] == {
        "app": "web"
    }
    assert web["status"]["conditions"][0]["type"] == "InUse"
    assert web["status"]["conditions"][0]["status"] == "True"

    table = crds.kubectl("get", "identities", "-l", f"labelwall.io/namespace={ns}").stdout
    lines = table.splitlines()
    assert lines[0].split() == ["NAME", "ID", "NAMESPACE", "LABELS", "PODS", "AGE"]
    rows = sorted(line.split()[1:5] for line in lines[1:])
    numbers = {i["spec"]["summary"]: i["metadata"]["name"] for i in items}
    assert rows == sorted(
        [
            [numbers["app=web"], ns, "app=web", "2"],
            [numbers["app=db,tier=data"], ns, "app=db,tier=data", "1"],
        ]
    )
    selected = crds.kubectl(
        "get", "lwid", "-l", f"app=web,labelwall.io/namespace={ns}", "-o", "name"
    ).stdout.split()
    assert selected == [f"identity.labelwall.io/{numbers['app=web']}"]
    listed = crds.kubectl("get", "labelwall", "-o", "name").stdout.split()
    assert f"identity.labelwall.io/{numbers['app=db,tier=data']}" in listed
    assert op.healthz() == 200
    assert (op.metric("labelwall_operator_identities", {"type": "in_use"}) or 0) >= 2


def test_pod_relabel_and_namespace_relabel_move_pods_to_the_matching_identities(
    crds: TestEnv, operators: Start, fresh_ns: Callable[[str], str]
) -> None:
    ns = fresh_ns("op-relabel")
    operators()
    apply(
        crds, namespace(ns, {"env": "dev"}), pod(ns, "a", {"app": "a"}), pod(ns, "b", {"app": "a"})
    )
    before = by_summary(wait_for(_settled(crds, ns, {"app=a": 2}), 30, "app=a identity"))

    crds.kubectl("label", "pod", "b", "-n", ns, "app=b", "--overwrite")
    items = wait_for(_settled(crds, ns, {"app=a": 1, "app=b": 1}), 30, "b relabelled")
    after = by_summary(items)
    assert after["app=a"]["metadata"]["name"] == before["app=a"]["metadata"]["name"]
    assert after["app=b"]["metadata"]["labels"]["app"] == "b"

    # A namespace label is part of every pod's label set in it: both pods move.
    crds.kubectl("label", "namespace", ns, "env=prod", "--overwrite")

    def moved() -> list[dict[str, Any]]:
        items = identities(crds, ns)
        used = [i for i in items if (i.get("status") or {}).get("pods")]
        envs = {i["spec"]["labels"].get("labelwall.io/ns.env") for i in used}
        return used if envs == {"prod"} and len(used) == 2 else []

    used = wait_for(moved, 30, "pods on prod identities")
    old_numbers = {after["app=a"]["metadata"]["name"], after["app=b"]["metadata"]["name"]}
    assert {i["metadata"]["name"] for i in used}.isdisjoint(old_numbers)
    stale = [i for i in identities(crds, ns) if i["metadata"]["name"] in old_numbers]
    assert all(i["status"]["pods"] == 0 for i in stale)


def test_identity_of_deleted_pods_is_collected_after_the_grace_period_and_not_before(
    crds: TestEnv, operators: Start, fresh_ns: Callable[[str], str]
) -> None:
    grace = 3
    ns = fresh_ns("op-gc")
    op = operators(grace_s=grace)
    apply(crds, namespace(ns), pod(ns, "x-1", {"app": "x"}), pod(ns, "x-2", {"app": "x"}))
    number = wait_for(_settled(crds, ns, {"app=x": 2}), 30, "app=x")[0]["metadata"]["name"]

    crds.kubectl("delete", "pod", "x-1", "-n", ns, "--force", "--grace-period=0")
    wait_for(_settled(crds, ns, {"app=x": 1}), 30, "one pod left")
    crds.kubectl("delete", "pod", "x-2", "-n", ns, "--force", "--grace-period=0")
    unused = wait_for(_settled(crds, ns, {"app=x": 0}), 30, "no pod left")[0]
    last_used = parse_time(unused["status"]["lastUsed"])
    assert last_used is not None

    # Still there until lastUsed + grace (minus the time one kubectl call takes).
    while datetime.datetime.now(datetime.UTC) < last_used + datetime.timedelta(seconds=grace - 0.3):
        got = crds.kubectl("get", "identity", number, "--ignore-not-found", "-o", "name").stdout
        assert got.strip() == f"identity.labelwall.io/{number}", "collected too early"
        time.sleep(0.2)

    wait_for(
        lambda: (
            crds.kubectl("get", "identity", number, "--ignore-not-found").stdout.strip() == ""
            or None
        ),
        grace + 10,
        f"identity {number} collected",
    )
    assert datetime.datetime.now(datetime.UTC) >= last_used + datetime.timedelta(seconds=grace)
    assert (op.metric("labelwall_operator_identities_collected_total") or 0) >= 1


def test_a_new_pod_of_a_collected_label_set_gets_an_identity_again(
    crds: TestEnv, operators: Start, fresh_ns: Callable[[str], str]
) -> None:
    ns = fresh_ns("op-regrow")
    operators(grace_s=1)
    apply(crds, namespace(ns), pod(ns, "r-1", {"app": "r"}))
    wait_for(_settled(crds, ns, {"app=r": 1}), 30, "app=r")
    crds.kubectl("delete", "pod", "r-1", "-n", ns, "--force", "--grace-period=0")
    wait_for(lambda: identities(crds, ns) == [] or None, 30, "app=r collected")
    apply(crds, pod(ns, "r-2", {"app": "r"}))
    wait_for(_settled(crds, ns, {"app=r": 1}), 30, "app=r again")


def test_an_operator_restart_changes_nothing(
    crds: TestEnv, operators: Start, fresh_ns: Callable[[str], str]
) -> None:
    ns = fresh_ns("op-restart")
    first = operators()
    apply(
        crds,
        namespace(ns),
        *(pod(ns, f"p{i}", {"app": f"app{i % 3}"}) for i in range(6)),
    )
    items = wait_for(
        _settled(crds, ns, {"app=app0": 2, "app=app1": 2, "app=app2": 2}), 30, "identities"
    )
    first.wait_quiet()
    first.stop()
    before = {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in identities(crds, ns)}
    assert len(before) == len(items) == 3

    second = operators()
    second.wait_quiet()
    after = {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in identities(crds, ns)}
    # Same objects at the same resourceVersion: not even a status write happened.
    assert after == before
    assert second.metric("labelwall_operator_identities_allocated_total") == 0


def test_two_operators_racing_end_with_one_number_per_label_set(
    crds: TestEnv, operators: Start, fresh_ns: Callable[[str], str]
) -> None:
    ns = fresh_ns("op-race")
    # Both active (no peering): only create conflicts keep them consistent.
    a, b = operators(), operators()
    a.wait_synced()
    b.wait_synced()
    apply(crds, namespace(ns), *(pod(ns, f"p{i}", {"app": f"s{i % 20}"}) for i in range(40)))
    want = {f"app=s{i}": 2 for i in range(20)}
    items = wait_for(_settled(crds, ns, want), 60, "20 identities")
    numbers = [i["metadata"]["name"] for i in items]
    assert len(numbers) == len(set(numbers)) == 20
    conflicts = sum(p.metric("labelwall_operator_allocation_conflicts_total") or 0 for p in (a, b))
    created = sum(p.metric("labelwall_operator_identities_allocated_total") or 0 for p in (a, b))
    # Every label set was created exactly once in total; the loser of each race saw a 409.
    assert created >= 20
    assert conflicts + 20 >= created


def test_policies_get_a_status_annotation_and_an_event_that_names_the_field_warned_about(
    crds: TestEnv, operators: Start, fresh_ns: Callable[[str], str]
) -> None:
    ns = fresh_ns("op-policy")
    operators()
    apply(
        crds,
        namespace(ns),
        pod(ns, "web", {"app": "web"}),
        pod(ns, "db", {"app": "db"}),
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "db-from-web", "namespace": ns},
            "spec": {
                "podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
            },
        },
        {
            # Valid for the API server, but selects no pod: compiled, with a warning.
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "nobody", "namespace": ns},
            "spec": {"podSelector": {"matchLabels": {"app": "ghost"}}},
        },
    )

    def status(name: str) -> dict[str, Any] | None:
        out = crds.kubectl(
            "get", "networkpolicy", name, "-n", ns,
            "-o", "jsonpath={.metadata.annotations.labelwall\\.io/status}",
        ).stdout  # fmt: skip
        return json.loads(out) if out else None

    good = wait_for(lambda: status("db-from-web"), 30, "status annotation")
    assert good == {"compiled": True, "subjects": 1, "peers": 1, "error": None}
    warned = wait_for(lambda: status("nobody"), 30, "status annotation")
    assert warned["compiled"] is True
    assert warned["subjects"] == 0
    assert warned["warnings"] == ["spec.podSelector: selects no pod in the namespace"]

    def events() -> dict[str, dict[str, Any]]:
        out = json.loads(crds.kubectl("get", "events", "-n", ns, "-o", "json").stdout)
        got = {e["involvedObject"]["name"]: e for e in out["items"]}
        return got if {"db-from-web", "nobody"} <= set(got) else {}

    evs = wait_for(events, 30, "events")
    assert (evs["db-from-web"]["type"], evs["db-from-web"]["reason"]) == ("Normal", "Compiled")
    assert evs["nobody"]["reason"] == "CompiledWithWarnings"
    assert "spec.podSelector" in evs["nobody"]["message"]

    # Adding the selected pod changes the outcome: annotation and a new event follow.
    apply(crds, pod(ns, "ghost", {"app": "ghost"}))
    wait_for(
        lambda: ((s := status("nobody")) is not None and s.get("subjects") == 1) or None,
        30,
        "policy now selects the ghost pod",
    )


def _render_operator_rbac(release: str, ns: str) -> list[dict[str, Any]]:
    """The chart's operator ClusterRole and binding, rendered by helm (fails if helm is missing)."""
    spec = importlib.util.spec_from_file_location("lw_helm_render_op", HELM_RENDER)
    assert spec is not None
    assert spec.loader is not None
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    try:
        text = render.run_helm(
            ["template", release, str(render.CHART), "--namespace", ns,
             "--show-only", "templates/operator/rbac.yaml"]
        )  # fmt: skip
    except render.HelmMissingError as e:
        pytest.fail(f"{e} (.ci/run must run tools/helm/build.sh)", pytrace=False)
    return [d for d in yaml.safe_load_all(text) if d]


def test_operator_works_with_exactly_the_chart_operator_role_and_rbac_on(
    crds: TestEnv, operators: Start, fresh_ns: Callable[[str], str]
) -> None:
    sa_ns, ns = fresh_ns("op-rbac-sa"), fresh_ns("op-rbac")
    docs = _render_operator_rbac(f"lwrbac{os.getpid()}", sa_ns)
    assert [d["kind"] for d in docs] == ["ClusterRole", "ClusterRoleBinding"]
    account = docs[1]["subjects"][0]["name"]
    kubeconfig = service_account_kubeconfig(crds, sa_ns, account)
    can = crds.kubectl(
        "auth", "can-i", "create", "identities.labelwall.io", kubeconfig=kubeconfig, check=False
    )
    assert can.stdout.strip() == "no"  # nothing before the chart's role is bound
    apply(crds, *docs)
    # The peering object the chart ships (templates/operator/peering.yaml): kopf peering on.
    apply(
        crds,
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": "labelwall"},
        },
    )

    op = operators(kubeconfig=kubeconfig, standalone=False, grace_s=1)
    apply(
        crds,
        namespace(ns),
        pod(ns, "web", {"app": "web"}),
        pod(ns, "gone", {"app": "gone"}),
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}},
        },
    )
    wait_for(_settled(crds, ns, {"app=web": 1, "app=gone": 1}), 30, f"identities\n{op.tail()}")
    # delete (garbage collection) is allowed too
    crds.kubectl("delete", "pod", "gone", "-n", ns, "--force", "--grace-period=0")
    wait_for(_settled(crds, ns, {"app=web": 1}), 30, f"app=gone collected\n{op.tail()}")
    annotation = crds.kubectl(
        "get", "networkpolicy", "web", "-n", ns,
        "-o", "jsonpath={.metadata.annotations.labelwall\\.io/status}",
    ).stdout  # fmt: skip
    assert json.loads(annotation)["subjects"] == 1
    events = json.loads(crds.kubectl("get", "events", "-n", ns, "-o", "json").stdout)["items"]
    assert [e["reason"] for e in events] == ["Compiled"]
    log = op.log.read_text()
    assert "Forbidden" not in log
    assert "403" not in log


def test_operator_recovers_from_an_apiserver_restart_without_losing_or_duplicating(
    crds: TestEnv, operators: Start, fresh_ns: Callable[[str], str]
) -> None:
    ns = fresh_ns("op-outage")
    op = operators()
    apply(crds, namespace(ns), pod(ns, "a", {"app": "a"}), pod(ns, "b", {"app": "b"}))
    before = wait_for(_settled(crds, ns, {"app=a": 1, "app=b": 1}), 30, "identities")
    uids = {i["metadata"]["name"]: i["metadata"]["uid"] for i in before}

    crds.restart_apiserver()

    apply(crds, pod(ns, "c", {"app": "c"}), pod(ns, "a2", {"app": "a"}))
    after = wait_for(
        _settled(crds, ns, {"app=a": 2, "app=b": 1, "app=c": 1}), 90, f"recovery\n{op.tail()}"
    )
    assert op.proc is not None
    assert op.proc.poll() is None  # the same process, no restart
    kept = {
        i["metadata"]["name"]: i["metadata"]["uid"] for i in after if i["metadata"]["name"] in uids
    }
    assert kept == uids
    assert op.healthz() == 200
