"""The upstream netpol e2e model cluster (namespaces x/y/z, pods a/b/c) as Kubernetes YAML dicts.

Mirrors ``test/e2e/network/netpol/model.go``: every pod has one container per (port, protocol),
named ``cont-<port>-<proto>``, whose single container port is named ``serve-<port>-<proto>``
(protocol lower-cased). Upstream creates only the ports/protocols a case needs; we always declare
80/81 x TCP/UDP/SCTP, which changes no verdict (numeric policy ports ignore container ports, and a
named port resolves only against the one port that carries that name) and lets the lab listen on
everything. Pod IPs are fixed here because upstream reads them from the live pods and the ipBlock
cases derive their CIDRs from them.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Doc = dict[str, Any]

NAMESPACES: tuple[str, ...] = ("x", "y", "z")
POD_NAMES: tuple[str, ...] = ("a", "b", "c")
PORTS: tuple[int, ...] = (80, 81)
PROTOCOLS: tuple[str, ...] = ("TCP", "UDP", "SCTP")

# The API server sets this label on every namespace (immutable, equal to the name); upstream's
# namespace selectors use it. ``ns: <name>`` is model.go's own label.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

# Deterministic pod IPs inside the pod CIDR 10.244.0.0/16: one /24 per namespace, host .10 + index.
_NS_SUBNET = {"x": 1, "y": 2, "z": 3}
POD_IPS: dict[str, str] = {
    f"{ns}/{pod}": f"10.244.{_NS_SUBNET[ns]}.{10 + i}"
    for ns in NAMESPACES
    for i, pod in enumerate(POD_NAMES)
}

# agnhost is what upstream runs; the image is informational offline, the lab ignores it.
_IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.53"


def port_name(port: int, protocol: str) -> str:
    """model.go Container.PortName: ``serve-80-tcp``."""
    return f"serve-{port}-{protocol.lower()}"


def container_name(port: int, protocol: str) -> str:
    """model.go Container.Name: ``cont-80-tcp``."""
    return f"cont-{port}-{protocol.lower()}"


def pod_keys(docs: Iterable[Doc] | None = None) -> list[str]:
    """``namespace/name`` of every Pod in ``docs`` (default: the plain model), in model order."""
    if docs is None:
        return [f"{ns}/{pod}" for ns in NAMESPACES for pod in POD_NAMES]
    return [
        f"{d['metadata']['namespace']}/{d['metadata']['name']}" for d in docs if d["kind"] == "Pod"
    ]


def namespace_doc(name: str, extra_labels: Mapping[str, str] | None = None) -> Doc:
    labels = {NAMESPACE_NAME_LABEL: name, "ns": name}
    labels.update(extra_labels or {})
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    }


def pod_doc(
    namespace: str, name: str, ip: str, extra_labels: Mapping[str, str] | None = None
) -> Doc:
    labels = {"pod": name}
    labels.update(extra_labels or {})
    containers = [
        {
            "name": container_name(port, proto),
            "image": _IMAGE,
            "ports": [{"containerPort": port, "name": port_name(port, proto), "protocol": proto}],
        }
        for port in PORTS
        for proto in PROTOCOLS
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"containers": containers},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def build_model(setup: Mapping[str, Any] | None = None) -> list[Doc]:
    """Namespaces then Pods of the model cluster, plus a case's optional ``setup``.

    ``setup`` keys (all optional): ``namespace_labels: {ns: {k: v}}`` and
    ``pod_labels: {"ns/pod": {k: v}}`` add labels; ``pods: [{namespace, name, ip, labels}]`` adds
    pods (in an existing model namespace) that then take part in the truth table.
    """
    setup = setup or {}
    unknown = set(setup) - {"namespace_labels", "pod_labels", "pods"}
    if unknown:
        raise ValueError(f"unknown setup keys: {sorted(unknown)}")
    ns_labels: Mapping[str, Mapping[str, str]] = setup.get("namespace_labels", {})
    pod_labels: Mapping[str, Mapping[str, str]] = setup.get("pod_labels", {})
    for ns in ns_labels:
        if ns not in NAMESPACES:
            raise ValueError(f"setup.namespace_labels: unknown namespace {ns!r}")
    docs = [namespace_doc(ns, ns_labels.get(ns)) for ns in NAMESPACES]
    for ns in NAMESPACES:
        for pod in POD_NAMES:
            key = f"{ns}/{pod}"
            docs.append(pod_doc(ns, pod, POD_IPS[key], pod_labels.get(key)))
    for extra in setup.get("pods", []):
        ns, name, ip = extra["namespace"], extra["name"], extra["ip"]
        if ns not in NAMESPACES:
            raise ValueError(f"setup.pods: unknown namespace {ns!r}")
        docs.append(pod_doc(ns, name, ip, extra.get("labels")))
    keys = pod_keys(docs)
    for key in pod_labels:
        if key not in keys:
            raise ValueError(f"setup.pod_labels: unknown pod {key!r}")
    _check_unique(keys, "pod")
    _check_unique([d["status"]["podIP"] for d in docs if d["kind"] == "Pod"], "pod IP")
    for d in docs:
        if d["kind"] == "Pod":
            ipaddress.ip_address(d["status"]["podIP"])  # raises on a malformed setup IP
    return docs


def _check_unique(values: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"duplicate {what} {v!r}")
        seen.add(v)


def apply_relabels(docs: Sequence[Doc], relabels: Iterable[Mapping[str, Any]]) -> list[Doc]:
    """Return a copy of ``docs`` with label changes applied, in order; ``docs`` is not modified.

    Each entry names exactly one target, ``pod: ns/name`` or ``namespace: name``; ``labels`` are
    merged in (upstream AddPodLabels / AddNamespaceLabel set keys, keeping the others) and the
    keys in ``remove`` are deleted (upstream DeleteNamespaceLabel). The namespace-name label is
    immutable in Kubernetes, so changing it is refused.
    """
    out = copy.deepcopy(list(docs))
    for change in relabels:
        unknown = set(change) - {"pod", "namespace", "labels", "remove"}
        if unknown:
            raise ValueError(f"relabel: unknown keys {sorted(unknown)}")
        if ("pod" in change) == ("namespace" in change):
            raise ValueError(f"relabel needs exactly one of pod/namespace, got {dict(change)!r}")
        target = _find(out, change)
        labels: dict[str, str] = target["metadata"].setdefault("labels", {})
        new: Mapping[str, str] = change.get("labels", {})
        removed: Sequence[str] = change.get("remove", [])
        if target["kind"] == "Namespace" and NAMESPACE_NAME_LABEL in {*new, *removed}:
            raise ValueError(f"{NAMESPACE_NAME_LABEL} is immutable")
        labels.update({str(k): str(v) for k, v in new.items()})
        for key in removed:
            labels.pop(key, None)
    return out


def _find(docs: list[Doc], change: Mapping[str, Any]) -> Doc:
    if "pod" in change:
        ns, _, name = str(change["pod"]).partition("/")
        for d in docs:
            meta = d["metadata"]
            if d["kind"] == "Pod" and meta["namespace"] == ns and meta["name"] == name:
                return d
        raise ValueError(f"relabel: unknown pod {change['pod']!r}")
    for d in docs:
        if d["kind"] == "Namespace" and d["metadata"]["name"] == change["namespace"]:
            return d
    raise ValueError(f"relabel: unknown namespace {change['namespace']!r}")
