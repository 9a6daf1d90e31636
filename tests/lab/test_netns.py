"""The lab's pod namespaces: routed-CNI wiring, echo servers, probes and cleanup (no BPF)."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

import pytest

from labelwall.lab import netns as L  # noqa: N812 - L.create_pod reads like the lab's API

pytestmark = [pytest.mark.root, pytest.mark.netns]

PREFIX = "lw-tn-"  # only this test module's names; cleanup never touches anything else
NODE = PREFIX + "node"
A4, A6 = "10.244.7.2", "fd00:10:244:7::2"
B4, B6 = "10.244.7.3", "fd00:10:244:7::3"


def _leftovers() -> tuple[list[str], list[str]]:
    return L.list_netns(PREFIX), L.list_links(PREFIX)


@pytest.fixture
def node() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN for setns)")
    assert _leftovers() == ([], []), f"stale lab objects from another run: {_leftovers()}"
    net = L.setup_node(NODE)
    try:
        yield NODE
    finally:
        L.cleanup(PREFIX, nodes=[None, NODE])
        L.teardown_node(net)
        assert _leftovers() == ([], [])


@pytest.fixture
def pods(node: str) -> Iterator[tuple[L.PodNet, L.PodNet]]:
    a = L.create_pod(PREFIX + "a", A4, A6, node=node)
    b = L.create_pod(PREFIX + "b", B4, B6, node=node)
    try:
        yield a, b
    finally:
        L.delete_pod(a.name, node=node)
        L.delete_pod(b.name, node=node)


def test_a_pod_reaches_another_pod_over_tcp_and_udp_in_both_families(
    pods: tuple[L.PodNet, L.PodNet],
) -> None:
    a, b = pods
    with L.Agent.start(b.name) as server, L.Agent.start(a.name) as client:
        server.serve(tcp=[80], udp=[80])
        probes = [L.Probe(p, dst, 80) for p in ("tcp", "udp") for dst in (B4, B6)]
        results = client.probe(probes)
    assert [r.outcome for r in results] == ["ok"] * 4


def test_a_closed_port_is_refused_quickly_rather_than_timing_out(
    pods: tuple[L.PodNet, L.PodNet],
) -> None:
    a, b = pods
    with L.Agent.start(b.name) as server, L.Agent.start(a.name) as client:
        server.serve(tcp=[80])
        [tcp, udp] = client.probe([L.Probe("tcp", B4, 81, 2.0), L.Probe("udp", B6, 81, 2.0)])
    assert (tcp.outcome, udp.outcome) == ("refused", "refused")
    assert tcp.rtt_ms < 1000
    assert udp.rtt_ms < 1000


def test_the_node_address_reaches_pods_from_the_node_namespace(
    pods: tuple[L.PodNet, L.PodNet], node: str
) -> None:
    _, b = pods
    with L.Agent.start(b.name) as server, L.Agent.start(node) as host:
        server.serve(tcp=[80], udp=[80])
        results = host.probe(
            [L.Probe("tcp", B4, 80, src=L.HOST_V4), L.Probe("udp", B6, 80, src=L.HOST_V6)]
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
    assert L.pod_from_existing(a.name, node=node) == a


def test_sctp_init_is_answered_only_on_a_served_port(pods: tuple[L.PodNet, L.PodNet]) -> None:
    a, b = pods
    with L.Agent.start(b.name) as server, L.Agent.start(a.name) as client:
        server.serve(sctp=[80])
        results = client.probe(
            [L.Probe("sctp", B4, 80), L.Probe("sctp", B6, 80), L.Probe("sctp", B4, 81)]
        )
    assert [r.outcome for r in results] == ["ok", "ok", "timeout"]


def test_creating_a_pod_that_exists_fails_and_deleting_twice_is_harmless(
    pods: tuple[L.PodNet, L.PodNet], node: str
) -> None:
    a, _ = pods
    with pytest.raises(L.LabError, match="exists already"):
        L.create_pod(a.name, "10.244.7.9", node=node)
    assert L.delete_pod(a.name, node=node) is True
    assert L.delete_pod(a.name, node=node) is False
    assert a.name not in L.list_netns(PREFIX)
    assert a.host_ifname not in L.list_links(PREFIX, node)


def test_cleanup_removes_every_netns_and_link_with_the_prefix_and_nothing_else(node: str) -> None:
    L.create_pod(PREFIX + "c", "10.244.7.4", node=node)
    L.create_pod(PREFIX + "d", "10.244.7.5", node=node)
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


def test_the_sctp_checksum_is_crc32c_with_the_standard_check_value() -> None:
    # RFC 3720 B.4 / the CRC catalogue: CRC-32C("123456789") = 0xE3069283.
    assert L.crc32c(b"123456789") == 0xE3069283
    assert L.crc32c(b"\0" * 32) == 0x8A9136AA


def _init_ack(vtag: int, sport: int = 80, dport: int = 40000) -> L._SctpChunk | None:
    data = L._sctp_packet(sport, dport, vtag, L._SCTP_INIT_ACK, vtag ^ 0x5A5A5A5A)
    return L._parse_sctp(data, socket.AF_INET6)  # v6 raw reads carry no IP header


@pytest.mark.parametrize(
    ("chunk_args", "peer", "accepted"),
    [
        ({"vtag": 0x1234}, "10.244.7.3", True),
        ({"vtag": 0x1234}, "fd00:10:244:7:0::3", True),  # another spelling of B6
        ({"vtag": 0x1235}, "10.244.7.3", False),  # another probe's answer: same ports
        ({"vtag": 0x1234}, "10.244.7.9", False),  # from an address we did not probe
        ({"vtag": 0x1234, "sport": 81}, "10.244.7.3", False),
        ({"vtag": 0x1234, "dport": 40001}, "10.244.7.3", False),
    ],
)
def test_an_sctp_probe_accepts_only_the_init_ack_answering_its_own_init(
    chunk_args: dict[str, int], peer: str, accepted: bool
) -> None:
    # Concurrent probes from one pod share the raw socket's view of every SCTP packet and
    # can draw the same source port; a CI run once counted a neighbour's answer as ours.
    dst = B6 if ":" in peer else B4
    chunk = _init_ack(**chunk_args)
    assert L._is_our_init_ack(chunk, peer, dst, 80, 40000, 0x1234) is accepted


def test_probe_source_ports_repeat_only_after_the_whole_ephemeral_range() -> None:
    # A reused port inside the conntrack timeout would continue an old, allowed flow.
    ports = L._SourcePorts()
    seen = [ports.take() for _ in range(L._SourcePorts.COUNT)]
    assert len(set(seen)) == L._SourcePorts.COUNT
    assert min(seen) == 32768
    assert max(seen) == 32768 + L._SourcePorts.COUNT - 1
    assert ports.take() == seen[0]


def _bind_some_port(s: socket.socket, candidates: range) -> int:
    for port in candidates:
        with contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            return port
    raise AssertionError(f"every port in {candidates} is in use")


def test_a_udp_probe_socket_skips_a_source_port_in_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        taken = _bind_some_port(busy, range(40000, 41000))
        L._SOURCE_PORTS._next = taken - 32768  # the sequence's next port is the busy one
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            got = L._bind_fresh_port(s, "127.0.0.1", socket.AF_INET)
        assert got > taken
        assert got - taken < 64
