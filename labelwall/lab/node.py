"""A lab node as a value: its netns, the link holding its addresses, its pod CIDRs, gateways.

Everything the lab builds for a node (``labelwall.lab.topology``), validates against it
(``labelwall.lab.objects``) or reports about it (``labelwall.lab.kubelet``) reads it from
one ``LabNode``; a second node is another ``LabNode`` (other netns, link, addresses).
The defaults are the lab's addressing plan: pods in 10.244.0.0/16 and fd00:10:244::/48,
the node's own addresses the first of each, link-local next hops inside every pod.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

#: The lab's default pod CIDRs.
DEFAULT_POD_CIDR_V4 = ipaddress.IPv4Network("10.244.0.0/16")
DEFAULT_POD_CIDR_V6 = ipaddress.IPv6Network("fd00:10:244::/48")


class LabError(RuntimeError):
    """A lab namespace, link or helper process could not be set up as asked."""


@dataclass(frozen=True)
class LabNode:
    """One node of the lab, and the addresses its pods are wired with."""

    name: str  # the Kubernetes Node name
    netns: str | None  # the node's network namespace (None: the caller's, the real host)
    host_link: str = "lw-host0"  # link in ``netns`` carrying the node's addresses
    host_v4: str = "10.244.0.1"  # what the agent maps to the ``host`` identity
    host_v6: str = "fd00:10:244::1"
    pod_cidr_v4: ipaddress.IPv4Network = DEFAULT_POD_CIDR_V4
    pod_cidr_v6: ipaddress.IPv6Network = DEFAULT_POD_CIDR_V6
    gateway_v4: str = "169.254.1.1"  # link-local next hop inside every pod (as Calico does)
    gateway_v6: str = "fe80::1"

    @property
    def addresses(self) -> tuple[str, ...]:
        """The node's own addresses: IPv4, then IPv6."""
        return (self.host_v4, self.host_v6)

    @property
    def reserved(self) -> frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        """Addresses inside the pod CIDRs that no pod may have (the node holds them)."""
        return frozenset(ipaddress.ip_address(a) for a in self.addresses)

    @property
    def nowhere_v4(self) -> str:
        """An address inside the pod CIDR that no pod holds (its broadcast address): a
        probe there fails like a connection to a pod that does not exist."""
        return str(self.pod_cidr_v4.broadcast_address)

    def pod_cidr(self, version: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return self.pod_cidr_v4 if version == 4 else self.pod_cidr_v6
