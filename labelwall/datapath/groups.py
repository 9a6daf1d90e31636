"""The policy group index (lw_polgrp_v1): one value per (subject, peer, direction).

Pure: which group a policy entry belongs to, how a group's entries become its inline rule
slots (or the OVERFLOW flag when they do not fit), and ``match_slots``, the classifier's
slot match (lw_group_match in policy.h) in Python, which a property test holds equal to
the lookup model's trie match (policy/lookup.py). The writer keeps the index.
"""

from __future__ import annotations

from collections.abc import Collection, Sized
from dataclasses import dataclass
from typing import NamedTuple

from labelwall.cluster import Direction, Protocol
from labelwall.datapath.abi import GROUP, GROUP_KEY, GROUP_SLOTS, RULE_SLOT, SLOT_NAMED, GroupFlags
from labelwall.policy.mapstate import PolicyKey


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


def _slot_matches(s: RuleSlot, proto: int, port: int) -> bool:
    """lw_slot_match: the trie's prefix rule for one slot; ``port`` in host order."""
    bits = s.bits & ~SLOT_NAMED
    if s.proto == Protocol.ANY:
        return True
    if s.proto != proto:
        return False
    return bits == 0 or ((port ^ s.port) >> (16 - bits)) == 0


def match_slots(slots: list[RuleSlot], proto: int, port: int, name_id: int) -> int | None:
    """The cookie the classifier finds in a (non-overflow) group for a packet, or None.

    Port slots first (the first hit is the longest prefix), then, if the packet's
    destination port has a name id, the named slots with that id (lw_group_match).
    """
    ports = [s for s in slots if not s.bits & SLOT_NAMED]
    for s in ports:
        if _slot_matches(s, proto, port):
            return s.cookie
    if not name_id:
        return None
    for s in slots[len(ports) :]:
        if _slot_matches(s, proto, name_id):
            return s.cookie
    return None
