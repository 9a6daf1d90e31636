"""Reachability and explain, computed through the lookup model over the compiled maps."""

from __future__ import annotations

import pytest
from builders import cluster, cport, ns, pod, pods_peer, policy, port, rule, sel

from labelwall.cluster import Direction, Protocol
from labelwall.errors import InvalidInputError
from labelwall.policy.compile import compile_cluster
from labelwall.policy.cookies import RuleRef
from labelwall.policy.lookup import Reason
from labelwall.policy.matrix import explain, reachability

TCP = Protocol.TCP
STATE = cluster(
    [ns("x")],
    [
        pod("x", "a", {"app": "a"}, ["10.244.0.1", "fd00::1"], [cport(80, "http")]),
        pod("x", "b", {"app": "b"}, ["10.244.0.2"]),
        pod("x", "c", {"app": "c"}, ["fd00::3"]),
        pod("x", "d", {"app": "d"}),
    ],
    [
        policy(
            "x", "p", sel({"app": "a"}), ingress=[rule([pods_peer({"app": "b"})], [port("http")])]
        )
    ],
)


def test_cells_cover_every_pair_sharing_a_family_and_skip_pods_without_ips() -> None:
    cells = reachability(STATE, [(80, TCP)])
    pairs = {(c.src, c.dst) for c in cells}
    assert ("x/a", "x/c") in pairs  # IPv6 on both
    assert ("x/b", "x/c") not in pairs  # no common family
    assert not any("x/d" in p for p in pairs)
    assert ("x/a", "x/a") in pairs


def test_a_cell_is_allowed_only_when_egress_and_ingress_both_allow() -> None:
    cells = {(c.src, c.dst): c for c in reachability(compile_cluster(STATE), [(80, TCP)])}
    ok = cells[("x/b", "x/a")]
    assert ok.allowed
    assert ok.egress.reason is Reason.NOT_ISOLATED
    assert ok.ingress.reason is Reason.POLICY
    blocked = cells[("x/c", "x/a")]
    assert not blocked.allowed
    assert blocked.ingress.reason is Reason.POLICY_DENIED


def test_a_named_port_the_destination_lacks_is_blocked() -> None:
    cells = {(c.src, c.dst): c for c in reachability(STATE, [("http", TCP)])}
    assert cells[("x/b", "x/a")].allowed
    assert not cells[("x/a", "x/b")].allowed
    assert cells[("x/a", "x/b")].egress.reason is Reason.UNSUPPORTED


def test_explain_names_identities_isolation_policies_and_the_matching_rule() -> None:
    e = explain(STATE, "x/b", "x/a", 80, TCP)
    assert e.allowed
    assert e.ingress.isolated
    assert e.ingress.policies == ("x/p",)
    assert e.ingress.rule == RuleRef("x/p", Direction.INGRESS, 0)
    assert not e.egress.isolated
    d = e.as_dict()
    assert d["ingress"]["rule"]["field"] == "spec.ingress[0]"
    assert d["ingress"]["entry"]["named"] is True
    assert "x/p spec.ingress[0]" in e.text()


def test_explain_reports_no_match_when_blocked() -> None:
    e = explain(STATE, "x/c", "x/a", 80, TCP)
    assert not e.allowed
    assert e.ingress.rule is None
    assert "no entry matched" in e.text()


def test_explain_rejects_unknown_pods_with_the_flag_name() -> None:
    with pytest.raises(InvalidInputError, match="--from"):
        explain(STATE, "x/zz", "x/a", 80, TCP)
