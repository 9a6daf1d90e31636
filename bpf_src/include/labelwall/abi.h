/* SPDX-License-Identifier: Apache-2.0 */
/*
 * labelwall map ABI: every map key/value struct and every constant shared between the
 * classifier and userspace. Single source of truth; labelwall/datapath/abi.py mirrors it
 * field by field and tests/datapath/test_abi_layout.py checks both against host
 * offsetof/sizeof and against the BTF of the compiled object.
 *
 * Rules (ARCHITECTURE §3): no bitfields, explicit pad fields (always written as zero),
 * _Static_assert on every size, byte order written next to every multi-byte field.
 * A layout change bumps LW_ABI_VERSION and every map name suffix (_v1 -> _v2) so that an
 * old pinned map is never written with new bytes (the loader also refuses a pinned map
 * whose type/key size/value size/max entries differ from what it expects).
 *
 * Decisions recorded here (issue 3):
 *  - Maps are pinned by name (LIBBPF_PIN_BY_NAME) under /sys/fs/bpf, the only pin root
 *    pylibbpf exposes; names are lw_<what>_v<LW_ABI_VERSION>. Programs are pinned by the
 *    loader as lw_from_pod_v1 / lw_to_pod_v1.
 *  - handle_from_pod runs at the host-side veth's tc ingress (packets leaving the pod:
 *    the pod's EGRESS policy); handle_to_pod at its tc egress (packets entering the pod:
 *    INGRESS policy). The subject is lw_endpoints_v1[skb->ifindex]; a miss drops
 *    (LW_REASON_UNKNOWN_ENDPOINT, fail closed).
 *  - Per packet: parse -> conntrack (forward key = established, reverse key = reply,
 *    skipped for a bare TCP SYN; no identity needed, so an established flow costs one
 *    hash lookup) -> endpoint (a miss drops; its value mirrors the subject's flags) ->
 *    at handle_from_pod, source validation (lw_epaddr_v1, source.h: a source that is not
 *    the pod's drops with LW_REASON_SOURCE_INVALID) ->
 *    (ARP / ND with hop limit 255 pass, ND leaving a pod only towards on-link and node
 *    destinations; other non-IP as unparseable) -> the lookup
 *    order of labelwall/policy/lookup.py, with one lw_polgrp_v1 hash lookup per peer instead of trie walks and the named port looked
 *    up only when a group needs it -> on allow, create a conntrack entry (isolated or
 *    not, so replies pass when the other side is isolated). A conntrack hit passes even
 *    on a veth whose endpoint entry is gone (pod teardown): the flow was judged on a
 *    known endpoint when it started. Why this shape: every hash lookup costs ~25-35 ns
 *    on the test machine and an LPM walk grows with the map; the order keeps the worst
 *    new-flow path at a constant number of hash lookups (bench/perf_probe.py).
 *  - Versioning in practice: a map whose key/value layout or meaning changes gets a new
 *    name; maps derived for speed (lw_polgrp_v1, lw_polovf_v1, the endpoint mirror) are
 *    re-derived by the writer at every open, so they never outlive the data they index.
 *  - Identities and ports inside map keys are host byte order except where a field says
 *    "network order" (ports, addresses), which is what makes LPM port prefixes work.
 *  - Address family codes are 4 and 6 (as Python's ipaddress .version), not AF_INET*.
 *    IPv4 addresses occupy addr[0..3], addr[4..15] are zero.
 *  - Non-first fragments carry no L4 header: conntrack cannot admit them (its key needs
 *    ports). One passes when the first fragment of its datagram was allowed at the same
 *    veth and hook (lw_frags_v1, LW_REASON_FRAGMENT_OF_ALLOWED); otherwise only a subject
 *    that is not isolated in that direction (or is in audit mode) lets it through, and
 *    it is dropped (LW_REASON_FRAGMENT). The same holds for truncated/malformed headers
 *    (LW_REASON_MALFORMED) and headers we refuse to walk (LW_REASON_UNSUPPORTED: too
 *    many IPv6 extension headers, VLAN tags).
 *  - ICMP errors (ICMP 3/11/12, ICMPv6 1-4) whose quoted inner header is a packet of a
 *    live conntrack entry of this veth pass (LW_REASON_ICMP_RELATED), as in Cilium and
 *    Calico; any other error (unknown flow, inner header truncated, fragmented, with
 *    IPv6 extension headers, or not addressed to the inner packet's source) is judged
 *    by policy by protocol, as before.
 *  - Audit (LW_SUBJECT_AUDIT): every would-drop of that subject becomes a pass with
 *    reason LW_REASON_AUDIT (and an event); the flow is then tracked like any allow.
 *  - Event rate limit: a per-CPU token bucket (lw_evrate_v1) refilled at
 *    lw_config_v1.events_per_s with capacity events_burst; events over the limit are
 *    counted in lw_evrate.suppressed, never queued.
 *  - Load-time knobs live in the lw_config_v1 array (not const volatile: pylibbpf cannot
 *    rewrite .rodata before load); zero fields mean "use the compiled default".
 */
