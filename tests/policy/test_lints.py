"""Reviewer lints: egress isolation that blocks DNS, policies selecting hostNetwork pods."""

from __future__ import annotations

import pytest
from builders import cluster, ns, ns_peer, pod, policy, port, rule, sel

from labelwall.cluster import Direction, Protocol
from labelwall.policy.compile import compile_cluster
from labelwall.policy.findings import EGRESS_BLOCKS_DNS
from labelwall.policy.findings import HOST_NETWORK_SELECTED as HOST_NET
from labelwall.policy.model import NetworkPolicy, Rule

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
