"""The lab's object store: Kubernetes manifests keyed like the API server keys them, validated.

Applying or deleting merges into the current set and validates the whole result with
the same loader ``labelwall matrix`` uses, plus the lab's own rules (every pod needs an
IPv4 address in the lab node's pod CIDR; no hostNetwork pods). A change that fails leaves the
store as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from labelwall.cluster import Protocol
from labelwall.decode.kinds import KINDS as DECODED_KINDS
from labelwall.errors import FieldError, InvalidInputError
from labelwall.lab.node import LabNode
from labelwall.manifests import SourceDoc, expand_lists, load_cluster
from labelwall.policy.clusterstate import ClusterState

KINDS = {name: kind.namespaced for name, kind in DECODED_KINDS.items()}  # -> namespaced
ObjKey = tuple[str, str, str]  # (kind, namespace or "", name)


@dataclass(frozen=True)
class PodPorts:
    """The ports a pod listens on, by protocol."""

    tcp: tuple[int, ...] = ()
    udp: tuple[int, ...] = ()
    sctp: tuple[int, ...] = ()


@dataclass(frozen=True)
class LabPod:
    """What the lab builds for one pod: a netns with these addresses and listeners."""

    key: str
    ipv4: str
    ipv6: str | None
    ports: PodPorts


def object_key(obj: Mapping[str, Any]) -> ObjKey | None:
    kind = obj.get("kind")
    meta = obj.get("metadata") or {}
    if not isinstance(kind, str) or kind not in KINDS or not isinstance(meta, Mapping):
        return None
    name = str(meta.get("name") or "")
    namespace = str(meta.get("namespace") or "default") if KINDS[kind] else ""
    return kind, namespace, name


def lab_node_object(node: LabNode) -> dict[str, Any]:
    """The Node object the lab registers for its own node: its addresses are ``host``."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": {"labelwall.io/lab": "true"}},
        "status": {"addresses": [{"type": "InternalIP", "address": a} for a in node.addresses]},
    }


def with_lab_node(
    objects: Mapping[ObjKey, Mapping[str, Any]], node: LabNode
) -> dict[ObjKey, Mapping[str, Any]]:
    """``objects`` plus the lab's own Node when they declare no Node (as a kubelet
    registers its node: the kubelet probe path, node -> pod, is then ``host``)."""
    out = dict(objects)
    if not any(k[0] == "Node" for k in out):
        out[("Node", "", node.name)] = lab_node_object(node)
    return out


def flatten(docs: Iterable[SourceDoc]) -> tuple[list[SourceDoc], list[FieldError]]:
    """Expand ``*List`` documents; errors for malformed lists."""
    out: list[SourceDoc] = []
    errors: list[FieldError] = []
    for doc in docs:
        for entry in expand_lists(doc):
            if isinstance(entry, FieldError):
                errors.append(entry)
            else:
                out.append(entry)
    return out, errors


def lab_errors(state: ClusterState, node: LabNode) -> list[FieldError]:
    """What the lab cannot build: hostNetwork pods, pods without an IPv4 address in the
    node's pod CIDR, pods holding one of the node's own addresses."""
    errors = []
    for key in sorted(state.pods):
        pod = state.pods[key]

        def err(field: str, msg: str, key: str = key) -> None:
            errors.append(FieldError("lab", None, f"Pod {key}", field, msg))

        if pod.host_network:
            err("spec.hostNetwork", "Unsupported value: true: the lab runs pods in their own netns")
            continue
        v4 = [ip for ip in pod.ips if ip.version == 4]
        if not v4:
            err("status.podIP", "Required value: the lab needs an IPv4 address for every pod")
        for ip in pod.ips:
            cidr = node.pod_cidr(ip.version)
            if ip not in cidr:
                err("status.podIPs", f"Invalid value: {str(ip)!r}: the lab's pod CIDR is {cidr}")
            elif ip in node.reserved:
                err("status.podIPs", f"Invalid value: {str(ip)!r}: the lab's node holds it")
    return errors


def lab_pods(state: ClusterState) -> dict[str, LabPod]:
    out = {}
    for key, pod in state.pods.items():
        v4 = next(str(ip) for ip in pod.ips if ip.version == 4)
        v6 = next((str(ip) for ip in pod.ips if ip.version == 6), None)

        def ports(proto: Protocol, pod: Any = pod) -> tuple[int, ...]:
            return tuple(sorted({cp.port for cp in pod.ports if cp.protocol == proto}))

        out[key] = LabPod(
            key, v4, v6, PodPorts(ports(Protocol.TCP), ports(Protocol.UDP), ports(Protocol.SCTP))
        )
    return out


class ObjectStore:
    """Current manifests (plain dicts) by (kind, namespace, name), valid for ``node``."""

    def __init__(
        self, node: LabNode, objects: Mapping[ObjKey, Mapping[str, Any]] | None = None
    ) -> None:
        self.node = node
        self.objects: dict[ObjKey, Mapping[str, Any]] = dict(objects or {})

    def state_of(self, objects: Mapping[ObjKey, Mapping[str, Any]]) -> ClusterState:
        docs = [
            SourceDoc(f"{k[0]} {k[1]}/{k[2]}".replace(" /", " "), 0, o)
            for k, o in sorted(with_lab_node(objects, self.node).items())
        ]
        state = load_cluster(docs).state
        errors = lab_errors(state, self.node)
        if errors:
            raise InvalidInputError(errors)
        return state

    def state(self) -> ClusterState:
        return self.state_of(self.objects)

    def merged(
        self, docs: Iterable[SourceDoc]
    ) -> tuple[dict[ObjKey, Mapping[str, Any]], ClusterState]:
        """The store with ``docs`` applied, and its validated state; raises InvalidInputError."""
        flat, errors = flatten(docs)
        new = dict(self.objects)
        fresh: list[SourceDoc] = []
        for doc in flat:
            key = object_key(doc.obj)
            if key is None:
                continue  # load_cluster reports unknown kinds and malformed objects below
            new[key] = doc.obj
            fresh.append(doc)
        # Validate the incoming documents with their own file names first, so errors
        # point at the user's file; then the merged whole (cross-object rules).
        try:
            load_cluster(flat)
        except InvalidInputError as exc:
            errors.extend(exc.errors)
        if errors:
            raise InvalidInputError(errors)
        return new, self.state_of(new)

    def without(
        self, docs: Iterable[SourceDoc]
    ) -> tuple[dict[ObjKey, Mapping[str, Any]], ClusterState]:
        """The store with the objects of ``docs`` (and a deleted namespace's objects) removed."""
        flat, errors = flatten(docs)
        new = dict(self.objects)
        for doc in flat:
            key = object_key(doc.obj)
            if key is None:
                errors.append(FieldError(doc.source, doc.index, "object", "kind", "not a lab kind"))
                continue
            if key not in new:
                what = f"{key[0]} {key[1]}/{key[2]}".replace(" /", " ")
                errors.append(
                    FieldError(doc.source, doc.index, what, "", "NotFound: not in the lab")
                )
                continue
            del new[key]
            if key[0] == "Namespace":
                for other in [k for k in new if k[1] == key[2] and KINDS[k[0]]]:
                    del new[other]
        if errors:
            raise InvalidInputError(errors)
        return new, self.state_of(new)
