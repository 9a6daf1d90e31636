"""Decode and validate one networking.k8s.io/v1 NetworkPolicy into the frozen policy model.

The rules are those of the API server (``pkg/apis/networking/validation``, apimachinery label
selector validation and ``SetDefaults_NetworkPolicy``), plus ``kubectl --validate=strict``:
unknown fields are errors, because a typo such as ``podSelectr`` would otherwise leave an
empty selector that selects every pod in the namespace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from labelwall.cluster import PORT_PROTOCOLS_BY_NAME, Direction, IPNetwork, Protocol
from labelwall.decode.fields import (
    DEFAULT_NAMESPACE,
    Problems,
    as_int,
    as_list,
    as_object,
    as_str,
    child,
    item,
    read_labels,
    read_metadata,
)
from labelwall.decode.validation import (
    dns1123_subdomain_errors,
    label_value_errors,
    parse_cidr,
    port_name_errors,
    port_number_errors,
    qualified_name_errors,
)
from labelwall.errors import FieldError, InvalidInputError
from labelwall.policy.model import (
    IPBlock,
    LabelSelector,
    NetworkPolicy,
    Operator,
    Peer,
    PortSpec,
    Requirement,
    Rule,
)

API_VERSION = "networking.k8s.io/v1"
KIND = "NetworkPolicy"

_TOP_FIELDS = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})
_SPEC_FIELDS = frozenset({"podSelector", "ingress", "egress", "policyTypes"})
_SELECTOR_FIELDS = frozenset({"matchLabels", "matchExpressions"})
_REQUIREMENT_FIELDS = frozenset({"key", "operator", "values"})
_PEER_FIELDS = frozenset({"podSelector", "namespaceSelector", "ipBlock"})
_IPBLOCK_FIELDS = frozenset({"cidr", "except"})
_PORT_FIELDS = frozenset({"protocol", "port", "endPort"})
_POLICY_TYPES = {"Ingress": Direction.INGRESS, "Egress": Direction.EGRESS}
_OPERATORS = {op.value: op for op in Operator}


@dataclass(frozen=True)
class Parsed:
    """A valid policy and the warnings its input earned (e.g. a CIDR normalised)."""

    policy: NetworkPolicy
    warnings: tuple[FieldError, ...] = ()


def object_label(obj: Mapping[str, Any]) -> str:
    """``NetworkPolicy ns/name`` for messages, tolerant of a broken ``metadata``."""
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    name = meta.get("name")
    ns = meta.get("namespace")
    ns_text = ns if isinstance(ns, str) and ns else DEFAULT_NAMESPACE
    name_text = name if isinstance(name, str) and name else "<no name>"
    return f"{KIND} {ns_text}/{name_text}"


def parse_network_policy(
    obj: Mapping[str, Any], source: str, index: int | None, *, path: str = ""
) -> Parsed:
    """Validate ``obj`` and build its model; raise InvalidInputError with every problem found.

    ``path`` prefixes every field path (``items[3]`` for an object inside a List).
    """
    problems = Problems()
    label, policy = read_network_policy(obj, path, problems)

    def errs(pairs: list[tuple[str, str]]) -> list[FieldError]:
        return [FieldError(source, index, label, p, m) for p, m in pairs]

    if problems.errors or policy is None:
        raise InvalidInputError(errs(problems.errors))
    return Parsed(policy, tuple(errs(problems.warnings)))


def read_network_policy(
    obj: Mapping[str, Any], path: str, p: Problems
) -> tuple[str, NetworkPolicy | None]:
    """The object's label for messages, and its model (None if ``p`` gained an error)."""
    return object_label(obj), _read_policy(obj, path, p)


def _read_policy(obj: Mapping[str, Any], path: str, p: Problems) -> NetworkPolicy | None:
    as_object(obj, path, p, _TOP_FIELDS)
    if obj.get("apiVersion") != API_VERSION:
        p.error(
            child(path, "apiVersion"), f"must be {API_VERSION!r}, got {obj.get('apiVersion')!r}"
        )
    if obj.get("kind") != KIND:
        p.error(child(path, "kind"), f"must be {KIND!r}, got {obj.get('kind')!r}")
    meta = read_metadata(obj, path, p, name_errors=dns1123_subdomain_errors, namespaced=True)

    spec_path = child(path, "spec")
    spec = as_object(obj.get("spec"), spec_path, p, _SPEC_FIELDS)
    sel_path = child(spec_path, "podSelector")
    if obj.get("spec") is None:
        p.error(spec_path, "Required value: a NetworkPolicy needs spec.podSelector")
    spec = spec or {}
    pod_selector = _read_selector(spec.get("podSelector"), sel_path, p)
    if spec and spec.get("podSelector") is None:
        # The API documents this field as "NOT optional"; {} selects every pod.
        p.error(sel_path, "Required value: use {} to select every pod in the namespace")

    ingress = _read_rules(spec.get("ingress"), child(spec_path, "ingress"), "from", p)
    egress = _read_rules(spec.get("egress"), child(spec_path, "egress"), "to", p)
    types = _read_policy_types(spec.get("policyTypes"), child(spec_path, "policyTypes"), p)
    if not types:
        # SetDefaults_NetworkPolicy: `len(PolicyTypes) == 0` gets Ingress, plus Egress when
        # `len(Egress) != 0`. So `egress: []` (present but empty) does NOT add Egress, and
        # neither does `policyTypes: []`; both read exactly as if absent.
        types = {Direction.INGRESS}
        if egress:
            types.add(Direction.EGRESS)

    if p.errors or pod_selector is None or meta.name is None:
        return None
    return NetworkPolicy(
        namespace=meta.namespace or DEFAULT_NAMESPACE,
        name=meta.name,
        pod_selector=pod_selector,
        policy_types=frozenset(types),
        ingress=tuple(ingress),
        egress=tuple(egress),
    )


