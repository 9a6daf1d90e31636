"""Lossless counters on the real object: per rule, per drop reason, events lost (issue 12).

BPF_PROG_TEST_RUN on the real classifier, maps written by the real writer, read through
the agent's Prometheus collector exactly as a scrape would.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from labelwall.agent.flowmetrics import FlowCounters
from labelwall.cluster import Direction, Protocol
from labelwall.datapath import codecs
from labelwall.datapath.facade import Datapath
from labelwall.policy.cookies import RuleRef, cookie
from labelwall.policy.mapstate import IpcacheEntry, MapState, PolicyKey, SubjectFlags

from . import packets as P  # noqa: N812
from .conftest import fresh_datapath
from .helpers import LO, write

pytestmark = [pytest.mark.root, pytest.mark.bpf]

A, B = 300, 400
A4, B4 = ipaddress.ip_address("10.244.0.5"), ipaddress.ip_address("10.244.1.7")
WEB = RuleRef("shop/allow-web", Direction.INGRESS, 0)
_sports = itertools.count(30000)


@pytest.fixture
def pod() -> Iterator[Datapath]:
    with fresh_datapath() as dp:
        dp.set_endpoint(LO, A, (A4,))
        write(
            dp,
            MapState(
                subjects={A: SubjectFlags.INGRESS_ISOLATED},
                policy={PolicyKey(A, B, Direction.INGRESS, Protocol.TCP, 80, 16): cookie(WEB)},
                ipcache={A4: IpcacheEntry(A), B4: IpcacheEntry(B)},
            ),
        )
        yield dp


def scrape(dp: Datapath) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(FlowCounters(dp, lambda: {cookie(WEB): WEB}))
    return registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, labels)
    assert got is not None, f"{name}{labels} not exported"
    return got


RULE = {"namespace": "shop", "policy": "allow-web", "rule": "0", "direction": "ingress"}
DENIED = {"reason": "policy_denied", "direction": "ingress"}


def send(dp: Datapath, allowed: int, denied: int) -> None:
    """``allowed`` new connections to port 80 (the rule), ``denied`` packets to port 81."""
    for _ in range(allowed):
        dp.test_run("handle_to_pod", P.packet(B4, A4, P.TCP, next(_sports), 80), LO)
    dp.test_run("handle_to_pod", P.packet(B4, A4, P.TCP, 5555, 81), LO, repeat=denied)


@pytest.mark.parametrize(
    ("config", "lost"),
    [
        (codecs.DatapathConfig(events_per_s=10_000_000, events_burst=1_000_000), "ring_full"),
        (codecs.DatapathConfig(events_per_s=1, events_burst=1), "rate_limited"),
    ],
    ids=["ring-forced-full", "rate-limited"],
)
def test_n_allowed_and_m_denied_move_the_metrics_by_exactly_n_and_m_while_events_are_lost(
    pod: Datapath, config: codecs.DatapathConfig, lost: str
) -> None:
    pod.set_config(config)
    before = scrape(pod)
    assert before.get_sample_value("labelwall_policy_rule_packets_total", RULE) is None
    drops0 = value(before, "labelwall_drops_total", **DENIED)
    lost0 = value(before, "labelwall_flow_events_lost_total", source=lost)
    n, m = 137, 6000  # 6000 events overflow the 256 KiB ring (~3,276 records) unread
    with pod.events():  # a consumer exists but does not read: the ring fills
        send(pod, n, m)
        after = scrape(pod)
    assert value(after, "labelwall_policy_rule_packets_total", **RULE) == n
    assert value(after, "labelwall_drops_total", **DENIED) - drops0 == m
    assert value(after, "labelwall_flow_events_lost_total", source=lost) - lost0 > 0
    assert value(after, "labelwall_policy_rule_overflow_packets_total", direction="ingress") == 0
    # a second round adds exactly again (counters are cumulative, never sampled)
    send(pod, n, m)
    again = scrape(pod)
    assert value(again, "labelwall_policy_rule_packets_total", **RULE) == 2 * n
    assert value(again, "labelwall_drops_total", **DENIED) - drops0 == 2 * m


def test_a_rule_whose_policy_is_gone_keeps_its_count_under_removed(pod: Datapath) -> None:
    send(pod, 3, 0)
    registry = CollectorRegistry()
    registry.register(FlowCounters(pod, dict))
    labels = {"namespace": "", "policy": "(removed)", "rule": f"cookie-{cookie(WEB):08x}",
              "direction": "ingress"}  # fmt: skip
    assert value(registry, "labelwall_policy_rule_packets_total", **labels) == 3
