"""Python mirror of bpf_src/include/labelwall/abi.h: constants, struct layouts, encoders.

Field names equal the C field names; tests/datapath/test_abi_layout.py checks every
layout against host offsetof/sizeof and against the BTF of the compiled object. Host-order
fields use native byte order (``=``), "network order" fields are converted here, so the
rest of the package only sees MapState values (labelwall/policy/mapstate.py).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Collection, Mapping, Sized
from dataclasses import dataclass, replace
from enum import IntEnum, IntFlag
from functools import cached_property
from typing import Any, NamedTuple

from labelwall.cluster import Direction, IPAddress, IPNetwork, Protocol
from labelwall.policy.lookup import Reason
from labelwall.policy.mapstate import IpcacheEntry, NamedPortKey, PolicyKey, SubjectFlags

ABI_VERSION = 1
PIN_ROOT = "/sys/fs/bpf"

__all__ = ["Reason", "SubjectFlags"]  # re-exported mirrors of LW_REASON_* / LW_SUBJECT_*


class Family(IntEnum):
    """LW_FAMILY_*: the IP version, not AF_INET*."""

    IPV4 = 4
    IPV6 = 6


class Verdict(IntEnum):
    DROP = 0
    ALLOW = 1


class CtFlags(IntFlag):
    NONE = 0
    REPLY_SEEN = 1
    CLOSING = 2
    FLIPPED = 4  # the key's tuple is the first packet's reversed (canonical order)
    FIN_FWD = 8  # FIN seen in the first packet's direction (half-closed, still established)
    FIN_REV = 16  # FIN seen in the other direction; both FINs (or a RST) set CLOSING


class ConfigFlags(IntFlag):
    NONE = 0
    NO_ALLOW_EVENTS = 1
    NO_EVENTS = 2


EP_F_SUBJECT = 0x80000000  # LW_EP_F_SUBJECT: lw_endpoint.flags mirrors the subject's flags
EP_SUBJECT_MASK = 0xFF  # LW_EP_SUBJECT_MASK


class GroupFlags(IntFlag):
    """LW_GROUP_F_*: lw_group.flags."""

    NONE = 0
    OVERFLOW = 1  # more entries than slots: the classifier matches in lw_polovf_v1
    NAMED = 2  # the group has named-port entries


DIR_NAMED = 0x80  # LW_DIR_NAMED, or-ed into lw_policy_key.dir
GROUP_SLOTS = 8  # LW_GROUP_SLOTS
SLOT_NAMED = 0x80  # LW_SLOT_NAMED, or-ed into lw_rule_slot.bits
REASON_MAX = 32  # LW_REASON_MAX
REASON_FIRST_DROP = 16  # LW_REASON_FIRST_DROP

POLICY_PREFIX_ANY_PROTO = 72  # LW_POLICY_PREFIX_ANY_PROTO
POLICY_PREFIX_PROTO = 80  # LW_POLICY_PREFIX_PROTO
POLICY_PREFIX_FULL = 96  # LW_POLICY_PREFIX_FULL
CIDR_PREFIX_BASE = 32  # LW_CIDR_PREFIX_BASE

# Conntrack timeouts, seconds (LW_CT_*_TIMEOUT_S).
CT_TCP_SYN_TIMEOUT_S = 60
CT_TCP_TIMEOUT_S = 21600
CT_TCP_CLOSE_TIMEOUT_S = 10
CT_UDP_TIMEOUT_S = 60
CT_ICMP_TIMEOUT_S = 30
CT_OTHER_TIMEOUT_S = 60

EVENTS_PER_S_DEFAULT = 1000  # per CPU
EVENTS_BURST_DEFAULT = 200  # per CPU

# ---- struct layouts ----


@dataclass(frozen=True)
class Field:
    """One C field: ``fmt`` is its struct format (``16s`` for u8[16])."""

    name: str
    fmt: str
    network_order: bool = False

    @property
    def size(self) -> int:
        return struct.calcsize("=" + self.fmt)


@dataclass(frozen=True)
class CStruct:
    """A packed-by-construction C struct (explicit pads, so no implicit padding)."""

    c_name: str
    fields: tuple[Field, ...]

    @cached_property
    def codec(self) -> struct.Struct:
        return struct.Struct("=" + "".join(f.fmt for f in self.fields))

    @property
    def size(self) -> int:
        return self.codec.size

    def offsets(self) -> dict[str, int]:
        out, off = {}, 0
        for f in self.fields:
            out[f.name] = off
            off += f.size
        return out


def _s(c_name: str, *fields: Field) -> CStruct:
    return CStruct(c_name, fields)


F = Field
ENDPOINT = _s("lw_endpoint", F("identity", "I"), F("flags", "I"))
SUBJECT = _s("lw_subject", F("flags", "I"))
POLICY_KEY = _s(
    "lw_policy_key",
    F("prefixlen", "I"),
    F("subject", "I"),
    F("peer", "I"),
    F("dir", "B"),
    F("proto", "B"),
    F("port", "H", network_order=True),
)
POLICY_VALUE = _s("lw_policy_value", F("cookie", "I"))
GROUP_KEY = _s("lw_group_key", F("subject", "I"), F("peer", "I"), F("dir", "B"), F("pad", "3s"))
RULE_SLOT = _s("lw_rule_slot", F("proto", "B"), F("bits", "B"), F("port", "H"), F("cookie", "I"))
GROUP = _s("lw_group", F("flags", "I"), F("count", "I"), F("slots", f"{GROUP_SLOTS * 8}s"))
IP_KEY = _s("lw_ip_key", F("family", "B"), F("pad", "3s"), F("addr", "16s", True))
IPCACHE_VALUE = _s("lw_ipcache_value", F("identity", "I"), F("cidr_identity", "I"))
CIDR_KEY = _s(
    "lw_cidr_key", F("prefixlen", "I"), F("family", "B"), F("pad", "3s"), F("addr", "16s", True)
)
CIDR_VALUE = _s("lw_cidr_value", F("cidr_identity", "I"))
PORT_KEY = _s(
    "lw_port_key", F("family", "B"), F("proto", "B"), F("port", "H", True), F("addr", "16s", True)
)
PORT_VALUE = _s("lw_port_value", F("name_id", "I"))
CT_KEY = _s(
    "lw_ct_key",
    F("family", "B"),
    F("proto", "B"),
    F("dir", "B"),
    F("pad", "B"),
    F("sport", "H", True),
    F("dport", "H", True),
    F("saddr", "16s", True),
    F("daddr", "16s", True),
    F("ifindex", "I"),
)
CT_VALUE = _s("lw_ct_value", F("expires_ns", "Q"), F("flags", "I"), F("pad", "I"))
COUNTER = _s("lw_counter", F("packets", "Q"), F("bytes", "Q"))
EVENT = _s(
    "lw_event",
    F("ts_ns", "Q"),
    F("subject", "I"),
    F("peer", "I"),
    F("cidr_identity", "I"),
    F("cookie", "I"),
    F("ifindex", "I"),
    F("family", "B"),
    F("proto", "B"),
    F("dir", "B"),
    F("verdict", "B"),
    F("reason", "B"),
    F("pad", "B"),
    F("sport", "H", True),
    F("dport", "H", True),
    F("pad2", "2s"),
    F("saddr", "16s", True),
    F("daddr", "16s", True),
)
EVRATE = _s("lw_evrate", F("last_ns", "Q"), F("tokens", "Q"), F("suppressed", "Q"), F("lost", "Q"))
CLOCK = _s("lw_clock", F("jiffies", "Q"), F("ns", "Q"))
CONFIG = _s(
    "lw_config", F("events_per_s", "I"), F("events_burst", "I"), F("flags", "I"), F("pad", "I")
)

STRUCTS: tuple[CStruct, ...] = (
    ENDPOINT,
    SUBJECT,
    POLICY_KEY,
    POLICY_VALUE,
    GROUP_KEY,
    RULE_SLOT,
    GROUP,
    IP_KEY,
    IPCACHE_VALUE,
    CIDR_KEY,
    CIDR_VALUE,
    PORT_KEY,
    PORT_VALUE,
    CT_KEY,
    CT_VALUE,
    COUNTER,
    EVENT,
    EVRATE,
    CLOCK,
    CONFIG,
)

# ---- maps ----

U32 = 4


@dataclass(frozen=True)
class MapSpec:
    """What the loader expects of a pinned map (type/key/value/max_entries)."""

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int

    @property
    def pin_path(self) -> str:
        return f"{PIN_ROOT}/{self.name}"


# linux/bpf.h enum bpf_map_type
_HASH, _ARRAY, _PERCPU_ARRAY, _LRU_HASH, _LPM_TRIE, _RINGBUF = 1, 2, 6, 9, 11, 27

ENDPOINTS_MAX = 4096
SUBJECTS_MAX = 65536
POLICY_MAX = 1 << 20
POLGRP_MAX = 1 << 20
IPCACHE_MAX = 1 << 20
CIDRS_MAX = 65536
PORTS_MAX = 262144
CT_MAX = 262144
EVENTS_BYTES = 256 * 1024
COUNTERS_MAX = 2 * REASON_MAX

ENDPOINTS_MAP = MapSpec("lw_endpoints_v1", _HASH, U32, ENDPOINT.size, ENDPOINTS_MAX)
SUBJECTS_MAP = MapSpec("lw_subjects_v1", _HASH, U32, SUBJECT.size, SUBJECTS_MAX)
POLICY_MAP = MapSpec("lw_policy_v1", _LPM_TRIE, POLICY_KEY.size, POLICY_VALUE.size, POLICY_MAX)
POLOVF_MAP = MapSpec("lw_polovf_v1", _LPM_TRIE, POLICY_KEY.size, POLICY_VALUE.size, POLICY_MAX)
POLGRP_MAP = MapSpec("lw_polgrp_v1", _HASH, GROUP_KEY.size, GROUP.size, POLGRP_MAX)
IPCACHE_MAP = MapSpec("lw_ipcache_v1", _HASH, IP_KEY.size, IPCACHE_VALUE.size, IPCACHE_MAX)
CIDRS_MAP = MapSpec("lw_cidrs_v1", _LPM_TRIE, CIDR_KEY.size, CIDR_VALUE.size, CIDRS_MAX)
PORTS_MAP = MapSpec("lw_ports_v1", _HASH, PORT_KEY.size, PORT_VALUE.size, PORTS_MAX)
CT_MAP = MapSpec("lw_ct_v3", _LRU_HASH, CT_KEY.size, CT_VALUE.size, CT_MAX)
COUNTERS_MAP = MapSpec("lw_counters_v1", _PERCPU_ARRAY, U32, COUNTER.size, COUNTERS_MAX)
EVENTS_MAP = MapSpec("lw_events_v1", _RINGBUF, 0, 0, EVENTS_BYTES)
EVRATE_MAP = MapSpec("lw_evrate_v1", _PERCPU_ARRAY, U32, EVRATE.size, 1)
CLOCK_MAP = MapSpec("lw_clock_v1", _PERCPU_ARRAY, U32, CLOCK.size, 1)
CONFIG_MAP = MapSpec("lw_config_v1", _ARRAY, U32, CONFIG.size, 1)

MAPS: tuple[MapSpec, ...] = (
    ENDPOINTS_MAP,
    SUBJECTS_MAP,
    POLICY_MAP,
    POLGRP_MAP,
    POLOVF_MAP,
    IPCACHE_MAP,
    CIDRS_MAP,
    PORTS_MAP,
    CT_MAP,
    COUNTERS_MAP,
    EVENTS_MAP,
    EVRATE_MAP,
    CLOCK_MAP,
    CONFIG_MAP,
)

#: The maps.h macro that sizes each map (an #ifndef default), so an object can be built
#: with other sizes (``-DLW_CT_MAX=...``) and the loader can expect exactly those.
SIZE_MACROS: dict[str, str] = {
    ENDPOINTS_MAP.name: "LW_ENDPOINTS_MAX",
    SUBJECTS_MAP.name: "LW_SUBJECTS_MAX",
    POLICY_MAP.name: "LW_POLICY_MAX",
    POLOVF_MAP.name: "LW_POLICY_MAX",
    POLGRP_MAP.name: "LW_POLGRP_MAX",
    IPCACHE_MAP.name: "LW_IPCACHE_MAX",
    CIDRS_MAP.name: "LW_CIDRS_MAX",
    PORTS_MAP.name: "LW_PORTS_MAX",
    CT_MAP.name: "LW_CT_MAX",
}


def resized(defines: Mapping[str, int]) -> tuple[MapSpec, ...]:
    """MAPS as an object built with these ``-D`` size macros has them."""
    return tuple(
        replace(m, max_entries=int(defines[SIZE_MACROS[m.name]]))
        if SIZE_MACROS.get(m.name) in defines
        else m
        for m in MAPS
    )


# Program names in the object (SEC("tc") functions) and their pins.
PROG_FROM_POD = "handle_from_pod"
PROG_TO_POD = "handle_to_pod"
PROG_PINS = {PROG_FROM_POD: f"{PIN_ROOT}/lw_from_pod_v1", PROG_TO_POD: f"{PIN_ROOT}/lw_to_pod_v1"}

# ---- encoders / decoders (MapState types <-> bytes) ----

_U32 = struct.Struct("=I")


def _swap16(v: int) -> int:
    """Host-order u16 -> the native-order integer whose bytes are ``v`` in network order."""
    return ((v & 0xFF) << 8) | (v >> 8)


def _addr16(addr: IPAddress) -> bytes:
    return addr.packed.ljust(16, b"\0")


def _addr_from16(family: int, raw: bytes) -> IPAddress:
    if family == Family.IPV4:
        return ipaddress.IPv4Address(raw[:4])
    return ipaddress.IPv6Address(raw)


def encode_u32(v: int) -> bytes:
    """Keys that are a plain host-order u32 (ifindex, identity, array index)."""
    return _U32.pack(v)


def decode_u32(raw: bytes) -> int:
    return int(_U32.unpack(raw)[0])


@dataclass(frozen=True)
class Endpoint:
    identity: int
    flags: int = 0  # EP_F_SUBJECT | the subject's flags (mirror), or 0

    @classmethod
    def mirroring(cls, identity: int, subject_flags: SubjectFlags) -> Endpoint:
        """An endpoint carrying its subject's flags (what BpfMapWriter writes)."""
        return cls(identity, EP_F_SUBJECT | (int(subject_flags) & EP_SUBJECT_MASK))


