/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Connection tracking: established/reply lookups in front of policy, entries for allows.
 *
 * Two tables, so that one pod cannot flood out another pod's connections (issue 11):
 *  - lw_ct_new_v1 (LW_CT_NEW_MAX): every allowed first packet creates its entry here.
 *  - lw_ct_v3 (LW_CT_MAX): a flow moves here ("promotion") when a packet of the reverse
 *    direction is seen (LW_CT_F_REPLY_SEEN: Linux's "seen reply", the step before
 *    ASSURED), if the endpoint it belongs to (the host veth of the hook) still has
 *    promotion budget: a token bucket per ifindex (lw_ctbudget_v1, rate and burst from
 *    lw_ctcfg_v1, i.e. the agent config). Over budget, the packet passes and is counted as
 *    LW_REASON_CT_UNPROMOTED and the flow keeps working from lw_ct_new_v1 while it lives
 *    there; every later packet of it tries again, so it moves once the bucket refills.
 * Lookup order: lw_ct_v3 first, so an established flow still costs one hash lookup; then
 * lw_ct_new_v1 (unreplied flows, the slow path). A bare TCP SYN (SYN without ACK) skips
 * lw_ct_new_v1: it starts a connection, so the new-flow path keeps one conntrack lookup
 * (a retransmitted SYN is judged again and writes the same entry again).
 * What this bounds: a pod sending new flows as fast as it can evicts only unreplied
 * entries (LRU of lw_ct_new_v1): what such an eviction costs is that the flow's next
 * packet is judged by policy again, and a reply that only conntrack admitted is refused
 * (the flow's own retries make a new entry). Entries with a reply seen, i.e. every
 * working connection, live in lw_ct_v3, which one endpoint can fill at most at its
 * promotion rate (burst + rate x seconds); with default sizes (262,144 entries,
 * 1,000/s, burst 2,000) one endpoint needs over four minutes of answered new flows to
 * cycle it, and a flood that nobody answers never reaches it.
 * Not done, and why: "do not track a subject isolated in neither direction" (its packets
 * all pass as NOT_ISOLATED anyway, and related ICMP errors and later fragments of such a
 * direction pass without an entry too). It would make a connection opened before a
 * policy isolates the pod lose its replies the moment the policy lands (an ingress
 * policy on a client with open connections to a database: the answers are refused);
 * Linux conntrack, Cilium and Calico all keep those. With the split tables above such a
 * pod's flood only churns lw_ct_new_v1, so tracking it costs no one else a connection.
 * The bucket is not per CPU: two CPUs promoting for one veth at the same instant may
 * overshoot it by a promotion each (no atomics on the slow path; bounded by CPUs).
 */
#ifndef LW_CONNTRACK_H
#define LW_CONNTRACK_H

#include "abi.h"
#include "maps.h"
#include "parse.h"

#define LW_NS_PER_S 1000000000ULL
#define LW_CT_TCP_SYN 0x02
#define LW_CT_TCP_ACK 0x10

static __always_inline __u8 lw_dir_opposite(__u8 dir)
{
	return dir == LW_DIR_INGRESS ? LW_DIR_EGRESS : LW_DIR_INGRESS;
}

/* Lifetime in ns of an entry given its flags and this packet's protocol. */
static __always_inline __u64 lw_ct_timeout_ns(__u8 proto, __u32 flags)
{
	switch (proto) {
	case IPPROTO_TCP:
		if (flags & LW_CT_F_CLOSING)
			return LW_CT_TCP_CLOSE_TIMEOUT_S * LW_NS_PER_S;
		if (!(flags & LW_CT_F_REPLY_SEEN))
			return LW_CT_TCP_SYN_TIMEOUT_S * LW_NS_PER_S;
		return LW_CT_TCP_TIMEOUT_S * LW_NS_PER_S;
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		return LW_CT_UDP_TIMEOUT_S * LW_NS_PER_S;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		return LW_CT_ICMP_TIMEOUT_S * LW_NS_PER_S;
	default:
		return LW_CT_OTHER_TIMEOUT_S * LW_NS_PER_S;
	}
}

/*
 * 1 when the packet's tuple is not in canonical order. Canonical: (saddr, sport) <=
 * (daddr, dport) in an arbitrary but fixed total order (address bytes read as two host
 * u64 words, then ports), so a packet and its reply always agree on one of the two.
 */
static __always_inline __u32 lw_ct_flipped(const struct lw_packet *pkt)
{
	__u64 s0, s1, d0, d1;

	__builtin_memcpy(&s0, &pkt->t.saddr[0], 8);
	__builtin_memcpy(&s1, &pkt->t.saddr[8], 8);
	__builtin_memcpy(&d0, &pkt->t.daddr[0], 8);
	__builtin_memcpy(&d1, &pkt->t.daddr[8], 8);
	if (s0 != d0)
		return s0 > d0;
	if (s1 != d1)
		return s1 > d1;
	return pkt->t.sport > pkt->t.dport;
}

/* The tuple reversed, as seen from the other end, with the opposite hook direction. */
static __always_inline void lw_ct_key_reverse(struct lw_ct_key *key, const struct lw_packet *pkt,
					      __u8 dir)
{
	key->ifindex = pkt->t.ifindex;
	key->family = pkt->t.family;
	key->proto = pkt->t.proto;
	key->dir = lw_dir_opposite(dir);
	key->pad = 0;
	key->sport = pkt->t.dport;
	key->dport = pkt->t.sport;
	__builtin_memcpy(key->saddr, pkt->t.daddr, 16);
	__builtin_memcpy(key->daddr, pkt->t.saddr, 16);
}

/*
 * The one conntrack key of this packet's flow (see lw_ct_key in abi.h): the packet's own
 * tuple and hook direction when canonical (no copy: the tuple was parsed in key layout),
 * else both reversed into *buf. *flipped says which. ifindex: the host veth the hook runs
 * on, so an entry is only ever found at the veth that made it.
 */
static __always_inline const struct lw_ct_key *lw_ct_key_of(struct lw_packet *pkt, __u8 dir,
							    __u32 ifindex, struct lw_ct_key *buf,
							    __u32 *flipped)
{
	pkt->t.ifindex = ifindex;
	pkt->t.dir = dir;
	pkt->t.pad = 0;
	*flipped = lw_ct_flipped(pkt);
	if (!*flipped)
		return &pkt->t;
	lw_ct_key_reverse(buf, pkt, dir);
	return buf;
}

/* The flags a TCP packet adds: RST closes; a FIN closes its direction, both close. */
static __always_inline __u32 lw_ct_close_flags(__u32 flags, const struct lw_packet *pkt,
					       __u32 reverse)
{
	if (pkt->tcp_flags & LW_TCP_RST)
		flags |= LW_CT_F_CLOSING;
	if (pkt->tcp_flags & LW_TCP_FIN)
		flags |= reverse ? LW_CT_F_FIN_REV : LW_CT_F_FIN_FWD;
	if ((flags & (LW_CT_F_FIN_FWD | LW_CT_F_FIN_REV)) == (LW_CT_F_FIN_FWD | LW_CT_F_FIN_REV))
		flags |= LW_CT_F_CLOSING;
	return flags;
}

/* Extend (or, once closing, cap) a live entry's lifetime; writes at most once a second. */
static __always_inline void lw_ct_touch(struct lw_ct_value *v, const struct lw_packet *pkt,
					__u32 add_flags, __u32 reverse, __u64 now)
{
	__u32 flags = lw_ct_close_flags(v->flags | add_flags, pkt, reverse);
	__u64 expires;

	expires = now + lw_ct_timeout_ns(pkt->t.proto, flags);
	if (flags != v->flags) {
		v->flags = flags;
		/* closing only ever shortens the lifetime */
		if (!(flags & LW_CT_F_CLOSING) || expires < v->expires_ns)
			v->expires_ns = expires;
	} else if (!(flags & LW_CT_F_CLOSING) &&
		   expires > v->expires_ns + LW_CT_REFRESH_S * LW_NS_PER_S) {
		v->expires_ns = expires;
	}
}

/* 1 when the endpoint behind ifindex may promote one more flow now (its token bucket). */
static __always_inline int lw_ct_promote_budget(__u32 ifindex, __u64 now)
{
	__u32 zero = 0;
	const struct lw_ct_config *cfg = bpf_map_lookup_elem(&lw_ctcfg_v1, &zero);
	__u64 rate = cfg && cfg->promote_per_s ? cfg->promote_per_s : LW_CT_PROMOTE_PER_S_DEFAULT;
	__u64 cap = (cfg && cfg->promote_burst ? cfg->promote_burst : LW_CT_PROMOTE_BURST_DEFAULT) *
		    LW_CT_NANO_TOKENS;
	struct lw_ct_budget *b = bpf_map_lookup_elem(&lw_ctbudget_v1, &ifindex);
	__u64 elapsed;

	if (!b) {
		/* a veth seen for the first time starts with a full bucket, less this one */
		struct lw_ct_budget fresh = { .last_ns = now, .tokens = cap - LW_CT_NANO_TOKENS };

		bpf_map_update_elem(&lw_ctbudget_v1, &ifindex, &fresh, BPF_NOEXIST);
		return 1;
	}
	elapsed = now - b->last_ns;
	b->last_ns = now;
	/* tokens += elapsed_ns * rate nano-tokens, capped (compare first: no overflow) */
	if (elapsed >= cap / rate || b->tokens + elapsed * rate >= cap)
		b->tokens = cap;
	else
		b->tokens += elapsed * rate;
	if (b->tokens < LW_CT_NANO_TOKENS)
		return 0;
	b->tokens -= LW_CT_NANO_TOKENS;
	return 1;
}

/*
 * A hit in lw_ct_new_v1: touch it; once a reply was seen, move it to lw_ct_v3 if the
 * endpoint has budget (else LW_REASON_CT_UNPROMOTED: it passes, and stays here).
 */
static __always_inline __u8 lw_ct_lookup_new(const struct lw_ct_key *key, __u32 flipped,
					     struct lw_packet *pkt, __u64 now)
{
	struct lw_ct_value *v = bpf_map_lookup_elem(&lw_ct_new_v1, key);
	struct lw_ct_value moved;
	__u32 reply;

	if (!v || v->expires_ns <= now)
		return 0;
	reply = !(v->flags & LW_CT_F_FLIPPED) != !flipped;
	/* the flow's first reply (telemetry.h reports it, for every protocol) */
	pkt->first_reply = reply && !(v->flags & LW_CT_F_REPLY_SEEN);
	lw_ct_touch(v, pkt, reply ? LW_CT_F_REPLY_SEEN : 0, reply, now);
	if (!(v->flags & LW_CT_F_REPLY_SEEN))
		return LW_REASON_CT_ESTABLISHED;
	if (!lw_ct_promote_budget(key->ifindex, now))
		return LW_REASON_CT_UNPROMOTED;
	moved = *v;
	if (bpf_map_update_elem(&lw_ct_v3, key, &moved, BPF_ANY) == 0)
		bpf_map_delete_elem(&lw_ct_new_v1, key);
	return reply ? LW_REASON_CT_REPLY : LW_REASON_CT_ESTABLISHED;
}

/*
 * Returns LW_REASON_CT_ESTABLISHED (the packet goes the way the flow's first packet went),
 * LW_REASON_CT_REPLY (the other way), LW_REASON_CT_UNPROMOTED (either way, over budget:
 * see the top of this file), or 0 for a new flow. An established flow: one lookup.
 */
static __always_inline __u8 lw_ct_lookup(const struct lw_ct_key *key, __u32 flipped,
					 struct lw_packet *pkt, __u64 now)
{
	struct lw_ct_value *v = bpf_map_lookup_elem(&lw_ct_v3, key);

	if (v && v->expires_ns > now) {
		if (!(v->flags & LW_CT_F_FLIPPED) == !flipped) {
			lw_ct_touch(v, pkt, 0, 0, now);
			return LW_REASON_CT_ESTABLISHED;
		}
		lw_ct_touch(v, pkt, LW_CT_F_REPLY_SEEN, 1, now);
		return LW_REASON_CT_REPLY;
	}
	if ((pkt->tcp_flags & (LW_CT_TCP_SYN | LW_CT_TCP_ACK)) == LW_CT_TCP_SYN)
		return 0;
	return lw_ct_lookup_new(key, flipped, pkt, now);
}

/*
 * 1 when pkt is an ICMP error (pkt->icmp_inner set) that quotes a packet of a live flow
 * tracked at this veth. The quoted packet crossed this veth the other way (it went out
 * where the error comes in), so its key is built for the opposite hook direction; the
 * lookup is read-only (an error never extends a flow's lifetime). Slow path only: runs
 * after the packet's own conntrack lookup missed.
 */
static __always_inline int lw_ct_related(struct __sk_buff *skb, const struct lw_packet *pkt,
					 __u8 dir, __u64 now)
{
	struct lw_packet in = {};
	struct lw_ct_key buf;
	const struct lw_ct_key *key;
	const struct lw_ct_value *v;
	__u32 flipped;

	if (lw_parse_inner(skb, pkt, &in) < 0)
		return 0;
	key = lw_ct_key_of(&in, lw_dir_opposite(dir), skb->ifindex, &buf, &flipped);
	v = bpf_map_lookup_elem(&lw_ct_v3, key);
	if (v && v->expires_ns > now)
		return 1;
	v = bpf_map_lookup_elem(&lw_ct_new_v1, key);
	return v && v->expires_ns > now;
}

/*
 * Track an allowed new flow in lw_ct_new_v1, also when not isolated (top of this file:
 * the pod may be isolated while the flow lives).
 */
static __always_inline void lw_ct_create(const struct lw_ct_key *key, __u32 flipped,
					 const struct lw_packet *pkt, __u64 now)
{
	struct lw_ct_value v = {
		.flags = lw_ct_close_flags(flipped ? LW_CT_F_FLIPPED : 0, pkt, 0),
		.pad = 0,
	};

	v.expires_ns = now + lw_ct_timeout_ns(pkt->t.proto, v.flags);
	bpf_map_update_elem(&lw_ct_new_v1, key, &v, BPF_ANY);
}

#endif /* LW_CONNTRACK_H */
