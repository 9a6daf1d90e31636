/* SPDX-License-Identifier: Apache-2.0 */
/* Counters (per CPU, direction x reason) and rate-limited verdict events (ring buffer). */
#ifndef LW_TELEMETRY_H
#define LW_TELEMETRY_H

#include "abi.h"
#include "maps.h"
#include "parse.h"
#include "policy.h"

#define LW_NANO_EVENTS 1000000000ULL /* token units per event */
#define LW_TCP_SYN_ACK 0x12            /* SYN | ACK: the first reply of a TCP connection */

/* A conntrack pass worth an event (is_reply): a flow's first reply, which for TCP must be
 * the SYN-ACK that answers its SYN (a retransmitted SYN-ACK is not a new flow). */
static __always_inline int lw_ct_reportable(__u8 ct, const struct lw_packet *pkt)
{
	if (ct != LW_REASON_CT_REPLY)
		return 0;
	if (pkt->t.proto == IPPROTO_TCP && (pkt->tcp_flags & LW_TCP_SYN_ACK) != LW_TCP_SYN_ACK)
		return 0;
	return pkt->first_reply; /* TCP's SYN-ACK; UDP, SCTP, ICMP echo, other: first reply */
}

static __always_inline void lw_count(__u8 dir, __u8 reason, __u32 bytes)
{
	__u32 idx = (__u32)(dir - 1) * LW_REASON_MAX + reason;
	struct lw_counter *c;

	if (idx >= LW_COUNTERS_MAX)
		return;
	c = bpf_map_lookup_elem(&lw_counters_v1, &idx);
	if (!c)
		return;
	c->packets++; /* per-CPU slot: no atomics needed */
	c->bytes += bytes;
}

/*
 * Per-rule counter (lw_rulecnt_v1): the packets each rule allowed. The first packet of a
 * rule on a CPU creates its key (BPF_NOEXIST: a racing CPU's insert wins, ours re-reads);
 * a full map counts in the LW_COUNTER_RULE_FULL slot instead, so no packet is uncounted.
 */
static __always_inline void lw_count_rule(__u8 dir, __u32 cookie, __u32 bytes)
{
	struct lw_rule_key key = {.cookie = cookie, .dir = dir};
	struct lw_counter *c = bpf_map_lookup_elem(&lw_rulecnt_v1, &key);

	if (!c) {
		struct lw_counter first = {.packets = 1, .bytes = bytes};

		if (bpf_map_update_elem(&lw_rulecnt_v1, &key, &first, BPF_NOEXIST) == 0)
			return;
		c = bpf_map_lookup_elem(&lw_rulecnt_v1, &key);
		if (!c) {
			lw_count(dir, LW_COUNTER_RULE_FULL, bytes);
			return;
		}
	}
	c->packets++; /* per-CPU slot: no atomics needed */
	c->bytes += bytes;
}

/* Per-CPU token bucket: 1 when an event may be sent now. */
static __always_inline int lw_event_budget(const struct lw_config *cfg, __u64 now)
{
	__u32 zero = 0;
	struct lw_evrate *b = bpf_map_lookup_elem(&lw_evrate_v1, &zero);
	__u64 rate = cfg && cfg->events_per_s ? cfg->events_per_s : LW_EVENTS_PER_S_DEFAULT;
	__u64 cap = (cfg && cfg->events_burst ? cfg->events_burst : LW_EVENTS_BURST_DEFAULT) *
		    LW_NANO_EVENTS;
	__u64 elapsed;

	if (!b)
		return 0;
	elapsed = now - b->last_ns;
	b->last_ns = now;
	/* tokens += elapsed_ns * events_per_s nano-events, capped (divide first: no overflow) */
	if (elapsed >= cap / rate || b->tokens + elapsed * rate >= cap)
		b->tokens = cap;
	else
		b->tokens += elapsed * rate;
	if (b->tokens < LW_NANO_EVENTS) {
		b->suppressed++;
		return 0;
	}
	b->tokens -= LW_NANO_EVENTS;
	return 1;
}

/* One event for the packet seen at veth ``ifindex`` (tc: skb->ifindex; netfilter: in-dev). */
static __always_inline void lw_emit_at(__u32 ifindex, __u8 dir, __u32 subject,
				       const struct lw_packet *pkt, const struct lw_decision *d,
				       __u64 now)
{
	__u32 zero = 0;
	const struct lw_config *cfg = bpf_map_lookup_elem(&lw_config_v1, &zero);
	__u32 cfg_flags = cfg ? cfg->flags : 0;
	struct lw_event *e;

	if (cfg_flags & LW_CFG_NO_EVENTS)
		return;
	if ((cfg_flags & LW_CFG_NO_ALLOW_EVENTS) && d->verdict == LW_VERDICT_ALLOW &&
	    d->reason != LW_REASON_AUDIT)
		return;
	if (!lw_event_budget(cfg, now))
		return;
	e = bpf_ringbuf_reserve(&lw_events_v1, sizeof(*e), 0);
	if (!e) {
		struct lw_evrate *b = bpf_map_lookup_elem(&lw_evrate_v1, &zero);

		if (b)
			b->lost++;
		return;
	}
	e->ts_ns = now;
	e->subject = subject;
	e->peer = d->peer;
	e->cidr_identity = d->cidr_identity;
	e->cookie = d->cookie;
	e->ifindex = ifindex;
	e->family = pkt->t.family;
	e->proto = pkt->t.proto;
	e->dir = dir;
	e->verdict = d->verdict;
	e->reason = d->reason;
	e->tcp_flags = pkt->tcp_flags;
	e->sport = pkt->t.sport;
	e->dport = pkt->t.dport;
	e->icmp_type = pkt->icmp_type;
	e->icmp_code = pkt->icmp_code;
	__builtin_memcpy(e->saddr, pkt->t.saddr, 16);
	__builtin_memcpy(e->daddr, pkt->t.daddr, 16);
	/* Wake the reader only once a quarter of the ring is queued: a wakeup per record is
	 * a context switch per new connection; the reader polls on a 100 ms timer anyway. */
	bpf_ringbuf_submit(e, bpf_ringbuf_query(&lw_events_v1, BPF_RB_AVAIL_DATA) >=
				      LW_EVENTS_BYTES / 4 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

static __always_inline void lw_emit(struct __sk_buff *skb, __u8 dir, __u32 subject,
				    const struct lw_packet *pkt, const struct lw_decision *d,
				    __u64 now)
{
	lw_emit_at(skb->ifindex, dir, subject, pkt, d, now);
}

#endif /* LW_TELEMETRY_H */
