/* SPDX-License-Identifier: Apache-2.0 */
/* Packet parsing: Ethernet -> IPv4/IPv6 (extension headers walked, bounded) -> L4 ports. */
#ifndef LW_PARSE_H
#define LW_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi.h"

/* IPv6 extension headers walked before giving up with LW_REASON_UNSUPPORTED. */
#define LW_IPV6_MAX_EXT 8

#define LW_IPV4_FRAG_OFFSET_MASK 0x1fff /* frag_off bits 0..12, units of 8 bytes */
#define LW_IPV6_FRAG_OFFSET_MASK 0xfff8 /* fragment header offset field, units of 8 bytes */
#define LW_IPV4_MORE_FRAGS 0x2000       /* frag_off MF bit (host order after ntohs) */
#define LW_IPV6_MORE_FRAGS 0x0001       /* fragment header M bit (host order after ntohs) */

/* lw_packet.frag: where the packet sits in a fragmented datagram (internal). */
#define LW_FRAG_NONE 0  /* not a fragment */
#define LW_FRAG_FIRST 1 /* offset 0, more fragments: carries the L4 header */
#define LW_FRAG_LATER 2 /* offset > 0: no L4 header (LW_REASON_FRAGMENT from lw_parse) */

#define LW_TCP_FIN 0x01
#define LW_TCP_RST 0x04

#define LW_ICMP_ECHO_REPLY 0
#define LW_ICMP_ECHO_REQUEST 8
#define LW_ICMP_DEST_UNREACH 3     /* ICMP errors that quote the offending packet: 3, 11, 12 */
#define LW_ICMP_TIME_EXCEEDED 11
#define LW_ICMP_PARAMETER_PROB 12
#define LW_ICMPV6_ERROR_FIRST 1 /* ICMPv6 errors: 1 unreachable, 2 packet too big, */
#define LW_ICMPV6_ERROR_LAST 4  /* 3 time exceeded, 4 parameter problem */
#define LW_ICMPV6_ECHO_REQUEST 128
#define LW_ICMPV6_ECHO_REPLY 129
#define LW_ICMPV6_ND_FIRST 133 /* router solicitation */
#define LW_ICMPV6_ND_LAST 137  /* redirect */
#define LW_ND_HOP_LIMIT 255    /* RFC 4861: ND is only valid with hop limit 255 (never routed) */

/*
 * What the classifier needs from one packet (not an ABI struct: never leaves the program).
 * The tuple is parsed straight into conntrack key layout, so the established-flow lookup
 * (the hot path) uses it as its key with no copy: only t.dir and t.pad are set per hook.
 */
struct lw_packet {
	struct lw_ct_key t; /* family, proto, ports (ICMP echo: the echo id), addresses */
	__u8 tcp_flags;     /* TCP flags byte, 0 for other protocols */
	__u8 has_ports;     /* 1 for TCP/UDP/SCTP: policy matches dport */
	__u8 frag;          /* LW_FRAG_* */
	__u8 frag_proto;    /* fragments: IPv4 protocol / IPv6 fragment header next header */
	__u16 icmp_inner;   /* ICMP errors: offset of the quoted IP header in the skb, else 0 */
	__u8 icmp_type;     /* ICMP/ICMPv6 type, LW_ICMP_TYPE_NONE until parsed (LW_PACKET_INIT) */
	__u8 icmp_code;     /* ICMP/ICMPv6 code, 0 until parsed */
	__u8 first_reply;   /* conntrack: this is the first packet seen the reverse way */
	__u8 pad[3];
	__u32 frag_id;      /* fragments: IPv4 id / IPv6 fragment identification, host order */
} __attribute__((aligned(8))); /* addresses at offsets 8 and 24: read as u64 words */

/* Offsets beyond this are read with bpf_skb_load_bytes only (bounds the verifier's range). */
#define LW_DIRECT_MAX_OFF 512

/*
 * Copy len bytes at off: straight from the linear packet data when it holds them (no
 * helper call), else with bpf_skb_load_bytes (non-linear skbs, or beyond the bound).
 * Negative when the packet is shorter than off + len.
 */
static __always_inline int lw_load(struct __sk_buff *skb, __u32 off, void *buf, const __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (off <= LW_DIRECT_MAX_OFF && data + off + len <= data_end) {
		__builtin_memcpy(buf, data + off, len);
		return 0;
	}
	return bpf_skb_load_bytes(skb, off, buf, len);
}

