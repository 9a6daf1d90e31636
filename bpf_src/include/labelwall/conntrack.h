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

/* The packet's own tuple becomes the forward key: only dir and pad are per hook. */
static __always_inline void lw_ct_key_forward(struct lw_packet *pkt, __u8 dir)
{
	pkt->t.dir = dir;
	pkt->t.pad = 0;
}

static __always_inline void lw_ct_key_reverse(struct lw_ct_key *key, const struct lw_packet *pkt,
					      __u8 dir)
{
	key->family = pkt->t.family;
	key->proto = pkt->t.proto;
	key->dir = lw_dir_opposite(dir);
	key->pad = 0;
	key->sport = pkt->t.dport;
	key->dport = pkt->t.sport;
	__builtin_memcpy(key->saddr, pkt->t.daddr, 16);
	__builtin_memcpy(key->daddr, pkt->t.saddr, 16);
}

/* Extend (or, on FIN/RST, cap) a live entry's lifetime; writes at most once a second. */
static __always_inline void lw_ct_touch(struct lw_ct_value *v, const struct lw_packet *pkt,
					__u32 add_flags, __u64 now)
{
	__u32 flags = v->flags | add_flags;
	__u64 expires;

	if (pkt->tcp_flags & (LW_TCP_FIN | LW_TCP_RST))
		flags |= LW_CT_F_CLOSING;
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
 * Returns LW_REASON_CT_ESTABLISHED, LW_REASON_CT_REPLY, or 0 for a new flow. Leaves
 * pkt->t as the forward key (lw_ct_create uses it).
 */
static __always_inline __u8 lw_ct_lookup(struct lw_packet *pkt, __u8 dir, __u64 now)
{
	struct lw_ct_key key;
	struct lw_ct_value *v;

	lw_ct_key_forward(pkt, dir);
	v = bpf_map_lookup_elem(&lw_ct_v1, &pkt->t);
	if (v && v->expires_ns > now) {
		lw_ct_touch(v, pkt, 0, now);
		return LW_REASON_CT_ESTABLISHED;
	}
	/* A TCP SYN without ACK opens a connection: it never answers one, so it skips the
	 * reply lookup (the first packet of every new TCP flow saves a hash lookup). A
	 * simultaneous open (both ends send a bare SYN) is thus judged by policy on both
	 * sides, not admitted as a reply. */
	if (pkt->t.proto == IPPROTO_TCP &&
	    (pkt->tcp_flags & (LW_TCP_SYN | LW_TCP_ACK)) == LW_TCP_SYN)
		return 0;
	lw_ct_key_reverse(&key, pkt, dir);
	v = bpf_map_lookup_elem(&lw_ct_v1, &key);
	if (v && v->expires_ns > now) {
		lw_ct_touch(v, pkt, LW_CT_F_REPLY_SEEN, now);
		return LW_REASON_CT_REPLY;
	}
	return 0;
}

/* Track an allowed new flow (also when not isolated: the other side may be). */
static __always_inline void lw_ct_create(struct lw_packet *pkt, __u8 dir, __u64 now)
{
	struct lw_ct_value v = {
		.flags = pkt->tcp_flags & (LW_TCP_FIN | LW_TCP_RST) ? LW_CT_F_CLOSING : 0,
		.pad = 0,
	};

	lw_ct_key_forward(pkt, dir);
	v.expires_ns = now + lw_ct_timeout_ns(pkt->t.proto, v.flags);
	bpf_map_update_elem(&lw_ct_v1, &pkt->t, &v, BPF_ANY);
}

#endif /* LW_CONNTRACK_H */
