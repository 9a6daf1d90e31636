"""Bytes <-> values for every map: MapState types, endpoints, conntrack, events, config.

Host-order fields use native byte order (``=``), "network order" fields are converted
here, so the rest of the package only sees values (labelwall/policy/mapstate.py).
``TABLE_CODECS`` says how each MapState table (mapstate.TABLES) is stored.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from labelwall.cluster import Direction, IPAddress, IPNetwork, Protocol
from labelwall.datapath.abi import (
    CIDR_KEY,
    CIDR_PREFIX_BASE,
    CIDR_VALUE,
    CONFIG,
    COUNTER,
    CT_BUDGET,
    CT_CONFIG,
    CT_KEY,
    CT_VALUE,
    DIR_NAMED,
    ENDPOINT,
    EP_F_SUBJECT,
    EP_SUBJECT_MASK,
    EPADDR_F_POD,
    EPADDR_KEY,
    EPADDR_VALUE,
    EVENT,
    EVRATE,
    FRAG_KEY,
    FRAG_VALUE,
    ICMP_TYPE_NONE,
    IP_KEY,
    IPCACHE_VALUE,
    POLICY_KEY,
    POLICY_PREFIX_ANY_PROTO,
    POLICY_PREFIX_PROTO,
    POLICY_VALUE,
    PORT_KEY,
    PORT_VALUE,
    REASON_MAX,
    RULE_KEY,
    SUBJECT,
    ConfigFlags,
    CtFlags,
    Family,
    TcVerdict,
)
from labelwall.datapath.mapspecs import (
    CIDRS_MAP,
    IPCACHE_MAP,
    POLICY_MAP,
    PORTS_MAP,
    SUBJECTS_MAP,
    MapSpec,
)
from labelwall.policy import mapstate
from labelwall.policy.lookup import Reason
from labelwall.policy.mapstate import IpcacheEntry, NamedPortKey, PolicyKey, SubjectFlags

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
        """An endpoint carrying its subject's flags (what the writer writes)."""
        return cls(identity, EP_F_SUBJECT | (int(subject_flags) & EP_SUBJECT_MASK))


def encode_endpoint(v: Endpoint) -> bytes:
    return ENDPOINT.codec.pack(v.identity, v.flags)


def decode_endpoint(raw: bytes) -> Endpoint:
    identity, flags = ENDPOINT.codec.unpack(raw)
    return Endpoint(identity, flags)


def encode_epaddr_key(ifindex: int, addr: IPAddress) -> bytes:
    """lw_epaddr_key: (host veth ifindex, family, address), the source-validation key."""
    return EPADDR_KEY.codec.pack(ifindex, addr.version, b"\0\0\0", _addr16(addr))


def decode_epaddr_key(raw: bytes) -> tuple[int, IPAddress]:
    ifindex, family, _pad, addr = EPADDR_KEY.codec.unpack(raw)
    return ifindex, _addr_from16(family, addr)


def encode_epaddr_value(flags: int = EPADDR_F_POD) -> bytes:
    return EPADDR_VALUE.codec.pack(flags)


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


@dataclass(frozen=True)
class FragKey:
    """lw_frag_key: one fragmented datagram at one veth and hook; ``id`` host order."""

    family: int
    proto: int
    dir: int
    id: int
    saddr: IPAddress
    daddr: IPAddress
    ifindex: int = 0


def encode_frag_key(k: FragKey) -> bytes:
    return FRAG_KEY.codec.pack(
        k.family, k.proto, k.dir, 0, k.id, _addr16(k.saddr), _addr16(k.daddr), k.ifindex
    )


def decode_frag_key(raw: bytes) -> FragKey:
    family, proto, dir_, _pad, ident, saddr, daddr, ifindex = FRAG_KEY.codec.unpack(raw)
    return FragKey(
        family,
        proto,
        dir_,
        ident,
        _addr_from16(family, saddr),
        _addr_from16(family, daddr),
        ifindex,
    )


def decode_frag_value(raw: bytes) -> int:
    """lw_frag_value: the entry's deadline, CLOCK_MONOTONIC_COARSE ns."""
    return int(FRAG_VALUE.codec.unpack(raw)[0])


def counter_index(direction: Direction, reason: Reason) -> int:
    return (int(direction) - 1) * REASON_MAX + int(reason)


@dataclass(frozen=True)
class Counter:
    packets: int
    bytes: int


def decode_counter(raw: bytes) -> Counter:
    packets, nbytes = COUNTER.codec.unpack(raw)
    return Counter(packets, nbytes)


def encode_rule_key(cookie: int, direction: Direction) -> bytes:
    """lw_rule_key: (rule cookie, hook direction), the per-rule counter key."""
    return RULE_KEY.codec.pack(cookie, int(direction), b"\0\0\0")


