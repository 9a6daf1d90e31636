"""Read the pinned maps back into MapState, endpoints, counters and conntrack entries.

For agent restart (diff the desired state against what the kernel holds) and drift repair.
Hash maps are read with BPF_MAP_LOOKUP_BATCH; LPM tries (no batch ops) with a
get_next_key walk.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from functools import cache
from typing import Any

from labelwall.cluster import Direction
from labelwall.datapath import abi, libbpf
from labelwall.policy.lookup import Reason
from labelwall.policy.mapstate import MapState

_TRIES = {abi.POLICY_MAP.name, abi.POLOVF_MAP.name, abi.CIDRS_MAP.name}


def read_raw(fd: int, spec: abi.MapSpec) -> list[tuple[bytes, bytes]]:
    if spec.name not in _TRIES:
        try:
            return libbpf.lookup_batch(fd, spec.key_size, spec.value_size)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP, 524):
                raise
    out = []
    for key in libbpf.iter_keys(fd, spec.key_size):
        value = libbpf.lookup_elem(fd, key, spec.value_size)
        if value is not None:  # deleted meanwhile
            out.append((key, value))
    return out


def read_table(fd: int, table: abi.Table) -> dict[Any, Any]:
    return {table.decode_key(k): table.decode_value(v) for k, v in read_raw(fd, table.spec)}


def read_state(map_fds: Mapping[str, int]) -> MapState:
    """The MapState the kernel enforces now."""
    fields = {
        name: read_table(map_fds[table.spec.name], table) for name, table in abi.TABLES.items()
    }
    return MapState(**fields)


def read_endpoints(map_fds: Mapping[str, int]) -> dict[int, abi.Endpoint]:
    raw = read_raw(map_fds[abi.ENDPOINTS_MAP.name], abi.ENDPOINTS_MAP)
    return {abi.decode_u32(k): abi.decode_endpoint(v) for k, v in raw}


def read_conntrack(map_fds: Mapping[str, int]) -> dict[abi.CtKey, abi.CtValue]:
    raw = read_raw(map_fds[abi.CT_MAP.name], abi.CT_MAP)
    return {abi.decode_ct_key(k): abi.decode_ct_value(v) for k, v in raw}


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


def _percpu(fd: int, spec: abi.MapSpec, index: int) -> list[bytes]:
    slot = (spec.value_size + 7) // 8 * 8  # each CPU's value is rounded up to 8 bytes
    raw = libbpf.lookup_elem(fd, abi.encode_u32(index), slot * possible_cpus())
    if raw is None:
        return []
    return [raw[i * slot : i * slot + spec.value_size] for i in range(possible_cpus())]


def read_counters(map_fds: Mapping[str, int]) -> dict[tuple[Direction, Reason], abi.Counter]:
    """Counters summed over CPUs, only the non-zero ones."""
    fd = map_fds[abi.COUNTERS_MAP.name]
    out = {}
    for direction in Direction:
        for reason in Reason:
            cells = [
                abi.decode_counter(c)
                for c in _percpu(fd, abi.COUNTERS_MAP, abi.counter_index(direction, reason))
            ]
            packets = sum(c.packets for c in cells)
            if packets:
                out[(direction, reason)] = abi.Counter(packets, sum(c.bytes for c in cells))
    return out


def read_event_rate(map_fds: Mapping[str, int]) -> abi.EventRate:
    """Event suppression/loss summed over CPUs (tokens/last_ns: the max over CPUs)."""
    cells = [abi.decode_evrate(c) for c in _percpu(map_fds[abi.EVRATE_MAP.name], abi.EVRATE_MAP, 0)]
    return abi.EventRate(
        max((c.last_ns for c in cells), default=0),
        max((c.tokens for c in cells), default=0),
        sum(c.suppressed for c in cells),
        sum(c.lost for c in cells),
    )