def _read_policy_types(value: object, path: str, p: Problems) -> set[Direction]:
    raw = as_list(value, path, p)
    if len(raw) > len(_POLICY_TYPES):
        p.error(path, f"Invalid value: {raw!r}: may not specify more than two policyTypes")
        return set()
    out: set[Direction] = set()
    for i, entry in enumerate(raw):
        text = as_str(entry, item(path, i), p)
        if text is None:
            continue
        if text not in _POLICY_TYPES:
            p.error(
                item(path, i), f'Unsupported value: {text!r}: supported values: "Ingress", "Egress"'
            )
            continue
        if _POLICY_TYPES[text] in out:
            # The API server accepts a repeated type; it changes nothing, so only warn.
            p.warn(item(path, i), f"duplicate policyType {text!r} has no effect")
        out.add(_POLICY_TYPES[text])
    return out


def _read_selector(value: object, path: str, p: Problems) -> LabelSelector | None:
    """metav1.LabelSelector; None when unset/null (a nil pointer in Go)."""
    sel = as_object(value, path, p, _SELECTOR_FIELDS)
    if sel is None:
        return None
    labels = read_labels(sel.get("matchLabels"), child(path, "matchLabels"), p)
    exprs_path = child(path, "matchExpressions")
    exprs = []
    for i, raw in enumerate(as_list(sel.get("matchExpressions"), exprs_path, p)):
        req = _read_requirement(raw, item(exprs_path, i), p)
        if req is not None:
            exprs.append(req)
    return LabelSelector(match_labels=labels, match_expressions=tuple(exprs))


