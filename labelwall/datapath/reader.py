"""Read the pinned maps back into MapState, endpoints, counters and conntrack entries.

For agent restart (diff the desired state against what the kernel holds) and drift repair.
Maps are read through a ``MapIO`` (mapio.py: batch lookups on the kernel's hash maps, a
key walk on tries); per-CPU maps (counters, event rate) only exist in the kernel and are
read by fd.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from labelwall.cluster import Direction
from labelwall.datapath import abi, codecs, libbpf, mapspecs
from labelwall.datapath.mapio import MapIO
from labelwall.policy.lookup import Reason
from labelwall.policy.mapstate import MapState, state_of


def read_raw(io: MapIO, spec: mapspecs.MapSpec) -> list[tuple[bytes, bytes]]:
    return io.items(spec)


def read_table(io: MapIO, table: codecs.TableCodec) -> dict[Any, Any]:
    return {table.decode_key(k): table.decode_value(v) for k, v in io.items(table.spec)}


def read_state(io: MapIO) -> MapState:
    """The MapState the maps hold now."""
    return state_of({c.table.name: read_table(io, c) for c in codecs.TABLE_CODECS})


def read_endpoints(io: MapIO) -> dict[int, codecs.Endpoint]:
    raw = io.items(mapspecs.ENDPOINTS_MAP)
    return {codecs.decode_u32(k): codecs.decode_endpoint(v) for k, v in raw}


def read_conntrack(io: MapIO) -> dict[codecs.CtKey, codecs.CtValue]:
    """Both conntrack tables (conntrack.h): unreplied flows, then replied ones over them."""
    new, est = read_conntrack_tables(io)
    return {**new, **est}


def read_conntrack_tables(
    io: MapIO,
) -> tuple[dict[codecs.CtKey, codecs.CtValue], dict[codecs.CtKey, codecs.CtValue]]:
    """(lw_ct_new_v1, lw_ct_v3): flows not replied yet, flows promoted after their reply."""
    new, est = (
        {codecs.decode_ct_key(k): codecs.decode_ct_value(v) for k, v in io.items(spec)}
        for spec in (mapspecs.CT_NEW_MAP, mapspecs.CT_MAP)
    )
    return new, est


def read_fragments(io: MapIO) -> dict[codecs.FragKey, int]:
    """lw_frags_v1: datagram -> deadline (ns)."""
    raw = io.items(mapspecs.FRAGS_MAP)
    return {codecs.decode_frag_key(k): codecs.decode_frag_value(v) for k, v in raw}


@cache
def possible_cpus() -> int:
    """Per-CPU map values hold one slot per *possible* CPU (kernel ABI)."""
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    total = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        total += (int(hi) if hi else int(lo)) - int(lo) + 1
    return total


def _percpu(fd: int, spec: mapspecs.MapSpec, index: int | bytes) -> list[bytes]:
    slot = (spec.value_size + 7) // 8 * 8  # each CPU's value is rounded up to 8 bytes
    key = codecs.encode_u32(index) if isinstance(index, int) else index
    raw = libbpf.lookup_elem(fd, key, slot * possible_cpus())
    if raw is None:
        return []
    return [raw[i * slot : i * slot + spec.value_size] for i in range(possible_cpus())]


def read_counters(map_fds: Mapping[str, int]) -> dict[tuple[Direction, Reason], codecs.Counter]:
    """Counters summed over CPUs, only the non-zero ones."""
    fd = map_fds[mapspecs.COUNTERS_MAP.name]
    out = {}
    for direction in Direction:
        for reason in Reason:
            cells = [
                codecs.decode_counter(c)
                for c in _percpu(fd, mapspecs.COUNTERS_MAP, codecs.counter_index(direction, reason))
            ]
            packets = sum(c.packets for c in cells)
            if packets:
                out[(direction, reason)] = codecs.Counter(packets, sum(c.bytes for c in cells))
    return out


def read_event_rate(map_fds: Mapping[str, int]) -> codecs.EventRate:
    """Event suppression/loss summed over CPUs (tokens/last_ns: the max over CPUs)."""
    cells = [
        codecs.decode_evrate(c)
        for c in _percpu(map_fds[mapspecs.EVRATE_MAP.name], mapspecs.EVRATE_MAP, 0)
    ]
    return codecs.EventRate(
        max((c.last_ns for c in cells), default=0),
        max((c.tokens for c in cells), default=0),
        sum(c.suppressed for c in cells),
        sum(c.lost for c in cells),
    )


def _summed(fd: int, spec: mapspecs.MapSpec, key: int | bytes) -> codecs.Counter:
    cells = [codecs.decode_counter(c) for c in _percpu(fd, spec, key)]
    return codecs.Counter(sum(c.packets for c in cells), sum(c.bytes for c in cells))


def read_rule_counters(map_fds: Mapping[str, int]) -> dict[tuple[int, Direction], codecs.Counter]:
    """lw_rulecnt_v1: (rule cookie, direction) -> packets/bytes that rule allowed, summed."""
    spec = mapspecs.RULECNT_MAP
    fd = map_fds[spec.name]
    out = {}
    for raw in list(libbpf.iter_keys(fd, spec.key_size)):
        c = _summed(fd, spec, raw)
        if c.packets:
            out[codecs.decode_rule_key(raw)] = c
    return out


def read_rule_overflow(map_fds: Mapping[str, int]) -> dict[Direction, codecs.Counter]:
    """Packets allowed by a rule but counted nowhere per rule (lw_rulecnt_v1 was full)."""
    fd = map_fds[mapspecs.COUNTERS_MAP.name]
    out = {}
    for direction in Direction:
        index = (int(direction) - 1) * abi.REASON_MAX + abi.COUNTER_RULE_FULL
        c = _summed(fd, mapspecs.COUNTERS_MAP, index)
        if c.packets:
            out[direction] = c
    return out
