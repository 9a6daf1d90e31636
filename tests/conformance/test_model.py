"""The model cluster matches upstream model.go, and relabels behave like upstream's helpers."""

from __future__ import annotations

import ipaddress

import pytest

from .model import POD_IPS, apply_relabels, build_model, pod_keys


def _by_key(docs: list[dict[str, object]]) -> dict[str, dict]:  # type: ignore[type-arg]
    out = {}
    for d in docs:
        meta = d["metadata"]
        assert isinstance(meta, dict)
        out[f"{d['kind']}:{meta.get('namespace', '')}/{meta['name']}"] = d
    return out


def test_model_has_namespaces_x_y_z_labelled_with_their_names() -> None:
    nss = [d for d in build_model() if d["kind"] == "Namespace"]
    assert [d["metadata"]["name"] for d in nss] == ["x", "y", "z"]
    for d in nss:
        name = d["metadata"]["name"]
        assert d["metadata"]["labels"] == {"kubernetes.io/metadata.name": name, "ns": name}


def test_model_has_nine_pods_labelled_pod_equals_name_with_unique_ips_in_the_pod_cidr() -> None:
    pods = [d for d in build_model() if d["kind"] == "Pod"]
    assert pod_keys(build_model()) == [
        "x/a",
        "x/b",
        "x/c",
        "y/a",
        "y/b",
        "y/c",
        "z/a",
        "z/b",
        "z/c",
    ]
    ips = [d["status"]["podIP"] for d in pods]
    assert len(set(ips)) == 9
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network("10.244.0.0/16") for ip in ips)
    for d in pods:
        assert d["metadata"]["labels"] == {"pod": d["metadata"]["name"]}
        assert d["status"]["podIPs"] == [{"ip": d["status"]["podIP"]}]
    assert POD_IPS["x/a"] == "10.244.1.10"
    assert POD_IPS["y/b"] == "10.244.2.11"


def test_every_pod_declares_ports_80_and_81_in_tcp_udp_sctp_with_upstream_names() -> None:
    for d in build_model():
        if d["kind"] != "Pod":
            continue
        ports = [
            (c["name"], p["name"], p["containerPort"], p["protocol"])
            for c in d["spec"]["containers"]
            for p in c["ports"]
        ]
        assert sorted(ports) == sorted(
            (f"cont-{n}-{proto.lower()}", f"serve-{n}-{proto.lower()}", n, proto)
            for n in (80, 81)
            for proto in ("TCP", "UDP", "SCTP")
        )


def test_relabel_merges_pod_labels_like_add_pod_labels_without_touching_the_input() -> None:
    docs = build_model()
    out = apply_relabels(docs, [{"pod": "x/b", "labels": {"pod": "b", "pod2": "updated"}}])
    assert _by_key(out)["Pod:x/b"]["metadata"]["labels"] == {"pod": "b", "pod2": "updated"}
    assert _by_key(docs)["Pod:x/b"]["metadata"]["labels"] == {"pod": "b"}
    assert _by_key(out)["Pod:y/b"]["metadata"]["labels"] == {"pod": "b"}


def test_relabel_adds_and_removes_namespace_labels() -> None:
    out = apply_relabels(build_model(), [{"namespace": "y", "labels": {"ns2": "updated"}}])
    assert _by_key(out)["Namespace:/y"]["metadata"]["labels"]["ns2"] == "updated"
    back = apply_relabels(out, [{"namespace": "y", "remove": ["ns2"]}])
    assert "ns2" not in _by_key(back)["Namespace:/y"]["metadata"]["labels"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pod": "x/d", "labels": {"a": "b"}}, "unknown pod"),
        ({"namespace": "w", "labels": {"a": "b"}}, "unknown namespace"),
        ({"pod": "x/a", "namespace": "x"}, "exactly one of pod/namespace"),
        ({"labels": {"a": "b"}}, "exactly one of pod/namespace"),
        ({"namespace": "x", "labels": {"kubernetes.io/metadata.name": "q"}}, "immutable"),
        ({"pod": "x/a", "label": {"a": "b"}}, "unknown keys"),
    ],
    ids=[
        "unknown-pod",
        "unknown-namespace",
        "two-targets",
        "no-target",
        "immutable-name-label",
        "typo",
    ],
)
def test_malformed_relabels_are_rejected(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_relabels(build_model(), [change])


def test_setup_adds_labels_and_extra_pods_that_join_the_table() -> None:
    docs = build_model(
        {
            "namespace_labels": {"z": {"team": "blue"}},
            "pod_labels": {"y/c": {"tier": "db"}},
            "pods": [{"namespace": "x", "name": "d", "ip": "10.244.1.13", "labels": {"app": "d"}}],
        }
    )
    by = _by_key(docs)
    assert by["Namespace:/z"]["metadata"]["labels"]["team"] == "blue"
    assert by["Pod:y/c"]["metadata"]["labels"] == {"pod": "c", "tier": "db"}
    assert by["Pod:x/d"]["metadata"]["labels"] == {"pod": "d", "app": "d"}
    assert pod_keys(docs)[-1] == "x/d"


def test_setup_rejects_a_second_pod_with_an_existing_ip() -> None:
    with pytest.raises(ValueError, match="duplicate pod IP"):
        build_model({"pods": [{"namespace": "y", "name": "d", "ip": POD_IPS["x/a"]}]})
