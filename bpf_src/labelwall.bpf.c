/* SPDX-License-Identifier: Apache-2.0 */
/*
 * labelwall TC classifier: one program per veth hook. The entry points only orchestrate;
 * each concern lives in its own header under include/labelwall/.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "labelwall/abi.h"
#include "labelwall/maps.h"
#include "labelwall/parse.h"
#include "labelwall/clock.h"
#include "labelwall/identity.h"
#include "labelwall/policy.h"
#include "labelwall/conntrack.h"
#include "labelwall/frag.h"
#include "labelwall/source.h"
#include "labelwall/service.h"
#include "labelwall/telemetry.h"

/*
 * BTF anchor: struct lw_event is only ever a ring buffer record (ring buffers have no value
 * type), so this read-only global is what puts its layout into the object's BTF, where
 * the ABI tests compare it with labelwall/datapath/abi.py. Never read.
 */
const volatile struct lw_event lw_event_btf_anchor = {};

static __always_inline int lw_finish(struct __sk_buff *skb, __u8 dir, __u32 subject,
				     const struct lw_packet *pkt, const struct lw_decision *d,
				     int emit, __u64 now)
{
	lw_count(dir, d->reason, skb->len);
	if (d->reason == LW_REASON_POLICY)
		lw_count_rule(dir, d->cookie, skb->len);
	if (emit)
		lw_emit(skb, dir, subject, pkt, d, now);
	return d->verdict == LW_VERDICT_ALLOW ? TC_ACT_OK : TC_ACT_SHOT;
}

