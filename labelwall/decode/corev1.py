"""Decode and validate one core/v1 Namespace, Pod or Node into its frozen cluster value.

Each ``decode_*`` reads one object (``path`` prefixes its field paths), records every
problem in ``Problems`` and returns the object's label for messages and its value, or
``None`` as the value when it is invalid. What spans objects (duplicates, one address
owned by two pods, namespaces only referenced) is the loader's: ``labelwall/manifests.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from labelwall.cluster import (
    PORT_PROTOCOLS_BY_NAME,
    ContainerPort,
    IPAddress,
    Labels,
    Namespace,
    Node,
    Pod,
)
from labelwall.decode.fields import (
    DEFAULT_NAMESPACE,
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
from labelwall.decode.validation import (
    dns1123_label_errors,
    dns1123_subdomain_errors,
    parse_ip,
    port_name_errors,
    port_number_errors,
)
from labelwall.identity.labels import NAMESPACE_NAME_LABEL

_NODE_ADDRESS_TYPES = frozenset({"InternalIP", "ExternalIP"})
# A pod in a terminal phase has released its sandbox: its status.podIP may already belong
# to a newer pod (kubectl get pods -A lists completed Jobs), so it owns no address.
_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


def decode_namespace(
    obj: Mapping[str, Any], path: str, p: Problems
) -> tuple[str, Namespace | None]:
    """A Namespace; its ``kubernetes.io/metadata.name`` label is always its name."""
    before = len(p.errors)
    meta = read_metadata(obj, path, p, name_errors=dns1123_label_errors, namespaced=False)
    label = f"Namespace {meta.name or '<no name>'}"
    if len(p.errors) > before or meta.name is None:
        return label, None
    labels = dict(meta.labels)
    given = labels.get(NAMESPACE_NAME_LABEL)
    if given is not None and given != meta.name:
        p.warn(
            child(path, f"metadata.labels[{NAMESPACE_NAME_LABEL}]"),
            f"{given!r} replaced by {meta.name!r}: the API server always sets this "
            "label to the namespace name",
        )
    labels[NAMESPACE_NAME_LABEL] = meta.name
    return label, Namespace(meta.name, Labels(labels))


def decode_node(obj: Mapping[str, Any], path: str, p: Problems) -> tuple[str, Node | None]:
    """A Node with its InternalIP and ExternalIP addresses (the ``host`` identity's)."""
    before = len(p.errors)
    meta = read_metadata(obj, path, p, name_errors=dns1123_subdomain_errors, namespaced=False)
    label = f"Node {meta.name or '<no name>'}"
    status_path = child(path, "status")
    status = as_object(obj.get("status"), status_path, p) or {}
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
    if len(p.errors) > before or meta.name is None:
        return label, None
    return label, Node(meta.name, tuple(addresses))


def decode_pod(obj: Mapping[str, Any], path: str, p: Problems) -> tuple[str, Pod | None]:
    """A Pod: labels, addresses (none once terminated), container ports, node."""
    before = len(p.errors)
    meta = read_metadata(obj, path, p, name_errors=dns1123_subdomain_errors, namespaced=True)
    namespace = meta.namespace or DEFAULT_NAMESPACE
    label = f"Pod {namespace}/{meta.name or '<no name>'}"
    spec_path, status_path = child(path, "spec"), child(path, "status")
    spec = as_object(obj.get("spec"), spec_path, p) or {}
    status = as_object(obj.get("status"), status_path, p) or {}
    ports = _container_ports(spec, spec_path, p)
    node = as_str(spec.get("nodeName"), child(spec_path, "nodeName"), p) or None
    host_network = bool(as_bool(spec.get("hostNetwork"), child(spec_path, "hostNetwork"), p))
    ips = _pod_ips(status, status_path, p)
    phase = as_str(status.get("phase"), child(status_path, "phase"), p)
    if phase in _TERMINAL_PHASES:
        ips = ()
    if len(p.errors) > before or meta.name is None:
        return label, None
    return label, Pod(namespace, meta.name, meta.labels, ips, ports, node, host_network)


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
            protocol = PORT_PROTOCOLS_BY_NAME.get(proto_text)
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