/* L4 header sizes we insist on reading in full (a shorter header is malformed). */
#define LW_TCP_HDR_MIN 20
#define LW_UDP_HDR_LEN 8
#define LW_SCTP_COMMON_HDR_LEN 12
#define LW_ICMP_HDR_LEN 8
/* No ICMP header was read (not ICMP, or a non-first fragment): 255 is reserved in both
 * ICMPv4 and ICMPv6, so no real message carries it. Verdict events carry it as is. */
#define LW_ICMP_TYPE_NONE 255
#define LW_PACKET_INIT { .icmp_type = LW_ICMP_TYPE_NONE }

/* An error that quotes the packet it is about, in this packet's own ICMP version. */
static __always_inline int lw_icmp_is_error(const struct lw_packet *pkt, __u8 type)
{
	if (pkt->t.proto == IPPROTO_ICMP && pkt->t.family == LW_FAMILY_IPV4)
		return type == LW_ICMP_DEST_UNREACH || type == LW_ICMP_TIME_EXCEEDED ||
		       type == LW_ICMP_PARAMETER_PROB;
	if (pkt->t.proto == IPPROTO_ICMPV6 && pkt->t.family == LW_FAMILY_IPV6)
		return type >= LW_ICMPV6_ERROR_FIRST && type <= LW_ICMPV6_ERROR_LAST;
	return 0;
}

/*
 * nd_ok: the IPv6 hop limit is 255, so ICMPv6 types 133..137 are neighbour discovery that
 * never crossed a router and pass unconditionally; with any other hop limit they are
 * ordinary ICMPv6, judged by policy (a spoofed "ND" from afar gets no free pass).
 */
static __always_inline int lw_parse_l4(struct __sk_buff *skb, __u32 off, struct lw_packet *pkt,
				       int nd_ok)
{
	__u8 buf[LW_TCP_HDR_MIN];

	switch (pkt->t.proto) {
	case IPPROTO_TCP:
		if (lw_load(skb, off, buf, LW_TCP_HDR_MIN) < 0)
			return LW_REASON_MALFORMED;
		if ((buf[12] >> 4) < 5) /* data offset in 32-bit words */
			return LW_REASON_MALFORMED;
		pkt->tcp_flags = buf[13];
		break;
	case IPPROTO_UDP:
		if (lw_load(skb, off, buf, LW_UDP_HDR_LEN) < 0)
			return LW_REASON_MALFORMED;
		break;
	case IPPROTO_SCTP:
		if (lw_load(skb, off, buf, LW_SCTP_COMMON_HDR_LEN) < 0)
			return LW_REASON_MALFORMED;
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		if (lw_load(skb, off, buf, LW_ICMP_HDR_LEN) < 0)
			return LW_REASON_MALFORMED;
		pkt->icmp_type = buf[0];
		pkt->icmp_code = buf[1];
		if (lw_icmp_is_error(pkt, buf[0])) {
			/* the quoted packet starts after the 8-byte ICMP header (RFC 792/4443);
			 * bounded so the offset fits the u16 (the walk above stays far below) */
			if (off + LW_ICMP_HDR_LEN < 0xffff)
				pkt->icmp_inner = off + LW_ICMP_HDR_LEN;
			return 0;
		}
		if (nd_ok && pkt->t.proto == IPPROTO_ICMPV6 && buf[0] >= LW_ICMPV6_ND_FIRST &&
		    buf[0] <= LW_ICMPV6_ND_LAST && pkt->t.family == LW_FAMILY_IPV6)
			return LW_REASON_ICMP_ND;
		if ((pkt->t.proto == IPPROTO_ICMP &&
		     (buf[0] == LW_ICMP_ECHO_REQUEST || buf[0] == LW_ICMP_ECHO_REPLY)) ||
		    (pkt->t.proto == IPPROTO_ICMPV6 &&
		     (buf[0] == LW_ICMPV6_ECHO_REQUEST || buf[0] == LW_ICMPV6_ECHO_REPLY))) {
			/* echo id (bytes 4..5) as both ports: request and reply then share a flow */
			__builtin_memcpy(&pkt->t.sport, &buf[4], 2);
			pkt->t.dport = pkt->t.sport;
		}
		return 0;
	default:
		return 0; /* no ports: matched by protocol only */
	}
	__builtin_memcpy(&pkt->t.sport, &buf[0], 2);
	__builtin_memcpy(&pkt->t.dport, &buf[2], 2);
	pkt->has_ports = 1;
	return 0;
}

