"""core/v1 Service to ``policy.services.Service`` (pure): selector and ports only.

Only what names a flow is read (``spec.selector``, ``spec.ports[*]``: port, targetPort,
protocol, name); the other Service fields (type, clusterIP, ...) are accepted as they are.
Values that are read are validated as the API server does and errors name the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from labelwall.cluster import PORT_PROTOCOLS_BY_NAME
from labelwall.decode.fields import (
    DEFAULT_NAMESPACE,
    Problems,
    as_list,
    as_object,
    as_str,
    child,
    item,
    read_labels,
    read_metadata,
)
from labelwall.decode.validation import (
    dns1123_label_errors,
    port_name_errors,
    port_number_errors,
)
from labelwall.policy.services import Service, ServicePort


def _port(raw: object, path: str, p: Problems) -> ServicePort | None:
    port = as_object(raw, path, p) or {}
    number_path = child(path, "port")
    number = port.get("port")
    if number is None:
        p.error(number_path, "Required value")
        return None
    if not isinstance(number, int) or isinstance(number, bool):
        p.error(number_path, f"must be an integer, got {number!r}")
        return None
    if not p.all_invalid(number_path, port_number_errors(number), number):
        return None
    proto_path = child(path, "protocol")
    proto_text = as_str(port.get("protocol"), proto_path, p) or "TCP"
    protocol = PORT_PROTOCOLS_BY_NAME.get(proto_text)
    if protocol is None:
        p.error(
            proto_path, f'Unsupported value: {proto_text!r}: supported values: "TCP", "UDP", "SCTP"'
        )
        return None
    target_path = child(path, "targetPort")
    raw_target = port.get("targetPort")
    target: int | str = number
    if isinstance(raw_target, bool):
        p.error(target_path, f"must be an integer or a port name, got {raw_target!r}")
        return None
    if isinstance(raw_target, int):
        if not p.all_invalid(target_path, port_number_errors(raw_target), raw_target):
            return None
        target = raw_target
    elif isinstance(raw_target, str):
        if raw_target.isdigit():
            target = int(raw_target)
        elif not p.all_invalid(target_path, port_name_errors(raw_target), raw_target):
            return None
        else:
            target = raw_target
    elif raw_target is not None:
        p.error(target_path, f"must be an integer or a port name, got {raw_target!r}")
        return None
    name = as_str(port.get("name"), child(path, "name"), p) or None
    return ServicePort(number, target, protocol, name)


def decode_service(obj: Mapping[str, Any], path: str, p: Problems) -> tuple[str, Service | None]:
    before = len(p.errors)
    meta = read_metadata(obj, path, p, name_errors=dns1123_label_errors, namespaced=True)
    namespace = meta.namespace or DEFAULT_NAMESPACE
    label = f"Service {namespace}/{meta.name or '<no name>'}"
    spec_path = child(path, "spec")
    spec = as_object(obj.get("spec"), spec_path, p) or {}
    selector = read_labels(spec.get("selector"), child(spec_path, "selector"), p)
    ports_path = child(spec_path, "ports")
    ports = [
        _port(raw, item(ports_path, i), p)
        for i, raw in enumerate(as_list(spec.get("ports"), ports_path, p))
    ]
    if len(p.errors) > before or meta.name is None:
        return label, None
    return label, Service(
        namespace, meta.name, selector, tuple(sp for sp in ports if sp is not None)
    )
