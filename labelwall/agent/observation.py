"""Observation wiring: the flow view published by the loop, the flow ring, the metrics.

``start_observation`` is called once by ``build_agent``: the per-rule/drop/lost metrics are
always registered (they read the kernel's per-CPU counters at scrape time); the flow ring,
its collector thread and the 127.0.0.1 flow endpoint only with ``--flows-port``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http.server import ThreadingHTTPServer
from typing import Protocol

from labelwall.agent.desired import DesiredState
from labelwall.agent.flowmetrics import CounterSource, FlowCounters
from labelwall.agent.flowring import DEFAULT_BUFFER, FlowCollector, FlowRing, serve_flows
from labelwall.agent.loop import Agent
from labelwall.datapath.events import EventStream
from labelwall.datapath.flowreader import VerdictReader
from labelwall.policy.cookies import RuleRef
from labelwall.policy.flows import FlowView

log = logging.getLogger("labelwall.agent")


class Observation:
    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self.view: FlowView | None = None  # replaced whole by the loop thread (atomic)
        self.ring: FlowRing | None = None
        self.collector: FlowCollector | None = None
        self.server: ThreadingHTTPServer | None = None

    def publish(self, desired: DesiredState) -> None:
        """In the loop thread after a good sync: the names flows read from now on get.

        Never fails the sync: observation is best effort, enforcement is not.
        """
        try:
            self.view = FlowView.of(desired.compiler.naming(), self.node_name)
        except Exception:
            log.exception("cannot name flows with the new policy view; keeping the last one")

    def cookies(self) -> Mapping[int, RuleRef]:
        view = self.view
        return view.names.cookies if view is not None else {}

    def ring_lost(self) -> int:
        return self.ring.lost if self.ring is not None else 0

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
        if self.collector is not None:
            self.collector.stop()


class ObservedDatapath(CounterSource, Protocol):
    def events(self) -> EventStream: ...


def start_observation(
    agent: Agent,
    dp: ObservedDatapath,
    node_name: str,
    flows_port: int = 0,
    flows_buffer: int = DEFAULT_BUFFER,
) -> Observation:
    obs = Observation(node_name)
    agent.on_synced = obs.publish
    agent.on_stop.append(obs.close)
    agent.metrics.registry.register(FlowCounters(dp, obs.cookies, obs.ring_lost))
    if flows_port:
        obs.ring = FlowRing(flows_buffer)
        obs.collector = FlowCollector(VerdictReader(dp.events()), obs.ring, lambda: obs.view)
        obs.collector.start()
        obs.server = serve_flows(obs.ring, node_name, flows_port)
    return obs