def encode_endpoint(v: Endpoint) -> bytes:
    return ENDPOINT.codec.pack(v.identity, v.flags)


def decode_endpoint(raw: bytes) -> Endpoint:
    identity, flags = ENDPOINT.codec.unpack(raw)
    return Endpoint(identity, flags)


def encode_subject(flags: SubjectFlags) -> bytes:
    return SUBJECT.codec.pack(int(flags))


def decode_subject(raw: bytes) -> SubjectFlags:
    return SubjectFlags(SUBJECT.codec.unpack(raw)[0])


def policy_prefixlen(key: PolicyKey) -> int:
    if key.protocol == Protocol.ANY:
        return POLICY_PREFIX_ANY_PROTO
    return POLICY_PREFIX_PROTO + (16 if key.named else key.port_bits)


def encode_policy_key(key: PolicyKey) -> bytes:
    return POLICY_KEY.codec.pack(
        policy_prefixlen(key),
        key.subject,
        key.peer,
        int(key.direction) | (DIR_NAMED if key.named else 0),
        int(key.protocol),
        _swap16(key.port),
    )


def decode_policy_key(raw: bytes) -> PolicyKey:
    prefixlen, subject, peer, dir_, proto, port = POLICY_KEY.codec.unpack(raw)
    named = bool(dir_ & DIR_NAMED)
    protocol = Protocol(proto)
    bits = 0 if protocol == Protocol.ANY else prefixlen - POLICY_PREFIX_PROTO
    return PolicyKey(
        subject, peer, Direction(dir_ & ~DIR_NAMED), protocol, _swap16(port), bits, named
    )


