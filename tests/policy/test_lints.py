"""Reviewer lints: egress isolation that blocks DNS, policies selecting hostNetwork pods,
redundant rules, namespaces not in the inputs."""

from __future__ import annotations

import pytest
from builders import ALL, cluster, cport, ns, ns_peer, pod, pods_peer, policy, port, req, rule, sel

from labelwall.cluster import Direction, Protocol
from labelwall.policy.compile import compile_cluster
from labelwall.policy.findings import EGRESS_BLOCKS_DNS, UNKNOWN_NAMESPACE, namespace_findings
from labelwall.policy.findings import HOST_NETWORK_SELECTED as HOST_NET
from labelwall.policy.findings import REDUNDANT_RULE as REDUNDANT
from labelwall.policy.model import NetworkPolicy, Peer, Rule

EG, ING = Direction.EGRESS, Direction.INGRESS
DENY_EGRESS = policy("x", "deny-egress", egress=[], types=[EG])
DNS_UDP = policy(
    "x", "dns", egress=[rule([ns_peer({"kubernetes.io/metadata.name": "kube-system"})],
                             [port(53, Protocol.UDP)])],
)  # fmt: skip


def _dns_findings(*policies: NetworkPolicy) -> list[str]:
    state = cluster(
        [ns("x"), ns("kube-system")],
        [
            pod("x", "a", {"app": "a"}, ["10.244.1.1"]),
            pod("kube-system", "dns", {}, ["10.244.2.1"]),
        ],
        policies,
    )
    return [w.policy for w in compile_cluster(state).warnings if w.code == EGRESS_BLOCKS_DNS]


def test_egress_default_deny_without_a_dns_rule_is_reported() -> None:
    assert _dns_findings(DENY_EGRESS) == ["x/deny-egress"]


def test_a_second_policy_allowing_udp_53_silences_it() -> None:
    assert _dns_findings(DENY_EGRESS, DNS_UDP) == []


@pytest.mark.parametrize(
    ("egress_rule", "reported"),
    [
        (rule([], []), False),  # everything, everywhere
        (rule([ns_peer()], [port(50, Protocol.UDP, end=60)]), False),  # a range holding 53
        (rule([ns_peer()], [port("dns", Protocol.UDP)]), False),  # kube-dns's port name
        (rule([ns_peer()], [port(53, Protocol.TCP)]), True),  # TCP alone: UDP lookups fail
        (rule([ns_peer()], [port(5353, Protocol.UDP)]), True),
    ],
)
def test_which_egress_rules_count_as_reaching_dns(egress_rule: Rule, reported: bool) -> None:
    pol = policy("x", "one", egress=[egress_rule], types=[EG])
    assert _dns_findings(pol) == (["x/one"] if reported else [])


def test_ingress_only_isolation_is_not_reported() -> None:
    assert _dns_findings(policy("x", "deny-in", ingress=[], types=[ING])) == []


def test_a_policy_is_blamed_only_for_pods_it_isolates() -> None:
    only_b = policy("x", "deny-b", sel({"app": "b"}), egress=[], types=[EG])
    assert _dns_findings(only_b, DENY_EGRESS) == ["x/deny-egress"]  # deny-b selects no pod


def test_a_policy_selecting_a_hostnetwork_pod_is_told_it_is_not_enforced_there() -> None:
    state = cluster(
        [ns("x")],
        [
            pod("x", "agent", {"app": "agent"}, ["192.168.0.1"], host_network=True),
            pod("x", "web", {"app": "web"}, ["10.244.1.1"]),
        ],
        [
            policy("x", "all", ingress=[]),
            policy("x", "web-only", sel({"app": "web"}), ingress=[]),
        ],
    )
    hits = [(w.policy, w.field) for w in compile_cluster(state).warnings if w.code == HOST_NET]
    assert hits == [("x/all", "spec.podSelector")]


APP_A = sel({"app": "a"})
FROM_B = pods_peer({"app": "b"})
FROM_ANY_POD = pods_peer()


