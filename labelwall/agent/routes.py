"""The node's netlink facts: each local pod's host-side interface, and the node's own addresses.

Routed CNIs (Calico, ptp, the lab) install ``<pod ip>/32 dev <host veth> scope link`` in the
main table; one netlink dump per sync gives every pod's interface at once.

The node's own addresses are every non-loopback, non-link-local address in the agent's
network namespace, not only the Node object's InternalIP: the kubelet probes a pod from
whatever source the route to it picks, and with ptp that is the gateway address ptp puts on
each host-side veth (10.244.N.1), not the node IP. "Traffic from a pod's own node is always
allowed" must hold for those too (Cilium counts every local address as ``host`` as well).
Pod addresses live in the pods' namespaces, so none of them is ever in this set.
"""

from __future__ import annotations

import ipaddress
import socket

from pyroute2 import IPRoute

from labelwall.cluster import IPAddress

_MAIN_TABLE = 254


class HostRoutes:
    def host_routes(self) -> dict[IPAddress, int]:
        out: dict[IPAddress, int] = {}
        with IPRoute() as ipr:
            for family, full in ((socket.AF_INET, 32), (socket.AF_INET6, 128)):
                for msg in ipr.get_routes(family=family, table=_MAIN_TABLE):
                    if msg["dst_len"] != full:
                        continue
                    dst = msg.get_attr("RTA_DST")
                    oif = msg.get_attr("RTA_OIF")
                    if dst is None or oif is None:
                        continue
                    out[ipaddress.ip_address(dst)] = int(oif)
        return out

    def local_addresses(self) -> frozenset[IPAddress]:
        out: set[IPAddress] = set()
        with IPRoute() as ipr:
            for msg in ipr.get_addr():
                raw = msg.get_attr("IFA_ADDRESS") or msg.get_attr("IFA_LOCAL")
                if raw is None:
                    continue
                addr = ipaddress.ip_address(raw)
                if not (addr.is_loopback or addr.is_link_local or addr.is_multicast):
                    out.add(addr)
        return frozenset(out)