#ifndef LW_ABI_H
#define LW_ABI_H

#include <linux/types.h>

#define LW_ABI_VERSION 1

/* ---- identities (mirror labelwall/identity/numbers.py) ---- */
#define LW_ID_ANY 0   /* wildcard peer in policy keys */
#define LW_ID_HOST 1  /* the local node: always allowed */
#define LW_ID_WORLD 2 /* any address not in lw_ipcache_v1 */

/* ---- directions, from the subject pod's point of view (mirror cluster.Direction) ---- */
#define LW_DIR_INGRESS 1
#define LW_DIR_EGRESS 2
#define LW_DIR_NAMED 0x80 /* or-ed into lw_policy_key.dir for named-port entries */

/* ---- address families (NOT AF_INET/AF_INET6: see header comment) ---- */
#define LW_FAMILY_IPV4 4
#define LW_FAMILY_IPV6 6

/* ---- IP protocol numbers (mirror cluster.Protocol); 0 = any protocol in policy keys ---- */
#define LW_PROTO_ANY 0
#define LW_PROTO_ICMP 1
#define LW_PROTO_TCP 6
#define LW_PROTO_UDP 17
#define LW_PROTO_ICMPV6 58
#define LW_PROTO_SCTP 132

/* ---- subject flags (lw_subject.flags; mirror mapstate.SubjectFlags) ---- */
#define LW_SUBJECT_INGRESS_ISOLATED 1
#define LW_SUBJECT_EGRESS_ISOLATED 2
#define LW_SUBJECT_AUDIT 4

/* ---- endpoint flags (lw_endpoint.flags) ---- */
#define LW_EP_F_SUBJECT 0x80000000U /* LW_EP_SUBJECT_MASK holds the subject's flags */
#define LW_EP_SUBJECT_MASK 0xffU    /* mirrored lw_subject.flags bits */

/* ---- verdicts (lw_event.verdict) ---- */
#define LW_VERDICT_DROP 0
#define LW_VERDICT_ALLOW 1

/* ---- reasons (mirror lookup.Reason; also the counter index within a direction) ---- */
#define LW_REASON_NOT_ISOLATED 1
#define LW_REASON_HOST 2
#define LW_REASON_POLICY 3
#define LW_REASON_AUDIT 4
#define LW_REASON_CT_ESTABLISHED 5
#define LW_REASON_CT_REPLY 6
#define LW_REASON_NON_IP 7
#define LW_REASON_ICMP_ND 8
#define LW_REASON_FRAGMENT_OF_ALLOWED 9 /* non-first fragment of an allowed first (frag.h) */
#define LW_REASON_ICMP_RELATED 10       /* ICMP/ICMPv6 error about a tracked flow */
#define LW_REASON_SERVICE_DEFERRED 11   /* to a Service address: judged after DNAT (service.h) */
#define LW_REASON_CT_UNPROMOTED 12      /* tracked flow, reply seen, endpoint over its
					 * promotion budget: it stays in lw_ct_new_v1 */
#define LW_REASON_FIRST_DROP 16 /* reasons >= this drop */
#define LW_REASON_POLICY_DENIED 16
#define LW_REASON_UNKNOWN_ENDPOINT 17
#define LW_REASON_MALFORMED 18
#define LW_REASON_FRAGMENT 19
#define LW_REASON_UNSUPPORTED 20
#define LW_REASON_SOURCE_INVALID 21 /* from a pod, source not one of its addresses (source.h) */
#define LW_REASON_MAX 32 /* exclusive bound; counters reserve this many slots per direction */

