/* SPDX-License-Identifier: Apache-2.0 */
/*
 * labelwall netfilter program: egress through a Service judged after DNAT (netfilter.h).
 * Its own object, not labelwall.bpf.o: a kernel without BPF_PROG_TYPE_NETFILTER must still
 * load the tc classifier, and pylibbpf cannot leave one program of an object unloaded.
 * The maps are the same (pinned by name: loaded after the classifier, this object reuses
 * every one of its pins).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "labelwall/abi.h"
#include "labelwall/maps.h"
#include "labelwall/netfilter.h"

SEC("netfilter")
int handle_svc_nat(struct bpf_nf_ctx *ctx)
{
	return lw_nf_handle(ctx);
}

char LICENSE[] SEC("license") = "GPL";
