/* SPDX-License-Identifier: Apache-2.0 */
/* Every map the classifier uses; the only header that declares maps. Pinned by name. */
#ifndef LW_MAPS_H
#define LW_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"

/* Host-side veth ifindex -> subject identity (node-local, written by the agent). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LW_ENDPOINTS_MAX);
	__type(key, __u32);
	__type(value, struct lw_endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lw_endpoints_v1 SEC(".maps");

/* (veth ifindex, family, address) -> flags: the addresses a pod may send from. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LW_EPADDRS_MAX);
	__type(key, struct lw_epaddr_key);
	__type(value, struct lw_epaddr_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lw_epaddr_v1 SEC(".maps");

/* Subject identity -> isolation/audit flags; a miss means not isolated. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LW_SUBJECTS_MAX);
	__type(key, __u32);
	__type(value, struct lw_subject);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lw_subjects_v1 SEC(".maps");

/*
 * Allow entries (subject, peer, dir, proto, port prefix) -> rule cookie: all of them, as
 * the compiler's MapState.policy (read back by the reader). The classifier matches through
 * lw_polgrp_v1 and lw_polovf_v1, derived from it by the writer.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, LW_POLICY_MAX);
	__type(key, struct lw_policy_key);
	__type(value, struct lw_policy_value);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required for LPM tries */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lw_policy_v1 SEC(".maps");

/* The entries of the groups that overflow their slots (same keys as lw_policy_v1). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, LW_POLICY_MAX);
	__type(key, struct lw_policy_key);
	__type(value, struct lw_policy_value);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required for LPM tries */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lw_polovf_v1 SEC(".maps");

/* (subject, peer, dir) -> that group's allow entries inline, or "see lw_polovf_v1". */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LW_POLGRP_MAX);
	__type(key, struct lw_group_key);
	__type(value, struct lw_group);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* sized for the worst case, used far less */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lw_polgrp_v1 SEC(".maps");

/*
 * Exact pod/node address -> (identity, longest containing policy CIDR identity).
 * Preallocated (~96 B/slot: ~100 MiB at the 1M default; lower LW_IPCACHE_MAX on small
 * nodes): inserts skip kmalloc, 1.3M writes/s measured vs 0.9M/s without.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LW_IPCACHE_MAX);
	__type(key, struct lw_ip_key);
	__type(value, struct lw_ipcache_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lw_ipcache_v1 SEC(".maps");

/* ipBlock prefixes -> CIDR identity, for addresses missing from the ipcache. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, LW_CIDRS_MAX);
	__type(key, struct lw_cidr_key);
	__type(value, struct lw_cidr_value);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required for LPM tries */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lw_cidrs_v1 SEC(".maps");

/* (destination pod address, proto, port) -> named-port id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LW_PORTS_MAX);
	__type(key, struct lw_port_key);
	__type(value, struct lw_port_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lw_ports_v1 SEC(".maps");

/* Connection tracking: first-packet tuple + creating direction -> expiry and flags. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LW_CT_MAX);
	__type(key, struct lw_ct_key);
	__type(value, struct lw_ct_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lw_ct_v3 SEC(".maps");

/* Fragmented datagrams whose first fragment was allowed -> deadline (frag.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LW_FRAGS_MAX);
	__type(key, struct lw_frag_key);
	__type(value, struct lw_frag_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lw_frags_v1 SEC(".maps");

/* Per-CPU packet/byte counters by direction x reason. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LW_COUNTERS_MAX);
	__type(key, __u32);
	__type(value, struct lw_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lw_counters_v1 SEC(".maps");

/* Verdict events (struct lw_event records) for userspace. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, LW_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lw_events_v1 SEC(".maps");

/* Per-CPU token bucket that rate-limits events. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lw_evrate);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lw_evrate_v1 SEC(".maps");

/* Per-CPU cache of the coarse clock, keyed by jiffies (include/labelwall/clock.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lw_clock);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lw_clock_v1 SEC(".maps");

/* Runtime knobs (event rate, event kinds), written by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lw_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lw_config_v1 SEC(".maps");

/* Conntrack of flows not replied yet (conntrack.h: why two tables); lw_ct_v3 has the rest. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LW_CT_NEW_MAX);
	__type(key, struct lw_ct_key);
	__type(value, struct lw_ct_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lw_ct_new_v1 SEC(".maps");

/* Per-endpoint token bucket: flows promoted from lw_ct_new_v1 to lw_ct_v3 (conntrack.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LW_ENDPOINTS_MAX);
	__type(key, __u32);
	__type(value, struct lw_ct_budget);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lw_ctbudget_v1 SEC(".maps");

/* The promotion budget's rate and burst, written by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lw_ct_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lw_ctcfg_v1 SEC(".maps");

/* The cluster's Service CIDRs: egress there is judged after DNAT (service.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, LW_SVCNETS_MAX);
	__type(key, struct lw_cidr_key);
	__type(value, struct lw_svcnet_value);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required for LPM tries */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lw_svcnet_v1 SEC(".maps");
/* Per-CPU packet/byte counters by (rule cookie, direction): abi.h lw_rule_key. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, LW_RULE_COUNTERS_MAX);
	__type(key, struct lw_rule_key);
	__type(value, struct lw_counter);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* one key per rule that matched, made on first use */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lw_rulecnt_v1 SEC(".maps");

#endif /* LW_MAPS_H */
