/* SPDX-License-Identifier: Apache-2.0 */
/*
 * handle_svc_nat: the netfilter half of "egress through a Service" (service.h says why).
 * BPF_PROG_TYPE_NETFILTER (kernel >= 6.4), attached with BPF links at
 * NF_INET_PRE_ROUTING for IPv4 and IPv6 at priority LW_NF_PRIORITY, right after
 * kube-proxy's DNAT (NF_IP_PRI_NAT_DST, -100), in the node's network namespace.
 *
 * It judges exactly what tc deferred: a packet that came in on a pod veth with an
 * endpoint entry, from an egress-isolated subject, that is not an ICMP error, whose
 * destination AS TC SAW IT (before DNAT: the conntrack tuple of the packet's direction,
 * struct nf_conn tuplehash[dir].tuple.dst; the packet's own when it has no conntrack, so
 * no NAT happened) is in lw_svcnet_v1, and whose flow has no lw conntrack entry at this
 * veth under that pre-DNAT tuple (or that is the first packet of a new nf conntrack
 * entry: a new translation, judged even when the lw entry exists).
 * Everything else is NF_ACCEPT untouched (tc judged it).
 * Judged on the packet as it is now (after DNAT: the backend pod and its port; not
 * translated -> the Service address itself, i.e. world: fail closed) with the same
 * lw_policy_decide as tc. Allowed -> NF_ACCEPT and the lw conntrack entry keyed on the
 * pre-DNAT tuple at this veth, EGRESS: the flow's later packets hit it at tc and the
 * replies (reverse-NATed: source = the ClusterIP) hit it at the same veth's tc egress,
 * also when the client is ingress-isolated. Denied -> NF_DROP (netfilter then discards
 * the unconfirmed nf conntrack entry too). Both counted (egress x reason) and reported as
 * events, whose destination is the translated one (what was judged).
 * Packets the 40-byte header reader below cannot read (IPv6 extension headers, IPv4
 * options, truncation) but that match all of the above drop (LW_REASON_UNSUPPORTED).
 */
#ifndef LW_NETFILTER_H
#define LW_NETFILTER_H

#include <bpf/bpf_core_read.h>

#include "abi.h"
#include "conntrack.h"
#include "identity.h"
#include "maps.h"
#include "parse.h"
#include "policy.h"
#include "service.h"
#include "telemetry.h"

#define LW_NF_DROP 0
#define LW_NF_ACCEPT 1
#define LW_NFCT_INFOMASK 7UL  /* skb->_nfct: low bits are enum ip_conntrack_info */
#define LW_IP_CT_NEW 2        /* ctinfo: no reply seen yet */
#define LW_IPS_CONFIRMED 8UL  /* nf_conn.status: in the table (1 << IPS_CONFIRMED_BIT) */
#define LW_IP_CT_IS_REPLY 3   /* ctinfo >= this: the packet goes the reply direction */
#define LW_NFPROTO_IPV4 2
#define LW_NFPROTO_IPV6 10

/*
 * Kernel structs, only the fields read here: CO-RE (preserve_access_index) relocates each
 * access against the running kernel's BTF (/sys/kernel/btf/vmlinux), so no vmlinux.h.
 */
struct net_device {
	int ifindex;
} __attribute__((preserve_access_index));

struct nf_hook_state {
	__u8 pf;
	struct net_device *in;
} __attribute__((preserve_access_index));

struct sk_buff {
	unsigned int len;
	unsigned long _nfct;
} __attribute__((preserve_access_index));

union nf_inet_addr {
	__u32 all[4];
} __attribute__((preserve_access_index));

struct nf_conntrack_tuple {
	struct {
		union nf_inet_addr u3;
		union {
			__be16 all;
		} u;
	} dst;
} __attribute__((preserve_access_index));

struct nf_conntrack_tuple_hash {
	struct nf_conntrack_tuple tuple;
} __attribute__((preserve_access_index));