def encode_policy_value(cookie: int) -> bytes:
    return POLICY_VALUE.codec.pack(cookie)


def decode_policy_value(raw: bytes) -> int:
    return int(POLICY_VALUE.codec.unpack(raw)[0])


class GroupKey(NamedTuple):
    """lw_group_key: the (subject, peer, direction) every policy entry belongs to.

    A NamedTuple, not a frozen dataclass: the writer builds one per policy entry it
    writes, and tuple construction is several times cheaper (policy write rate).
    """

    subject: int
    peer: int
    direction: Direction


def group_of(key: PolicyKey) -> GroupKey:
    return GroupKey(key.subject, key.peer, key.direction)


_RULE_SLOT_PACK = RULE_SLOT.codec.pack
_GROUP_PACK = GROUP.codec.pack
_GROUP_KEY_PACK = GROUP_KEY.codec.pack


def encode_group_key(g: GroupKey) -> bytes:
    return _GROUP_KEY_PACK(g.subject, g.peer, g.direction, b"\0\0\0")


def decode_group_key(raw: bytes) -> GroupKey:
    subject, peer, dir_, _pad = GROUP_KEY.codec.unpack(raw)
    return GroupKey(subject, peer, Direction(dir_))


def _slot_bits(key: PolicyKey) -> int:
    """Leading port bits the trie compares for ``key`` (encode_policy_key's prefixlen - 80)."""
    if key.protocol == Protocol.ANY:
        return 0
    return 16 if key.named else key.port_bits


