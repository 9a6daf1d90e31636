/* SPDX-License-Identifier: Apache-2.0 */
/* Connection tracking: established/reply lookups in front of policy, entries for allows. */
#ifndef LW_CONNTRACK_H
#define LW_CONNTRACK_H

#include "abi.h"
#include "maps.h"
#include "parse.h"

#define LW_NS_PER_S 1000000000ULL

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

/*
 * Returns LW_REASON_CT_ESTABLISHED (the packet goes the way the flow's first packet went),
 * LW_REASON_CT_REPLY (the other way), or 0 for a new flow: one lookup either way.
 */
static __always_inline __u8 lw_ct_lookup(const struct lw_ct_key *key, __u32 flipped,
					 const struct lw_packet *pkt, __u64 now)
{
	struct lw_ct_value *v = bpf_map_lookup_elem(&lw_ct_v3, key);

	if (!v || v->expires_ns <= now)
		return 0;
	if (!(v->flags & LW_CT_F_FLIPPED) == !flipped) {
		lw_ct_touch(v, pkt, 0, 0, now);
		return LW_REASON_CT_ESTABLISHED;
	}
	lw_ct_touch(v, pkt, LW_CT_F_REPLY_SEEN, 1, now);
	return LW_REASON_CT_REPLY;
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
	return v && v->expires_ns > now;
}

/* Track an allowed new flow (also when not isolated: the other side may be). */
static __always_inline void lw_ct_create(const struct lw_ct_key *key, __u32 flipped,
					 const struct lw_packet *pkt, __u64 now)
{
	struct lw_ct_value v = {
		.flags = lw_ct_close_flags(flipped ? LW_CT_F_FLIPPED : 0, pkt, 0),
		.pad = 0,
	};

	v.expires_ns = now + lw_ct_timeout_ns(pkt->t.proto, v.flags);
	bpf_map_update_elem(&lw_ct_v3, key, &v, BPF_ANY);
}

#endif /* LW_CONNTRACK_H */
