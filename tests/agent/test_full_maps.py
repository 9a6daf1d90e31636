"""The agent with a full map: pods stay isolated, it says so (metric, log, status), it heals."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import replace

import pytest
from builders import cluster, ns, pod, pods_peer, policy, port, rule, sel

from labelwall.agent.loop import Agent
from labelwall.agent.metrics import AgentMetrics
from labelwall.agent.port import MemoryDatapath, StaticRoutes
from labelwall.cluster import Labels, Pod
from labelwall.datapath import mapspecs, reader
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import compile_cluster
from labelwall.policy.mapstate import SubjectFlags
from labelwall.source import SourceSnapshot as Snapshot

from .test_reconcile import ListSource

IP = ipaddress.ip_address
IPCACHE, ENDPOINTS = mapspecs.IPCACHE_MAP.name, mapspecs.ENDPOINTS_MAP.name
ISO = SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED
ROUTES = {IP(f"10.244.1.{10 + i}"): 10 + i for i in range(6)}


def pods(n: int) -> list[Pod]:
    return [pod("shop", f"p{i}", {"app": f"p{i}"}, [f"10.244.1.{10 + i}"]) for i in range(n)]


def open_shop(n: int) -> ClusterState:
    return cluster([ns("shop")], pods(n), [])


def isolating_shop(n: int) -> ClusterState:
    """p0 admits p1 on 80, ingress only; nobody else is isolated."""
    only = policy("shop", "p0", sel({"app": "p0"}), ingress=[rule([pods_peer({"app": "p1"})],
                                                                   [port(80)])])  # fmt: skip
    return cluster([ns("shop")], pods(n), [only])


def agent_on(dp: MemoryDatapath) -> Agent:
    metrics = AgentMetrics(max_entries=dp.io.capacity)  # as app.py passes the loaded sizes
    agent = Agent(
        ListSource(Snapshot(ClusterState())),
        dp,
        StaticRoutes(ROUTES),
        metrics=metrics,
        clock=lambda: 0.0,
    )
    agent.start()
    return agent


def sample(agent: Agent, name: str, **labels: str) -> float | None:
    return agent.metrics.registry.get_sample_value(name, labels)


def mirrored(dp: MemoryDatapath, ifindex: int) -> SubjectFlags:
    return SubjectFlags(reader.read_endpoints(dp.io)[ifindex].flags & int(ISO))


def test_a_full_ipcache_isolates_the_selected_pod_reports_it_and_heals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dp = MemoryDatapath(capacity={IPCACHE: 4})
    agent = agent_on(dp)
    assert agent.handle(Snapshot(open_shop(4))).ok
    assert sample(agent, "labelwall_agent_enforcement_degraded") == 0
    assert sample(agent, "labelwall_bpf_map_pressure", map=IPCACHE) == 1.0
    caplog.set_level(logging.INFO, logger="labelwall.agent")
    # Two more pods and a policy isolating p0: the ipcache needs 6 of 4.
    result = agent.handle(Snapshot(isolating_shop(6)))
    assert result.ok
    assert mirrored(dp, 10) == SubjectFlags.INGRESS_ISOLATED  # today: left open
    assert sample(agent, "labelwall_agent_enforcement_degraded") == 1
    assert sample(agent, "labelwall_agent_map_refused_entries", map=IPCACHE) == 2
    full = [r for r in caplog.records if r.getMessage().startswith("map full")]
    assert [(r.map, r.max_entries, r.needed) for r in full] == [(IPCACHE, 4, 6)]  # type: ignore[attr-defined]
    assert agent.degraded == ("map lw_ipcache_v1 is full: it holds 4 entries and needed 6",)
    # The drift check retries into the same failure without logging it again.
    agent.repair()
    assert len([r for r in caplog.records if r.getMessage().startswith("map full")]) == 1
    assert sample(agent, "labelwall_agent_enforcement_degraded") == 1
    # Space returns (two pods leave): the next sync writes the whole state.
    fits = isolating_shop(4)
    assert agent.handle(Snapshot(fits)).ok
    assert dp.read_state() == compile_cluster(fits).map_state
    assert sample(agent, "labelwall_agent_enforcement_degraded") == 0
    assert any(r.getMessage().startswith("map space returned") for r in caplog.records)
    assert not agent.degraded


def test_a_full_ipcache_heals_on_a_drift_check_when_the_map_grows() -> None:
    dp = MemoryDatapath(capacity={IPCACHE: 4})
    agent = agent_on(dp)
    want = isolating_shop(6)
    agent.handle(Snapshot(want))
    assert sample(agent, "labelwall_agent_enforcement_degraded") == 1
    dp.io.capacity[IPCACHE] = 8
    agent.repair()
    assert dp.read_state() == compile_cluster(want).map_state
    assert sample(agent, "labelwall_agent_enforcement_degraded") == 0


def test_a_later_snapshot_while_degraded_retries_every_refused_entry() -> None:
    dp = MemoryDatapath(capacity={IPCACHE: 4})
    agent = agent_on(dp)
    agent.handle(Snapshot(isolating_shop(6)))
    dp.io.capacity[IPCACHE] = 8
    relabelled = isolating_shop(6)
    p5 = relabelled.pods["shop/p5"]
    relabelled = replace(
        relabelled, pods={**relabelled.pods, p5.key: replace(p5, labels=Labels({"x": "y"}))}
    )
    agent.handle(Snapshot(relabelled))  # touches p5 only; p4's refused entry is written too
    assert dp.read_state() == compile_cluster(relabelled).map_state
    assert not agent.degraded


def test_a_pod_the_full_endpoints_map_refuses_is_attached_closed_only_if_isolated() -> None:
    dp = MemoryDatapath(capacity={ENDPOINTS: 2})
    agent = agent_on(dp)
    deny_all = cluster([ns("shop")], pods(3), [policy("shop", "deny", sel(), ingress=[])])
    agent.handle(Snapshot(deny_all))
    assert set(dp.endpoints()) == {10, 11}
    assert 12 in dp.attached  # no entry: the classifier drops everything for it (closed)
    assert sample(agent, "labelwall_agent_enforcement_degraded") == 1
    assert agent.degraded == ("map lw_endpoints_v1 is full: it holds 2 entries and needed 3",)

    dp2 = MemoryDatapath(capacity={ENDPOINTS: 2})
    open_agent = agent_on(dp2)
    open_agent.handle(Snapshot(open_shop(3)))
    assert 12 not in dp2.attached  # not isolated: left as it is, unjudged but not cut off
    dp2.io.capacity[ENDPOINTS] = 4
    open_agent.repair()
    assert set(dp2.endpoints()) == {10, 11, 12}
    assert 12 in dp2.attached
    assert sample(open_agent, "labelwall_agent_enforcement_degraded") == 0
