"""Build a validated ClusterState from decoded Namespaces, Pods, Nodes and NetworkPolicies.

All-or-nothing: every problem in every object is collected and raised together as one
InvalidInput, and nothing is returned partially loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from labelwall.cluster import ContainerPort, IPAddress, Labels, Namespace, Node, Pod, Protocol
from labelwall.errors import FieldError, InvalidInput
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.k8sfields import (
    Problems,
    as_bool,
    as_int,
    as_list,
    as_object,
    as_str,
    child,
    item,
    read_metadata,
)
from labelwall.policy.model import NetworkPolicy
from labelwall.policy.parse import DEFAULT_NAMESPACE, parse_network_policy
from labelwall.policy.validation import (
    dns1123_label_errors,
    dns1123_subdomain_errors,
    parse_ip,
    port_name_errors,
    port_number_errors,
)

# The API server sets this label on every namespace to the namespace's name (1.21+), so
# `namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}` works everywhere.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

# (apiVersion, kind) pairs we load; everything else is ignored with a warning.
_CORE = "v1"
_NETWORKING = "networking.k8s.io/v1"
_KINDS = {"Namespace": _CORE, "Pod": _CORE, "Node": _CORE, "NetworkPolicy": _NETWORKING}
# Removed API versions of our kinds: an error (use the current version), not "ignored".
_RETIRED = frozenset({("extensions/v1beta1", "NetworkPolicy")})
_PROTOCOLS = {"TCP": Protocol.TCP, "UDP": Protocol.UDP, "SCTP": Protocol.SCTP}
_NODE_ADDRESS_TYPES = frozenset({"InternalIP", "ExternalIP"})
# A pod in a terminal phase has released its sandbox: its status.podIP may already belong
# to a newer pod (kubectl get pods -A lists completed Jobs), so it owns no address.
_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class SourceDoc:
    """One decoded object and where it came from.

    ``index`` is the document's position in ``source``; ``path`` prefixes field paths
    (``items[3]`` for the fourth item of a ``kind: List`` document).
    """

    source: str
    index: int
    obj: Mapping[str, Any]
    path: str = ""

    def location(self) -> str:
        where = f"{self.source}[doc {self.index}]"
        return f"{where} {self.path}" if self.path else where


@dataclass(frozen=True)
class LoadResult:
    state: ClusterState
    warnings: tuple[FieldError, ...] = ()


def is_list_kind(obj: Mapping[str, Any]) -> bool:
    """``kind: List`` and typed lists (``PodList``...) as ``kubectl get -o yaml`` prints them."""
    kind = obj.get("kind")
    return isinstance(kind, str) and kind.endswith("List") and "items" in obj


def expand_lists(doc: SourceDoc) -> Iterator[SourceDoc | FieldError]:
    """Yield the objects inside ``doc`` (itself if it is not a list); nested lists too.

    Items that are not objects yield a FieldError instead.
    """
    if not is_list_kind(doc.obj):
        yield doc
        return
    items_path = child(doc.path, "items")
    items = doc.obj.get("items")
    if items is None:
        return
    if not isinstance(items, list):
        yield FieldError(
            doc.source, doc.index, str(doc.obj.get("kind")), items_path, "must be an array"
        )
        return
    for i, entry in enumerate(items):
        sub_path = item(items_path, i)
        if not isinstance(entry, Mapping):
            yield FieldError(doc.source, doc.index, "List item", sub_path, "must be an object")
            continue
        yield from expand_lists(SourceDoc(doc.source, doc.index, entry, sub_path))


@dataclass
class _Loader:
    """Accumulates objects and problems across documents; one instance per load_cluster call."""

    errors: list[FieldError] = field(default_factory=list)
    warnings: list[FieldError] = field(default_factory=list)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    pods: dict[str, Pod] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    policies: dict[str, NetworkPolicy] = field(default_factory=dict)
    seen: dict[tuple[str, str], SourceDoc] = field(default_factory=dict)
    ip_owner: dict[IPAddress, tuple[str, SourceDoc]] = field(default_factory=dict)

    def report(self, doc: SourceDoc, label: str, problems: Problems) -> bool:
        """Turn ``problems`` into FieldErrors for ``doc``; True when there were no errors."""
        for path, msg in problems.errors:
            self.errors.append(FieldError(doc.source, doc.index, label, path, msg))
        for path, msg in problems.warnings:
            self.warnings.append(FieldError(doc.source, doc.index, label, path, msg))
        return not problems.errors

    def claim(self, doc: SourceDoc, kind: str, key: str, label: str) -> bool:
        """Record ``kind key`` as defined by ``doc``; a second definition is an error."""
        first = self.seen.setdefault((kind, key), doc)
        if first is doc:
            return True
        self.errors.append(
            FieldError(
                doc.source,
                doc.index,
                label,
                doc.path,
                f"duplicate object: {kind} {key} is also defined at {first.location()}",
            )
        )
        return False

    def add(self, doc: SourceDoc) -> None:
        obj = doc.obj
        if not isinstance(obj, Mapping):
            self.errors.append(
                FieldError(
                    doc.source,
                    doc.index,
                    "<not an object>",
                    doc.path,
                    f"a Kubernetes object must be a mapping, got {type(obj).__name__}",
                )
            )
            return
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        label = f"{kind} <unknown>" if isinstance(kind, str) else "<no kind>"
        if not isinstance(kind, str) or not kind:
            self.errors.append(
                FieldError(
                    doc.source,
                    doc.index,
                    label,
                    child(doc.path, "kind"),
                    "Required value: every object needs a kind",
                )
            )
            return
        want = _KINDS.get(kind)
        foreign = api_version is not None and _group(api_version) != _group(want)
        if want is None or (foreign and (api_version, kind) not in _RETIRED):
            # Another kind, or a same-named kind of another API group (Calico's
            # crd.projectcalico.org NetworkPolicy): not ours to interpret.
            self.warnings.append(
                FieldError(
                    doc.source,
                    doc.index,
                    f"{kind} {_name_of(obj)}",
                    doc.path,
                    f"ignored: labelwall does not read {api_version}/{kind}",
                )
            )
            return
        if api_version != want:
            self.errors.append(
                FieldError(
                    doc.source,
                    doc.index,
                    f"{kind} {_name_of(obj)}",
                    child(doc.path, "apiVersion"),
                    f"must be {want!r} for kind {kind}, got {api_version!r}",
                )
            )
            return
        if kind == "NetworkPolicy":
            self._add_policy(doc)
        elif kind == "Namespace":
            self._add_namespace(doc)
        elif kind == "Pod":
            self._add_pod(doc)
        else:
            self._add_node(doc)

    def _add_policy(self, doc: SourceDoc) -> None:
        try:
            parsed = parse_network_policy(doc.obj, doc.source, doc.index, path=doc.path)
        except InvalidInput as exc:
            self.errors.extend(exc.errors)
            return
        self.warnings.extend(parsed.warnings)
        pol = parsed.policy
        if self.claim(doc, "NetworkPolicy", pol.key, f"NetworkPolicy {pol.key}"):
            self.policies[pol.key] = pol

    def _add_namespace(self, doc: SourceDoc) -> None:
        p = Problems()
        meta = read_metadata(
            doc.obj, doc.path, p, name_errors=dns1123_label_errors, namespaced=False
        )
        label = f"Namespace {meta.name or '<no name>'}"
        if not self.report(doc, label, p) or meta.name is None:
            return
        labels = dict(meta.labels)
        given = labels.get(NAMESPACE_NAME_LABEL)
        if given is not None and given != meta.name:
            self.warnings.append(
                FieldError(
                    doc.source,
                    doc.index,
                    label,
                    child(doc.path, f"metadata.labels[{NAMESPACE_NAME_LABEL}]"),
                    f"{given!r} replaced by {meta.name!r}: the API server always sets this "
                    "label to the namespace name",
                )
            )
        labels[NAMESPACE_NAME_LABEL] = meta.name
        if self.claim(doc, "Namespace", meta.name, label):
            self.namespaces[meta.name] = Namespace(meta.name, Labels(labels))

    def _add_node(self, doc: SourceDoc) -> None:
        p = Problems()
        meta = read_metadata(
            doc.obj, doc.path, p, name_errors=dns1123_subdomain_errors, namespaced=False
        )
        label = f"Node {meta.name or '<no name>'}"
        status_path = child(doc.path, "status")
        status = as_object(doc.obj.get("status"), status_path, p) or {}
        addrs_path = child(status_path, "addresses")
        addresses: list[IPAddress] = []
        for i, raw in enumerate(as_list(status.get("addresses"), addrs_path, p)):
            entry = as_object(raw, item(addrs_path, i), p) or {}
            kind = as_str(entry.get("type"), child(item(addrs_path, i), "type"), p)
            if kind not in _NODE_ADDRESS_TYPES:
                continue  # Hostname, InternalDNS, ExternalDNS: not IPs
            ip = _ip(entry.get("address"), child(item(addrs_path, i), "address"), p)
            if ip is not None and ip not in addresses:
                addresses.append(ip)
        if not self.report(doc, label, p) or meta.name is None:
            return
        if self.claim(doc, "Node", meta.name, label):
            self.nodes[meta.name] = Node(meta.name, tuple(addresses))

    def _add_pod(self, doc: SourceDoc) -> None:
        p = Problems()
        obj = doc.obj
        meta = read_metadata(
            obj, doc.path, p, name_errors=dns1123_subdomain_errors, namespaced=True
        )
        namespace = meta.namespace or DEFAULT_NAMESPACE
        label = f"Pod {namespace}/{meta.name or '<no name>'}"
        spec_path, status_path = child(doc.path, "spec"), child(doc.path, "status")
        spec = as_object(obj.get("spec"), spec_path, p) or {}
        status = as_object(obj.get("status"), status_path, p) or {}
        ports = _container_ports(spec, spec_path, p)
        node = as_str(spec.get("nodeName"), child(spec_path, "nodeName"), p) or None
        host_network = bool(as_bool(spec.get("hostNetwork"), child(spec_path, "hostNetwork"), p))
        ips = _pod_ips(status, status_path, p)
        phase = as_str(status.get("phase"), child(status_path, "phase"), p)
        if phase in _TERMINAL_PHASES:
            ips = ()
        if not self.report(doc, label, p) or meta.name is None:
            return
        pod = Pod(namespace, meta.name, meta.labels, ips, ports, node, host_network)
        if not self.claim(doc, "Pod", pod.key, label):
            return
        self.pods[pod.key] = pod
        if host_network:
            return  # hostNetwork pods share their node's addresses with each other
        for ip in ips:
            owner = self.ip_owner.setdefault(ip, (pod.key, doc))
            if owner[0] != pod.key:
                self.errors.append(
                    FieldError(
                        doc.source,
                        doc.index,
                        label,
                        child(status_path, "podIPs"),
                        f"IP {ip} is also the IP of Pod {owner[0]} at {owner[1].location()}",
                    )
                )

    def result(self) -> LoadResult:
        if self.errors:
            raise InvalidInput(self.errors)
        namespaces = dict(self.namespaces)
        for ns in sorted(
            {p.namespace for p in self.pods.values()}
            | {p.namespace for p in self.policies.values()}
        ):
            # Referenced but not declared: it exists on a real cluster, with only its name label.
            namespaces.setdefault(ns, Namespace(ns, Labels({NAMESPACE_NAME_LABEL: ns})))
        state = ClusterState(
            namespaces=dict(sorted(namespaces.items())),
            pods=dict(sorted(self.pods.items())),
            nodes=dict(sorted(self.nodes.items())),
            policies=dict(sorted(self.policies.items())),
        )
        return LoadResult(state, tuple(self.warnings))


def _group(api_version: object) -> str:
    """``networking.k8s.io/v1`` -> ``networking.k8s.io``; ``v1`` -> ``""`` (the core group)."""
    text = str(api_version)
    return text.rpartition("/")[0]


def _name_of(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return "<no name>"
    name, ns = meta.get("name"), meta.get("namespace")
    return f"{ns}/{name}" if ns else str(name)


def _ip(value: object, path: str, p: Problems) -> IPAddress | None:
    text = as_str(value, path, p)
    if text is None:
        if value is None:
            p.error(path, "Required value")
        return None
    try:
        parsed = parse_ip(text)
    except ValueError as exc:
        p.error(path, f"Invalid value: {text!r}: {exc}")
        return None
    if parsed.warning:
        p.warn(path, parsed.warning)
    return parsed.address


def _pod_ips(status: Mapping[str, Any], path: str, p: Problems) -> tuple[IPAddress, ...]:
    """status.podIP and status.podIPs[*].ip, deduplicated, at most one per family."""
    ips: list[IPAddress] = []
    if status.get("podIP") is not None:
        ip = _ip(status.get("podIP"), child(path, "podIP"), p)
        if ip is not None:
            ips.append(ip)
    list_path = child(path, "podIPs")
    for i, raw in enumerate(as_list(status.get("podIPs"), list_path, p)):
        entry = as_object(raw, item(list_path, i), p, frozenset({"ip"})) or {}
        ip = _ip(entry.get("ip"), child(item(list_path, i), "ip"), p)
        if ip is None or ip in ips:
            continue
        if any(other.version == ip.version for other in ips):
            # The API server allows one IP per family (dual-stack), podIP being podIPs[0].
            p.error(
                item(list_path, i),
                f"Invalid value: {str(ip)!r}: may specify no more than one IP for each IP family",
            )
            continue
        ips.append(ip)
    return tuple(ips)


def _container_ports(spec: Mapping[str, Any], path: str, p: Problems) -> tuple[ContainerPort, ...]:
    """spec.containers[*].ports[*], what named NetworkPolicy ports resolve against."""
    out: list[ContainerPort] = []
    containers_path = child(path, "containers")
    for ci, raw_c in enumerate(as_list(spec.get("containers"), containers_path, p)):
        # Port names are unique within one container only (validateContainerPorts); the
        # API server accepts one name in two containers, so we must too.
        names: dict[str, str] = {}
        c_path = item(containers_path, ci)
        container = as_object(raw_c, c_path, p) or {}
        ports_path = child(c_path, "ports")
        for pi, raw_port in enumerate(as_list(container.get("ports"), ports_path, p)):
            port_path = item(ports_path, pi)
            port = as_object(raw_port, port_path, p) or {}
            number_path = child(port_path, "containerPort")
            number = as_int(port.get("containerPort"), number_path, p)
            if number is None:
                if port.get("containerPort") is None:
                    p.error(number_path, "Required value")
                continue
            if not p.all_invalid(number_path, port_number_errors(number), number):
                continue
            proto_path = child(port_path, "protocol")
            proto_text = as_str(port.get("protocol"), proto_path, p) or "TCP"
            protocol = _PROTOCOLS.get(proto_text)
            if protocol is None:
                p.error(
                    proto_path,
                    f'Unsupported value: {proto_text!r}: supported values: "TCP", "UDP", "SCTP"',
                )
                continue
            name_path = child(port_path, "name")
            name = as_str(port.get("name"), name_path, p) or None
            if name is not None:
                if not p.all_invalid(name_path, port_name_errors(name), name):
                    continue
                if name in names:
                    p.error(name_path, f"Duplicate value: {name!r} (also {names[name]})")
                    continue
                names[name] = port_path
            out.append(ContainerPort(number, protocol, name))
    return tuple(out)


def load_cluster(docs: Iterable[SourceDoc]) -> LoadResult:
    """Validate every object and build the ClusterState; raise InvalidInput listing every error.

    Namespaces referenced by a pod or policy but not declared are created with just the
    ``kubernetes.io/metadata.name`` label; kinds other than Namespace, Pod, Node and
    NetworkPolicy are ignored with a warning; ``*List`` documents are expanded.
    """
    loader = _Loader()
    for doc in docs:
        for entry in expand_lists(doc):
            if isinstance(entry, FieldError):
                loader.errors.append(entry)
            else:
                loader.add(entry)
    return loader.result()