def _slot_rank(item: tuple[PolicyKey, int]) -> tuple[bool, int, int, int]:
    """Port entries before named ones, then longest trie prefix first (any-protocol last)."""
    key = item[0]
    length = -1 if key.protocol == Protocol.ANY else _slot_bits(key)
    return (key.named, -length, int(key.protocol), key.port)


@dataclass(frozen=True)
class RuleSlot:
    proto: int
    bits: int  # 0..16, | SLOT_NAMED
    port: int  # host order; a name id for named slots
    cookie: int


def overflows(entries: Sized) -> bool:
    """Too many entries for one group's slots: they live in lw_polovf_v1 instead."""
    return len(entries) > GROUP_SLOTS


def encode_group(entries: Collection[tuple[PolicyKey, int]]) -> bytes:
    """lw_group for one group's (key, cookie) entries: inline slots, or OVERFLOW when they
    do not fit."""
    if len(entries) == 1:  # the common case, kept cheap for the policy write rate
        ((k, cookie),) = entries
        return _GROUP_PACK(
            GroupFlags.NAMED if k.named else 0,
            1,
            _RULE_SLOT_PACK(
                k.protocol,
                _slot_bits(k) | (SLOT_NAMED if k.named else 0),
                0 if k.protocol == Protocol.ANY else k.port,
                cookie,
            ),
        )
    flags = GroupFlags.NAMED if any(k.named for k, _ in entries) else GroupFlags.NONE
    if overflows(entries):
        return GROUP.codec.pack(int(flags | GroupFlags.OVERFLOW), 0, b"")
    items = sorted(entries, key=_slot_rank)
    slots = b"".join(
        _RULE_SLOT_PACK(
            k.protocol,
            _slot_bits(k) | (SLOT_NAMED if k.named else 0),
            0 if k.protocol == Protocol.ANY else k.port,
            cookie,
        )
        for k, cookie in items
    )
    return _GROUP_PACK(flags, len(entries), slots)


