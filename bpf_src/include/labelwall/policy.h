/* SPDX-License-Identifier: Apache-2.0 */
/* The policy decision for a new flow, in exactly the order of labelwall/policy/lookup.py. */
#ifndef LW_POLICY_H
#define LW_POLICY_H

#include "abi.h"
#include "identity.h"
#include "maps.h"
#include "parse.h"

/* A verdict and what it was based on (internal; copied into lw_event). */
struct lw_decision {
	__u8 verdict; /* LW_VERDICT_* */
	__u8 reason;  /* LW_REASON_* */
	__u32 cookie; /* matching policy entry's cookie */
	__u32 peer;   /* peer identity, 0 if not looked up */
	__u32 cidr_identity;
};

/* Longest-prefix match among the entries of overflowing groups (lw_polovf_v1). */
static __always_inline int lw_policy_match(__u32 subject, __u32 peer, __u8 dir, __u8 proto,
					   __be16 port, __u32 *cookie)
{
	struct lw_policy_key key = {
		.prefixlen = LW_POLICY_PREFIX_FULL,
		.subject = subject,
		.peer = peer,
		.dir = dir,
		.proto = proto,
		.port = port,
	};
	const struct lw_policy_value *v = bpf_map_lookup_elem(&lw_polovf_v1, &key);

	if (!v)
		return 0;
	*cookie = v->cookie;
	return 1;
}

static __always_inline __be16 lw_named_port(const struct lw_packet *pkt)
{
	/* lookup.py step 4: keyed by the packet's destination (the subject for ingress,
	 * the peer for egress), i.e. always daddr. */
	struct lw_port_key key = {
		.family = pkt->t.family,
		.proto = pkt->t.proto,
		.port = pkt->t.dport,
	};
	const struct lw_port_value *v;

	__builtin_memcpy(key.addr, pkt->t.daddr, 16);
	v = bpf_map_lookup_elem(&lw_ports_v1, &key);
	return v ? bpf_htons((__u16)v->name_id) : 0;
}

/* Does slot s match (proto, port)? The trie's prefix rule; port in host order. */
static __always_inline int lw_slot_match(const struct lw_rule_slot *s, __u8 proto, __u16 port)
{
	__u32 bits = s->bits & ~LW_SLOT_NAMED;

	if (s->proto == LW_PROTO_ANY)
		return 1;
	if (s->proto != proto)
		return 0;
	return bits == 0 || (((__u32)port ^ s->port) >> (16 - (bits & 31))) == 0;
}

/*
 * The port lookup, then (only if a name id is needed and exists) the named-port lookup
 * of lookup.py step 5 over a group's slots. Slots are ordered longest prefix first, port
 * slots before named ones, so the first port hit (else the first named hit) carries the
 * cookie the trie would return. The name id is resolved lazily (lw_ports_v1 lookup only
 * when the group has named slots and no port slot matched): same verdict, fewer lookups.
 */
static __always_inline int lw_group_match(const struct lw_group *g, const struct lw_packet *pkt,
					  __u16 port, __s32 *name_id, __u32 *cookie)
{
	__u32 count = g->count;
	__u32 i;

	for (i = 0; i < LW_GROUP_SLOTS; i++) {
		const struct lw_rule_slot *s = &g->slots[i];

		if (i >= count || (s->bits & LW_SLOT_NAMED))
			break;
		if (lw_slot_match(s, pkt->t.proto, port)) {
			*cookie = s->cookie;
			return 1;
		}
	}
	if (i >= count)
		return 0;
	if (*name_id < 0)
		*name_id = bpf_ntohs(lw_named_port(pkt));
	if (!*name_id)
		return 0;
	for (; i < LW_GROUP_SLOTS; i++) {
		const struct lw_rule_slot *s = &g->slots[i];

		if (i >= count)
			break;
		if (lw_slot_match(s, pkt->t.proto, (__u16)*name_id)) {
			*cookie = s->cookie;
			return 1;
		}
	}
	return 0;
}

