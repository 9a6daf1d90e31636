"""The lab's pod namespaces: routed-CNI wiring to a LabNode, probes through it, cleanup (no BPF)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from labelwall.lab import topology as L  # noqa: N812 - L.create_pod reads like the lab's API
from labelwall.lab.node import LabError, LabNode
from labelwall.lab.prober import Probe, ProbeHelper

pytestmark = [pytest.mark.root, pytest.mark.netns]

PREFIX = "lw-tn-"  # only this test module's names; cleanup never touches anything else
NODE = PREFIX + "node"
LAB_NODE = LabNode("lab", NODE)
A4, A6 = "10.244.7.2", "fd00:10:244:7::2"
B4, B6 = "10.244.7.3", "fd00:10:244:7::3"


def _leftovers() -> tuple[list[str], list[str]]:
    return L.list_netns(PREFIX), L.list_links(PREFIX)


@pytest.fixture
def node() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN for setns)")
    assert _leftovers() == ([], []), f"stale lab objects from another run: {_leftovers()}"
    net = L.setup_node(LAB_NODE)
    try:
        yield NODE
    finally:
        L.cleanup(PREFIX, nodes=[None, NODE])
        L.teardown_node(net)
        assert _leftovers() == ([], [])


@pytest.fixture
def pods(node: str) -> Iterator[tuple[L.PodNet, L.PodNet]]:
    a = L.create_pod(PREFIX + "a", A4, A6, node=LAB_NODE)
    b = L.create_pod(PREFIX + "b", B4, B6, node=LAB_NODE)
    try:
        yield a, b
    finally:
        L.delete_pod(a.name, node=LAB_NODE)
        L.delete_pod(b.name, node=LAB_NODE)


def test_a_pod_reaches_another_pod_over_tcp_and_udp_in_both_families(
    pods: tuple[L.PodNet, L.PodNet],
) -> None:
    a, b = pods
    with ProbeHelper.start(b.name) as server, ProbeHelper.start(a.name) as client:
        server.serve(tcp=[80], udp=[80])
        probes = [Probe(p, dst, 80) for p in ("tcp", "udp") for dst in (B4, B6)]
        results = client.probe(probes)
    assert [r.outcome for r in results] == ["ok"] * 4


def test_a_closed_port_is_refused_quickly_rather_than_timing_out(
    pods: tuple[L.PodNet, L.PodNet],
) -> None:
    a, b = pods
    with ProbeHelper.start(b.name) as server, ProbeHelper.start(a.name) as client:
        server.serve(tcp=[80])
        [tcp, udp] = client.probe([Probe("tcp", B4, 81, 2.0), Probe("udp", B6, 81, 2.0)])
    assert (tcp.outcome, udp.outcome) == ("refused", "refused")
    assert tcp.rtt_ms < 1000
    assert udp.rtt_ms < 1000


def test_the_node_address_reaches_pods_from_the_node_namespace(
    pods: tuple[L.PodNet, L.PodNet], node: str
) -> None:
    _, b = pods
    with ProbeHelper.start(b.name) as server, ProbeHelper.start(node) as host:
        server.serve(tcp=[80], udp=[80])
        results = host.probe(
            [Probe("tcp", B4, 80, src=LAB_NODE.host_v4), Probe("udp", B6, 80, src=LAB_NODE.host_v6)]
        )
    assert all(r.ok for r in results), results


def test_a_pod_has_only_pod_cidr_routes_via_the_link_local_gateway(
    pods: tuple[L.PodNet, L.PodNet],
) -> None:
    a, _ = pods
    v4 = L.run(a.name, ["ip", "-4", "route", "show"]).stdout
    v6 = L.run(a.name, ["ip", "-6", "route", "show"]).stdout
    assert "default" not in v4
    assert "default" not in v6
    assert "10.244.0.0/16 via 169.254.1.1 dev eth0" in v4
    assert "fd00:10:244::/48 via fe80::1 dev eth0" in v6
    assert a.addresses == (A4, A6)


def test_the_node_routes_each_pod_address_to_its_host_side_veth(
    pods: tuple[L.PodNet, L.PodNet], node: str
) -> None:
    a, _ = pods
    v4 = L.run(node, ["ip", "-4", "route", "show", f"{A4}/32"]).stdout
    v6 = L.run(node, ["ip", "-6", "route", "show", f"{A6}/128"]).stdout
    assert f"dev {a.host_ifname}" in v4
    assert f"dev {a.host_ifname}" in v6
    assert L.pod_from_existing(a.name, node=LAB_NODE) == a


def test_sctp_init_is_answered_only_on_a_served_port(pods: tuple[L.PodNet, L.PodNet]) -> None:
    a, b = pods
    with ProbeHelper.start(b.name) as server, ProbeHelper.start(a.name) as client:
        server.serve(sctp=[80])
        results = client.probe(
            [Probe("sctp", B4, 80), Probe("sctp", B6, 80), Probe("sctp", B4, 81)]
        )
    assert [r.outcome for r in results] == ["ok", "ok", "timeout"]


def test_creating_a_pod_that_exists_fails_and_deleting_twice_is_harmless(
    pods: tuple[L.PodNet, L.PodNet], node: str
) -> None:
    a, _ = pods
    with pytest.raises(LabError, match="exists already"):
        L.create_pod(a.name, "10.244.7.9", node=LAB_NODE)
    assert L.delete_pod(a.name, node=LAB_NODE) is True
    assert L.delete_pod(a.name, node=LAB_NODE) is False
    assert a.name not in L.list_netns(PREFIX)
    assert a.host_ifname not in L.list_links(PREFIX, node)


def test_cleanup_removes_every_netns_and_link_with_the_prefix_and_nothing_else(node: str) -> None:
    L.create_pod(PREFIX + "c", "10.244.7.4", node=LAB_NODE)
    L.create_pod(PREFIX + "d", "10.244.7.5", node=LAB_NODE)
    removed = L.cleanup(PREFIX + "c", nodes=[None, node])
    assert sorted(removed) == [f"link {PREFIX}c@{node}", f"netns {PREFIX}c"]
    assert L.list_netns(PREFIX) == [PREFIX + "d", NODE]
    assert L.list_links(PREFIX, node) == [PREFIX + "d"]
    assert L.list_links("lw-host0", node) == ["lw-host0", "lw-host0p"]


def test_in_netns_moves_only_the_body_into_the_namespace(node: str) -> None:
    before = L.list_links("lw-host0")
    with L.in_netns(node):
        inside = L.list_links("lw-host0")
    assert inside == ["lw-host0", "lw-host0p"]
    assert L.list_links("lw-host0") == before