def decode_group(raw: bytes) -> tuple[GroupFlags, list[RuleSlot]]:
    flags, count, slots = GROUP.codec.unpack(raw)
    return GroupFlags(flags), [
        RuleSlot(*RULE_SLOT.codec.unpack_from(slots, i * RULE_SLOT.size)) for i in range(count)
    ]


_IP_KEY_PREFIX = {4: bytes([Family.IPV4, 0, 0, 0]), 6: bytes([Family.IPV6, 0, 0, 0])}
_V4_TAIL = bytes(12)


def encode_ip_key(addr: IPAddress) -> bytes:
    # Concatenation instead of IP_KEY.codec.pack: this is the hot path of bulk ipcache
    # writes (the golden tests pin the bytes to the struct layout).
    if addr.version == 4:
        return _IP_KEY_PREFIX[4] + addr.packed + _V4_TAIL
    return _IP_KEY_PREFIX[6] + addr.packed


def decode_ip_key(raw: bytes) -> IPAddress:
    family, _pad, addr = IP_KEY.codec.unpack(raw)
    return _addr_from16(family, addr)


def encode_ipcache_value(v: IpcacheEntry) -> bytes:
    return IPCACHE_VALUE.codec.pack(v.identity, v.cidr_identity)


def decode_ipcache_value(raw: bytes) -> IpcacheEntry:
    identity, cidr = IPCACHE_VALUE.codec.unpack(raw)
    return IpcacheEntry(identity, cidr)