struct nf_conn {
	struct nf_conntrack_tuple_hash tuplehash[2];
	unsigned long status;
} __attribute__((preserve_access_index));

/* The netfilter program's context (include/net/netfilter/nf_bpf_link.h, not uapi). */
struct bpf_nf_ctx {
	const struct nf_hook_state *state;
	struct sk_buff *skb;
};

extern int bpf_dynptr_from_skb(struct __sk_buff *skb, __u64 flags,
			       struct bpf_dynptr *ptr__uninit) __ksym;

/*
 * lw_now_ns for this program type, which may not call bpf_ktime_get_coarse_ns: the cached
 * coarse reading of this jiffy (clock.h), else CLOCK_MONOTONIC, cached for the rest of the
 * jiffy like a coarse reading. That keeps the shared per-CPU clock monotonic: a reading
 * taken during jiffy J is below the coarse clock of J + 1.
 */
static __always_inline __u64 lw_nf_now_ns(void)
{
	__u32 zero = 0;
	struct lw_clock *c = bpf_map_lookup_elem(&lw_clock_v1, &zero);
	__u64 j = bpf_jiffies64();

	if (!c)
		return bpf_ktime_get_ns();
	if (c->jiffies != j || !c->ns) {
		c->ns = bpf_ktime_get_ns();
		c->jiffies = j;
	}
	return c->ns;
}

#define LW_NF_HDR 40 /* an IPv6 header, or an IPv4 header without options + 20 */

/*
 * The packet's tuple (as it is now, after DNAT) from its first bytes; skb data starts at
 * the network header at PRE_ROUTING. 0, or a reason (the packet is then not readable).
 */
static __always_inline int lw_nf_parse(struct bpf_dynptr *p, __u8 pf, __u32 len,
				       struct lw_packet *pkt)
{
	__u8 h[LW_NF_HDR];
	__u8 l4[LW_TCP_HDR_MIN];
	__u32 off;

	if (len < LW_NF_HDR || bpf_dynptr_read(h, LW_NF_HDR, p, 0, 0) < 0) {
		/* short packet: an IPv4 header and 8 bytes still fit in 28 */
		if (len < 28 || bpf_dynptr_read(h, 28, p, 0, 0) < 0)
			return LW_REASON_MALFORMED;
	}
	if (pf == LW_NFPROTO_IPV4) {
		__u16 frag;

		if (h[0] != 0x45) /* version 4, no options */
			return LW_REASON_UNSUPPORTED;
		pkt->t.family = LW_FAMILY_IPV4;
		pkt->t.proto = h[9];
		__builtin_memcpy(pkt->t.saddr, &h[12], 4);
		__builtin_memcpy(pkt->t.daddr, &h[16], 4);
		__builtin_memcpy(&frag, &h[6], 2);
		/* with conntrack (which any DNAT needs) netfilter reassembled it already; an
		 * untracked fragment to a Service address is dropped below (fail closed) */
		if (bpf_ntohs(frag) & (LW_IPV4_MORE_FRAGS | LW_IPV4_FRAG_OFFSET_MASK))
			return LW_REASON_FRAGMENT;
		off = 20;
	} else {
		if ((h[0] >> 4) != 6 || len < LW_NF_HDR)
			return LW_REASON_MALFORMED;
		pkt->t.family = LW_FAMILY_IPV6;
		pkt->t.proto = h[6]; /* extension headers: not an L4 protocol below */
		__builtin_memcpy(pkt->t.saddr, &h[8], 16);
		__builtin_memcpy(pkt->t.daddr, &h[24], 16);
		off = 40;
	}
	switch (pkt->t.proto) {
	case IPPROTO_TCP:
		if (bpf_dynptr_read(l4, LW_TCP_HDR_MIN, p, off, 0) < 0)
			return LW_REASON_MALFORMED;
		pkt->tcp_flags = l4[13];
		break;
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		if (bpf_dynptr_read(l4, 8, p, off, 0) < 0)
			return LW_REASON_MALFORMED;
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		if (bpf_dynptr_read(l4, LW_ICMP_HDR_LEN, p, off, 0) < 0)
			return LW_REASON_MALFORMED;
		pkt->icmp_type = l4[0];
		pkt->icmp_code = l4[1];
		if (lw_icmp_is_error(pkt, l4[0])) {
			pkt->icmp_inner = (__u16)off; /* only "is an error" is used here */
			return 0;
		}
		if ((pkt->t.proto == IPPROTO_ICMP &&
		     (l4[0] == LW_ICMP_ECHO_REQUEST || l4[0] == LW_ICMP_ECHO_REPLY)) ||
		    (pkt->t.proto == IPPROTO_ICMPV6 &&
		     (l4[0] == LW_ICMPV6_ECHO_REQUEST || l4[0] == LW_ICMPV6_ECHO_REPLY))) {
			__builtin_memcpy(&pkt->t.sport, &l4[4], 2);
			pkt->t.dport = pkt->t.sport;
		}
		return 0;
	default:
		if (pf == LW_NFPROTO_IPV6)
			return LW_REASON_UNSUPPORTED; /* an extension header (or no L4) */
		return 0; /* no ports: keyed with 0, as lw_parse_l4 does */
	}
	__builtin_memcpy(&pkt->t.sport, &l4[0], 2);
	__builtin_memcpy(&pkt->t.dport, &l4[2], 2);
	pkt->has_ports = 1;
	return 0;
}

