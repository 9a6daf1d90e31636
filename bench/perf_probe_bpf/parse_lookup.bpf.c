/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Perf-probe baseline: parse Ethernet + IPv4/IPv6 + TCP/UDP with direct packet access and
 * do ONE hash lookup keyed by the 5-tuple (the same 44-byte key as lw_ct_key), then return
 * TC_ACT_OK on a hit. This is "parse + one hash lookup": what an established flow should
 * cost at best.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct probe_key {
	__u8 family;
	__u8 proto;
	__u8 dir;
	__u8 pad;
	__be16 sport;
	__be16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 ifindex;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct probe_key);
	__type(value, __u64);
} lw_probe_flows SEC(".maps");

SEC("tc")
int lw_probe_parse(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct probe_key key = {.ifindex = skb->ifindex};
	__u8 *l4;

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_SHOT;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return TC_ACT_SHOT;
		key.family = 4;
		key.proto = ip->protocol;
		__builtin_memcpy(key.saddr, &ip->saddr, 4);
		__builtin_memcpy(key.daddr, &ip->daddr, 4);
		l4 = (__u8 *)ip + ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return TC_ACT_SHOT;
		key.family = 6;
		key.proto = ip6->nexthdr;
		__builtin_memcpy(key.saddr, &ip6->saddr, 16);
		__builtin_memcpy(key.daddr, &ip6->daddr, 16);
		l4 = (__u8 *)(ip6 + 1);
	} else {
		return TC_ACT_OK;
	}
	if ((void *)(l4 + 4) > data_end)
		return TC_ACT_SHOT;
	__builtin_memcpy(&key.sport, l4, 2);
	__builtin_memcpy(&key.dport, l4 + 2, 2);
	return bpf_map_lookup_elem(&lw_probe_flows, &key) ? TC_ACT_OK : TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "GPL";