def encode_cidr_key(net: IPNetwork) -> bytes:
    return CIDR_KEY.codec.pack(
        CIDR_PREFIX_BASE + net.prefixlen, net.version, b"\0\0\0", _addr16(net.network_address)
    )


def decode_cidr_key(raw: bytes) -> IPNetwork:
    prefixlen, family, _pad, addr = CIDR_KEY.codec.unpack(raw)
    base = _addr_from16(family, addr)
    return ipaddress.ip_network(f"{base}/{prefixlen - CIDR_PREFIX_BASE}")


def encode_cidr_value(cidr_identity: int) -> bytes:
    return CIDR_VALUE.codec.pack(cidr_identity)


def decode_cidr_value(raw: bytes) -> int:
    return int(CIDR_VALUE.codec.unpack(raw)[0])


def encode_port_key(key: NamedPortKey) -> bytes:
    return PORT_KEY.codec.pack(
        key.address.version, int(key.protocol), _swap16(key.port), _addr16(key.address)
    )


def decode_port_key(raw: bytes) -> NamedPortKey:
    family, proto, port, addr = PORT_KEY.codec.unpack(raw)
    return NamedPortKey(_addr_from16(family, addr), Protocol(proto), _swap16(port))


def encode_port_value(name_id: int) -> bytes:
    return PORT_VALUE.codec.pack(name_id)


def decode_port_value(raw: bytes) -> int:
    return int(PORT_VALUE.codec.unpack(raw)[0])


@dataclass(frozen=True)
class CtKey:
    """lw_ct_key; ports are host-order integers here; ifindex is the host veth's."""

    family: int
    proto: int
    dir: int
    sport: int
    dport: int
    saddr: IPAddress
    daddr: IPAddress
    ifindex: int = 0


def encode_ct_key(k: CtKey) -> bytes:
    return CT_KEY.codec.pack(
        k.family,
        k.proto,
        k.dir,
        0,
        _swap16(k.sport),
        _swap16(k.dport),
        _addr16(k.saddr),
        _addr16(k.daddr),
        k.ifindex,
    )


def decode_ct_key(raw: bytes) -> CtKey:
    family, proto, dir_, _pad, sport, dport, saddr, daddr, ifindex = CT_KEY.codec.unpack(raw)
    return CtKey(
        family,
        proto,
        dir_,
        _swap16(sport),
        _swap16(dport),
        _addr_from16(family, saddr),
        _addr_from16(family, daddr),
        ifindex,
    )