def _read_requirement(value: object, path: str, p: Problems) -> Requirement | None:
    req = as_object(value, path, p, _REQUIREMENT_FIELDS)
    if req is None:
        if value is None:
            p.error(path, "Required value: a requirement needs key and operator")
        return None
    ok = True
    key_path, op_path, vals_path = (
        child(path, "key"),
        child(path, "operator"),
        child(path, "values"),
    )
    key = as_str(req.get("key"), key_path, p)
    if key is None:
        ok = False
        if req.get("key") is None:
            p.error(key_path, "Required value")
    else:
        ok &= p.all_invalid(key_path, qualified_name_errors(key), key)
    raw_values = as_list(req.get("values"), vals_path, p)
    values: list[str] = []
    for i, raw in enumerate(raw_values):
        text = as_str(raw, item(vals_path, i), p)
        if text is None:
            ok = False
            continue
        ok &= p.all_invalid(item(vals_path, i), label_value_errors(text), text)
        values.append(text)
    op_text = as_str(req.get("operator"), op_path, p)
    op = _OPERATORS.get(op_text or "")
    if op is None:
        ok = False
        if op_text is not None or req.get("operator") is None:
            p.error(
                op_path,
                f"Invalid value: {op_text or ''!r}: not a valid selector operator "
                "(one of In, NotIn, Exists, DoesNotExist)",
            )
    elif op in (Operator.IN, Operator.NOT_IN) and not raw_values:
        ok = False
        p.error(vals_path, "Required value: must be specified when `operator` is 'In' or 'NotIn'")
    elif op in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and raw_values:
        ok = False
        p.error(
            vals_path,
            "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        )
    if not ok or key is None or op is None:
        return None
    return Requirement(key=key, operator=op, values=frozenset(values))


def _read_rules(value: object, path: str, peers_field: str, p: Problems) -> list[Rule]:
    rules = []
    for i, raw in enumerate(as_list(value, path, p)):
        rule_path = item(path, i)
        # A null list element decodes to a zero rule in Go: all peers, all ports.
        rule = as_object(raw, rule_path, p, frozenset({peers_field, "ports"})) or {}
        peers_path, ports_path = child(rule_path, peers_field), child(rule_path, "ports")
        peers = [
            _read_peer(x, item(peers_path, j), p)
            for j, x in enumerate(as_list(rule.get(peers_field), peers_path, p))
        ]
        ports = [
            _read_port(x, item(ports_path, j), p)
            for j, x in enumerate(as_list(rule.get("ports"), ports_path, p))
        ]
        rules.append(
            Rule(
                peers=tuple(x for x in peers if x is not None),
                ports=tuple(x for x in ports if x is not None),
            )
        )
    return rules


def _read_peer(value: object, path: str, p: Problems) -> Peer | None:
    before = len(p.errors)
    peer = as_object(value, path, p, _PEER_FIELDS)
    if peer is None and value is not None:
        return None  # wrong type, reported
    # A null list element decodes to a zero peer, which sets nothing (reported below).
    peer = peer or {}
    pod_sel = _read_selector(peer.get("podSelector"), child(path, "podSelector"), p)
    ns_sel = _read_selector(peer.get("namespaceSelector"), child(path, "namespaceSelector"), p)
    block = _read_ip_block(peer.get("ipBlock"), child(path, "ipBlock"), p)
    # ValidateNetworkPolicyPeer counts the non-nil members: `{}` and `podSelector: null`
    # alike set none of them.
    present = [peer.get(k) is not None for k in ("podSelector", "namespaceSelector", "ipBlock")]
    if not any(present):
        p.error(
            path, "Required value: must specify a peer (podSelector, namespaceSelector or ipBlock)"
        )
    elif present[2] and sum(present) > 1:
        p.error(path, "Forbidden: may not specify both ipBlock and another peer")
    if len(p.errors) != before:
        return None
    return Peer(pod_selector=pod_sel, namespace_selector=ns_sel, ip_block=block)


def _read_ip_block(value: object, path: str, p: Problems) -> IPBlock | None:
    block = as_object(value, path, p, _IPBLOCK_FIELDS)
    if block is None:
        return None
    cidr_path, except_path = child(path, "cidr"), child(path, "except")
    cidr_text = as_str(block.get("cidr"), cidr_path, p)
    if not cidr_text:
        if block.get("cidr") in (None, ""):
            p.error(cidr_path, "Required value")
        return None
    cidr = _cidr(cidr_text, cidr_path, p)
    excepts: list[IPNetwork] = []
    for i, raw in enumerate(as_list(block.get("except"), except_path, p)):
        ex_path = item(except_path, i)
        text = as_str(raw, ex_path, p)
        if text is None:
            continue
        ex = _cidr(text, ex_path, p)
        if ex is None or cidr is None:
            continue
        # ValidateIPBlock: the except's address inside cidr and a strictly longer prefix.
        # A network of the other family is never inside, so it fails here too.
        if (
            ex.version != cidr.version
            or ex.network_address not in cidr
            or ex.prefixlen <= cidr.prefixlen
        ):
            family = (
                "" if ex.version == cidr.version else f" (IPv{ex.version} inside IPv{cidr.version})"
            )
            p.error(
                ex_path,
                f"Invalid value: {text!r}: must be a strict subset of `cidr` {str(cidr)!r}{family}",
            )
            continue
        excepts.append(ex)
    if cidr is None:
        return None
    return IPBlock(cidr=cidr, except_=tuple(excepts))


def _cidr(text: str, path: str, p: Problems) -> IPNetwork | None:
    try:
        parsed = parse_cidr(text)
    except ValueError as exc:
        p.error(path, f"Invalid value: {text!r}: {exc}")
        return None
    for msg in parsed.warnings:
        p.warn(path, msg)
    return parsed.network


def _read_port(value: object, path: str, p: Problems) -> PortSpec | None:
    # A null list element decodes to a zero NetworkPolicyPort: TCP, every port.
    port = as_object(value, path, p, _PORT_FIELDS) or {}
    before = len(p.errors)
    proto_path, port_path, end_path = (
        child(path, "protocol"),
        child(path, "port"),
        child(path, "endPort"),
    )
    proto_text = as_str(port.get("protocol"), proto_path, p)
    protocol = Protocol.TCP  # SetDefaults_NetworkPolicyPort
    if proto_text is not None:
        if proto_text in PORT_PROTOCOLS_BY_NAME:
            protocol = PORT_PROTOCOLS_BY_NAME[proto_text]
        else:
            p.error(
                proto_path,
                f'Unsupported value: {proto_text!r}: supported values: "TCP", "UDP", "SCTP"',
            )
    raw_port = port.get("port")
    end_port = as_int(port.get("endPort"), end_path, p)
    number: int | str | None = None
    if raw_port is None:
        if end_port is not None:
            p.error(
                end_path,
                f"Invalid value: {end_port}: may not be specified when `port` is not specified",
            )
    elif isinstance(raw_port, str):
        # intstr: a YAML/JSON string is a port *name*, even "80" (which then fails the
        # at-least-one-letter rule, as on the API server).
        number = raw_port
        p.all_invalid(port_path, port_name_errors(raw_port), raw_port)
        if end_port is not None:
            p.error(
                end_path,
                f"Invalid value: {end_port}: may not be specified when `port` is non-numeric",
            )
    else:
        num = as_int(raw_port, port_path, p)
        if num is not None:
            number = num
            p.all_invalid(port_path, port_number_errors(num), num)
            if end_port is not None:
                if end_port < num:
                    p.error(
                        end_path,
                        f"Invalid value: {end_port}: must be greater than or equal to "
                        f"`port` ({num})",
                    )
                p.all_invalid(end_path, port_number_errors(end_port), end_port)
    if len(p.errors) != before:
        return None
    return PortSpec(protocol=protocol, port=number, end_port=end_port)
