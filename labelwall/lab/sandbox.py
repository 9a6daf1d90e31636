"""One pod sandbox: a netns wired to a lab node with a probe helper inside serving its ports.

The one pod start and stop sequence of the lab, used by the lab supervisor and by the
kubelet stand-in: remove a leftover with the same name (a crashed earlier run's, so it
is ours), create the netns (``labelwall.lab.topology``), start the helper
(``labelwall.lab.prober``) and its echo servers; on any failure nothing is left.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from labelwall.lab import topology
from labelwall.lab.node import LabNode
from labelwall.lab.objects import PodPorts
from labelwall.lab.prober import Probe, ProbeHelper, ProbeResult


class PodSandbox:
    """A running pod: its netns, its helper; ``lock`` serialises the helper's pipe, so
    probes and listener changes may come from several threads."""

    def __init__(self, net: topology.PodNet, helper: ProbeHelper, ports: PodPorts) -> None:
        self.net = net
        self.helper = helper
        self.ports = ports
        self.lock = threading.Lock()

    @classmethod
    def start(
        cls, node: LabNode, name: str, ipv4: str, ipv6: str | None, ports: PodPorts
    ) -> PodSandbox:
        """netns ``name`` (also the host-side veth's name) with listeners on ``ports``."""
        topology.delete_pod(name, node=node)  # a leftover with our name is ours
        net = topology.create_pod(name, ipv4, ipv6, node=node)
        try:
            helper = ProbeHelper.start(name)
            try:
                helper.serve(tcp=ports.tcp, udp=ports.udp, sctp=ports.sctp)
            except BaseException:
                helper.close()
                raise
        except BaseException:
            topology.delete_pod(name, node=node)
            raise
        return cls(net, helper, ports)

    @property
    def name(self) -> str:
        return self.net.name

    def serve(self, ports: PodPorts) -> None:
        """Add listeners so the pod serves ``ports`` (listeners are never removed)."""
        with self.lock:
            self.helper.serve(tcp=ports.tcp, udp=ports.udp, sctp=ports.sctp)
            self.ports = ports

    def probe(self, probes: Sequence[Probe]) -> list[ProbeResult]:
        with self.lock:
            return self.helper.probe(probes)

    def stop(self) -> None:
        """Stop the helper and remove the netns and its veth."""
        with self.lock:
            self.helper.close()
        topology.delete_pod(self.net.name, node=self.net.node)
