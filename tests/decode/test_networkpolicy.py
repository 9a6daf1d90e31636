"""NetworkPolicy parsing: what the API server accepts becomes the exact model; the rest fails."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from labelwall.cluster import Direction, Labels, Protocol
from labelwall.decode.networkpolicy import parse_network_policy
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

net = ipaddress.ip_network
ALL = LabelSelector()


def policy(
    spec: Any = None, *, name: Any = "p", namespace: Any = "x", **top: Any
) -> dict[str, Any]:
    """A NetworkPolicy document; ``spec`` defaults to ``{podSelector: {}}``."""
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    doc: dict[str, Any] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": {"podSelector": {}} if spec is None else spec,
    }
    doc.update(top)
    return doc


def from_peer(peer: Any) -> dict[str, Any]:
    return policy({"podSelector": {}, "ingress": [{"from": [peer]}]})


def with_port(port: Any) -> dict[str, Any]:
    return policy({"podSelector": {}, "ingress": [{"ports": [port]}]})


def selecting(selector: Any) -> dict[str, Any]:
    return policy({"podSelector": selector})


def parse(doc: dict[str, Any]) -> NetworkPolicy:
    return parse_network_policy(doc, "p.yaml", 0).policy


def errors_of(doc: dict[str, Any]) -> list[FieldError]:
    with pytest.raises(InvalidInputError) as info:
        parse_network_policy(doc, "p.yaml", 3)
    return info.value.errors


PEER = "spec.ingress[0].from[0]"
PORT = "spec.ingress[0].ports[0]"

# (id, document, field path of the error, fragment of its message)
REJECTED: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "unknown field podSelectr",
        policy({"podSelectr": {}}),
        "spec.podSelectr",
        'unknown field "podSelectr"',
    ),
    (
        "unknown field deep inside a rule",
        policy(
            {
                "podSelector": {},
                "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "exept": []}}]}],
            }
        ),
        "spec.egress[0].to[0].ipBlock.exept",
        'unknown field "exept"',
    ),
    ("unknown top-level field", policy(specs={}), "specs", "unknown field"),
    (
        "unknown metadata field",
        {**policy(), "metadata": {"name": "p", "nmae": "q"}},
        "metadata.nmae",
        'unknown field "nmae" (did you mean "name"?)',
    ),
    ("missing podSelector", policy({"ingress": []}), "spec.podSelector", "Required value"),
    ("missing spec", {**policy(), "spec": None}, "spec", "Required value"),
    ("missing name", policy(name=None), "metadata.name", "Required value"),
    ("name not a DNS subdomain", policy(name="Bad_Name"), "metadata.name", "RFC 1123 subdomain"),
    ("namespace not a DNS label", policy(namespace="a.b"), "metadata.namespace", "RFC 1123 label"),
    (
        "wrong apiVersion",
        policy(apiVersion="networking.k8s.io/v1beta1"),
        "apiVersion",
        "networking.k8s.io/v1",
    ),
    (
        "a string where a list is expected",
        policy({"podSelector": {}, "ingress": "all"}),
        "spec.ingress",
        "must be an array, got string",
    ),
    (
        "a list where an object is expected",
        policy({"podSelector": []}),
        "spec.podSelector",
        "must be an object, got array",
    ),
    (
        "bad selector key",
        selecting({"matchLabels": {"-app": "web"}}),
        "spec.podSelector.matchLabels[-app]",
        "name part must consist of alphanumeric",
    ),
    (
        "bad selector key prefix",
        selecting({"matchLabels": {"Example.com/app": "web"}}),
        "spec.podSelector.matchLabels[Example.com/app]",
        "prefix part",
    ),
    (
        "bad label value",
        selecting({"matchLabels": {"app": "web server"}}),
        "spec.podSelector.matchLabels[app]",
        "a valid label must be an empty string",
    ),
    (
        "label value too long",
        selecting({"matchLabels": {"app": "a" * 64}}),
        "spec.podSelector.matchLabels[app]",
        "no more than 63 characters",
    ),
    (
        "numeric label value",
        selecting({"matchLabels": {"version": 1}}),
        "spec.podSelector.matchLabels[version]",
        "must be a string, got integer 1 (quote it",
    ),
    (
        "unknown operator",
        selecting({"matchExpressions": [{"key": "app", "operator": "Equals", "values": ["a"]}]}),
        "spec.podSelector.matchExpressions[0].operator",
        "not a valid selector operator",
    ),
    (
        "In with empty values",
        selecting({"matchExpressions": [{"key": "app", "operator": "In", "values": []}]}),
        "spec.podSelector.matchExpressions[0].values",
        "must be specified when `operator` is 'In' or 'NotIn'",
    ),
    (
        "NotIn without values",
        selecting({"matchExpressions": [{"key": "app", "operator": "NotIn"}]}),
        "spec.podSelector.matchExpressions[0].values",
        "must be specified",
    ),
    (
        "Exists with values",
        selecting({"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["a"]}]}),
        "spec.podSelector.matchExpressions[0].values",
        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
    ),
    (
        "bad value in matchExpressions",
        from_peer(
            {
                "namespaceSelector": {
                    "matchExpressions": [{"key": "a", "operator": "In", "values": ["ok", "n o"]}]
                }
            }
        ),
        f"{PEER}.namespaceSelector.matchExpressions[0].values[1]",
        "a valid label",
    ),
    (
        "malformed CIDR",
        from_peer({"ipBlock": {"cidr": "10.0.0.0/33"}}),
        f"{PEER}.ipBlock.cidr",
        "must be a valid CIDR",
    ),
    (
        "CIDR without a prefix length",
        from_peer({"ipBlock": {"cidr": "10.0.0.1"}}),
        f"{PEER}.ipBlock.cidr",
        "must be a valid CIDR",
    ),
    (
        "CIDR in netmask notation",
        from_peer({"ipBlock": {"cidr": "10.0.0.0/255.0.0.0"}}),
        f"{PEER}.ipBlock.cidr",
        "must be a valid CIDR",
    ),
    ("empty CIDR", from_peer({"ipBlock": {"cidr": ""}}), f"{PEER}.ipBlock.cidr", "Required value"),
    (
        "except outside its cidr",
        from_peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}),
        f"{PEER}.ipBlock.except[0]",
        "must be a strict subset of `cidr`",
    ),
    (
        "except equal to cidr",
        from_peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/24", "10.0.0.0/16"]}}),
        f"{PEER}.ipBlock.except[1]",
        "must be a strict subset of `cidr`",
    ),
    (
        "except wider than cidr",
        from_peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/8"]}}),
        f"{PEER}.ipBlock.except[0]",
        "must be a strict subset of `cidr`",
    ),
    (
        "except of another family",
        from_peer({"ipBlock": {"cidr": "0.0.0.0/0", "except": ["fd00::/64"]}}),
        f"{PEER}.ipBlock.except[0]",
        "(IPv6 inside IPv4)",
    ),
    (
        "malformed except",
        from_peer({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8/8"]}}),
        f"{PEER}.ipBlock.except[0]",
        "must be a valid CIDR",
    ),
    ("port 0", with_port({"port": 0}), f"{PORT}.port", "must be between 1 and 65535"),
    ("port 65536", with_port({"port": 65536}), f"{PORT}.port", "must be between 1 and 65535"),
    (
        "endPort below port",
        with_port({"port": 90, "endPort": 80}),
        f"{PORT}.endPort",
        "must be greater than or equal to `port`",
    ),
    (
        "endPort above 65535",
        with_port({"port": 90, "endPort": 65536}),
        f"{PORT}.endPort",
        "must be between 1 and 65535",
    ),
    (
        "endPort with a named port",
        with_port({"port": "http", "endPort": 90}),
        f"{PORT}.endPort",
        "when `port` is non-numeric",
    ),
    (
        "endPort without a port",
        with_port({"endPort": 90}),
        f"{PORT}.endPort",
        "when `port` is not specified",
    ),
    (
        "endPort as a string",
        with_port({"port": 80, "endPort": "90"}),
        f"{PORT}.endPort",
        "must be an integer, got string",
    ),
    (
        "port name with an underscore",
        with_port({"port": "my_port"}),
        f"{PORT}.port",
        "alpha-numeric characters",
    ),
    (
        "port name longer than 15",
        with_port({"port": "a" * 16}),
        f"{PORT}.port",
        "no more than 15 characters",
    ),
    (
        "port name without a letter",
        with_port({"port": "80"}),
        f"{PORT}.port",
        "at least one letter",
    ),
    (
        "port name with double hyphen",
        with_port({"port": "a--b"}),
        f"{PORT}.port",
        "consecutive hyphens",
    ),
    (
        "port name with leading hyphen",
        with_port({"port": "-http"}),
        f"{PORT}.port",
        "begin or end with a hyphen",
    ),
    (
        "port name in upper case",
        with_port({"port": "HTTP"}),
        f"{PORT}.port",
        "alpha-numeric characters",
    ),
    ("port as a float", with_port({"port": 80.5}), f"{PORT}.port", "must be an integer"),
    (
        "port as a boolean",
        with_port({"port": True}),
        f"{PORT}.port",
        "must be an integer, got boolean",
    ),
    (
        "unknown protocol",
        with_port({"port": 80, "protocol": "ICMP"}),
        f"{PORT}.protocol",
        'supported values: "TCP", "UDP", "SCTP"',
    ),
    (
        "lower-case protocol",
        with_port({"port": 80, "protocol": "tcp"}),
        f"{PORT}.protocol",
        "Unsupported value",
    ),
    (
        "ipBlock and podSelector in one peer",
        from_peer({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}),
        PEER,
        "may not specify both ipBlock and another peer",
    ),
    ("empty peer", from_peer({}), PEER, "must specify a peer"),
    (
        "peer with only null selectors",
        from_peer({"podSelector": None}),
        PEER,
        "must specify a peer",
    ),
    (
        "bad policyTypes value",
        policy({"podSelector": {}, "policyTypes": ["Ingress", "ingress"]}),
        "spec.policyTypes[1]",
        'supported values: "Ingress", "Egress"',
    ),
    (
        "more than two policyTypes",
        policy({"podSelector": {}, "policyTypes": ["Ingress", "Egress", "Ingress"]}),
        "spec.policyTypes",
        "may not specify more than two policyTypes",
    ),
]


@pytest.mark.parametrize(
    ("doc", "path", "fragment"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED]
)
def test_invalid_policy_is_rejected_naming_the_field(
    doc: dict[str, Any], path: str, fragment: str
) -> None:
    errors = errors_of(doc)
    matching = [e for e in errors if e.field == path]
    assert matching, f"no error at {path}; got {[str(e) for e in errors]}"
    assert any(fragment in e.message for e in matching), [e.message for e in matching]
    assert all(e.source == "p.yaml" and e.index == 3 for e in errors)


def test_error_names_source_document_object_and_field_path() -> None:
    doc = from_peer({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}})
    (error,) = errors_of(doc)
    assert str(error) == (
        "p.yaml[doc 3]: NetworkPolicy x/p: spec.ingress[0].from[0].ipBlock.except[0]: "
        "Invalid value: '10.1.0.0/24': must be a strict subset of `cidr` '10.0.0.0/16'"
    )


def test_every_error_of_the_object_is_reported_not_just_the_first() -> None:
    doc = policy(
        {
            "podSelectr": {},
            "podSelector": {"matchLabels": {"a": "b c"}},
            "ingress": [{"ports": [{"port": 0}, {"port": 80, "protocol": "ICMP"}]}],
        }
    )
    assert [e.field for e in errors_of(doc)] == [
        "spec.podSelectr",
        "spec.podSelector.matchLabels[a]",
        "spec.ingress[0].ports[0].port",
        "spec.ingress[0].ports[1].protocol",
    ]


def test_path_prefix_locates_an_object_inside_a_list() -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_network_policy(with_port({"port": 0}), "all.yaml", 0, path="items[4]")
    assert [e.field for e in info.value.errors] == ["items[4].spec.ingress[0].ports[0].port"]


def test_namespace_defaults_to_default_in_model_and_messages() -> None:
    assert parse(policy(namespace=None)).namespace == "default"
    (error,) = errors_of(with_port({"port": 0}) | {"metadata": {"name": "q"}})
    assert error.obj == "NetworkPolicy default/q"


def test_kubectl_output_metadata_and_status_are_ignored() -> None:
    doc = policy(
        metadata={
            "name": "p",
            "namespace": "x",
            "uid": "0d4c6c8e-1f1e-4f5b-9c59-2d1c3f1c1a11",
            "resourceVersion": "12345",
            "generation": 2,
            "creationTimestamp": "2024-05-01T10:00:00Z",
            "labels": {"app.kubernetes.io/managed-by": "helm"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
            "managedFields": [{"manager": "kubectl", "operation": "Update"}],
        },
        status={},
    )
    assert parse(doc) == NetworkPolicy("x", "p", ALL, frozenset({Direction.INGRESS}))


def test_deny_all_ingress_policy_parses_to_empty_rules() -> None:
    assert parse(policy()) == NetworkPolicy(
        namespace="x", name="p", pod_selector=ALL, policy_types=frozenset({Direction.INGRESS})
    )


def test_selectors_parse_labels_and_every_operator() -> None:
    doc = selecting(
        {
            "matchLabels": {"app": "web", "example.com/tier": "", "v": None},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "staging"]},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "team", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist", "values": []},
            ],
        }
    )
    assert parse(doc).pod_selector == LabelSelector(
        match_labels=Labels({"app": "web", "example.com/tier": "", "v": ""}),
        match_expressions=(
            Requirement("env", Operator.IN, frozenset({"prod", "staging"})),
            Requirement("env", Operator.NOT_IN, frozenset({"dev"})),
            Requirement("team", Operator.EXISTS),
            Requirement("legacy", Operator.DOES_NOT_EXIST),
        ),
    )


def test_peers_keep_pod_namespace_and_combined_selectors_apart() -> None:
    app = {"matchLabels": {"app": "a"}}
    team = {"matchLabels": {"team": "t"}}
    doc = policy(
        {
            "podSelector": {},
            "ingress": [
                {
                    "from": [
                        {"podSelector": app},
                        {"namespaceSelector": team},
                        {"namespaceSelector": team, "podSelector": app},
                        {"namespaceSelector": {}},
                    ]
                }
            ],
        }
    )
    a = LabelSelector(Labels({"app": "a"}))
    t = LabelSelector(Labels({"team": "t"}))
    assert parse(doc).ingress == (
        Rule(
            peers=(
                Peer(pod_selector=a),
                Peer(namespace_selector=t),
                Peer(pod_selector=a, namespace_selector=t),
                Peer(namespace_selector=ALL),
            )
        ),
    )


def test_host_bits_cidr_is_normalised_with_a_warning() -> None:
    parsed = parse_network_policy(
        from_peer({"ipBlock": {"cidr": "10.244.1.1/4", "except": ["10.244.1.1/16"]}}), "p.yaml", 0
    )
    (rule,) = parsed.policy.ingress
    assert rule.peers == (Peer(ip_block=IPBlock(net("0.0.0.0/4"), (net("10.244.0.0/16"),))),)
    assert [(w.field, w.obj) for w in parsed.warnings] == [
        (f"{PEER}.ipBlock.cidr", "NetworkPolicy x/p"),
        (f"{PEER}.ipBlock.except[0]", "NetworkPolicy x/p"),
    ]
    assert "'0.0.0.0/4'" in parsed.warnings[0].message


def test_legacy_leading_zero_cidr_is_accepted_as_decimal_with_a_warning() -> None:
    parsed = parse_network_policy(from_peer({"ipBlock": {"cidr": "010.000.0.0/08"}}), "p.yaml", 0)
    assert parsed.policy.ingress[0].peers[0].ip_block == IPBlock(net("10.0.0.0/8"))
    assert "use '10.0.0.0/8'" in parsed.warnings[0].message


def test_ipv6_ip_block_with_except_parses() -> None:
    doc = from_peer(
        {
            "ipBlock": {
                "cidr": "fd00:10:244::/48",
                "except": ["fd00:10:244:1::/64", "FD00:10:244:2::/64"],
            }
        }
    )
    peer = parse(doc).ingress[0].peers[0]
    assert peer == Peer(
        ip_block=IPBlock(
            net("fd00:10:244::/48"), (net("fd00:10:244:1::/64"), net("fd00:10:244:2::/64"))
        )
    )


def test_clean_cidr_earns_no_warning() -> None:
    parsed = parse_network_policy(from_peer({"ipBlock": {"cidr": "10.0.0.0/8"}}), "p.yaml", 0)
    assert parsed.warnings == ()


def test_ports_parse_numbers_names_ranges_and_protocols() -> None:
    doc = policy(
        {
            "podSelector": {},
            "egress": [
                {
                    "ports": [
                        {"port": 53, "protocol": "UDP"},
                        {"port": "http"},
                        {"port": 32000, "endPort": 32768, "protocol": "TCP"},
                        {"port": 80, "endPort": 80},
                        {"port": 3868, "protocol": "SCTP"},
                        {"protocol": "UDP"},
                        {},
                    ]
                }
            ],
        }
    )
    assert parse(doc).egress[0].ports == (
        PortSpec(Protocol.UDP, 53),
        PortSpec(Protocol.TCP, "http"),
        PortSpec(Protocol.TCP, 32000, 32768),
        PortSpec(Protocol.TCP, 80, 80),
        PortSpec(Protocol.SCTP, 3868),
        PortSpec(Protocol.UDP, None),
        PortSpec(Protocol.TCP, None),
    )


def test_rule_without_from_or_ports_allows_everything() -> None:
    doc = policy({"podSelector": {}, "ingress": [{}, {"from": [], "ports": []}, None]})
    assert parse(doc).ingress == (Rule(), Rule(), Rule())


# policyTypes defaulting (SetDefaults_NetworkPolicy): when len(policyTypes) == 0 it becomes
# [Ingress], plus Egress when len(egress) != 0. An explicit list is kept as written.
POLICY_TYPES = [
    ("absent, no egress", {}, {Direction.INGRESS}),
    ("absent, egress rule", {"egress": [{}]}, {Direction.INGRESS, Direction.EGRESS}),
    ("absent, empty egress list", {"egress": []}, {Direction.INGRESS}),
    ("absent, null egress", {"egress": None}, {Direction.INGRESS}),
    (
        "empty list, egress rule",
        {"policyTypes": [], "egress": [{}]},
        {Direction.INGRESS, Direction.EGRESS},
    ),
    ("explicit Egress only", {"policyTypes": ["Egress"], "ingress": [{}]}, {Direction.EGRESS}),
    (
        "explicit both, no rules",
        {"policyTypes": ["Ingress", "Egress"]},
        {Direction.INGRESS, Direction.EGRESS},
    ),
    (
        "explicit Ingress with egress rules",
        {"policyTypes": ["Ingress"], "egress": [{}]},
        {Direction.INGRESS},
    ),
]


@pytest.mark.parametrize(
    ("spec", "expected"), [c[1:] for c in POLICY_TYPES], ids=[c[0] for c in POLICY_TYPES]
)
def test_policy_types_default_as_the_api_server_does(
    spec: dict[str, Any], expected: set[Direction]
) -> None:
    assert parse(policy({"podSelector": {}, **spec})).policy_types == frozenset(expected)


def test_repeated_policy_type_is_accepted_with_a_warning() -> None:
    # The API server accepts ["Egress", "Egress"] (it only rejects >2 entries and unknown
    # values), so rejecting it would refuse a policy the cluster runs.
    parsed = parse_network_policy(
        policy({"podSelector": {}, "policyTypes": ["Egress", "Egress"]}), "p.yaml", 0
    )
    assert parsed.policy.policy_types == frozenset({Direction.EGRESS})
    assert [w.field for w in parsed.warnings] == ["spec.policyTypes[1]"]