/* The destination address and port the packet had at tc: its conntrack tuple's. */
static __always_inline int lw_nf_pre_dnat(unsigned long nfct, __u8 *daddr, __be16 *dport)
{
	const struct nf_conn *ct = (const struct nf_conn *)(nfct & ~LW_NFCT_INFOMASK);

	if ((nfct & LW_NFCT_INFOMASK) >= LW_IP_CT_IS_REPLY) {
		if (bpf_core_read(daddr, 16, &ct->tuplehash[1].tuple.dst.u3) ||
		    bpf_core_read(dport, 2, &ct->tuplehash[1].tuple.dst.u.all))
			return -1;
		return 0;
	}
	if (bpf_core_read(daddr, 16, &ct->tuplehash[0].tuple.dst.u3) ||
	    bpf_core_read(dport, 2, &ct->tuplehash[0].tuple.dst.u.all))
		return -1;
	return 0;
}

/* The first packet of an nf conntrack entry (not yet confirmed): a translation just made. */
static __always_inline int lw_nf_new_translation(unsigned long nfct)
{
	const struct nf_conn *ct = (const struct nf_conn *)(nfct & ~LW_NFCT_INFOMASK);
	unsigned long status = 0;

	if (!ct || (nfct & LW_NFCT_INFOMASK) != LW_IP_CT_NEW)
		return 0;
	if (bpf_core_read(&status, sizeof(status), &ct->status))
		return 1; /* unreadable: judge it */
	return !(status & LW_IPS_CONFIRMED);
}

static __always_inline int lw_nf_finish(__u32 ifindex, __u32 subject, __u32 len,
					const struct lw_packet *pkt, const struct lw_decision *d,
					__u64 now)
{
	lw_count(LW_DIR_EGRESS, d->reason, len);
	lw_emit_at(ifindex, LW_DIR_EGRESS, subject, pkt, d, now);
	return d->verdict == LW_VERDICT_ALLOW ? LW_NF_ACCEPT : LW_NF_DROP;
}