def _redundant(*policies: NetworkPolicy) -> list[tuple[str, str]]:
    state = cluster(
        [ns("x")],
        [
            pod("x", "a", {"app": "a"}, ["10.244.1.1"], [cport(8080, "http")]),
            pod("x", "b", {"app": "b"}, ["10.244.1.2"]),
            pod("x", "c", {"app": "c"}, ["10.244.1.3"]),
        ],
        policies,
    )
    return [(w.policy, w.field) for w in compile_cluster(state).warnings if w.code == REDUNDANT]


@pytest.mark.parametrize(
    ("rules", "redundant"),
    [
        # the same rule twice: the later one is named
        ([rule([FROM_B], [port(80)]), rule([FROM_B], [port(80)])], ["spec.ingress[1]"]),
        # a port inside a range another rule allows for the same peer
        ([rule([FROM_B], [port(80)]), rule([FROM_B], [port(1, end=1000)])], ["spec.ingress[0]"]),
        # one peer inside "every pod of the namespace"
        ([rule([FROM_ANY_POD], [port(80)]), rule([FROM_B], [port(80)])], ["spec.ingress[1]"]),
        # no ports: every port and protocol covers a TCP port
        ([rule([FROM_B], []), rule([FROM_B], [port(443)])], ["spec.ingress[1]"]),
        # no peers: everyone covers a peer
        ([rule([], [port(80)]), rule([FROM_B], [port(80)])], ["spec.ingress[1]"]),
        # other ports, other protocols, other peers: nothing is redundant
        ([rule([FROM_B], [port(80)]), rule([FROM_B], [port(81)])], []),
        ([rule([FROM_B], [port(80)]), rule([FROM_B], [port(80, Protocol.UDP)])], []),
        ([rule([FROM_B], [port(80)]), rule([pods_peer({"app": "c"})], [port(80)])], []),
        # a named port is not judged against numbers
        ([rule([FROM_B], [port(8080)]), rule([FROM_B], [port("http")])], []),
        # a rule that selects nothing is selects-nothing's business
        ([rule([FROM_B], [port(80)]), rule([pods_peer({"app": "zz"})], [port(80)])], []),
    ],
)
def test_a_rule_made_redundant_by_another_of_the_same_policy(
    rules: list[Rule], redundant: list[str]
) -> None:
    pol = policy("x", "p", APP_A, ingress=rules)
    assert _redundant(pol) == [("x/p", f) for f in redundant]


def test_a_rule_redundant_to_a_policy_selecting_the_same_pods_or_more() -> None:
    narrow = policy("x", "narrow", APP_A, ingress=[rule([FROM_B], [port(80)])])
    wide = policy("x", "wide", ALL, ingress=[rule([FROM_B], [port(1, end=1024)])])
    assert _redundant(narrow, wide) == [("x/narrow", "spec.ingress[0]")]
    # The wider policy's rule is not redundant: it allows more pods than the narrow one.
    other_dir = policy("x", "egress", APP_A, egress=[rule([FROM_B], [port(80)])])
    assert _redundant(narrow, other_dir) == []


@pytest.mark.parametrize(
    ("pol", "fields"),
    [
        (policy("x", "p", ingress=[rule([FROM_B])]), []),
        (policy("nowhere", "p", ingress=[rule([FROM_B])]), ["metadata.namespace"]),
        (
            policy("x", "p", ingress=[rule([ns_peer({"kubernetes.io/metadata.name": "gone"})])]),
            ["spec.ingress[0].from[0].namespaceSelector.matchLabels"],
        ),
        (
            policy("x", "p", egress=[rule([Peer(namespace_selector=sel(
                None, req("kubernetes.io/metadata.name", "In", "x", "gone")))])]),
            ["spec.egress[0].to[0].namespaceSelector.matchExpressions[0]"],
        ),
        (policy("x", "p", ingress=[rule([ns_peer({"kubernetes.io/metadata.name": "x"})])]), []),
    ],
)  # fmt: skip
def test_a_namespace_not_in_the_inputs_is_a_finding(pol: NetworkPolicy, fields: list[str]) -> None:
    found = namespace_findings([pol], frozenset({"x"}))
    assert [w.field for w in found] == fields
    assert all(w.code == UNKNOWN_NAMESPACE for w in found)