def decode_rule_key(raw: bytes) -> tuple[int, Direction]:
    cookie, direction, _pad = RULE_KEY.codec.unpack(raw)
    return cookie, Direction(direction)


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
    verdict: TcVerdict
    reason: Reason
    sport: int
    dport: int
    saddr: IPAddress | None
    daddr: IPAddress | None
    tcp_flags: int = 0
    icmp_type: int | None = None  # None: no ICMP header was read (ICMP_TYPE_NONE)
    icmp_code: int | None = None


def decode_event(raw: bytes) -> Event:
    (ts, subject, peer, cidr, cookie, ifindex, family, proto, dir_, verdict, reason, tflags,
     sport, dport, itype, icode, saddr, daddr) = EVENT.codec.unpack(raw[: EVENT.size])  # fmt: skip
    ip = family in (Family.IPV4, Family.IPV6)
    return Event(
        ts, subject, peer, cidr, cookie, ifindex, family, proto, dir_, TcVerdict(verdict),
        Reason(reason), _swap16(sport), _swap16(dport),
        _addr_from16(family, saddr) if ip else None, _addr_from16(family, daddr) if ip else None,
        tflags,
        None if itype == ICMP_TYPE_NONE else itype, None if itype == ICMP_TYPE_NONE else icode,
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
class DatapathConfig:
    """lw_config: the classifier's run-time settings (not labelwall.config.Config)."""

    events_per_s: int = 0  # per CPU; 0 = EVENTS_PER_S_DEFAULT
    events_burst: int = 0  # per CPU; 0 = EVENTS_BURST_DEFAULT
    flags: ConfigFlags = ConfigFlags.NONE
    #: lw_ctcfg_v1: conntrack promotions per endpoint (conntrack.h); 0 = the abi.h default
    ct_promote_per_s: int = 0
    ct_promote_burst: int = 0


def encode_config(c: DatapathConfig) -> bytes:
    return CONFIG.codec.pack(c.events_per_s, c.events_burst, int(c.flags), 0)


def encode_ct_config(c: DatapathConfig) -> bytes:
    return CT_CONFIG.codec.pack(c.ct_promote_per_s, c.ct_promote_burst)


def decode_ct_budget(raw: bytes) -> tuple[int, int]:
    """lw_ct_budget: (last refill ns, tokens in promotions x 1e9)."""
    last_ns, tokens = CT_BUDGET.codec.unpack(raw)
    return int(last_ns), int(tokens)


def decode_config(raw: bytes) -> DatapathConfig:
    rate, burst, flags, _pad = CONFIG.codec.unpack(raw)
    return DatapathConfig(rate, burst, ConfigFlags(flags))


# ---- MapState tables <-> maps ----


@dataclass(frozen=True)
class TableCodec:
    """How one MapState table is stored: its map and its key/value codecs."""

    table: mapstate.MapTable[Any, Any]
    spec: MapSpec
    encode_key: Callable[[Any], bytes]
    decode_key: Callable[[bytes], Any]
    encode_value: Callable[[Any], bytes]
    decode_value: Callable[[bytes], Any]


SUBJECTS = TableCodec(
    mapstate.SUBJECTS, SUBJECTS_MAP, encode_u32, decode_u32, encode_subject, decode_subject
)
POLICY = TableCodec(
    mapstate.POLICY,
    POLICY_MAP,
    encode_policy_key,
    decode_policy_key,
    encode_policy_value,
    decode_policy_value,
)
IPCACHE = TableCodec(
    mapstate.IPCACHE,
    IPCACHE_MAP,
    encode_ip_key,
    decode_ip_key,
    encode_ipcache_value,
    decode_ipcache_value,
)
CIDRS = TableCodec(
    mapstate.CIDRS,
    CIDRS_MAP,
    encode_cidr_key,
    decode_cidr_key,
    encode_cidr_value,
    decode_cidr_value,
)
NAMED_PORTS = TableCodec(
    mapstate.NAMED_PORTS, PORTS_MAP, encode_port_key, decode_port_key, encode_port_value,
    decode_port_value,
)  # fmt: skip

#: One codec per mapstate.TABLES entry, in the same order.
TABLE_CODECS: tuple[TableCodec, ...] = (SUBJECTS, POLICY, IPCACHE, CIDRS, NAMED_PORTS)
if tuple(c.table for c in TABLE_CODECS) != mapstate.TABLES:
    raise TypeError("codecs.TABLE_CODECS must follow mapstate.TABLES")
CODEC_OF: dict[mapstate.MapTable[Any, Any], TableCodec] = {c.table: c for c in TABLE_CODECS}
