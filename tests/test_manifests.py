"""Loading decoded Kubernetes objects into a ClusterState: kinds, defaults, duplicates, lists."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
import yaml

from labelwall.cluster import ContainerPort, Direction, Labels, Namespace, Node, Pod, Protocol
from labelwall.errors import FieldError, InvalidInputError
from labelwall.manifests import LoadResult, SourceDoc, load_cluster
from labelwall.policy.model import LabelSelector, NetworkPolicy, Peer, PortSpec, Rule

ip = ipaddress.ip_address
NAME = "kubernetes.io/metadata.name"


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def pod(
    name: str,
    ns: str | None = "x",
    labels: dict[str, Any] | None = None,
    ip: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels or {}}
    if ns is not None:
        meta["namespace"] = ns
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }
    if ip is not None:
        doc["status"] = {"podIP": ip}
    doc.update(extra)
    return doc


def netpol(name: str, ns: str | None = "x", spec: Any = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if ns is not None:
        meta["namespace"] = ns
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": spec if spec is not None else {"podSelector": {}},
    }


def docs(*objs: dict[str, Any], source: str = "c.yaml") -> list[SourceDoc]:
    return [SourceDoc(source, i, o) for i, o in enumerate(objs)]


def load(*objs: dict[str, Any]) -> LoadResult:
    return load_cluster(docs(*objs))


def errors_of(*objs: dict[str, Any]) -> list[FieldError]:
    with pytest.raises(InvalidInputError) as info:
        load(*objs)
    return info.value.errors


def test_pod_fields_become_the_pod_model() -> None:
    doc = pod("a", labels={"app": "web"})
    doc["spec"] = {
        "nodeName": "n1",
        "containers": [
            {
                "name": "c1",
                "ports": [
                    {"containerPort": 80, "name": "http"},
                    {"containerPort": 53, "protocol": "UDP"},
                ],
            },
            {
                "name": "c2",
                "ports": [{"containerPort": 3868, "protocol": "SCTP", "name": "diameter"}],
            },
        ],
    }
    doc["status"] = {
        "podIP": "10.244.1.5",
        "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00:10:244:1::5"}],
    }
    assert load(doc).state.pods == {
        "x/a": Pod(
            namespace="x",
            name="a",
            labels=Labels({"app": "web"}),
            ips=(ip("10.244.1.5"), ip("fd00:10:244:1::5")),
            ports=(
                ContainerPort(80, Protocol.TCP, "http"),
                ContainerPort(53, Protocol.UDP, None),
                ContainerPort(3868, Protocol.SCTP, "diameter"),
            ),
            node="n1",
            host_network=False,
        )
    }


def test_pod_without_ip_or_namespace_is_allowed_in_default() -> None:
    state = load(pod("pending", ns=None)).state
    assert state.pods["default/pending"].ips == ()
    assert state.namespaces["default"] == Namespace("default", Labels({NAME: "default"}))


def test_terminal_pod_releases_its_ip_to_the_pod_that_reuses_it() -> None:
    done = pod("job-1", ip="10.244.1.9")
    done["status"]["phase"] = "Succeeded"
    state = load(done, pod("web", ip="10.244.1.9")).state
    assert state.pods["x/job-1"].ips == ()
    assert state.pods["x/web"].ips == (ip("10.244.1.9"),)


def test_namespaces_get_their_name_label_and_referenced_ones_are_created() -> None:
    state = load(namespace("x", team="a"), pod("a", ns="y"), netpol("p", ns="z")).state
    assert state.namespaces == {
        "x": Namespace("x", Labels({"team": "a", NAME: "x"})),
        "y": Namespace("y", Labels({NAME: "y"})),
        "z": Namespace("z", Labels({NAME: "z"})),
    }


def test_wrong_namespace_name_label_is_overridden_with_a_warning() -> None:
    result = load(namespace("x", **{NAME: "y"}))
    assert result.state.namespaces["x"].labels == Labels({NAME: "x"})
    assert [w.field for w in result.warnings] == [f"metadata.labels[{NAME}]"]


def test_nodes_keep_internal_and_external_ips() -> None:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1"},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": "192.168.0.10"},
                {"type": "Hostname", "address": "n1"},
                {"type": "ExternalIP", "address": "2001:db8::10"},
            ]
        },
    }
    assert load(node).state.nodes == {"n1": Node("n1", (ip("192.168.0.10"), ip("2001:db8::10")))}


def test_other_kinds_are_ignored_with_a_warning() -> None:
    calico = {
        "apiVersion": "crd.projectcalico.org/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "c"},
    }
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "x"}}
    result = load(svc, calico)
    assert result.state.policies == {}
    assert [(w.index, w.obj) for w in result.warnings] == [
        (0, "Service x/s"),
        (1, "NetworkPolicy c"),
    ]


def test_host_network_pods_may_share_an_ip() -> None:
    a = pod("a", ip="192.168.0.10", spec={"hostNetwork": True, "containers": []})
    b = pod("b", ip="192.168.0.10", spec={"hostNetwork": True, "containers": []})
    state = load(a, b).state
    assert [(p.key, p.host_network, p.ips) for p in state.pods.values()] == [
        ("x/a", True, (ip("192.168.0.10"),)),
        ("x/b", True, (ip("192.168.0.10"),)),
    ]


def test_kubectl_list_output_loads_into_the_right_cluster_state() -> None:
    # Shaped like `kubectl get ns,pods,networkpolicies -A -o yaml` (trimmed).
    text = """
apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
- apiVersion: v1
  kind: Namespace
  metadata:
    creationTimestamp: "2024-05-01T10:00:00Z"
    labels: {kubernetes.io/metadata.name: prod, team: shop}
    name: prod
    resourceVersion: "17"
    uid: 6f1b1d7e-1111-4a5b-8c9d-000000000001
  spec: {finalizers: [kubernetes]}
  status: {phase: Active}
- apiVersion: v1
  kind: Pod
  metadata:
    creationTimestamp: "2024-05-01T10:01:00Z"
    generateName: web-7d4b9c-
    labels: {app: web, pod-template-hash: 7d4b9c}
    name: web-7d4b9c-abcde
    namespace: prod
    ownerReferences:
    - {apiVersion: apps/v1, kind: ReplicaSet, name: web-7d4b9c, uid: u, controller: true}
    resourceVersion: "42"
    uid: 6f1b1d7e-1111-4a5b-8c9d-000000000002
  spec:
    containers:
    - image: nginx
      name: web
      ports: [{containerPort: 8080, name: http, protocol: TCP}]
      resources: {}
    nodeName: kind-worker
    restartPolicy: Always
  status:
    conditions: [{type: Ready, status: "True"}]
    hostIP: 172.18.0.2
    hostIPs: [{ip: 172.18.0.2}]
    phase: Running
    podIP: 10.244.1.7
    podIPs: [{ip: 10.244.1.7}, {ip: "fd00:10:244:1::7"}]
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata:
    annotations:
      kubectl.kubernetes.io/last-applied-configuration: |
        {"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy"}
    creationTimestamp: "2024-05-01T10:02:00Z"
    generation: 1
    name: web
    namespace: prod
    resourceVersion: "50"
    uid: 6f1b1d7e-1111-4a5b-8c9d-000000000003
  spec:
    ingress:
    - from:
      - namespaceSelector: {matchLabels: {team: shop}}
      ports: [{port: http, protocol: TCP}]
    podSelector:
      matchLabels: {app: web}
    policyTypes: [Ingress]
