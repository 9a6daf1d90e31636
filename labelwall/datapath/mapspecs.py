"""The pinned maps the classifier uses: their specs (type, sizes), pins and program names.

Sizes are the maps.h defaults (``SIZE_MACROS`` names the macro of each, so an object built
with ``-D`` sizes gets ``resized`` specs); the loader checks every map against its spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from labelwall.datapath.abi import (
    CIDR_KEY,
    CIDR_VALUE,
    CLOCK,
    CONFIG,
    COUNTER,
    CT_BUDGET,
    CT_CONFIG,
    CT_KEY,
    CT_VALUE,
    ENDPOINT,
    EPADDR_KEY,
    EPADDR_VALUE,
    EVRATE,
    FRAG_KEY,
    FRAG_VALUE,
    GROUP,
    GROUP_KEY,
    IP_KEY,
    IPCACHE_VALUE,
    POLICY_KEY,
    POLICY_VALUE,
    PORT_KEY,
    PORT_VALUE,
    REASON_MAX,
    RULE_KEY,
    SUBJECT,
    SVCNET_VALUE,
)

PIN_ROOT = "/sys/fs/bpf"

U32 = 4


@dataclass(frozen=True)
class MapSpec:
    """What the loader expects of a pinned map (type/key/value/max_entries)."""

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int

    @property
    def pin_path(self) -> str:
        return f"{PIN_ROOT}/{self.name}"

    @property
    def is_trie(self) -> bool:
        """LPM tries have no batch operations (one syscall per entry)."""
        return self.type == _LPM_TRIE


# linux/bpf.h enum bpf_map_type
_HASH, _ARRAY, _PERCPU_HASH, _PERCPU_ARRAY, _LRU_HASH, _LPM_TRIE, _RINGBUF = 1, 2, 5, 6, 9, 11, 27

ENDPOINTS_MAX = 4096
EPADDRS_MAX = 2 * ENDPOINTS_MAX  # status.podIPs: one IPv4 and one IPv6 address per pod
SUBJECTS_MAX = 65536
POLICY_MAX = 1 << 20
POLGRP_MAX = 1 << 20
IPCACHE_MAX = 1 << 20
CIDRS_MAX = 65536
PORTS_MAX = 262144
CT_MAX = 262144
CT_NEW_MAX = 65536  # LW_CT_NEW_MAX: flows not replied yet (conntrack.h)
FRAGS_MAX = 8192  # LW_FRAGS_MAX: datagrams in flight whose first fragment was allowed
EVENTS_BYTES = 256 * 1024
COUNTERS_MAX = 2 * REASON_MAX
SVCNETS_MAX = 64  # LW_SVCNETS_MAX: the cluster's Service CIDRs
#: The agent's default serviceCIDRs: kubeadm's IPv4 Service range and kind's IPv6 one.
DEFAULT_SERVICE_CIDRS = ("10.96.0.0/12", "fd00:10:96::/112")
RULE_COUNTERS_MAX = 16384  # LW_RULE_COUNTERS_MAX: (rule cookie, direction) keys

ENDPOINTS_MAP = MapSpec("lw_endpoints_v1", _HASH, U32, ENDPOINT.size, ENDPOINTS_MAX)
EPADDR_MAP = MapSpec("lw_epaddr_v1", _HASH, EPADDR_KEY.size, EPADDR_VALUE.size, EPADDRS_MAX)
SUBJECTS_MAP = MapSpec("lw_subjects_v1", _HASH, U32, SUBJECT.size, SUBJECTS_MAX)
POLICY_MAP = MapSpec("lw_policy_v1", _LPM_TRIE, POLICY_KEY.size, POLICY_VALUE.size, POLICY_MAX)
POLOVF_MAP = MapSpec("lw_polovf_v1", _LPM_TRIE, POLICY_KEY.size, POLICY_VALUE.size, POLICY_MAX)
POLGRP_MAP = MapSpec("lw_polgrp_v1", _HASH, GROUP_KEY.size, GROUP.size, POLGRP_MAX)
IPCACHE_MAP = MapSpec("lw_ipcache_v1", _HASH, IP_KEY.size, IPCACHE_VALUE.size, IPCACHE_MAX)
CIDRS_MAP = MapSpec("lw_cidrs_v1", _LPM_TRIE, CIDR_KEY.size, CIDR_VALUE.size, CIDRS_MAX)
PORTS_MAP = MapSpec("lw_ports_v1", _HASH, PORT_KEY.size, PORT_VALUE.size, PORTS_MAX)
CT_MAP = MapSpec("lw_ct_v3", _LRU_HASH, CT_KEY.size, CT_VALUE.size, CT_MAX)
FRAGS_MAP = MapSpec("lw_frags_v1", _LRU_HASH, FRAG_KEY.size, FRAG_VALUE.size, FRAGS_MAX)
COUNTERS_MAP = MapSpec("lw_counters_v1", _PERCPU_ARRAY, U32, COUNTER.size, COUNTERS_MAX)
EVENTS_MAP = MapSpec("lw_events_v1", _RINGBUF, 0, 0, EVENTS_BYTES)
EVRATE_MAP = MapSpec("lw_evrate_v1", _PERCPU_ARRAY, U32, EVRATE.size, 1)
CLOCK_MAP = MapSpec("lw_clock_v1", _PERCPU_ARRAY, U32, CLOCK.size, 1)
CONFIG_MAP = MapSpec("lw_config_v1", _ARRAY, U32, CONFIG.size, 1)
SVCNET_MAP = MapSpec("lw_svcnet_v1", _LPM_TRIE, CIDR_KEY.size, SVCNET_VALUE.size, SVCNETS_MAX)
CT_NEW_MAP = MapSpec("lw_ct_new_v1", _LRU_HASH, CT_KEY.size, CT_VALUE.size, CT_NEW_MAX)
CT_BUDGET_MAP = MapSpec("lw_ctbudget_v1", _LRU_HASH, U32, CT_BUDGET.size, ENDPOINTS_MAX)
CT_CONFIG_MAP = MapSpec("lw_ctcfg_v1", _ARRAY, U32, CT_CONFIG.size, 1)
RULECNT_MAP = MapSpec("lw_rulecnt_v1", _PERCPU_HASH, RULE_KEY.size, COUNTER.size, RULE_COUNTERS_MAX)

MAPS: tuple[MapSpec, ...] = (
    ENDPOINTS_MAP,
    EPADDR_MAP,
    SUBJECTS_MAP,
    POLICY_MAP,
    POLGRP_MAP,
    POLOVF_MAP,
    IPCACHE_MAP,
    CIDRS_MAP,
    PORTS_MAP,
    CT_MAP,
    FRAGS_MAP,
    COUNTERS_MAP,
    EVENTS_MAP,
    EVRATE_MAP,
    CLOCK_MAP,
    CONFIG_MAP,
    SVCNET_MAP,
    CT_NEW_MAP,
    CT_BUDGET_MAP,
    CT_CONFIG_MAP,
    RULECNT_MAP,
)

#: The maps.h macro that sizes each map (an #ifndef default), so an object can be built
#: with other sizes (``-DLW_CT_MAX=...``) and the loader can expect exactly those.
SIZE_MACROS: dict[str, str] = {
    ENDPOINTS_MAP.name: "LW_ENDPOINTS_MAX",
    EPADDR_MAP.name: "LW_EPADDRS_MAX",
    SUBJECTS_MAP.name: "LW_SUBJECTS_MAX",
    POLICY_MAP.name: "LW_POLICY_MAX",
    POLOVF_MAP.name: "LW_POLICY_MAX",
    POLGRP_MAP.name: "LW_POLGRP_MAX",
    IPCACHE_MAP.name: "LW_IPCACHE_MAX",
    CIDRS_MAP.name: "LW_CIDRS_MAX",
    PORTS_MAP.name: "LW_PORTS_MAX",
    CT_MAP.name: "LW_CT_MAX",
    FRAGS_MAP.name: "LW_FRAGS_MAX",
    CT_NEW_MAP.name: "LW_CT_NEW_MAX",
    CT_BUDGET_MAP.name: "LW_ENDPOINTS_MAX",  # one bucket per endpoint
    RULECNT_MAP.name: "LW_RULE_COUNTERS_MAX",
}


def resized(defines: Mapping[str, int]) -> tuple[MapSpec, ...]:
    """MAPS as an object built with these ``-D`` size macros has them."""
    return tuple(
        replace(m, max_entries=int(defines[SIZE_MACROS[m.name]]))
        if SIZE_MACROS.get(m.name) in defines
        else m
        for m in MAPS
    )


# Program names in the object (SEC("tc") functions) and their pins.
PROG_FROM_POD = "handle_from_pod"
PROG_TO_POD = "handle_to_pod"
PROG_PINS = {PROG_FROM_POD: f"{PIN_ROOT}/lw_from_pod_v1", PROG_TO_POD: f"{PIN_ROOT}/lw_to_pod_v1"}

# The netfilter program (labelwall_nf.bpf.o, egress through a Service) and its link pins,
# one BPF link per address family at NF_INET_PRE_ROUTING (labelwall.datapath.netfilter).
PROG_SVC_NAT = "handle_svc_nat"
NF_LINK_PINS = {4: f"{PIN_ROOT}/lw_nf_pre4_v1", 6: f"{PIN_ROOT}/lw_nf_pre6_v1"}
