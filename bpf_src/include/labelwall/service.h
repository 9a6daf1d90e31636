/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Egress through a Service (lookup.py step S): where a pod's packet to a ClusterIP is judged.
 *
 * handle_from_pod runs at the host veth's tc ingress, before kube-proxy's DNAT (netfilter
 * PRE_ROUTING, nat priority -100), so there the destination is the ClusterIP: judging it
 * would judge "world", not the backend pod that policies name. So a NEW flow (conntrack
 * miss) from an EGRESS-ISOLATED pod to an address in lw_svcnet_v1 is not judged at tc: it
 * passes to the stack (counted LW_REASON_SERVICE_DEFERRED, no event, no lw conntrack
 * entry) and handle_svc_nat (netfilter.h), at PRE_ROUTING priority -99 (right after DNAT),
 * judges it on the translated destination and port with the same lw_policy_decide, and
 * only then creates the flow's entry, keyed on the tuple as tc sees it (pre-DNAT, at this
 * veth), so later packets and the reverse-NATed replies (source = the ClusterIP) pass at
 * tc with one lookup like any flow. The source check (source.h) has run before this.
 *
 * What is never deferred: a pod that is not egress-isolated (judged NOT_ISOLATED at tc as
 * before, and tracked on the pre-DNAT tuple), ICMP errors (their own path, 2b), unparsed
 * packets. A first fragment opens its datagram's fragment entry, so the later fragments
 * reach the stack too: conntrack (which kube-proxy's DNAT needs) reassembles them before
 * -99 and the whole datagram is judged there; untracked, handle_svc_nat drops them.
 * Fail closed: the agent fills lw_svcnet_v1 only while the netfilter links are attached
 * (an empty map defers nothing: kernels without BPF_PROG_TYPE_NETFILTER judge at tc as
 * before, so egress to a ClusterIP is denied unless an ipBlock admits it).
 */
#ifndef LW_SERVICE_H
#define LW_SERVICE_H

#include "abi.h"
#include "identity.h"
#include "maps.h"
#include "parse.h"

/* Is addr inside one of the cluster's Service CIDRs? One LPM lookup on a tiny trie. */
static __always_inline int lw_service_addr(__u8 family, const __u8 *addr)
{
	struct lw_cidr_key key = {
		.prefixlen = LW_CIDR_PREFIX_BASE + (family == LW_FAMILY_IPV4 ? 32 : 128),
		.family = family,
		.pad = { 0, 0, 0 },
	};

	__builtin_memcpy(key.addr, addr, 16);
	return bpf_map_lookup_elem(&lw_svcnet_v1, &key) != 0;
}

/* A new flow leaving a pod (tc, after the source check) that netfilter judges instead. */
static __always_inline int lw_service_defer(const struct lw_packet *pkt, __u32 subject_flags)
{
	return (subject_flags & LW_SUBJECT_EGRESS_ISOLATED) && !pkt->icmp_inner &&
	       lw_service_addr(pkt->t.family, pkt->t.daddr);
}

#endif /* LW_SERVICE_H */
