"""Find each local pod's host-side interface: the one its /32 (/128) host route points at.

Routed CNIs (Calico, the lab) install ``<pod ip>/32 dev <host veth> scope link`` in the
main table; one netlink dump per sync gives every pod's interface at once.
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