/* ---- conntrack entry flags (lw_ct_value.flags) ---- */
#define LW_CT_F_REPLY_SEEN 1 /* a packet of the reverse direction was seen */
#define LW_CT_F_CLOSING 2    /* RST, or FIN both ways: lifetime capped at the close timeout */
#define LW_CT_F_FLIPPED 4    /* the first packet's tuple was the key's tuple reversed */
/* A FIN closes one direction only: a half-closed connection (shutdown(SHUT_WR), then
 * the answer streams back) keeps the established lifetime until the other side's FIN. */
#define LW_CT_F_FIN_FWD 8    /* FIN seen going the way the flow's first packet went */
#define LW_CT_F_FIN_REV 16   /* FIN seen going the other way */

/* ---- conntrack timeouts, in seconds ---- */
#define LW_CT_TCP_SYN_TIMEOUT_S 60       /* TCP before the first reply packet */
#define LW_CT_TCP_TIMEOUT_S 21600        /* TCP established: 6 hours, refreshed per packet */
#define LW_CT_TCP_CLOSE_TIMEOUT_S 10     /* after FIN or RST */
#define LW_CT_UDP_TIMEOUT_S 60           /* UDP and SCTP (SCTP chunks are not inspected) */
#define LW_CT_ICMP_TIMEOUT_S 30          /* ICMP/ICMPv6 echo (ports = echo id) */
#define LW_CT_OTHER_TIMEOUT_S 60         /* any other protocol (ports = 0) */
#define LW_CT_REFRESH_S 1                /* rewrite expires_ns at most once per second */

/*
 * Fragment tracking lifetime, in seconds, counted from the first fragment (never
 * refreshed). A sender emits all fragments of a datagram back to back, so on a pod
 * network they arrive within microseconds; a few seconds cover queueing and a slow
 * receiver, while staying far below the time a busy sender takes to reuse an IPv4 id
 * (16 bits per source, destination and protocol) and below the reassembly timeout
 * (Linux ipfrag_time: 30 s), after which the fragments are useless anyway.
 */
#define LW_FRAG_TIMEOUT_S 5

/* ---- config defaults (lw_config fields that are 0 take these) ---- */
#define LW_EVENTS_PER_S_DEFAULT 1000 /* events per second per CPU */
#define LW_EVENTS_BURST_DEFAULT 200  /* bucket capacity, events per CPU */
#define LW_CFG_NO_ALLOW_EVENTS 1     /* lw_config.flags: emit drop/audit events only */
#define LW_CFG_NO_EVENTS 2           /* lw_config.flags: emit no events at all */

/* ---- map sizes (max_entries); the loader checks the sizes it expects ---- */
#ifndef LW_ENDPOINTS_MAX
#define LW_ENDPOINTS_MAX 4096
#endif
#ifndef LW_EPADDRS_MAX
#define LW_EPADDRS_MAX (2 * LW_ENDPOINTS_MAX) /* status.podIPs: one IPv4 + one IPv6 per pod */
#endif
#ifndef LW_SUBJECTS_MAX
#define LW_SUBJECTS_MAX 65536
#endif
#ifndef LW_POLICY_MAX
#define LW_POLICY_MAX 1048576
#endif
#ifndef LW_IPCACHE_MAX
#define LW_IPCACHE_MAX 1048576
#endif
#ifndef LW_POLGRP_MAX
#define LW_POLGRP_MAX 1048576 /* groups <= policy entries; not preallocated */
#endif
#ifndef LW_CIDRS_MAX
#define LW_CIDRS_MAX 65536
#endif
#ifndef LW_PORTS_MAX
#define LW_PORTS_MAX 262144
#endif
#ifndef LW_CT_MAX
#define LW_CT_MAX 262144
#endif
#ifndef LW_CT_NEW_MAX
#define LW_CT_NEW_MAX 65536 /* unreplied flows (conntrack.h); LW_CT_MAX: replied ones */
#endif
#ifndef LW_FRAGS_MAX
#define LW_FRAGS_MAX 8192 /* datagrams in flight whose first fragment was allowed */
#endif
#ifndef LW_EVENTS_BYTES
#define LW_EVENTS_BYTES (256 * 1024) /* ring buffer size: a power of two multiple of 4 KiB */
#endif
#ifndef LW_SVCNETS_MAX
#define LW_SVCNETS_MAX 64 /* the cluster's Service CIDRs (agent config serviceCIDRs) */
#endif
#define LW_COUNTERS_MAX (2 * LW_REASON_MAX) /* index (dir - 1) * LW_REASON_MAX + reason */

