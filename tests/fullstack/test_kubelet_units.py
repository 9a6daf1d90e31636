"""The lab kubelet's pure parts: IPAM order and reuse, declared ports (no root, no API)."""

from __future__ import annotations

import pytest

from labelwall.lab.kubelet import Ipam, KubeletError, declared_ports
from labelwall.lab.objects import PodPorts


def test_ipam_hands_out_the_next_address_after_the_last_one_and_skips_gateway_and_reserved() -> (
    None
):
    ipam = Ipam("10.244.7.0/29")  # .0 network, .1 gateway, .7 broadcast
    ipam.reserve("10.244.7.3")
    assert [ipam.allocate() for _ in range(4)] == [
        "10.244.7.2", "10.244.7.4", "10.244.7.5", "10.244.7.6",
    ]  # fmt: skip


def test_ipam_gives_a_recreated_pod_a_new_address_before_reusing_a_released_one() -> None:
    ipam = Ipam("10.244.7.0/29")
    first = ipam.allocate()
    ipam.release(first)
    assert ipam.allocate() != first
    # once the subnet wraps, the released address is handed out again
    assert [ipam.allocate() for _ in range(4)][-1] == first


def test_ipam_fails_clearly_when_the_subnet_is_full() -> None:
    ipam = Ipam("10.244.7.0/30")  # only .2 is usable
    assert ipam.allocate() == "10.244.7.2"
    with pytest.raises(KubeletError, match="no free address"):
        ipam.allocate()


def test_declared_ports_collects_every_container_port_by_protocol_with_tcp_as_default() -> None:
    pod = {
        "spec": {
            "containers": [
                {
                    "name": "a",
                    "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}],
                },
                {"name": "b", "ports": [{"containerPort": 81, "protocol": "SCTP", "name": "s"}]},
                {"name": "c"},
            ]
        }
    }
    assert declared_ports(pod) == PodPorts(tcp=(80,), udp=(53,), sctp=(81,))
