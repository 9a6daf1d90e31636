"""Exposure per workload: from outside, from every namespace, from every pod, to outside."""

from __future__ import annotations

import pytest
from builders import block, cluster, cport, ns, ns_peer, pod, pods_peer, policy, port, rule, sel

from labelwall.cluster import Direction, Protocol
from labelwall.policy.exposure import Exposure, exposure
from labelwall.policy.model import NetworkPolicy, Peer
from labelwall.policy.reachgroups import GroupedMatrix

EG = Direction.EGRESS
WEB = sel({"app": "web"})
HTTP = [(80, Protocol.TCP)]


def _of(*policies: NetworkPolicy) -> dict[str, Exposure]:
    state = cluster(
        [ns("x"), ns("y")],
        [
            pod("x", "web", {"app": "web"}, ["10.244.1.1"], [cport(80, "http")]),
            pod("x", "db", {"app": "db"}, ["10.244.1.2"]),
            pod("y", "client", {"app": "client"}, ["10.244.2.1"]),
        ],
        policies,
    )
    return {e.workload: e for e in exposure(GroupedMatrix(state, HTTP))}


def _texts(reaches: tuple[object, ...]) -> list[str]:
    return [r.text() for r in reaches]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("pol", "outside", "namespaces", "every_pod"),
    [
        # not isolated: open to everything
        (None, ["any address: any port"], ["every namespace: any port"], ["TCP/80"]),
        # default deny: nothing
        (policy("x", "deny", WEB, ingress=[]), [], [], []),
        # a rule without peers: any address and every namespace, on its ports
        (policy("x", "open", WEB, ingress=[rule([], [port(80)])]),
         ["any address: TCP/80 (x/open spec.ingress[0])"],
         ["every namespace: TCP/80 (x/open spec.ingress[0])"], ["TCP/80"]),
        # an ipBlock: that CIDR (with its excepts) from outside, no namespace
        (policy("x", "cidr", WEB, ingress=[rule([block("203.0.113.0/24", "203.0.113.0/28")])]),
         ["203.0.113.0/24 except 203.0.113.0/28: any port (x/cidr spec.ingress[0])"], [], []),
        # namespaceSelector {}: every namespace, not outside
        (policy("x", "all-ns", WEB, ingress=[rule([ns_peer()], [port("http")])]),
         [], ["every namespace: TCP/http (x/all-ns spec.ingress[0])"], ["TCP/80"]),
        # namespaceSelector {} with a real podSelector: not "every namespace"
        (policy("x", "some", WEB, ingress=[rule([Peer(pods_peer({"app": "client"}).pod_selector,
                                                      sel())])]),
         [], [], []),
        # a pod selector in its own namespace: db reaches it, client does not
        (policy("x", "db", WEB, ingress=[rule([pods_peer({"app": "db"})])]), [], [], []),
    ],
)  # fmt: skip
def test_ingress_exposure(
    pol: NetworkPolicy | None, outside: list[str], namespaces: list[str], every_pod: list[str]
) -> None:
    web = _of(*([pol] if pol else []))["x/web"]
    assert _texts(web.from_outside) == outside
    assert _texts(web.from_every_namespace) == namespaces
    assert list(web.from_every_pod) == every_pod


@pytest.mark.parametrize(
    ("pol", "outside"),
    [
        (None, ["any address: any port"]),
        (policy("x", "deny", WEB, egress=[], types=[EG]), []),
        (policy("x", "dns", WEB, egress=[rule([], [port(53, Protocol.UDP)])], types=[EG]),
         ["any address: UDP/53 (x/dns spec.egress[0])"]),
        (policy("x", "api", WEB, egress=[rule([block("0.0.0.0/0")], [port(443)])], types=[EG]),
         ["0.0.0.0/0: TCP/443 (x/api spec.egress[0])"]),
        (policy("x", "pods", WEB, egress=[rule([pods_peer()])], types=[EG]), []),
    ],
)  # fmt: skip
def test_egress_exposure_to_outside(pol: NetworkPolicy | None, outside: list[str]) -> None:
    web = _of(*([pol] if pol else []))["x/web"]
    assert _texts(web.to_outside) == outside
    assert web.egress_isolated is (pol is not None)


def test_every_pod_needs_every_sources_egress_too() -> None:
    deny_client_egress = policy("y", "deny", sel({"app": "client"}), egress=[], types=[EG])
    assert _of(deny_client_egress)["x/web"].from_every_pod == ()
    assert _of()["x/web"].from_every_pod == ("TCP/80",)
    assert _of(policy("x", "in", WEB, ingress=[]))["x/db"].ingress_isolated is False