/* ---- policy group index (lw_polgrp_v1) ---- */
#define LW_GROUP_SLOTS 8          /* allow entries held inline per (subject, peer, dir) */
#define LW_GROUP_F_OVERFLOW 1     /* more entries than slots: match in lw_polovf_v1 */
#define LW_GROUP_F_NAMED 2        /* the group has named-port entries (look up lw_ports_v1) */
#define LW_SLOT_NAMED 0x80        /* or-ed into lw_rule_slot.bits: port is a name id */

/* ---- LPM prefix lengths, in bits of the key after the u32 prefixlen ---- */
#define LW_POLICY_PREFIX_ANY_PROTO 72 /* subject(32) + peer(32) + dir(8) */
#define LW_POLICY_PREFIX_PROTO 80     /* ... + proto(8); add port_bits (0..16) */
#define LW_POLICY_PREFIX_FULL 96      /* lookups use the full key */
#define LW_CIDR_PREFIX_BASE 32        /* family(8) + pad(24); add the CIDR prefix length */

/*
 * lw_endpoints_v1: host-side veth ifindex (u32, host order) -> lw_endpoint.
 * Node-local, written by the agent when a pod's veth appears.
 * With LW_EP_F_SUBJECT set, flags also carries lw_subjects_v1[identity].flags (in
 * LW_EP_SUBJECT_MASK), mirrored by the writer, so a new flow needs no subjects lookup.
 * The writer writes the mirror right after each subjects write (same place in its
 * ordered plan), at set_endpoint, and re-derives all of it at open; an entry without
 * the bit (e.g. written by an older version) makes the classifier read lw_subjects_v1.
 */
struct lw_endpoint {
	__u32 identity; /* subject identity of the pod behind this veth */
	__u32 flags;    /* LW_EP_F_SUBJECT | mirrored LW_SUBJECT_* bits, or 0 */
};
_Static_assert(sizeof(struct lw_endpoint) == 8, "lw_endpoint");

/* ---- endpoint address flags (lw_epaddr_value.flags) ---- */
#define LW_EPADDR_F_POD 1 /* one of the pod's status.podIPs */

/*
 * lw_epaddr_v1: (host-side veth ifindex, family, address) -> lw_epaddr_value: the
 * addresses the pod behind that veth may send from (source validation, source.h). A hash
 * keyed by the whole triple, so the check is one exact lookup whatever the number of pods,
 * and an address listed for one veth says nothing at another (two pods never vouch for
 * each other). Written by the agent with the endpoint entry: addresses before the endpoint,
 * removed after it. No entry = not this pod's address (the packet is dropped).
 */
struct lw_epaddr_key {
	__u32 ifindex; /* host order: host-side veth ifindex (skb->ifindex) */
	__u8 family;   /* LW_FAMILY_IPV4 / LW_FAMILY_IPV6 */
	__u8 pad[3];   /* zero */
	__u8 addr[16]; /* network order; IPv4 in addr[0..3], rest zero */
};
_Static_assert(sizeof(struct lw_epaddr_key) == 24, "lw_epaddr_key");

struct lw_epaddr_value {
	__u32 flags; /* LW_EPADDR_F_* (presence is what the classifier checks) */
};
_Static_assert(sizeof(struct lw_epaddr_value) == 4, "lw_epaddr_value");

/*
 * lw_subjects_v1: identity (u32, host order) -> lw_subject. No entry = not isolated in
 * either direction and not audited (what lookup.py assumes for a miss).
 */
struct lw_subject {
	__u32 flags; /* LW_SUBJECT_* */
};
_Static_assert(sizeof(struct lw_subject) == 4, "lw_subject");

/*
 * lw_policy_v1 (LPM trie): one allow entry. The trie matches the first prefixlen bits
 * after the prefixlen field, so the fields are ordered from always-exact to wildcardable:
 * subject, peer, dir are always exact (72 bits); proto adds 8 bits (prefix 72 = any
 * protocol); the port in network order adds 0..16 leading bits, so a port range
 * decomposes into a few prefix entries. subject/peer are host order (matched exactly,
 * so their byte order is irrelevant to the trie, but userspace must agree).
 */