static __always_inline int lw_nf_handle(struct bpf_nf_ctx *ctx)
{
	const struct nf_hook_state *state = ctx->state;
	struct sk_buff *skb = ctx->skb;
	struct lw_packet pkt = LW_PACKET_INIT;
	struct lw_packet orig;
	struct lw_decision d = {};
	struct lw_ct_key ct_buf;
	const struct lw_ct_key *key;
	const struct lw_endpoint *ep;
	const struct net_device *in;
	struct bpf_dynptr p;
	unsigned long nfct;
	__u8 pre_daddr[16] = {};
	__be16 pre_dport = 0;
	__u32 ifindex, subject, flags, flipped, len;
	__u64 now;
	__u8 pf;
	int status;

	/* 1. From a pod veth of ours, egress-isolated: otherwise tc's verdict stands. */
	in = state->in;
	if (!in)
		return LW_NF_ACCEPT;
	ifindex = in->ifindex;
	ep = lw_endpoint_lookup(ifindex);
	if (!ep)
		return LW_NF_ACCEPT;
	subject = ep->identity;
	flags = lw_endpoint_subject_flags(subject, ep->flags);
	if (!(flags & LW_SUBJECT_EGRESS_ISOLATED))
		return LW_NF_ACCEPT;

	/* 2. Was its destination at tc a Service address? (conntrack's pre-DNAT tuple) */
	nfct = skb->_nfct;
	len = skb->len;
	if (nfct & ~LW_NFCT_INFOMASK) {
		if (lw_nf_pre_dnat(nfct, pre_daddr, &pre_dport) < 0)
			return LW_NF_DROP; /* unreadable conntrack: fail closed */
	}
	pf = state->pf;
	if (pf != LW_NFPROTO_IPV4 && pf != LW_NFPROTO_IPV6)
		return LW_NF_ACCEPT;
	if (nfct & ~LW_NFCT_INFOMASK) {
		if (!lw_service_addr(pf == LW_NFPROTO_IPV4 ? LW_FAMILY_IPV4 : LW_FAMILY_IPV6,
				     pre_daddr))
			return LW_NF_ACCEPT;
	}

	/* 3. The packet as it is now (after DNAT). */
	now = lw_nf_now_ns();
	if (bpf_dynptr_from_skb((struct __sk_buff *)skb, 0, &p)) {
		d.reason = LW_REASON_MALFORMED;
		return lw_nf_finish(ifindex, subject, len, &pkt, &d, now);
	}
	status = lw_nf_parse(&p, pf, len, &pkt);
	if (!(nfct & ~LW_NFCT_INFOMASK)) {
		/* untracked: nothing was translated; tc saw this destination */
		if (!pkt.t.family || !lw_service_addr(pkt.t.family, pkt.t.daddr))
			return LW_NF_ACCEPT;
		__builtin_memcpy(pre_daddr, pkt.t.daddr, 16);
		pre_dport = pkt.t.dport;
	}
	if (status) {
		d.reason = (__u8)status;
		return lw_nf_finish(ifindex, subject, len, &pkt, &d, now);
	}
	if (pkt.icmp_inner)
		return LW_NF_ACCEPT; /* ICMP errors are judged at tc (never deferred) */

	/* 4. Its flow at this veth, under the tuple tc sees (pre-DNAT): a hit passes, unless
	 * this is the first packet of a new nf conntrack entry, i.e. a new translation
	 * (kube-proxy flushed a UDP flow's entry when its backend went, and the next packet
	 * was translated anew): the lw entry names no backend, so every translation is judged. */
	orig = pkt;
	__builtin_memcpy(orig.t.daddr, pre_daddr, 16);
	if (pkt.has_ports)
		orig.t.dport = pre_dport;
	key = lw_ct_key_of(&orig, LW_DIR_EGRESS, ifindex, &ct_buf, &flipped);
	if (lw_ct_lookup(key, flipped, &orig, now) && !lw_nf_new_translation(nfct))
		return LW_NF_ACCEPT;

	/* 5. New: lookup.py on the translated destination; track it for tc if allowed. */
	lw_policy_decide(&pkt, subject, flags, LW_DIR_EGRESS, &d);
	if (d.verdict == LW_VERDICT_ALLOW)
		lw_ct_create(key, flipped, &orig, now);
	return lw_nf_finish(ifindex, subject, len, &pkt, &d, now);
}

#endif /* LW_NETFILTER_H */