static __always_inline int lw_parse_ipv4(struct __sk_buff *skb, struct lw_packet *pkt)
{
	struct iphdr ip;

	if (lw_load(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
		return LW_REASON_MALFORMED;
	if (ip.version != 4 || ip.ihl < 5)
		return LW_REASON_MALFORMED;
	pkt->t.family = LW_FAMILY_IPV4;
	pkt->t.proto = ip.protocol;
	__builtin_memcpy(pkt->t.saddr, &ip.saddr, 4);
	__builtin_memcpy(pkt->t.daddr, &ip.daddr, 4);
	if (bpf_ntohs(ip.tot_len) < ip.ihl * 4)
		return LW_REASON_MALFORMED;
	if (bpf_ntohs(ip.frag_off) & (LW_IPV4_FRAG_OFFSET_MASK | LW_IPV4_MORE_FRAGS)) {
		pkt->frag_id = bpf_ntohs(ip.id);
		pkt->frag_proto = ip.protocol;
		/* A non-first fragment has no L4 header: nothing to match ports against
		 * (frag.h: it may still belong to a datagram whose first fragment passed). */
		if (bpf_ntohs(ip.frag_off) & LW_IPV4_FRAG_OFFSET_MASK) {
			pkt->frag = LW_FRAG_LATER;
			return LW_REASON_FRAGMENT;
		}
		pkt->frag = LW_FRAG_FIRST;
	}
	return lw_parse_l4(skb, ETH_HLEN + ip.ihl * 4, pkt, 0);
}

static __always_inline int lw_ipv6_is_ext(__u8 nexthdr)
{
	return nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
	       nexthdr == IPPROTO_DSTOPTS || nexthdr == IPPROTO_AH ||
	       nexthdr == IPPROTO_FRAGMENT;
}

static __always_inline int lw_parse_ipv6(struct __sk_buff *skb, struct lw_packet *pkt)
{
	struct ipv6hdr ip6;
	__u32 off = ETH_HLEN + sizeof(struct ipv6hdr);
	__u8 nexthdr;
	int i;

	if (lw_load(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
		return LW_REASON_MALFORMED;
	if (ip6.version != 6)
		return LW_REASON_MALFORMED;
	pkt->t.family = LW_FAMILY_IPV6;
	__builtin_memcpy(pkt->t.saddr, &ip6.saddr, 16);
	__builtin_memcpy(pkt->t.daddr, &ip6.daddr, 16);
	nexthdr = ip6.nexthdr;

	/* Bounded walk; a chain longer than LW_IPV6_MAX_EXT is refused, never skipped. */
	for (i = 0; i < LW_IPV6_MAX_EXT; i++) {
		__u8 ext[8]; /* next header, length, then type-specific bytes */

		if (!lw_ipv6_is_ext(nexthdr))
			break;
		if (lw_load(skb, off, ext, sizeof(ext)) < 0)
			return LW_REASON_MALFORMED;
		switch (nexthdr) {
		case IPPROTO_FRAGMENT: {
			__be16 frag_off;
			__be32 ident;

			__builtin_memcpy(&frag_off, &ext[2], 2);
			__builtin_memcpy(&ident, &ext[4], 4);
			pkt->t.proto = ext[0];
			pkt->frag_proto = ext[0];
			pkt->frag_id = bpf_ntohl(ident);
			if (bpf_ntohs(frag_off) & LW_IPV6_FRAG_OFFSET_MASK) {
				pkt->frag = LW_FRAG_LATER;
				return LW_REASON_FRAGMENT;
			}
			/* offset 0 without M is an atomic fragment (RFC 6946): a whole datagram */
			if (bpf_ntohs(frag_off) & LW_IPV6_MORE_FRAGS)
				pkt->frag = LW_FRAG_FIRST;
			off += 8; /* fixed size */
			break;
		}
		case IPPROTO_AH:
			off += ((__u32)ext[1] + 2) * 4; /* RFC 4302: length in 4-byte units minus 2 */
			break;
		default:
			off += ((__u32)ext[1] + 1) * 8; /* RFC 8200: length in 8-byte units minus 1 */
			break;
		}
		nexthdr = ext[0];
	}
	pkt->t.proto = nexthdr;
	if (lw_ipv6_is_ext(nexthdr))
		return LW_REASON_UNSUPPORTED;
	return lw_parse_l4(skb, off, pkt, ip6.hop_limit == LW_ND_HOP_LIMIT);
}

/* Two 16-byte addresses (IPv4: bytes 4..15 zero in both) as two u64 words. */
static __always_inline int lw_addr_eq(const __u8 *a, const __u8 *b)
{
	__u64 a0, a1, b0, b1;

	__builtin_memcpy(&a0, a, 8);
	__builtin_memcpy(&a1, a + 8, 8);
	__builtin_memcpy(&b0, b, 8);
	__builtin_memcpy(&b1, b + 8, 8);
	return a0 == b0 && a1 == b1;
}

/*
 * The packet an ICMP error quotes (at pkt->icmp_inner), parsed into *in as the packet it
 * was when it crossed this veth: 0, or -1 when it cannot be one of a tracked flow's
 * packets (the error is then judged by policy as any ICMP). RFC 792 and RFC 4443 quote
 * the IP header and at least 8 bytes of what follows, so the ports are always there when
 * the sender is honest; a forged or truncated quote fails here (or finds no entry).
 * Refused: a quoted non-first fragment (no ports), IPv6 extension headers in the quote
 * (not walked a second time; IPv4 options are skipped by ihl), an error about an ICMP
 * error (RFC 1122 3.2.2: never sent), and a quote whose source is not the error's
 * destination (an error goes back to the sender of the packet it quotes).
 */
static __always_inline int lw_parse_inner(struct __sk_buff *skb, const struct lw_packet *pkt,
					  struct lw_packet *in)
{
	__u32 off = pkt->icmp_inner;
	__u8 l4[LW_ICMP_HDR_LEN]; /* first 8 bytes after the quoted IP header */

	in->t.family = pkt->t.family;
	if (pkt->t.family == LW_FAMILY_IPV4) {
		struct iphdr ip;

		if (lw_load(skb, off, &ip, sizeof(ip)) < 0)
			return -1;
		if (ip.version != 4 || ip.ihl < 5 ||
		    (bpf_ntohs(ip.frag_off) & LW_IPV4_FRAG_OFFSET_MASK))
			return -1;
		in->t.proto = ip.protocol;
		__builtin_memcpy(in->t.saddr, &ip.saddr, 4);
		__builtin_memcpy(in->t.daddr, &ip.daddr, 4);
		off += ip.ihl * 4;
	} else {
		struct ipv6hdr ip6;

		if (lw_load(skb, off, &ip6, sizeof(ip6)) < 0)
			return -1;
		if (ip6.version != 6 || lw_ipv6_is_ext(ip6.nexthdr))
			return -1;
		in->t.proto = ip6.nexthdr;
		__builtin_memcpy(in->t.saddr, &ip6.saddr, 16);
		__builtin_memcpy(in->t.daddr, &ip6.daddr, 16);
		off += sizeof(struct ipv6hdr);
	}
	if (!lw_addr_eq(in->t.saddr, pkt->t.daddr))
		return -1;
	switch (in->t.proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		if (lw_load(skb, off, l4, 4) < 0)
			return -1;
		__builtin_memcpy(&in->t.sport, &l4[0], 2);
		__builtin_memcpy(&in->t.dport, &l4[2], 2);
		return 0;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		if (lw_load(skb, off, l4, LW_ICMP_HDR_LEN) < 0)
			return -1;
		/* only an echo has a flow (its id); an error about an error is never sent */
		if ((in->t.proto == IPPROTO_ICMP &&
		     (l4[0] == LW_ICMP_ECHO_REQUEST || l4[0] == LW_ICMP_ECHO_REPLY)) ||
		    (in->t.proto == IPPROTO_ICMPV6 &&
		     (l4[0] == LW_ICMPV6_ECHO_REQUEST || l4[0] == LW_ICMPV6_ECHO_REPLY))) {
			__builtin_memcpy(&in->t.sport, &l4[4], 2);
			in->t.dport = in->t.sport;
			return 0;
		}
		return -1;
	default:
		return 0; /* no ports: the flow is keyed with ports 0, as lw_parse_l4 does */
	}
}

/*
 * Fills *pkt and returns 0 for an IP packet whose headers were read in full, or a reason:
 * LW_REASON_NON_IP (ARP) / LW_REASON_ICMP_ND (hop limit 255) (always pass),
 * LW_REASON_MALFORMED / LW_REASON_FRAGMENT / LW_REASON_UNSUPPORTED (pass only a subject not
 * isolated in that direction, or audited).
 */
static __always_inline int lw_parse(struct __sk_buff *skb, struct lw_packet *pkt)
{
	__be16 h_proto;

	if (lw_load(skb, offsetof(struct ethhdr, h_proto), &h_proto, 2) < 0)
		return LW_REASON_MALFORMED;
	switch (h_proto) {
	case bpf_htons(ETH_P_IP):
		return lw_parse_ipv4(skb, pkt);
	case bpf_htons(ETH_P_IPV6):
		return lw_parse_ipv6(skb, pkt);
	case bpf_htons(ETH_P_ARP):
		return LW_REASON_NON_IP; /* address resolution: a pod cannot talk without it */
	default:
		/* VLAN tags, PPPoE, MPLS, unknown ethertypes...: could carry IP past policy, so
		 * they take the fail-closed path of unparseable packets. */
		return LW_REASON_UNSUPPORTED;
	}
}

#endif /* LW_PARSE_H */
