"""Fragmented UDP between lab pods with real packets: an allowed 8000-byte datagram arrives,
a denied one does not, IPv4 and IPv6 (issue 11 item 4).

The datagrams cross a 1500-byte MTU, so the sending pod's kernel fragments them and both
veths (the client's egress hook, the server's ingress hook) see non-first fragments.
Traffic only between the lab's own network namespaces, to their own addresses; every
receive is bounded by a timeout; sockets are closed in a finally.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from labelwall.lab import topology
from labelwall.lab.control import Lab

from .helpers import metric, sync_to

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.netns]

PORT, OTHER_PORT = 9053, 9054  # no listener of the lab's own on either
SIZE = 8000  # bytes of UDP payload: six fragments at MTU 1500
NS = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "frag"}}
ADDRS = {
    "client": ("10.244.30.1", "fd00:10:244:30::1"),
    "server": ("10.244.30.2", "fd00:10:244:30::2"),
    "other": ("10.244.30.3", "fd00:10:244:30::3"),
}


def pod(name: str) -> dict[str, Any]:
    v4, v6 = ADDRS[name]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "frag", "labels": {"app": name}},
        "spec": {"containers": [{"name": "c"}]},
        "status": {"podIP": v4, "podIPs": [{"ip": v4}, {"ip": v6}]},
    }


def policy(name: str, subject: str, direction: str, peer: str) -> dict[str, Any]:
    """``subject`` isolated in ``direction``, admitting UDP PORT to/from ``peer`` only."""
    key = "from" if direction == "ingress" else "to"
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "frag"},
        "spec": {
            "podSelector": {"matchLabels": {"app": subject}},
            "policyTypes": [direction.capitalize()],
            direction: [
                {
                    key: [{"podSelector": {"matchLabels": {"app": peer}}}],
                    "ports": [{"port": PORT, "protocol": "UDP"}],
                }
            ],
        },
    }


# An isolated pair: the client may send UDP PORT to the server only, the server admits it
# from the client only. Both veths judge every fragment.
OBJECTS = [
    NS,
    pod("client"),
    pod("server"),
    pod("other"),
    policy("server-admits-client", "server", "ingress", "client"),
    policy("client-sends-to-server", "client", "egress", "server"),
]


@pytest.fixture
def pair(lab: Lab) -> Lab:
    sync_to(lab, OBJECTS)
    return lab


def _arrives(lab: Lab, src: str, version: int, port: int, timeout_s: float = 1.5) -> bool:
    """Send one SIZE-byte datagram from pod ``src`` to the server; True iff it arrives whole."""
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    server_addr = ADDRS["server"][0 if version == 4 else 1]
    with topology.in_netns(lab.paths.pod_netns("frag/server")):
        rx = socket.socket(family, socket.SOCK_DGRAM)
    try:
        rx.bind((server_addr, port))
        rx.settimeout(timeout_s)
        with topology.in_netns(lab.paths.pod_netns(f"frag/{src}")):
            tx = socket.socket(family, socket.SOCK_DGRAM)
        try:
            payload = bytes(range(256)) * (SIZE // 256) + b"\x5a" * (SIZE % 256)
            tx.sendto(payload, (server_addr, port))
            try:
                data = rx.recv(SIZE + 1)
            except TimeoutError:
                return False
            return data == payload
        finally:
            tx.close()
    finally:
        rx.close()


def _packets(lab: Lab, direction: str, reason: str) -> float:
    labels = {"direction": direction, "reason": reason}
    return metric(lab, "labelwall_datapath_packets_total", labels)


@pytest.mark.parametrize("version", [4, 6], ids=["ipv4", "ipv6"])
def test_an_allowed_8000_byte_udp_datagram_arrives_and_denied_ones_do_not(
    pair: Lab, version: int
) -> None:
    followed = {d: _packets(pair, d, "fragment_of_allowed") for d in ("egress", "ingress")}
    assert _arrives(pair, "client", version, PORT)  # today: its later fragments are dropped
    # both hooks let the five later fragments through because the first one was allowed
    for d, before in followed.items():
        assert _packets(pair, d, "fragment_of_allowed") - before >= SIZE // 1500, d
    dropped = _packets(pair, "ingress", "fragment")
    assert not _arrives(pair, "client", version, OTHER_PORT)  # neither end allows the port
    assert not _arrives(pair, "other", version, PORT)  # the server does not admit "other"
    assert _packets(pair, "ingress", "fragment") - dropped >= SIZE // 1500  # at the server
    assert _arrives(pair, "client", version, PORT)  # and the allowed one again, after those