struct lw_policy_key {
	__u32 prefixlen; /* 72 for protocol ANY, 80 + port_bits otherwise; lookups use 96 */
	__u32 subject;   /* host order */
	__u32 peer;      /* host order; LW_ID_ANY = any peer */
	__u8 dir;        /* LW_DIR_INGRESS/EGRESS, | LW_DIR_NAMED for named-port entries */
	__u8 proto;      /* LW_PROTO_* */
	__be16 port;     /* network order; a name id (network order) for named entries */
};
_Static_assert(sizeof(struct lw_policy_key) == 16, "lw_policy_key");

struct lw_policy_value {
	__u32 cookie; /* rule cookie chosen by the compiler; reported in events */
};
_Static_assert(sizeof(struct lw_policy_value) == 4, "lw_policy_value");

/*
 * lw_polgrp_v1 (hash): the same allow entries as lw_policy_v1, grouped by (subject, peer,
 * dir) so that one hash lookup per peer replaces the port and named-port trie lookups.
 * Why: an LPM trie lookup walks ~log2(entries) nodes (its cost grows with the cluster),
 * a hash lookup does not. lw_policy_v1 stays complete and authoritative (the reader and
 * older programs use it); this index is derived from it by the writer, which keeps every
 * group's value a superset/subset in the same order as the trie (labelwall/datapath/
 * writer.py). A group with more than LW_GROUP_SLOTS entries has LW_GROUP_F_OVERFLOW and
 * no slots: the classifier then matches in lw_polovf_v1 exactly as lookup.py says. That
 * trie (lw_policy_key/value) holds only overflowing groups' entries, so its depth
 * follows how many entries overflow, not the size of the cluster.
 * No entry = the subject allows nothing from/to this peer in this direction.
 */
struct lw_group_key {
	__u32 subject; /* host order */
	__u32 peer;    /* host order; LW_ID_ANY = any peer */
	__u8 dir;      /* LW_DIR_INGRESS/EGRESS (never | LW_DIR_NAMED) */
	__u8 pad[3];   /* zero */
};
_Static_assert(sizeof(struct lw_group_key) == 12, "lw_group_key");

/*
 * One allow entry of a group, i.e. one lw_policy_v1 entry without its (subject, peer, dir).
 * It matches (proto, port) when proto is LW_PROTO_ANY, or proto is equal and the leading
 * `bits` bits of port are equal: exactly the trie's prefix match.
 */
struct lw_rule_slot {
	__u8 proto;   /* LW_PROTO_*; LW_PROTO_ANY = any protocol (then bits and port are 0) */
	__u8 bits;    /* leading port bits that must match, 0..16; | LW_SLOT_NAMED */
	__u16 port;   /* HOST order (unlike the trie key): a port or a named-port id */
	__u32 cookie; /* the entry's rule cookie */
};
_Static_assert(sizeof(struct lw_rule_slot) == 8, "lw_rule_slot");

/*
 * Slots are ordered: port entries first, then named entries; within each, longest prefix
 * first (any-protocol last). The first matching port slot is therefore the trie's longest
 * prefix match, and its cookie is the one the trie would report.
 */
struct lw_group {
	__u32 flags; /* LW_GROUP_F_* */
	__u32 count; /* slots in use, 0..LW_GROUP_SLOTS (0 with LW_GROUP_F_OVERFLOW) */
	struct lw_rule_slot slots[LW_GROUP_SLOTS];
};
_Static_assert(sizeof(struct lw_group) == 72, "lw_group");

/*
 * lw_ipcache_v1 key (also the address part of other keys): exact pod/node address.
 * A hash, not a trie: measured ~10 ns at 1M entries where a trie costs ~100 ns.
 */
struct lw_ip_key {
	__u8 family;  /* LW_FAMILY_IPV4 / LW_FAMILY_IPV6 */
	__u8 pad[3];  /* zero */
	__u8 addr[16]; /* network order; IPv4 in addr[0..3], rest zero */
};
_Static_assert(sizeof(struct lw_ip_key) == 20, "lw_ip_key");

struct lw_ipcache_value {
	__u32 identity;      /* host order */
	__u32 cidr_identity; /* longest policy CIDR containing the address, 0 if none */
};
_Static_assert(sizeof(struct lw_ipcache_value) == 8, "lw_ipcache_value");