@dataclass(frozen=True)
class CtValue:
    expires_ns: int
    flags: CtFlags


def decode_ct_value(raw: bytes) -> CtValue:
    expires, flags, _pad = CT_VALUE.codec.unpack(raw)
    return CtValue(expires, CtFlags(flags))


def counter_index(direction: Direction, reason: Reason) -> int:
    return (int(direction) - 1) * REASON_MAX + int(reason)


@dataclass(frozen=True)
class Counter:
    packets: int
    bytes: int


def decode_counter(raw: bytes) -> Counter:
    packets, nbytes = COUNTER.codec.unpack(raw)
    return Counter(packets, nbytes)


@dataclass(frozen=True)
class Event:
    ts_ns: int
    subject: int
    peer: int
    cidr_identity: int
    cookie: int
    ifindex: int
    family: int
    proto: int
    dir: int
    verdict: Verdict
    reason: Reason
    sport: int
    dport: int
    saddr: IPAddress | None
    daddr: IPAddress | None


def decode_event(raw: bytes) -> Event:
    (ts, subject, peer, cidr, cookie, ifindex, family, proto, dir_, verdict, reason, _pad,
     sport, dport, _pad2, saddr, daddr) = EVENT.codec.unpack(raw[: EVENT.size])  # fmt: skip
    ip = family in (Family.IPV4, Family.IPV6)
    return Event(
        ts, subject, peer, cidr, cookie, ifindex, family, proto, dir_, Verdict(verdict),
        Reason(reason), _swap16(sport), _swap16(dport),
        _addr_from16(family, saddr) if ip else None, _addr_from16(family, daddr) if ip else None,
    )  # fmt: skip


@dataclass(frozen=True)
class EventRate:
    last_ns: int
    tokens: int
    suppressed: int
    lost: int


def decode_evrate(raw: bytes) -> EventRate:
    return EventRate(*EVRATE.codec.unpack(raw))


@dataclass(frozen=True)
class Config:
    events_per_s: int = 0  # per CPU; 0 = EVENTS_PER_S_DEFAULT
    events_burst: int = 0  # per CPU; 0 = EVENTS_BURST_DEFAULT
    flags: ConfigFlags = ConfigFlags.NONE


def encode_config(c: Config) -> bytes:
    return CONFIG.codec.pack(c.events_per_s, c.events_burst, int(c.flags), 0)


def decode_config(raw: bytes) -> Config:
    rate, burst, flags, _pad = CONFIG.codec.unpack(raw)
    return Config(rate, burst, ConfigFlags(flags))


# ---- MapState fields <-> maps ----


@dataclass(frozen=True)
class Table:
    """How one MapState field is stored: its map and its key/value codecs."""

    field: str  # attribute of MapState / MapDelta
    spec: MapSpec
    encode_key: Callable[[Any], bytes]
    decode_key: Callable[[bytes], Any]
    encode_value: Callable[[Any], bytes]
    decode_value: Callable[[bytes], Any]


TABLES: dict[str, Table] = {
    t.field: t
    for t in (
        Table("subjects", SUBJECTS_MAP, encode_u32, decode_u32, encode_subject, decode_subject),
        Table(
            "policy", POLICY_MAP, encode_policy_key, decode_policy_key, encode_policy_value,
            decode_policy_value,
        ),
        Table(
            "ipcache", IPCACHE_MAP, encode_ip_key, decode_ip_key, encode_ipcache_value,
            decode_ipcache_value,
        ),
        Table(
            "cidrs", CIDRS_MAP, encode_cidr_key, decode_cidr_key, encode_cidr_value,
            decode_cidr_value,
        ),
        Table(
            "named_ports", PORTS_MAP, encode_port_key, decode_port_key, encode_port_value,
            decode_port_value,
        ),
    )
}  # fmt: skip
