/* SPDX-License-Identifier: Apache-2.0 */
/* The packet clock: CLOCK_MONOTONIC_COARSE ns, read at most once per tick and CPU. */
#ifndef LW_CLOCK_H
#define LW_CLOCK_H

#include <bpf/bpf_helpers.h>

#include "abi.h"
#include "maps.h"

/*
 * bpf_ktime_get_coarse_ns() (conntrack expiry, event time, token bucket) at the price of
 * bpf_jiffies64() on most packets: the coarse clock is only updated on a tick, so a
 * reading is reused until jiffies moves. The tick updates jiffies just before the
 * timekeeper, so a reading may lag by one tick (<= 10 ms): nothing here is that precise.
 */
static __always_inline __u64 lw_now_ns(void)
{
	__u32 zero = 0;
	struct lw_clock *c = bpf_map_lookup_elem(&lw_clock_v1, &zero);
	__u64 j = bpf_jiffies64();

	if (!c)
		return bpf_ktime_get_coarse_ns();
	if (c->jiffies != j || !c->ns) {
		c->ns = bpf_ktime_get_coarse_ns();
		c->jiffies = j;
	}
	return c->ns;
}

#endif /* LW_CLOCK_H */