/*
 * lw_cidrs_v1 (LPM trie): ipBlock prefixes, consulted only on an ipcache miss.
 * family + pad are always exact (32 bits), then the CIDR's prefix bits.
 */
struct lw_cidr_key {
	__u32 prefixlen; /* LW_CIDR_PREFIX_BASE + CIDR prefix length */
	__u8 family;     /* LW_FAMILY_* */
	__u8 pad[3];     /* zero */
	__u8 addr[16];   /* network order, host bits zero */
};
_Static_assert(sizeof(struct lw_cidr_key) == 24, "lw_cidr_key");

struct lw_cidr_value {
	__u32 cidr_identity; /* host order */
};
_Static_assert(sizeof(struct lw_cidr_value) == 4, "lw_cidr_value");

/*
 * lw_ports_v1: (destination pod address, protocol, port) -> name id, for named ports
 * resolved per pod (two pods of one identity may name different numbers).
 */
struct lw_port_key {
	__u8 family;   /* LW_FAMILY_* */
	__u8 proto;    /* LW_PROTO_TCP/UDP/SCTP */
	__be16 port;   /* network order */
	__u8 addr[16]; /* network order; IPv4 in addr[0..3] */
};
_Static_assert(sizeof(struct lw_port_key) == 20, "lw_port_key");

struct lw_port_value {
	__u32 name_id; /* host order; the port field of LW_DIR_NAMED policy keys */
};
_Static_assert(sizeof(struct lw_port_value) == 4, "lw_port_value");

/*
 * lw_ct_v3 (LRU hash): one entry per flow and host veth, found by both directions of that
 * veth with one lookup. The key is the flow's tuple in canonical order (conntrack.h
 * lw_ct_flipped: (saddr, sport) <= (daddr, dport)) with the direction of the hook that
 * would see it that way: the first packet's tuple and hook direction if already
 * canonical, else both reversed (addresses and ports swapped, opposite direction) and
 * LW_CT_F_FLIPPED set. A later packet whose orientation matches the first packet's is
 * "established", the other orientation "reply". ICMP echo uses the echo id as both ports;
 * protocols without ports use 0.
 * ifindex is the host-side veth (skb->ifindex, the same at both hooks of one pod), so an
 * entry made at one pod's veth is only ever found at that same veth: a pod that spoofs a
 * peer's address (B:80 -> X) cannot create the "reply" that would let X reach B.
 * v3: v2 had no ifindex (the spoof above passed); v2 keyed by canonical order where v1
 * keyed by first-packet orientation. A layout or meaning change renames the map, so an
 * older map is never read as this one: flows tracked by an older program are judged by
 * policy once more after an upgrade.
 */
struct lw_ct_key {
	__u8 family;    /* LW_FAMILY_* */
	__u8 proto;     /* IP protocol number */
	__u8 dir;       /* LW_DIR_* of the hook that created the entry */
	__u8 pad;       /* zero */
	__be16 sport;   /* network order */
	__be16 dport;   /* network order */
	__u8 saddr[16]; /* network order */
	__u8 daddr[16]; /* network order */
	__u32 ifindex;  /* host order: host-side veth ifindex of the hook (skb->ifindex) */
};
_Static_assert(sizeof(struct lw_ct_key) == 44, "lw_ct_key");

struct lw_ct_value {
	__u64 expires_ns; /* deadline, bpf_ktime_get_coarse_ns() (CLOCK_MONOTONIC_COARSE, ns) */
	__u32 flags;      /* LW_CT_F_* */
	__u32 pad;        /* zero */
};
_Static_assert(sizeof(struct lw_ct_value) == 16, "lw_ct_value");

