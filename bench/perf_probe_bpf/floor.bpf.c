/* SPDX-License-Identifier: Apache-2.0 */
/* Perf-probe baseline: the cost of running any tc program at all (returns TC_ACT_OK). */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("tc")
int lw_probe_floor(struct __sk_buff *skb)
{
	(void)skb;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
