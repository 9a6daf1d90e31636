"""The datapath lookup model: the classifier's per-packet policy decision, in Python.

This is the single specification of the lookup order that ``bpf_src/`` implements; a
property test runs random packets through both and requires equal verdicts. Conntrack is
not modelled here: this is the decision for a *new* flow (conntrack only ever turns a
later packet of an allowed flow into a pass).

Before the policy decision, two checks on the packet itself (bpf_src/include/labelwall/
source.h); ``decide`` models them when it is given the packet's source and, for a packet
leaving the pod, the addresses the pod may send from:
 0a. ND (ICMPv6 133..137, hop limit 255) leaving a pod keeps its free pass only towards
     link-local (fe80::/10), ff02::1, ff02::2, solicited-node (ff02::1:ff00:0/104) or an
     address whose ipcache identity is HOST; otherwise it is ordinary ICMPv6.
 0b. Leaving the pod (EGRESS), the source must be one of the pod's addresses (link-local
     and :: only for ND that passed 0a or towards a link-scoped destination: fe80::/10,
     ffx2::/16), else DROP (SOURCE_INVALID), whatever the policy.
 0c. ND that passed 0a -> ALLOW (ICMP_ND).

Order (bounded: at most 1 + 1 + 1 + 3 x 2 map lookups, independent of policy count):
 1. ``subjects[subject]``: not isolated in ``direction`` -> ALLOW (NOT_ISOLATED).
 2. Peer identity: ``ipcache[peer_addr]`` -> (identity, cidr_identity); on a miss the peer
    is WORLD and ``cidr_identity`` is the longest-prefix match in ``cidrs`` (0 if none).
 3. Peer identity HOST -> ALLOW (HOST): traffic between a pod and its node always passes.
 4. Named-port id: ``named_ports[(dst_addr, protocol, dport)]`` where ``dst_addr`` is the
    packet's destination (the subject for ingress, the peer for egress); 0 if absent.
 5. For peer in (identity, cidr_identity if non-zero, ANY): longest-prefix lookup of
    (subject, peer, direction, protocol, dport) in ``policy``; then, if a name id was
    found, of (subject, peer, direction|NAMED, protocol, name id). First hit -> ALLOW
    (POLICY) with the entry's cookie.
 6. Subject has AUDIT -> ALLOW (AUDIT). Otherwise DROP (POLICY_DENIED).

Egress through a Service (bpf_src/include/labelwall/service.h, netfilter.h; ``decide``
models it when given ``service_cidrs``, the agent's serviceCIDRs):
 S.  At tc, after step 1: EGRESS to a destination inside a Service CIDR (the packet as the
     pod sent it, before kube-proxy's DNAT), not an ICMP error -> ALLOW (SERVICE_DEFERRED):
     passed to the stack untracked, not yet judged. Right after DNAT (netfilter
     PRE_ROUTING, priority -99) the same flow is judged by steps 1-6 on the translated
     destination and port, i.e. the backend pod (``decide`` with ``peer_addr`` and
     ``dst_addr`` the backend's, ``dport`` its target port, no ``service_cidrs``); an
     address nothing translated is judged as it is (world, or an ipBlock). So egress
     through a Service is allowed exactly when egress to its backend pod is, and an
     ipBlock around the Service range admits no backend. The flow is tracked only once
     allowed, under the tuple tc sees (pre-DNAT). No service CIDRs (a kernel without
     netfilter programs): no step S, the Service address is judged by steps 2-6 at tc.

Packets that belong to a flow already judged (before any of the steps above, like
conntrack; ``decide_later_fragment`` and ``decide_icmp_error``):
 F1. A non-first fragment whose datagram's first fragment was allowed at this veth and
     hook -> ALLOW (FRAGMENT_OF_ALLOWED); the first fragment carries the ports and is
     judged as a first packet. No entry is made where the direction is not isolated (the
     fragment passes as NOT_ISOLATED there anyway). Any other non-first fragment is an
     unparsed packet: NOT_ISOLATED, AUDIT, or DROP (FRAGMENT).
 F2. An ICMP/ICMPv6 error whose quoted packet belongs to a tracked flow at this veth (every
     allowed first packet is tracked) -> ALLOW (ICMP_RELATED); any other error is a new
     ICMP packet, judged by steps 1-6 by protocol. An error leaving a pod must pass the
     source check (0b) first; one with a forged source drops as SOURCE_INVALID.

Conntrack itself, per veth (bpf_src/include/labelwall/conntrack.h; modelled by
``labelwall.policy.ctmodel``, which the kernel must equal on random packet sequences):
 C1. The flow is in the replied table (lw_ct_v3) -> ALLOW (CT_ESTABLISHED in the first
     packet's direction, CT_REPLY the other way): one lookup, the established hot path.
 C2. Else, unless the packet is a bare TCP SYN, the flow is in the new table
     (lw_ct_new_v1): a packet against the first one's direction marks it replied. Not
     replied -> ALLOW (CT_ESTABLISHED). Replied -> C3.
 C3. The veth's promotion bucket (rate and burst from the config) has a token -> the
     flow moves to the replied table, ALLOW (CT_REPLY / CT_ESTABLISHED); else ALLOW
     (CT_UNPROMOTED), the flow stays in the new table and the next packet tries again.
 C4. Else a new flow, steps 0a-6 (or F1/F2); an allowed one enters the new table, whether
     or not the subject is isolated (a policy may isolate it while the flow lives).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from dataclasses import dataclass
from enum import IntEnum

from labelwall.cluster import Direction, IPAddress, IPNetwork, Protocol
from labelwall.identity.numbers import ANY, Reserved
from labelwall.policy.mapstate import MapState, NamedPortKey, PolicyKey, SubjectFlags

#: Protocols whose packets carry ports that policy can match (others match only ANY).
PORT_PROTOCOLS = frozenset({Protocol.TCP, Protocol.UDP, Protocol.SCTP})


class Reason(IntEnum):
    """Why a verdict was reached. Mirrors LW_REASON_* in abi.h (used as counter indexes)."""

    NOT_ISOLATED = 1
    HOST = 2
    POLICY = 3
    AUDIT = 4
    CT_ESTABLISHED = 5
    CT_REPLY = 6
    NON_IP = 7
    ICMP_ND = 8
    FRAGMENT_OF_ALLOWED = 9
    ICMP_RELATED = 10
    SERVICE_DEFERRED = 11  # tc: to a Service address, judged after DNAT (step S)
    CT_UNPROMOTED = 12  # tracked, reply seen, endpoint over its promotion budget (C1-C3)
    # drops
    POLICY_DENIED = 16
    UNKNOWN_ENDPOINT = 17
    MALFORMED = 18
    FRAGMENT = 19
    UNSUPPORTED = 20
    SOURCE_INVALID = 21  # leaving a pod with a source that is not one of its addresses


DROP_REASONS = frozenset(r for r in Reason if r >= Reason.POLICY_DENIED)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: Reason
    cookie: int = 0
    entry: PolicyKey | None = None  # the policy-map entry that matched, if any
    peer_identity: int = 0
    cidr_identity: int = 0


def isolation_flag(direction: Direction) -> SubjectFlags:
    """The subject flag that isolates ``direction``."""
    if direction is Direction.INGRESS:
        return SubjectFlags.INGRESS_ISOLATED
    return SubjectFlags.EGRESS_ISOLATED


def lpm_policy(state: MapState, key: PolicyKey) -> tuple[PolicyKey, int] | None:
    """Longest-prefix match of a fully specified ``key`` against ``state.policy``.

    Entries are (subject, peer, direction, named) exact, then protocol (ANY = prefix stops
    before the protocol), then the leading ``port_bits`` bits of the 16-bit port.
    """
    best: tuple[PolicyKey, int] | None = None
    best_len = -1
    # Candidates: the any-protocol entry and one prefix per port_bits value. This mirrors the
    # LPM trie exactly while staying O(17) dict probes.
    cands = [PolicyKey(key.subject, key.peer, key.direction, Protocol.ANY, 0, 0, key.named)]
    if key.protocol != Protocol.ANY:
        for bits in range(17):
            mask = ((0xFFFF << (16 - bits)) & 0xFFFF) if bits else 0
            cands.append(
                PolicyKey(
                    key.subject,
                    key.peer,
                    key.direction,
                    key.protocol,
                    key.port & mask,
                    bits,
                    key.named,
                )
            )
    for c in cands:
        cookie = state.policy.get(c)
        if cookie is None:
            continue
        length = 0 if c.protocol == Protocol.ANY else 8 + c.port_bits
        if length > best_len:
            best, best_len = (c, cookie), length
    return best


def lpm_cidr(state: MapState, addr: IPAddress) -> int:
    best, best_len = 0, -1
    for net, ident in state.cidrs.items():
        if net.version == addr.version and addr in net and net.prefixlen > best_len:
            best, best_len = ident, net.prefixlen
    return best


LINK_LOCAL6 = ipaddress.IPv6Network("fe80::/10")
SOLICITED_NODE6 = ipaddress.IPv6Network("ff02::1:ff00:0/104")
ND_GROUPS6 = frozenset({ipaddress.IPv6Address("ff02::1"), ipaddress.IPv6Address("ff02::2")})
UNSPECIFIED6 = ipaddress.IPv6Address("::")


def nd_in_scope(state: MapState, direction: Direction, dst_addr: IPAddress) -> bool:
    """Step 0a: does ND keep its free pass? Arriving ND (hop limit 255: sent on the link,
    by the node) always does; leaving ND only towards where ND goes."""
    if direction is Direction.INGRESS:
        return True
    if not isinstance(dst_addr, ipaddress.IPv6Address):
        return False
    if dst_addr in LINK_LOCAL6 or dst_addr in SOLICITED_NODE6 or dst_addr in ND_GROUPS6:
        return True
    entry = state.ipcache.get(dst_addr)
    return entry is not None and entry.identity == Reserved.HOST


def link_scoped(addr: IPAddress) -> bool:
    """fe80::/10 or multicast of link-local scope (ffx2::): never forwarded by the node."""
    return isinstance(addr, ipaddress.IPv6Address) and (
        addr in LINK_LOCAL6 or (addr.packed[0] == 0xFF and addr.packed[1] & 0x0F == 0x02)
    )


def source_valid(
    src_addr: IPAddress, own_addrs: Collection[IPAddress], nd: bool, dst_addr: IPAddress
) -> bool:
    """Step 0b: may a pod with ``own_addrs`` send from ``src_addr`` (to ``dst_addr``)?"""
    on_link = isinstance(src_addr, ipaddress.IPv6Address) and (
        src_addr in LINK_LOCAL6 or src_addr == UNSPECIFIED6
    )
    return (on_link and (nd or link_scoped(dst_addr))) or src_addr in own_addrs


def in_service_cidrs(addr: IPAddress, service_cidrs: Collection[IPNetwork]) -> bool:
    """Step S's test: is ``addr`` inside one of the cluster's Service CIDRs?"""
    return any(addr.version == n.version and addr in n for n in service_cidrs)


def decide(
    state: MapState,
    subject: int,
    direction: Direction,
    peer_addr: IPAddress,
    dst_addr: IPAddress,
    protocol: Protocol,
    dport: int,
    *,
    src_addr: IPAddress | None = None,
    own_addrs: Collection[IPAddress] | None = None,
    nd: bool = False,
    service_cidrs: Collection[IPNetwork] = (),
) -> Verdict:
    """The verdict for the first packet of a flow seen at ``subject``'s veth.

    ``src_addr``/``own_addrs``: the packet's source and the addresses the subject may send
    from (steps 0a-0c; None: not checked, as offline, where a pod sends from its own
    address by construction). ``nd``: the packet is ND with hop limit 255.
    ``service_cidrs``: step S (tc's verdict on a first packet to a Service address).
    """
    if nd and not nd_in_scope(state, direction, dst_addr):
        nd = False
    if (
        direction is Direction.EGRESS
        and src_addr is not None
        and own_addrs is not None
        and not source_valid(src_addr, own_addrs, nd, dst_addr)
    ):
        return Verdict(False, Reason.SOURCE_INVALID)
    if nd:
        return Verdict(True, Reason.ICMP_ND)
    flags = state.subjects.get(subject, SubjectFlags.NONE)
    if not flags & isolation_flag(direction):
        return Verdict(True, Reason.NOT_ISOLATED)
    if direction is Direction.EGRESS and in_service_cidrs(dst_addr, service_cidrs):
        return Verdict(True, Reason.SERVICE_DEFERRED)
    entry = state.ipcache.get(peer_addr)
    if entry is not None:
        peer, cidr = entry.identity, entry.cidr_identity
    else:
        peer, cidr = int(Reserved.WORLD), lpm_cidr(state, peer_addr)
    if peer == Reserved.HOST:
        return Verdict(True, Reason.HOST, peer_identity=peer, cidr_identity=cidr)
    port = dport if protocol in PORT_PROTOCOLS else 0
    name_id = 0
    if protocol in PORT_PROTOCOLS:
        name_id = state.named_ports.get(NamedPortKey(dst_addr, protocol, port), 0)
    peers = [peer] + ([cidr] if cidr else []) + [int(ANY)]
    for p in peers:
        hit = lpm_policy(state, PolicyKey(subject, p, direction, protocol, port, 16))
        if hit is None and name_id:
            hit = lpm_policy(state, PolicyKey(subject, p, direction, protocol, name_id, 16, True))
        if hit is not None:
            return Verdict(True, Reason.POLICY, hit[1], hit[0], peer, cidr)
    if flags & SubjectFlags.AUDIT:
        return Verdict(True, Reason.AUDIT, peer_identity=peer, cidr_identity=cidr)
    return Verdict(False, Reason.POLICY_DENIED, peer_identity=peer, cidr_identity=cidr)


def decide_unparsed(state: MapState, subject: int, direction: Direction, reason: Reason) -> Verdict:
    """A packet the classifier cannot judge by ports (malformed, non-first fragment, ...)."""
    flags = state.subjects.get(subject, SubjectFlags.NONE)
    if not flags & isolation_flag(direction):
        return Verdict(True, Reason.NOT_ISOLATED)
    if flags & SubjectFlags.AUDIT:
        return Verdict(True, Reason.AUDIT)
    return Verdict(False, reason)


def opens_fragment_entry(first: Verdict) -> bool:
    """Step F1: does this verdict on a first fragment let its later fragments through?"""
    return first.allowed and first.reason is not Reason.NOT_ISOLATED


def decide_later_fragment(
    state: MapState, subject: int, direction: Direction, first: Verdict | None
) -> Verdict:
    """Step F1. ``first``: the verdict on the same datagram's first fragment at this veth
    and hook within the fragment timeout, or None (not seen, another id, expired)."""
    if first is not None and opens_fragment_entry(first):
        return Verdict(True, Reason.FRAGMENT_OF_ALLOWED)
    return decide_unparsed(state, subject, direction, Reason.FRAGMENT)


def decide_icmp_error(
    state: MapState,
    subject: int,
    direction: Direction,
    peer_addr: IPAddress,
    dst_addr: IPAddress,
    protocol: Protocol,
    quoted_flow: Verdict | None,
) -> Verdict:
    """Step F2. ``quoted_flow``: the verdict on the first packet of the flow the error
    quotes at this veth (still tracked), or None (no such flow)."""
    if quoted_flow is not None and quoted_flow.allowed:
        return Verdict(True, Reason.ICMP_RELATED)
    return decide(state, subject, direction, peer_addr, dst_addr, protocol, 0)
