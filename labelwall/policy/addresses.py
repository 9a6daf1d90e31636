"""Address claims: who owns each IP (pod, init pod, this node, another node) and its named ports.

Several objects can claim one address (two pods during a restart, a hostNetwork pod and
its node). ``AddressClaims`` counts the claims per address and says which one wins;
``NamedPortClaims`` does the same for (address, protocol, port) -> name id. The compiler
turns the winners into ipcache and named-port entries.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections import Counter
from enum import IntEnum

from labelwall.cluster import IPAddress, IPNetwork
from labelwall.policy.mapstate import NamedPortKey


class ClaimKind(IntEnum):
    """What claims an address; the smallest kind present wins (ties: smallest pod key)."""

    POD = 0  # a pod with an identity
    HOST = 1  # this node's address, or a hostNetwork pod on it
    REMOTE_NODE = 2  # another node's address, or a hostNetwork pod there
    INIT = 3  # a pod whose Identity object is not published yet


#: One claim: its kind and, for pods, the pod key ("" otherwise).
Claim = tuple[ClaimKind, str]


class AddressClaims:
    """Claim counts per address, with the claimed addresses sorted for range queries."""

    def __init__(self) -> None:
        self._claims: dict[IPAddress, dict[Claim, int]] = {}
        self._sorted: dict[int, list[int]] = {4: [], 6: []}  # claimed addresses as ints

    def addresses(self) -> list[IPAddress]:
        return list(self._claims)

    def claim(self, addr: IPAddress, claim: Claim, sign: int) -> None:
        """Add (``sign`` +1) or drop (-1) one claim on ``addr``."""
        claims = self._claims.get(addr)
        if claims is None:
            claims = self._claims[addr] = {}
            bisect.insort(self._sorted[addr.version], int(addr))
        claims[claim] = claims.get(claim, 0) + sign
        if claims[claim] <= 0:
            del claims[claim]
        if not claims:
            del self._claims[addr]
            rows = self._sorted[addr.version]
            del rows[bisect.bisect_left(rows, int(addr))]

    def winner(self, addr: IPAddress) -> Claim | None:
        """The claim that decides ``addr``'s identity, or None when nothing claims it."""
        claims = self._claims.get(addr)
        return min(claims) if claims else None

    def within(self, net: IPNetwork) -> list[IPAddress]:
        """The claimed addresses inside ``net``."""
        rows = self._sorted[net.version]
        lo = bisect.bisect_left(rows, int(net.network_address))
        hi = bisect.bisect_right(rows, int(net.broadcast_address))
        make = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
        return [make(a) for a in rows[lo:hi]]


class NamedPortClaims:
    """Name-id claims per (address, protocol, port); the smallest id wins, deterministically."""

    def __init__(self) -> None:
        self._claims: dict[NamedPortKey, Counter[int]] = {}

    def claim(self, key: NamedPortKey, ident: int, sign: int) -> int | None:
        """Add or drop one claim; returns the winning name id, None when unclaimed."""
        counts = self._claims.get(key)
        if counts is None:
            counts = self._claims[key] = Counter()
        counts[ident] += sign
        if counts[ident] <= 0:
            del counts[ident]
        if counts:
            # Two names on one (address, protocol, port): keep the smaller id.
            return min(counts)
        del self._claims[key]
        return None
