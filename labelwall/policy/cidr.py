"""ipBlock prefixes: longest-prefix match of an address and the prefixes one ipBlock selects.

Every prefix named by any ipBlock (cidr and except entries) gets a node-local identity. An
address maps to its longest matching prefix. Because the policy prefixes that contain one
address are nested, "address in cidr C and in no except E" is exactly "its longest prefix
P satisfies P ⊆ C and P ⊄ E for each E" - so an ipBlock compiles to the set of prefixes it
selects, and the datapath needs one LPM lookup per packet.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping

from labelwall.cluster import IPAddress, IPNetwork
from labelwall.policy.model import IPBlock


def _width(version: int) -> int:
    return 32 if version == 4 else 128


class PrefixTable:
    """Prefixes with their identities, indexed for longest match and containment queries."""

    def __init__(self, ids: Mapping[IPNetwork, int]) -> None:
        self.ids = dict(ids)
        # (version, prefixlen) -> {network int >> host bits: id}
        self._by_len: dict[int, dict[int, dict[int, int]]] = {4: {}, 6: {}}
        # version -> sorted (network int, prefixlen, id) for containment range scans
        self._sorted: dict[int, list[tuple[int, int, int]]] = {4: [], 6: []}
        for net, ident in self.ids.items():
            w = _width(net.version)
            self._by_len[net.version].setdefault(net.prefixlen, {})[
                int(net.network_address) >> (w - net.prefixlen)
            ] = ident
            self._sorted[net.version].append((int(net.network_address), net.prefixlen, ident))
        for v in (4, 6):
            self._sorted[v].sort()
        self._lens = {v: sorted(self._by_len[v], reverse=True) for v in (4, 6)}

    def longest(self, addr: IPAddress) -> int:
        """Identity of the longest prefix containing ``addr``; 0 when none does."""
        w = _width(addr.version)
        a = int(addr)
        by_len = self._by_len[addr.version]
        for length in self._lens[addr.version]:
            ident = by_len[length].get(a >> (w - length))
            if ident is not None:
                return ident
        return 0

    def inside(self, net: IPNetwork) -> list[tuple[int, int, int]]:
        """(network int, prefixlen, id) of every table prefix P with P ⊆ ``net``."""
        rows = self._sorted[net.version]
        lo_addr = int(net.network_address)
        hi_addr = int(net.broadcast_address)
        i = bisect.bisect_left(rows, (lo_addr, -1, -1))
        out = []
        while i < len(rows) and rows[i][0] <= hi_addr:
            if rows[i][1] >= net.prefixlen:
                out.append(rows[i])
            i += 1
        return out

    def selected(self, block: IPBlock) -> set[int]:
        """Identities of the prefixes P with P ⊆ cidr and P ⊄ every except entry."""
        holes: set[int] = set()
        for exc in block.except_:
            holes.update(row[2] for row in self.inside(exc))
        return {row[2] for row in self.inside(block.cidr)} - holes


def _inside(p: IPNetwork, net: IPNetwork) -> bool:
    return (
        p.version == net.version
        and p.prefixlen >= net.prefixlen
        and (
            int(p.network_address) >> (_width(p.version) - net.prefixlen)
            == int(net.network_address) >> (_width(p.version) - net.prefixlen)
        )
    )


def block_selects(block: IPBlock, prefix: IPNetwork) -> bool:
    """Whether ``block`` selects the table prefix ``prefix``: P ⊆ cidr and P ⊄ each except."""
    return _inside(prefix, block.cidr) and not any(_inside(prefix, e) for e in block.except_)


def block_prefixes(block: IPBlock) -> list[IPNetwork]:
    return [block.cidr, *block.except_]