/*
 * lw_frags_v1 (LRU hash): one fragmented datagram whose first fragment (offset 0, more
 * fragments set) was allowed at this veth and hook: its later fragments (which carry no
 * L4 header, so neither policy nor conntrack can judge them) pass with
 * LW_REASON_FRAGMENT_OF_ALLOWED until expires_ns. The key is what identifies a datagram
 * for reassembly (RFC 791: source, destination, protocol, id; RFC 8200: source,
 * destination, identification) plus the veth and hook direction, so an entry admits only
 * the fragments of that one datagram at the veth that judged its first fragment.
 * id: the IPv4 identification (16 bits, zero-extended) or the IPv6 fragment header's
 * identification (32 bits), host order. proto: the IPv4 protocol, or the IPv6 fragment
 * header's next header (the same in every fragment of one datagram).
 * Why this bounds one pod (ARCHITECTURE §5): entries are created only for first
 * fragments that were allowed (never for a denied or a non-first fragment), only where
 * they are needed (not when the direction is not isolated: later fragments pass there
 * anyway), they live LW_FRAG_TIMEOUT_S at most, and the table is its own map, so a
 * fragment flood can at worst evict in-flight entries (those datagrams lose their later
 * fragments and are retried like any lost datagram); it cannot admit a fragment of a
 * denied datagram, reach another veth, or evict a conntrack entry.
 */
struct lw_frag_key {
	__u8 family;    /* LW_FAMILY_* */
	__u8 proto;     /* IPv4 protocol / IPv6 fragment header next header */
	__u8 dir;       /* LW_DIR_* of the hook */
	__u8 pad;       /* zero */
	__u32 id;       /* host order: IPv4 id (16 bits) or IPv6 fragment identification */
	__u8 saddr[16]; /* network order */
	__u8 daddr[16]; /* network order */
	__u32 ifindex;  /* host order: host-side veth ifindex of the hook (skb->ifindex) */
};
_Static_assert(sizeof(struct lw_frag_key) == 44, "lw_frag_key");

struct lw_frag_value {
	__u64 expires_ns; /* deadline, bpf_ktime_get_coarse_ns() (CLOCK_MONOTONIC_COARSE, ns) */
};
_Static_assert(sizeof(struct lw_frag_value) == 8, "lw_frag_value");

/*
 * lw_svcnet_v1 (LPM trie): the cluster's Service CIDRs (agent config serviceCIDRs), key
 * struct lw_cidr_key (family + pad exact, then the prefix). A new flow from an
 * egress-isolated pod to an address inside one is not judged at tc but after kube-proxy's
 * DNAT, by the netfilter program (service.h, netfilter.h). The agent writes entries only
 * while that program's links are attached and removes them before detaching it: an empty
 * map means "judge at tc" (older kernels, fail closed).
 */
struct lw_svcnet_value {
	__u32 flags; /* zero (presence is what the classifier checks) */
};
_Static_assert(sizeof(struct lw_svcnet_value) == 4, "lw_svcnet_value");

/* lw_counters_v1 (per-CPU array): index (dir - 1) * LW_REASON_MAX + reason. */
struct lw_counter {
	__u64 packets;
	__u64 bytes; /* skb->len, L2 included */
};
_Static_assert(sizeof(struct lw_counter) == 16, "lw_counter");

/* lw_events_v1 (ring buffer) record: one verdict, for drops and for new-flow allows, and
 * for the first reply of a TCP connection (reason CT_REPLY, SYN+ACK, subject 0). */
struct lw_event {
	__u64 ts_ns;         /* bpf_ktime_get_coarse_ns(): CLOCK_MONOTONIC, jiffy resolution */
	__u32 subject;       /* host order: identity of the pod behind the veth */
	__u32 peer;          /* host order: peer identity (0 if not looked up) */
	__u32 cidr_identity; /* host order */
	__u32 cookie;        /* matching policy entry's cookie, 0 if none */
	__u32 ifindex;       /* host order */
	__u8 family;         /* LW_FAMILY_*, 0 for non-IP */
	__u8 proto;          /* IP protocol */
	__u8 dir;            /* LW_DIR_* of the hook */
	__u8 verdict;        /* LW_VERDICT_* */
	__u8 reason;         /* LW_REASON_* */
	__u8 tcp_flags;      /* TCP flags byte of the packet, 0 for other protocols (was pad) */
	__be16 sport;        /* network order */
	__be16 dport;        /* network order */
	__u8 icmp_type;      /* ICMP/ICMPv6 type; 255 when none was read (not ICMP, fragment) */
	__u8 icmp_code;      /* ICMP/ICMPv6 code, 0 when none was read (both were pad2[2]) */
	__u8 saddr[16];      /* network order */
	__u8 daddr[16];      /* network order */
};
_Static_assert(sizeof(struct lw_event) == 72, "lw_event");

