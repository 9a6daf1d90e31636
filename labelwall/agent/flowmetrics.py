"""Prometheus metrics from the lossless in-kernel counters: per rule, per drop reason, events lost.

Read at scrape time from the per-CPU maps (never from the sampled event stream), so they
count every packet whatever the event rate limit or the ring buffer did:

- ``labelwall_policy_rule_packets_total{namespace,policy,rule,direction}`` (and ``_bytes``):
  packets each rule allowed (lw_rulecnt_v1). ``rule`` is the rule's index within the
  policy's ``spec.ingress``/``spec.egress`` list. A first packet is judged by a rule;
  its connection's later packets pass through conntrack and are counted in
  ``labelwall_datapath_packets_total{reason="ct_established"|"ct_reply"}``.
- ``labelwall_drops_total{reason,direction}``: every dropped packet by reason
  (``policy_denied``: no allow matched while isolated).
- ``labelwall_flow_events_lost_total{source}``: verdict events not delivered:
  ``rate_limited`` (the per-CPU token bucket), ``ring_full`` (the kernel ring buffer), and
  ``agent_ring`` (flows overwritten in the agent's ring of the last N before a client that
  is following, one that read within 10 s, read them).

Cardinality is bounded by the rules loaded on the node (one series per rule and direction,
at most LW_RULE_COUNTERS_MAX keys) and by the fixed reason list, never by pod pairs.
A rule whose policy is gone keeps its series as ``policy="(removed)"`` until the agent
restarts (its counts stay in the kernel map).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from labelwall.cluster import Direction
from labelwall.datapath import codecs
from labelwall.policy.cookies import RuleRef
from labelwall.policy.lookup import DROP_REASONS, Reason


class CounterSource(Protocol):
    """What the collector reads (labelwall.datapath.facade.Datapath has all of it)."""

    def counters(self) -> Mapping[tuple[Direction, Reason], codecs.Counter]: ...

    def rule_counters(self) -> Mapping[tuple[int, Direction], codecs.Counter]: ...

    def rule_overflow(self) -> Mapping[Direction, codecs.Counter]: ...

    def event_rate(self) -> codecs.EventRate: ...


def rule_labels(cookie: int, direction: Direction, rules: Mapping[int, RuleRef]) -> list[str]:
    """[namespace, policy, rule, direction] of one per-rule counter."""
    ref = rules.get(cookie)
    word = direction.name.lower()
    if ref is None:
        return ["", "(removed)", f"cookie-{cookie:08x}", word]
    namespace, _, name = ref.policy.partition("/")
    return [namespace, name, str(ref.index), word]


class FlowCounters(Collector):
    """``rules``: the current cookie -> rule map; ``agent_lost``: flows the agent's ring lost."""

    def __init__(
        self,
        source: CounterSource,
        rules: Callable[[], Mapping[int, RuleRef]],
        agent_lost: Callable[[], int] = lambda: 0,
    ) -> None:
        self.source = source
        self.rules = rules
        self.agent_lost = agent_lost

    def collect(self) -> Iterator[CounterMetricFamily]:
        labels = ["namespace", "policy", "rule", "direction"]
        packets = CounterMetricFamily(
            "labelwall_policy_rule_packets",
            "Packets allowed by each NetworkPolicy rule (first packets of connections; "
            "lossless per-CPU counters)",
            labels=labels,
        )
        nbytes = CounterMetricFamily(
            "labelwall_policy_rule_bytes", "Bytes of the packets counted by "
            "labelwall_policy_rule_packets_total", labels=labels,
        )  # fmt: skip
        overflow = CounterMetricFamily(
            "labelwall_policy_rule_overflow_packets",
            "Packets allowed by a rule while the per-rule counter map was full",
            labels=["direction"],
        )
        drops = CounterMetricFamily(
            "labelwall_drops", "Packets dropped, by reason and direction (of the pod)",
            labels=["reason", "direction"],
        )  # fmt: skip
        lost = CounterMetricFamily(
            "labelwall_flow_events_lost", "Verdict events not delivered to observers, by where "
            "they were lost (counters above are unaffected)", labels=["source"],
        )  # fmt: skip
        try:
            rule_counts = self.source.rule_counters()
            full = self.source.rule_overflow()
            counters = self.source.counters()
            rate = self.source.event_rate()
        except OSError:
            rule_counts, full, counters = {}, {}, {}
            rate = codecs.EventRate(0, 0, 0, 0)
        rules = self.rules()
        for (cookie, direction), c in sorted(rule_counts.items()):
            row = rule_labels(cookie, direction, rules)
            packets.add_metric(row, c.packets)
            nbytes.add_metric(row, c.bytes)
        for direction in Direction:
            overflow.add_metric([direction.name.lower()], full[direction].packets
                                if direction in full else 0)  # fmt: skip
        for reason in sorted(DROP_REASONS):
            for direction in Direction:
                d = counters.get((direction, reason))
                drops.add_metric([reason.name.lower(), direction.name.lower()],
                                 d.packets if d else 0)  # fmt: skip
        lost.add_metric(["rate_limited"], rate.suppressed)
        lost.add_metric(["ring_full"], rate.lost)
        lost.add_metric(["agent_ring"], self.agent_lost())
        yield packets
        yield nbytes
        yield overflow
        yield drops
        yield lost
