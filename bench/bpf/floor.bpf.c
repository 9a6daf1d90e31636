/* SPDX-License-Identifier: Apache-2.0 */
/* Benchmark floor: a TC program that only returns TC_ACT_OK (the cost of running any program). */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("tc")
int bench_floor(struct __sk_buff *skb)
{
	(void)skb;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
