/* SPDX-License-Identifier: Apache-2.0 */
/* Fragment tracking: later fragments follow the verdict of their datagram's first one. */
#ifndef LW_FRAG_H
#define LW_FRAG_H

#include "abi.h"
#include "maps.h"
#include "parse.h"

#define LW_FRAG_NS_PER_S 1000000000ULL

/* The datagram's key (see lw_frag_key in abi.h), built with a designated initialiser. */
static __always_inline void lw_frag_key_of(const struct lw_packet *pkt, __u8 dir, __u32 ifindex,
					   struct lw_frag_key *key)
{
	*key = (struct lw_frag_key){
		.family = pkt->t.family,
		.proto = pkt->frag_proto,
		.dir = dir,
		.pad = 0,
		.id = pkt->frag_id,
		.ifindex = ifindex,
	};
	__builtin_memcpy(key->saddr, pkt->t.saddr, 16);
	__builtin_memcpy(key->daddr, pkt->t.daddr, 16);
}

/* 1 when a non-first fragment belongs to a datagram whose first fragment passed here. */
static __always_inline int lw_frag_lookup(const struct lw_packet *pkt, __u8 dir, __u32 ifindex,
					  __u64 now)
{
	struct lw_frag_key key;
	const struct lw_frag_value *v;

	lw_frag_key_of(pkt, dir, ifindex, &key);
	v = bpf_map_lookup_elem(&lw_frags_v1, &key);
	return v && v->expires_ns > now;
}

/*
 * Remember an allowed first fragment (offset 0, more fragments) for LW_FRAG_TIMEOUT_S.
 * A repeated first fragment (a retransmitted datagram reusing the id) starts the
 * lifetime again; the entry is never extended by later fragments.
 */
static __always_inline void lw_frag_create(const struct lw_packet *pkt, __u8 dir, __u32 ifindex,
					   __u64 now)
{
	struct lw_frag_key key;
	struct lw_frag_value v = {
		.expires_ns = now + LW_FRAG_TIMEOUT_S * LW_FRAG_NS_PER_S,
	};

	lw_frag_key_of(pkt, dir, ifindex, &key);
	bpf_map_update_elem(&lw_frags_v1, &key, &v, BPF_ANY);
}

#endif /* LW_FRAG_H */
