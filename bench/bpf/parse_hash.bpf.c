/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Benchmark baseline: parse Ethernet, IPv4/IPv6 and the TCP/UDP ports the way a policy
 * classifier must, then do one hash lookup keyed by the 5-tuple (the shape of a conntrack
 * hit). Whatever the lookup finds, the packet passes: this is the cost floor an
 * established flow can approach.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef BENCH_FLOWS_MAX
#define BENCH_FLOWS_MAX (1 << 20)
#endif

/* Addresses in network byte order, IPv4 in the first 4 bytes; ports network byte order. */
struct bench_flow_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 family;
	__u8 pad[2];
};

struct bench_flow_value {
	__u64 packets;
};

/* The one hash map the baseline looks up (filled by the benchmark with N entries). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BENCH_FLOWS_MAX);
	__type(key, struct bench_flow_key);
	__type(value, struct bench_flow_value);
} bench_flows SEC(".maps");

SEC("tc")
int bench_parse_hash(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct bench_flow_key key = {};
	struct ethhdr *eth = data;
	__u8 *l4;

	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end)
			return TC_ACT_OK;
		__builtin_memcpy(key.saddr, &ip->saddr, 4);
		__builtin_memcpy(key.daddr, &ip->daddr, 4);
		key.proto = ip->protocol;
		key.family = 4;
		l4 = (__u8 *)ip + ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return TC_ACT_OK;
		__builtin_memcpy(key.saddr, &ip6->saddr, 16);
		__builtin_memcpy(key.daddr, &ip6->daddr, 16);
		key.proto = ip6->nexthdr;
		key.family = 6;
		l4 = (__u8 *)(ip6 + 1);
	} else {
		return TC_ACT_OK;
	}
	if (key.proto == IPPROTO_TCP || key.proto == IPPROTO_UDP) {
		if ((void *)(l4 + 4) > end)
			return TC_ACT_OK;
		__builtin_memcpy(&key.sport, l4, 2);
		__builtin_memcpy(&key.dport, l4 + 2, 2);
	}
	struct bench_flow_value *v = bpf_map_lookup_elem(&bench_flows, &key);

	if (v)
		v->packets++; /* racy on purpose: a plain store, as a conntrack hit's timestamp */
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