static __always_inline int lw_handle(struct __sk_buff *skb, __u8 dir)
{
	struct lw_packet pkt = LW_PACKET_INIT;
	struct lw_decision d = {};
	const struct lw_ct_key *ct_key = 0;
	struct lw_ct_key ct_buf;
	__u32 flipped = 0;
	const struct lw_endpoint *ep;
	__u64 now = 0;
	__u32 subject, flags;
	int status;
	__u8 ct;

	/* 1. Parse. ND leaving a pod towards a routed address is ordinary ICMPv6 (source.h). */
	status = lw_parse(skb, &pkt);
	if (status == LW_REASON_ICMP_ND && !lw_nd_in_scope(&pkt, dir))
		status = 0;

	/* 2. Conntrack first, one lookup for both directions of a flow: an established flow
	 * or the reply of an allowed one passes with no identity at all (its first packet was judged on a known endpoint), so the hot
	 * path costs one hash lookup. The clock: CLOCK_MONOTONIC_COARSE ns, cached per tick
	 * (clock.h): conntrack expiry, event time, token bucket. */
	if (status == 0) {
		now = lw_now_ns();
		ct_key = lw_ct_key_of(&pkt, dir, skb->ifindex, &ct_buf, &flipped);
		ct = lw_ct_lookup(ct_key, flipped, &pkt, now);
		if (ct) {
			/* a first fragment of a tracked flow: its later fragments follow it */
			if (pkt.frag == LW_FRAG_FIRST)
				lw_frag_create(&pkt, dir, skb->ifindex, now);
			lw_allow(&d, ct);
			return lw_finish(skb, dir, 0, &pkt, &d, lw_ct_reportable(ct, &pkt), now);
		}
		/* 2b. An ICMP error about a tracked flow passes with that flow (frag.h and
		 * conntrack.h: both are "part of a flow already judged", so no endpoint). The
		 * lookup is on the quoted packet, not on the error's own source, so an error
		 * leaving a pod must pass the source check first (else it goes on to 3b and
		 * drops there): one more lookup, for ICMP errors only. */
		if (pkt.icmp_inner &&
		    (dir != LW_DIR_EGRESS || lw_source_valid(skb->ifindex, &pkt, 0)) &&
		    lw_ct_related(skb, &pkt, dir, now)) {
			lw_allow(&d, LW_REASON_ICMP_RELATED);
			return lw_finish(skb, dir, 0, &pkt, &d, 0, now);
		}
	} else if (status == LW_REASON_FRAGMENT) {
		/* 2c. A later fragment of a datagram whose first fragment passed here. */
		now = lw_now_ns();
		if (lw_frag_lookup(&pkt, dir, skb->ifindex, now)) {
			lw_allow(&d, LW_REASON_FRAGMENT_OF_ALLOWED);
			return lw_finish(skb, dir, 0, &pkt, &d, 0, now);
		}
	}

	/* 3. Which pod is behind this veth? Unknown: drop (fail closed). */
	ep = lw_endpoint_lookup(skb->ifindex);
	if (!ep) {
		d.reason = LW_REASON_UNKNOWN_ENDPOINT;
		return lw_finish(skb, dir, 0, &pkt, &d, 1, now ? now : lw_now_ns());
	}
	subject = ep->identity;
	flags = ep->flags;

	/* 3b. Leaving the pod: its source must be one of the pod's addresses, whatever the
	 * policy, before any conntrack entry exists (source.h: why after the conntrack miss).
	 * Every IP packet whose addresses were read (family set) is checked, fragments and
	 * unsupported header chains included. */
	if (dir == LW_DIR_EGRESS && pkt.t.family &&
	    !lw_source_valid(skb->ifindex, &pkt, status == LW_REASON_ICMP_ND)) {
		d.reason = LW_REASON_SOURCE_INVALID;
		return lw_finish(skb, dir, subject, &pkt, &d, 1, now ? now : lw_now_ns());
	}

	/* 4. ARP and IPv6 neighbour discovery (hop limit 255, in scope) always pass; anything else we
	 * could not parse (other ethertypes included) only when the subject is not isolated
	 * in this direction (or audited). */
	if (status == LW_REASON_NON_IP || status == LW_REASON_ICMP_ND) {
		lw_allow(&d, status);
		return lw_finish(skb, dir, subject, &pkt, &d, 0, 0);
	}
	if (status) {
		now = now ? now : lw_now_ns();
		lw_unparsed_decide(lw_endpoint_subject_flags(subject, flags), dir, status, &d);
		return lw_finish(skb, dir, subject, &pkt, &d,
				 d.verdict == LW_VERDICT_DROP || d.reason == LW_REASON_AUDIT, now);
	}

	/* 5. New flow: the lookup.py order; track every allowed flow (in lw_ct_new_v1 until
	 * its reply: conntrack.h), report every verdict.
	 * An allowed first fragment also opens its datagram's fragment entry, except where
	 * the direction is not isolated (later fragments pass there anyway: no entry, so
	 * such a pod cannot fill the table; lw_frag_key in abi.h). */
	flags = lw_endpoint_subject_flags(subject, flags);
	/* 5a. To a Service address from an egress-isolated pod: judged after DNAT by
	 * handle_svc_nat (service.h, lookup.py step S); no entry yet, later fragments follow. */
	if (dir == LW_DIR_EGRESS && lw_service_defer(&pkt, flags)) {
		if (pkt.frag == LW_FRAG_FIRST)
			lw_frag_create(&pkt, dir, skb->ifindex, now);
		lw_allow(&d, LW_REASON_SERVICE_DEFERRED);
		return lw_finish(skb, dir, subject, &pkt, &d, 0, now);
	}
	lw_policy_decide(&pkt, subject, flags, dir, &d);
	if (d.verdict == LW_VERDICT_ALLOW && ct_key)
		lw_ct_create(ct_key, flipped, &pkt, now);
	if (d.verdict == LW_VERDICT_ALLOW && pkt.frag == LW_FRAG_FIRST &&
	    d.reason != LW_REASON_NOT_ISOLATED)
		lw_frag_create(&pkt, dir, skb->ifindex, now);
	return lw_finish(skb, dir, subject, &pkt, &d, 1, now);
}

/* Host-side veth tc ingress: packets leaving the pod, the pod's EGRESS policy. */
SEC("tc")
int handle_from_pod(struct __sk_buff *skb)
{
	return lw_handle(skb, LW_DIR_EGRESS);
}

/* Host-side veth tc egress: packets entering the pod, the pod's INGRESS policy. */
SEC("tc")
int handle_to_pod(struct __sk_buff *skb)
{
	return lw_handle(skb, LW_DIR_INGRESS);
}

char LICENSE[] SEC("license") = "GPL"; /* GPL-compatible: every helper stays usable */
