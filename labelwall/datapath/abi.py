"""Python mirror of bpf_src/include/labelwall/abi.h: constants, enums and struct layouts.

Only what C defines, with the C names; tests/datapath/test_abi_layout.py checks every
layout against host offsetof/sizeof and against the BTF of the compiled object. The maps
built from these structs are in ``mapspecs``, the byte codecs in ``codecs``, the policy group
index in ``groups``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from functools import cached_property

from labelwall.policy.lookup import Reason
from labelwall.policy.mapstate import SubjectFlags

ABI_VERSION = 1

__all__ = ["Reason", "SubjectFlags"]  # re-exported mirrors of LW_REASON_* / LW_SUBJECT_*


class Family(IntEnum):
    """LW_FAMILY_*: the IP version, not AF_INET*."""

    IPV4 = 4
    IPV6 = 6


class TcVerdict(IntEnum):
    """LW_VERDICT_*: what the classifier did with a packet (not policy.lookup.Verdict)."""

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
EPADDR_F_POD = 1  # LW_EPADDR_F_POD: lw_epaddr_value.flags, one of the pod's status.podIPs


class GroupFlags(IntFlag):
    """LW_GROUP_F_*: lw_group.flags."""

    NONE = 0
    OVERFLOW = 1  # more entries than slots: the classifier matches in lw_polovf_v1
    NAMED = 2  # the group has named-port entries


DIR_NAMED = 0x80  # LW_DIR_NAMED, or-ed into lw_policy_key.dir
GROUP_SLOTS = 8  # LW_GROUP_SLOTS
SLOT_NAMED = 0x80  # LW_SLOT_NAMED, or-ed into lw_rule_slot.bits
ICMP_TYPE_NONE = 255  # LW_ICMP_TYPE_NONE: lw_event.icmp_type when no ICMP header was read
REASON_MAX = 32  # LW_REASON_MAX
REASON_FIRST_DROP = 16  # LW_REASON_FIRST_DROP
COUNTER_RULE_FULL = 31  # LW_COUNTER_RULE_FULL: lw_counters_v1 slot, rule counters were full

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
FRAG_TIMEOUT_S = 5  # LW_FRAG_TIMEOUT_S: a fragment entry's lifetime from its first fragment

# Conntrack promotion budget per endpoint (LW_CT_PROMOTE_*_DEFAULT, conntrack.h).
CT_PROMOTE_PER_S_DEFAULT = 1000
CT_PROMOTE_BURST_DEFAULT = 2000

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
EPADDR_KEY = _s(
    "lw_epaddr_key", F("ifindex", "I"), F("family", "B"), F("pad", "3s"), F("addr", "16s", True)
)
EPADDR_VALUE = _s("lw_epaddr_value", F("flags", "I"))
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
FRAG_KEY = _s(
    "lw_frag_key",
    F("family", "B"),
    F("proto", "B"),
    F("dir", "B"),
    F("pad", "B"),
    F("id", "I"),
    F("saddr", "16s", True),
    F("daddr", "16s", True),
    F("ifindex", "I"),
)
FRAG_VALUE = _s("lw_frag_value", F("expires_ns", "Q"))
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
    F("tcp_flags", "B"),
    F("sport", "H", True),
    F("dport", "H", True),
    F("icmp_type", "B"),  # ICMP_TYPE_NONE when no ICMP header was read
    F("icmp_code", "B"),
    F("saddr", "16s", True),
    F("daddr", "16s", True),
)
EVRATE = _s("lw_evrate", F("last_ns", "Q"), F("tokens", "Q"), F("suppressed", "Q"), F("lost", "Q"))
CLOCK = _s("lw_clock", F("jiffies", "Q"), F("ns", "Q"))
SVCNET_VALUE = _s("lw_svcnet_value", F("flags", "I"))  # key: CIDR_KEY
RULE_KEY = _s("lw_rule_key", F("cookie", "I"), F("dir", "B"), F("pad", "3s"))
CONFIG = _s(
    "lw_config", F("events_per_s", "I"), F("events_burst", "I"), F("flags", "I"), F("pad", "I")
)
CT_BUDGET = _s("lw_ct_budget", F("last_ns", "Q"), F("tokens", "Q"))
CT_CONFIG = _s("lw_ct_config", F("promote_per_s", "I"), F("promote_burst", "I"))

STRUCTS: tuple[CStruct, ...] = (
    ENDPOINT,
    EPADDR_KEY,
    EPADDR_VALUE,
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
    FRAG_KEY,
    FRAG_VALUE,
    COUNTER,
    EVENT,
    EVRATE,
    CLOCK,
    CONFIG,
    SVCNET_VALUE,
    CT_BUDGET,
    CT_CONFIG,
    RULE_KEY,
)
