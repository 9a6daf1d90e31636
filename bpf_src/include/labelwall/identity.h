/* SPDX-License-Identifier: Apache-2.0 */
/* Identity lookups: the subject behind a veth, its flags, and a peer address's identity. */
#ifndef LW_IDENTITY_H
#define LW_IDENTITY_H

#include "abi.h"
#include "maps.h"

static __always_inline const struct lw_endpoint *lw_endpoint_lookup(__u32 ifindex)
{
	return bpf_map_lookup_elem(&lw_endpoints_v1, &ifindex);
}

/* Subject flags; a miss is "no policy selects this identity". */
static __always_inline __u32 lw_subject_flags(__u32 subject)
{
	const struct lw_subject *s = bpf_map_lookup_elem(&lw_subjects_v1, &subject);

	return s ? s->flags : 0;
}

/* The subject's flags, from the endpoint's mirror when the writer has filled it. */
static __always_inline __u32 lw_endpoint_subject_flags(__u32 identity, __u32 ep_flags)
{
	if (ep_flags & LW_EP_F_SUBJECT)
		return ep_flags & LW_EP_SUBJECT_MASK;
	return lw_subject_flags(identity);
}

static __always_inline __u32 lw_isolation_flag(__u8 dir)
{
	return dir == LW_DIR_INGRESS ? LW_SUBJECT_INGRESS_ISOLATED : LW_SUBJECT_EGRESS_ISOLATED;
}

/*
 * lookup.py step 2: exact address in the ipcache (one hash lookup); on a miss the peer
 * is WORLD and its CIDR identity is the longest ipBlock prefix containing it.
 */
static __always_inline void lw_peer_identity(__u8 family, const __u8 *addr, __u32 *identity,
					     __u32 *cidr_identity)
{
	struct lw_ip_key key = {
		.family = family,
		.pad = { 0, 0, 0 },
	};
	const struct lw_ipcache_value *v;
	const struct lw_cidr_value *c;

	__builtin_memcpy(key.addr, addr, 16);
	v = bpf_map_lookup_elem(&lw_ipcache_v1, &key);
	if (v) {
		*identity = v->identity;
		*cidr_identity = v->cidr_identity;
		return;
	}
	struct lw_cidr_key ckey = {
		.prefixlen = LW_CIDR_PREFIX_BASE + (family == LW_FAMILY_IPV4 ? 32 : 128),
		.family = family,
		.pad = { 0, 0, 0 },
	};
	__builtin_memcpy(ckey.addr, addr, 16);
	c = bpf_map_lookup_elem(&lw_cidrs_v1, &ckey);
	*identity = LW_ID_WORLD;
	*cidr_identity = c ? c->cidr_identity : 0;
}

#endif /* LW_IDENTITY_H */