/* lookup.py step 5 for one peer: one hash lookup, then slots or (overflow) the trie. */
static __always_inline int lw_policy_match_peer(__u32 subject, __u32 peer, __u8 dir,
						const struct lw_packet *pkt, __be16 port,
						__s32 *name_id, __u32 *cookie)
{
	struct lw_group_key key = {
		.subject = subject,
		.peer = peer,
		.dir = dir,
		.pad = { 0, 0, 0 },
	};
	const struct lw_group *g = bpf_map_lookup_elem(&lw_polgrp_v1, &key);

	if (!g)
		return 0;
	if (!(g->flags & LW_GROUP_F_OVERFLOW))
		return lw_group_match(g, pkt, bpf_ntohs(port), name_id, cookie);
	if (lw_policy_match(subject, peer, dir, pkt->t.proto, port, cookie))
		return 1;
	if (!(g->flags & LW_GROUP_F_NAMED))
		return 0;
	if (*name_id < 0)
		*name_id = bpf_ntohs(lw_named_port(pkt));
	return *name_id && lw_policy_match(subject, peer, dir | LW_DIR_NAMED, pkt->t.proto,
					   bpf_htons((__u16)*name_id), cookie);
}

static __always_inline void lw_allow(struct lw_decision *d, __u8 reason)
{
	d->verdict = LW_VERDICT_ALLOW;
	d->reason = reason;
}

/*
 * Steps 1-6 of lookup.py; flags are the subject's (step 1, from the endpoint's mirror).
 * At most 1 + 1 + 1 + 3 x 1 hash lookups (ipcache, cidr trie on a miss, named port,
 * groups), plus 3 x 2 trie lookups for groups too large for their slots. The named-port id (step 4) is only
 * looked up when a peer's group has named entries and its port entries did not match;
 * lookup.py computes it up front, which decides nothing by itself.
 */
static __always_inline void lw_policy_decide(const struct lw_packet *pkt, __u32 subject,
					     __u32 flags, __u8 dir, struct lw_decision *d)
{
	const __u8 *peer_addr = dir == LW_DIR_EGRESS ? pkt->t.daddr : pkt->t.saddr;
	__be16 port = pkt->has_ports ? pkt->t.dport : 0;
	__s32 name_id = pkt->has_ports ? -1 : 0; /* -1: not looked up yet */

	if (!(flags & lw_isolation_flag(dir))) {
		lw_allow(d, LW_REASON_NOT_ISOLATED);
		return;
	}
	lw_peer_identity(pkt->t.family, peer_addr, &d->peer, &d->cidr_identity);
	if (d->peer == LW_ID_HOST) {
		lw_allow(d, LW_REASON_HOST);
		return;
	}
	if (lw_policy_match_peer(subject, d->peer, dir, pkt, port, &name_id, &d->cookie) ||
	    (d->cidr_identity && lw_policy_match_peer(subject, d->cidr_identity, dir, pkt, port,
						      &name_id, &d->cookie)) ||
	    lw_policy_match_peer(subject, LW_ID_ANY, dir, pkt, port, &name_id, &d->cookie)) {
		lw_allow(d, LW_REASON_POLICY);
		return;
	}
	if (flags & LW_SUBJECT_AUDIT) {
		lw_allow(d, LW_REASON_AUDIT);
		return;
	}
	d->verdict = LW_VERDICT_DROP;
	d->reason = LW_REASON_POLICY_DENIED;
}

/*
 * A packet we could not parse (malformed, non-first fragment, unsupported header chain):
 * it passes only a subject that is not isolated in this direction, or one in audit mode.
 */
static __always_inline void lw_unparsed_decide(__u32 flags, __u8 dir, __u8 reason,
					       struct lw_decision *d)
{
	if (!(flags & lw_isolation_flag(dir))) {
		lw_allow(d, LW_REASON_NOT_ISOLATED);
		return;
	}
	if (flags & LW_SUBJECT_AUDIT) {
		lw_allow(d, LW_REASON_AUDIT);
		return;
	}
	d->verdict = LW_VERDICT_DROP;
	d->reason = reason;
}

#endif /* LW_POLICY_H */