/* lw_evrate_v1 (per-CPU array, 1 entry): event token bucket and its losses. */
struct lw_evrate {
	__u64 last_ns;    /* last refill time, bpf_ktime_get_coarse_ns() */
	__u64 tokens;     /* in nano-events: 1 event = 1e9 */
	__u64 suppressed; /* events refused by the bucket */
	__u64 lost;       /* events refused by a full ring buffer */
};
_Static_assert(sizeof(struct lw_evrate) == 32, "lw_evrate");

/*
 * lw_clock_v1 (per-CPU array, 1 entry): the last CLOCK_MONOTONIC_COARSE reading and the
 * jiffies value it was taken at. The coarse clock only moves on a tick, so while jiffies
 * is unchanged the cached reading is still the clock's value: a packet then pays a
 * jiffies read instead of bpf_ktime_get_coarse_ns() (~11 ns here). Internal, but
 * mirrored like every map value.
 */
struct lw_clock {
	__u64 jiffies; /* bpf_jiffies64() when ns was read */
	__u64 ns;      /* bpf_ktime_get_coarse_ns() at that jiffy */
};
_Static_assert(sizeof(struct lw_clock) == 16, "lw_clock");

/* lw_config_v1 (array, 1 entry): runtime knobs written by the loader. */
struct lw_config {
	__u32 events_per_s; /* per CPU; 0 = LW_EVENTS_PER_S_DEFAULT */
	__u32 events_burst; /* per CPU; 0 = LW_EVENTS_BURST_DEFAULT */
	__u32 flags;        /* LW_CFG_* */
	__u32 pad;          /* zero */
};
_Static_assert(sizeof(struct lw_config) == 16, "lw_config");

/*
 * Conntrack promotion budget (conntrack.h): how many flows one endpoint (host veth) may
 * move from lw_ct_new_v1 to lw_ct_v3 per second, and how many at once.
 */
#define LW_CT_PROMOTE_PER_S_DEFAULT 1000
#define LW_CT_PROMOTE_BURST_DEFAULT 2000
#define LW_CT_NANO_TOKENS 1000000000ULL /* token units per promotion */

/*
 * lw_ct_new_v1 (LRU hash): the same key and value as lw_ct_v3, for flows whose reply has
 * not been seen yet (or whose endpoint was over its promotion budget when it was).
 */

/* lw_ctbudget_v1 (LRU hash): host veth ifindex (u32, host order) -> its token bucket. */
struct lw_ct_budget {
	__u64 last_ns; /* last refill, bpf_ktime_get_coarse_ns() */
	__u64 tokens;  /* in LW_CT_NANO_TOKENS units */
};
_Static_assert(sizeof(struct lw_ct_budget) == 16, "lw_ct_budget");

/* lw_ctcfg_v1 (array, 1 entry): the budget's knobs, written by the loader; 0 = default. */
struct lw_ct_config {
	__u32 promote_per_s; /* per endpoint; 0 = LW_CT_PROMOTE_PER_S_DEFAULT */
	__u32 promote_burst; /* per endpoint; 0 = LW_CT_PROMOTE_BURST_DEFAULT */
};
_Static_assert(sizeof(struct lw_ct_config) == 8, "lw_ct_config");

/*
 * lw_rulecnt_v1 (per-CPU hash, issue 12): packets and bytes judged by each rule, keyed by
 * the rule cookie of the policy entry that allowed them (LW_REASON_POLICY) and the hook
 * direction. Counts every verdict the rule made, never sampled (unlike lw_events_v1);
 * packets that pass through conntrack afterwards are in lw_counters_v1 (CT_*), not here.
 * Bounded by the rules on the node, never by pod pairs. Not preallocated: a key is made by
 * the first packet of its rule. If the map is full, the packet is counted in
 * lw_counters_v1 at LW_COUNTER_RULE_FULL of its direction instead (nothing is lost).
 */
#ifndef LW_RULE_COUNTERS_MAX
#define LW_RULE_COUNTERS_MAX 16384
#endif
#define LW_COUNTER_RULE_FULL 31 /* lw_counters_v1 slot within a direction (not a reason) */

struct lw_rule_key {
	__u32 cookie; /* host order: lw_policy_value.cookie of the entry that allowed */
	__u8 dir;     /* LW_DIR_* of the hook */
	__u8 pad[3];  /* zero */
};
_Static_assert(sizeof(struct lw_rule_key) == 8, "lw_rule_key");

#endif /* LW_ABI_H */