"""
    result = load_cluster([SourceDoc("dump.yaml", 0, yaml.safe_load(text))])
    assert result.warnings == ()
    assert result.state.namespaces == {
        "prod": Namespace("prod", Labels({NAME: "prod", "team": "shop"}))
    }
    assert result.state.pods == {
        "prod/web-7d4b9c-abcde": Pod(
            "prod",
            "web-7d4b9c-abcde",
            Labels({"app": "web", "pod-template-hash": "7d4b9c"}),
            (ip("10.244.1.7"), ip("fd00:10:244:1::7")),
            (ContainerPort(8080, Protocol.TCP, "http"),),
            "kind-worker",
            False,
        )
    }
    assert result.state.policies == {
        "prod/web": NetworkPolicy(
            "prod",
            "web",
            LabelSelector(Labels({"app": "web"})),
            frozenset({Direction.INGRESS}),
            ingress=(
                Rule(
                    peers=(Peer(namespace_selector=LabelSelector(Labels({"team": "shop"}))),),
                    ports=(PortSpec(Protocol.TCP, "http"),),
                ),
            ),
        )
    }


def test_errors_inside_a_list_carry_the_item_path() -> None:
    listing = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [namespace("ok"), netpol("p", spec={"podSelectr": {}})],
    }
    errors = errors_of(listing)
    assert [e.field for e in errors] == ["items[1].spec.podSelectr", "items[1].spec.podSelector"]


# (id, objects, index of the erroneous document, field path, fragment of the message)
REJECTED: list[tuple[str, list[dict[str, Any]], int, str, str]] = [
    (
        "duplicate objects",
        [pod("a"), pod("a")],
        1,
        "",
        "duplicate object: Pod x/a is also defined at c.yaml[doc 0]",
    ),
    (
        "duplicate policies across default namespace spellings",
        [netpol("p", ns=None), netpol("p", ns="default")],
        1,
        "",
        "duplicate object: NetworkPolicy default/p",
    ),
    (
        "two pods with one IP",
        [pod("a", ip="10.244.1.1"), pod("b", ip="10.244.1.1")],
        1,
        "status.podIPs",
        "IP 10.244.1.1 is also the IP of Pod x/a at c.yaml[doc 0]",
    ),
    (
        "bad pod label key",
        [pod("a", labels={"app/": "x"})],
        0,
        "metadata.labels[app/]",
        "name part must be non-empty",
    ),
    (
        "bad pod label value",
        [pod("a", labels={"app": "x y"})],
        0,
        "metadata.labels[app]",
        "a valid label",
    ),
    (
        "bad namespace label",
        [namespace("x", **{"a b": "c"})],
        0,
        "metadata.labels[a b]",
        "name part",
    ),
    ("namespace name not a DNS label", [namespace("x.y")], 0, "metadata.name", "RFC 1123 label"),
    (
        "pod IP malformed",
        [pod("a", ip="10.244.1")],
        0,
        "status.podIP",
        "must be a valid IP address",
    ),
    (
        "container port out of range",
        [pod("a", spec={"containers": [{"ports": [{"containerPort": 0}]}]})],
        0,
        "spec.containers[0].ports[0].containerPort",
        "between 1 and 65535",
    ),
    (
        "container port protocol",
        [pod("a", spec={"containers": [{"ports": [{"containerPort": 1, "protocol": "ICMP"}]}]})],
        0,
        "spec.containers[0].ports[0].protocol",
        "Unsupported value",
    ),
    (
        "container port name",
        [pod("a", spec={"containers": [{"ports": [{"containerPort": 1, "name": "Web"}]}]})],
        0,
        "spec.containers[0].ports[0].name",
        "alpha-numeric",
    ),
    (
        "container port name repeated within one container",
        [
            pod(
                "a",
                spec={
                    "containers": [
                        {
                            "ports": [
                                {"containerPort": 1, "name": "web"},
                                {"containerPort": 2, "name": "web"},
                            ]
                        },
                    ]
                },
            )
        ],
        0,
        "spec.containers[0].ports[1].name",
        "Duplicate value",
    ),
    (
        "hostNetwork not a boolean",
        [pod("a", spec={"hostNetwork": "yes", "containers": []})],
        0,
        "spec.hostNetwork",
        "must be a boolean",
    ),
    (
        "two IPv4 pod IPs",
        [pod("a", status={"podIPs": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]})],
        0,
        "status.podIPs[1]",
        "one IP for each IP family",
    ),
    (
        "missing kind",
        [{"apiVersion": "v1", "metadata": {"name": "a"}}],
        0,
        "kind",
        "Required value",
    ),
    (
        "pod without apiVersion",
        [{"kind": "Pod", "metadata": {"name": "a"}}],
        0,
        "apiVersion",
        "must be 'v1'",
    ),
    (
        "retired NetworkPolicy version",
        [{**netpol("p"), "apiVersion": "extensions/v1beta1"}],
        0,
        "apiVersion",
        "networking.k8s.io/v1",
    ),
    (
        "invalid policy",
        [netpol("p", spec={"podSelector": {}, "policyTypes": ["Both"]})],
        0,
        "spec.policyTypes[0]",
        "Unsupported value",
    ),
]


@pytest.mark.parametrize(
    ("objs", "index", "path", "fragment"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED]
)
def test_invalid_cluster_input_is_rejected_naming_the_field(
    objs: list[dict[str, Any]], index: int, path: str, fragment: str
) -> None:
    errors = errors_of(*objs)
    assert any(e.index == index and e.field == path and fragment in e.message for e in errors), [
        str(e) for e in errors
    ]


def test_all_errors_of_all_documents_are_reported_and_nothing_loads() -> None:
    errors = errors_of(
        pod("a", labels={"a": "b c"}), netpol("p", spec={"podSelectr": {}}), pod("a")
    )
    indexes = sorted({e.index for e in errors}, key=lambda i: -1 if i is None else i)
    assert indexes == [0, 1]  # doc 2 is fine: its twin was invalid
    assert len(errors) == 3


def test_one_port_name_in_two_containers_is_accepted_as_the_api_server_does() -> None:
    # validateContainerPorts checks names per container; kubernetes#122150 keeps it so.
    spec = {
        "containers": [
            {"name": "c1", "ports": [{"containerPort": 8080, "name": "http"}]},
            {"name": "c2", "ports": [{"containerPort": 9090, "name": "http"}]},
        ]
    }
    state = load_cluster([SourceDoc("t.yaml", 0, pod("a", spec=spec))]).state
    ports = {(cp.name, cp.port) for cp in state.pods["x/a"].ports}
    assert ports == {("http", 8080), ("http", 9090)}


def test_raw_api_list_items_without_kind_take_the_lists_kind() -> None:
    # `kubectl get --raw /api/v1/pods` and client-go dumps: items carry no kind/apiVersion.
    item = pod("a", ip="10.244.1.5")
    del item["kind"], item["apiVersion"]
    raw = {"kind": "PodList", "apiVersion": "v1", "items": [item]}
    state = load(raw).state
    assert list(state.pods) == ["x/a"]
    assert state.pods["x/a"].ips == (ip("10.244.1.5"),)


def test_items_of_a_generic_list_still_need_their_kind() -> None:
    item = pod("a")
    del item["kind"]
    (err,) = errors_of({"kind": "List", "apiVersion": "v1", "items": [item]})
    assert (err.field, err.obj) == ("items[0].kind", "<no kind>")


def test_namespace_flag_places_objects_that_name_no_namespace() -> None:
    state = load_cluster(docs(pod("a", ns=None), netpol("deny", ns=None)), "shop").state
    assert list(state.pods) == ["shop/a"]
    assert list(state.policies) == ["shop/deny"]
    assert "shop" in state.namespaces
    assert "default" not in state.namespaces


def test_namespace_flag_refuses_an_object_of_another_namespace() -> None:
    with pytest.raises(InvalidInputError) as info:
        load_cluster(docs(pod("a", ns="x"), namespace("x")), "shop")
    (err,) = info.value.errors
    assert err.field == "metadata.namespace"
    assert "'x'" in err.message
    assert "'shop'" in err.message


def test_load_counts_the_objects_read_lists_expanded() -> None:
    assert load().objects == 0
    assert load({"kind": "List", "apiVersion": "v1", "items": [pod("a"), pod("b")]}).objects == 2
