"""Workloads straight from manifests: one row per Deployment, StatefulSet, ... with no address."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import assume, given, settings
from strategies import clusters_with_policies

from labelwall.cluster import Protocol
from labelwall.errors import FieldError, InvalidInputError
from labelwall.manifests import SourceDoc, load_cluster
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.matrix import PortProto, reachability
from labelwall.policy.model import Rule

TEMPLATE = {
    "metadata": {"labels": {"app": "web"}},
    "spec": {"containers": [{"name": "c", "image": "i", "ports": [
        {"name": "http", "containerPort": 8080}]}]},
}  # fmt: skip


def workload(kind: str, api: str, name: str = "web", **meta: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"template": TEMPLATE}
    if kind == "CronJob":
        spec = {"schedule": "@daily", "jobTemplate": {"spec": {"template": TEMPLATE}}}
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {"name": name, "namespace": "shop", **meta},
        "spec": spec,
    }


def load(*objs: dict[str, Any]) -> tuple[ClusterState, tuple[FieldError, ...]]:
    result = load_cluster([SourceDoc("w.yaml", i, o) for i, o in enumerate(objs)], workloads=True)
    return result.state, result.warnings


@pytest.mark.parametrize(
    ("kind", "api"),
    [
        ("Deployment", "apps/v1"),
        ("StatefulSet", "apps/v1"),
        ("DaemonSet", "apps/v1"),
        ("ReplicaSet", "apps/v1"),
        ("ReplicationController", "v1"),
        ("Job", "batch/v1"),
        ("CronJob", "batch/v1"),
    ],
)
def test_each_workload_kind_becomes_one_row_with_its_template(kind: str, api: str) -> None:
    state, _ = load(workload(kind, api))
    (row,) = state.pods.values()
    assert row.key == f"shop/web[{kind}]"
    assert dict(row.labels) == {"app": "web"}
    assert [(p.name, p.port) for p in row.ports] == [("http", 8080)]
    assert row.workload == kind
    assert len(row.ips) == 1  # a stand-in address so the maps can be asked about it


def test_without_workloads_asked_for_they_are_ignored_as_before() -> None:
    result = load_cluster([SourceDoc("w.yaml", 0, workload("Deployment", "apps/v1"))])
    assert result.state.pods == {}
    assert "ignored" in result.warnings[0].message


def test_pods_and_replicasets_fold_into_their_controller_in_the_input() -> None:
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u",
             "controller": True}  # fmt: skip
    rs = workload("ReplicaSet", "apps/v1", "web-5d8f", ownerReferences=[owner])
    rs_ref = {**owner, "kind": "ReplicaSet", "name": "web-5d8f"}
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-5d8f-x", "namespace": "shop", "labels": {"app": "web"},
                     "ownerReferences": [rs_ref]},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
        "status": {"podIP": "10.244.1.5"},
    }  # fmt: skip
    bare = {**pod, "metadata": {"name": "debug", "namespace": "shop"}, "status": {}}
    state, _ = load(workload("Deployment", "apps/v1"), rs, pod, bare)
    assert sorted(state.pods) == ["shop/debug", "shop/web[Deployment]"]


def test_an_invalid_template_is_an_error_naming_the_field() -> None:
    bad = workload("Deployment", "apps/v1")
    bad["spec"] = {"template": {"metadata": {"labels": {"app": "-bad-"}}, "spec": {}}}
    with pytest.raises(InvalidInputError) as info:
        load(bad)
    assert any(
        e.obj == "Deployment shop/web" and e.field.startswith("spec.template.metadata.labels")
        for e in info.value.errors
    )


def test_ipblock_rules_are_said_not_to_be_judged_against_workloads() -> None:
    policy = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "shop"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]},
    }  # fmt: skip
    state, warnings = load(workload("Deployment", "apps/v1"), policy)
    assert any("ipBlock rules are not judged against workloads" in w.message for w in warnings)
    # The stand-in address is never admitted by an ipBlock (it is not the pod's address).
    other = workload("Deployment", "apps/v1", "client")
    state, _ = load(workload("Deployment", "apps/v1"), other, policy)
    cells = {(c.src, c.dst): c.allowed for c in reachability(state, [(8080, Protocol.TCP)])}
    assert cells[("shop/client[Deployment]", "shop/web[Deployment]")] is False


@settings(max_examples=60, deadline=None)
@given(clusters_with_policies())
def test_a_cluster_as_workloads_has_the_reachability_of_the_same_cluster_as_pods(
    state: ClusterState,
) -> None:
    assume(
        not any(
            peer.ip_block is not None
            for pol in state.policies.values()
            for rule in (*pol.ingress, *pol.egress)
            for peer in rule.peers
        )
    )
    assume(all(not p.host_network for p in state.pods.values()))
    as_workloads = ClusterState(
        state.namespaces,
        {k: replace(p, workload="Deployment") for k, p in state.pods.items()},
        state.nodes,
        state.policies,
    )
    ports: list[PortProto] = [(80, Protocol.TCP), ("http", Protocol.TCP), (53, Protocol.UDP)]
    as_pods = {(c.src, c.dst, c.port, c.protocol): c.allowed for c in reachability(state, ports)}
    rows = {
        (c.src, c.dst, c.port, c.protocol): c.allowed for c in reachability(as_workloads, ports)
    }
    assert rows == as_pods


def test_a_namespace_referenced_but_not_given_is_named_in_a_warning() -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}
    state, warnings = load(workload("Deployment", "apps/v1"), namespace)
    assert "shop" in state.namespaces
    (warning,) = [w for w in warnings if w.obj.startswith("Namespace")]
    assert warning.obj == "Namespace shop"
    assert "assumed to exist" in warning.message


@pytest.mark.parametrize(
    ("rs_name", "hash_label", "folds"),
    [
        ("web-5d8f", "5d8f", True),  # the ReplicaSet is absent, its Deployment present
        ("web-5d8f", None, False),  # no pod-template-hash: nothing ties it to the Deployment
        ("web-5d8f", "9999", False),  # another hash: not this ReplicaSet's name
        ("api-5d8f", "5d8f", False),  # another Deployment's ReplicaSet (not in the input)
    ],
)
def test_a_pod_of_an_absent_replicaset_folds_into_its_deployment(
    rs_name: str, hash_label: str | None, folds: bool
) -> None:
    labels = {"app": "web", **({"pod-template-hash": hash_label} if hash_label else {})}
    ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name, "uid": "u",
           "controller": True}  # fmt: skip
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{rs_name}-x", "namespace": "shop", "labels": labels,
                     "ownerReferences": [ref]},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
        "status": {"podIP": "10.244.1.5"},
    }  # fmt: skip
    state, _ = load(workload("Deployment", "apps/v1"), pod)
    want = ["shop/web[Deployment]"] + ([] if folds else [f"shop/{rs_name}-x"])
    assert sorted(state.pods) == sorted(want)


def _expressible(state: ClusterState) -> ClusterState:
    def rule(r: Rule) -> Rule:
        return replace(r, peers=tuple(p for p in r.peers if p.ip_block is None))

    policies = {
        k: replace(p, ingress=tuple(map(rule, p.ingress)), egress=tuple(map(rule, p.egress)))
        for k, p in state.policies.items()
    }
    pods = {
        k: replace(p, host_network=False, ips=(ipaddress.IPv4Address(f"10.244.9.{i + 1}"),))
        for i, (k, p) in enumerate(sorted(state.pods.items()))
    }
    return ClusterState(state.namespaces, pods, state.nodes, policies)


def _manifests(state: ClusterState, as_workloads: bool) -> list[SourceDoc]:
    """The cluster as YAML objects: each pod as a Deployment (no address) or as a Pod."""
    objs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": n.name, "labels": dict(n.labels)}}
        for n in state.namespaces.values()
    ]  # fmt: skip
    for p in state.pods.values():
        ports = [
            {"containerPort": cp.port, "protocol": cp.protocol.name}
            | ({"name": cp.name} if cp.name else {})
            for cp in p.ports
        ]
        spec = {"containers": [{"name": "c", "image": "i", "ports": ports}]}
        meta = {"name": p.name, "namespace": p.namespace, "labels": dict(p.labels)}
        if as_workloads:
            objs.append({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": p.name, "namespace": p.namespace},
                "spec": {"template": {"metadata": {"labels": dict(p.labels)}, "spec": spec}},
            })  # fmt: skip
        else:
            status = {"podIPs": [{"ip": str(ip)} for ip in p.ips], "podIP": str(p.ips[0])}
            objs.append({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
                         "status": status})  # fmt: skip
    return [SourceDoc("c.yaml", i, o) for i, o in enumerate(objs)]


@settings(max_examples=40, deadline=None)
@given(clusters_with_policies())
def test_the_same_cluster_read_as_deployments_and_as_pods_answers_alike_per_workload(
    state: ClusterState,
) -> None:
    """Through the manifest reader: Deployments (no addresses) vs Pods with podIPs.

    The drawn cluster is made one a workload can express: no ipBlock peers (workloads have
    no real addresses), no hostNetwork, one IPv4 address per pod (a workload's stand-in).
    """
    state = _expressible(state)
    ports: list[PortProto] = [(80, Protocol.TCP), ("http", Protocol.TCP), (53, Protocol.UDP)]

    def read(as_workloads: bool) -> dict[tuple[str, str, int | str, Protocol], bool]:
        loaded = load_cluster(_manifests(state, as_workloads), workloads=True).state
        assert len(loaded.pods) == len(state.pods)
        loaded = ClusterState(loaded.namespaces, loaded.pods, loaded.nodes, state.policies)

        def name(key: str) -> str:
            return key.removesuffix("[Deployment]") if as_workloads else key

        return {
            (name(c.src), name(c.dst), c.port, c.protocol): c.allowed
            for c in reachability(loaded, ports)
        }

    assert read(True) == read(False)
