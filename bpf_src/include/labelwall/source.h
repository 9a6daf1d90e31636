/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Source validation (a packet leaving a pod carries one of that pod's addresses) and the
 * scope of the neighbour-discovery pass (ND only goes where ND goes).
 *
 * Where the source check sits, and why it may skip the established path: it runs at
 * handle_from_pod after a conntrack miss, before any policy work and before any conntrack
 * entry is created. Every lw_ct_v3 key carries the host veth's ifindex and the direction
 * of the hook that made it, and the direction pins which side of the tuple is the pod:
 *  - an entry made at this veth's handle_from_pod (dir EGRESS) has the first packet's
 *    source as its pod side; with this check, that source was one of the pod's addresses;
 *  - an entry made at this veth's handle_to_pod (dir INGRESS) has the first packet's
 *    destination as its pod side: an address the node routed to this veth (the CNI's
 *    /32 or /128 host route to the pod, or a link-local address on this link).
 * A packet at handle_from_pod with source S looks up key (S, D, EGRESS) or, flipped,
 * (D, S, INGRESS), so it can only hit an entry whose pod side is S: a forged S misses
 * both (the flipped "reply" lookup included) and comes here. The established fast path
 * therefore keeps its single lookup. Assumptions, written where they live: veth ifindexes
 * are not reused while entries of the old veth live (the kernel allocates them cyclically
 * over 2^31) and the node routes to a pod's veth only that pod's addresses.
 */
#ifndef LW_SOURCE_H
#define LW_SOURCE_H

#include "abi.h"
#include "identity.h"
#include "maps.h"
#include "parse.h"

/* fe80::/10: the first 10 bits are 1111 1110 10. */
static __always_inline int lw_ipv6_link_local(const __u8 *a)
{
	return a[0] == 0xfe && (a[1] & 0xc0) == 0x80;
}

/* :: (the source of duplicate address detection, RFC 4862 5.4.2). */
static __always_inline int lw_ipv6_unspecified(const __u8 *a)
{
	__u64 w0, w1;

	__builtin_memcpy(&w0, &a[0], 8);
	__builtin_memcpy(&w1, &a[8], 8);
	return (w0 | w1) == 0;
}

/*
 * ff02::1 (all nodes), ff02::2 (all routers) and ff02::1:ff00:0/104 (solicited-node,
 * RFC 4291 2.7.1): bytes ff 02, eight zero bytes, then 00 00 00 00 00 01 / 02 or
 * 00 01 ff xx xx xx.
 */
static __always_inline int lw_ipv6_nd_multicast(const __u8 *a)
{
	__u64 mid;

	__builtin_memcpy(&mid, &a[2], 8);
	if (a[0] != 0xff || a[1] != 0x02 || mid != 0 || a[10] != 0)
		return 0;
	if (a[11] == 1 && a[12] == 0xff)
		return 1; /* solicited-node ff02::1:ffxx:xxxx */
	return a[11] == 0 && a[12] == 0 && a[13] == 0 && a[14] == 0 && (a[15] == 1 || a[15] == 2);
}

/*
 * A link-scoped destination: link-local unicast or multicast of link-local scope (ffx2::,
 * RFC 4291 2.7: the low nibble of byte 1 is the scope). The node never forwards these,
 * so such a packet reaches only the node itself, never another pod or the world.
 */
static __always_inline int lw_ipv6_link_scoped(const __u8 *a)
{
	return lw_ipv6_link_local(a) || (a[0] == 0xff && (a[1] & 0x0f) == 0x02);
}

/*
 * ND (ICMPv6 133..137 with hop limit 255) passes without policy only towards where ND
 * goes: link-local unicast, the all-nodes / all-routers / solicited-node groups, or the
 * node itself (an ipcache entry of identity host). In the egress direction anything else
 * (a "neighbour solicitation" to a routed address) is ordinary ICMPv6, judged by policy:
 * otherwise the free pass is a covert channel to any destination. In the ingress direction
 * hop limit 255 already proves the packet was sent on this link (a forwarded packet has
 * its hop limit decremented), i.e. by the node, so it keeps passing.
 */
static __always_inline int lw_nd_in_scope(const struct lw_packet *pkt, __u8 dir)
{
	__u32 peer, cidr;

	if (dir != LW_DIR_EGRESS)
		return 1;
	if (lw_ipv6_link_local(pkt->t.daddr) || lw_ipv6_nd_multicast(pkt->t.daddr))
		return 1;
	lw_peer_identity(LW_FAMILY_IPV6, pkt->t.daddr, &peer, &cidr);
	return peer == LW_ID_HOST;
}

/*
 * Is the source of a packet leaving the pod behind `ifindex` one of that pod's addresses?
 * One lw_epaddr_v1 lookup. Link-local (fe80::/10) and unspecified (::) IPv6 sources, which
 * the agent cannot know (the kernel in the pod picks the link-local address; DAD sends
 * from ::), only for ND that passed lw_nd_in_scope (`nd`) and for packets to a
 * link-scoped destination (the MLD reports of DAD, RFC 4862 5.4.2): those stay on the
 * veth's link, so the source names no one else the node could deliver them to. Both are
 * then judged like any packet (ND passes, the rest goes to policy).
 */
static __always_inline int lw_source_valid(__u32 ifindex, const struct lw_packet *pkt, int nd)
{
	struct lw_epaddr_key key = {
		.ifindex = ifindex,
		.family = pkt->t.family,
		.pad = { 0, 0, 0 },
	};

	if (pkt->t.family == LW_FAMILY_IPV6 && (nd || lw_ipv6_link_scoped(pkt->t.daddr)) &&
	    (lw_ipv6_link_local(pkt->t.saddr) || lw_ipv6_unspecified(pkt->t.saddr)))
		return 1;
	__builtin_memcpy(key.addr, pkt->t.saddr, 16);
	return bpf_map_lookup_elem(&lw_epaddr_v1, &key) != 0;
}

#endif /* LW_SOURCE_H */
