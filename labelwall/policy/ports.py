"""Policy ports as map-key parts: numbers, endPort ranges as prefix blocks, named-port ids."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from labelwall.cluster import Protocol
from labelwall.policy.model import PortSpec

PORT_BITS = 16
#: Name ids live in the 16-bit port field of a ``named`` policy key; 0 means "no name".
NAME_ID_MIN = 1
NAME_ID_MAX = 0xFFFF


class PortTemplate(NamedTuple):
    """The port part of a PolicyKey: protocol, port (or name id), leading bits, named."""

    protocol: Protocol
    port: int
    port_bits: int
    named: bool


class PortRangeError(ValueError):
    """A port range outside 0..65535 or with start > end (validation lets none through)."""


class PortNamesExhaustedError(Exception):
    """More distinct named ports than the 16-bit name-id space holds."""


#: "ports missing or empty: all ports" - one entry for every protocol and port.
ALL_PORTS: tuple[PortTemplate, ...] = (PortTemplate(Protocol.ANY, 0, 0, False),)


def range_blocks(start: int, end: int) -> list[tuple[int, int]]:
    """The minimal list of aligned (port, prefix bits) blocks covering ``start..end`` inclusive."""
    if not 0 <= start <= end <= 0xFFFF:
        raise PortRangeError(f"bad port range {start}..{end}")
    out: list[tuple[int, int]] = []
    cur = start
    while cur <= end:
        # Largest block aligned at ``cur`` that stays within the range.
        size = cur & -cur if cur else 1 << PORT_BITS
        while cur + size - 1 > end:
            size >>= 1
        out.append((cur, PORT_BITS - (size.bit_length() - 1)))
        cur += size
    return out


def name_hash(name: str) -> int:
    return zlib.crc32(name.encode())


def allocate_name_ids(names: Iterable[str]) -> dict[str, int]:
    """Name ids for named ports: crc32(name) into 1..65535, linear probing on collision.

    Names are processed in (hash, name) order, so the ids are a function of the set of
    names the policies use (the same on every node). Adding a name can move another
    name's id only when their probe chains meet; callers must handle that (the incremental
    compiler recompiles fully then).
    """
    size = NAME_ID_MAX - NAME_ID_MIN + 1
    taken: set[int] = set()
    out: dict[str, int] = {}
    for name in sorted(set(names), key=lambda n: (name_hash(n), n)):
        start = name_hash(name) % size
        for step in range(size):
            n = NAME_ID_MIN + (start + step) % size
            if n not in taken:
                taken.add(n)
                out[name] = n
                break
        else:
            raise PortNamesExhaustedError("more than 65535 distinct port names")
    return out


def templates(specs: tuple[PortSpec, ...], name_ids: Mapping[str, int]) -> tuple[PortTemplate, ...]:
    """Key parts of one rule's ``ports``, deduplicated, in a stable order."""
    if not specs:
        return ALL_PORTS
    out: set[PortTemplate] = set()
    for spec in specs:
        if spec.port is None:
            out.add(PortTemplate(spec.protocol, 0, 0, False))
        elif isinstance(spec.port, str):
            out.add(PortTemplate(spec.protocol, name_ids[spec.port], PORT_BITS, True))
        else:
            end = spec.end_port if spec.end_port is not None else spec.port
            for port, bits in range_blocks(spec.port, end):
                out.add(PortTemplate(spec.protocol, port, bits, False))
    return tuple(sorted(out))


def port_names(specs: Iterable[PortSpec]) -> set[str]:
    return {s.port for s in specs if isinstance(s.port, str)}
