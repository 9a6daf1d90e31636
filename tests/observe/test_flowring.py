"""The agent's flow ring and its 127.0.0.1 endpoint (no root: a real local HTTP server)."""

from __future__ import annotations

import ipaddress
import json
import urllib.request

import pytest

from labelwall.agent.flowring import FOLLOWING_S, FlowRing, serve_flows
from labelwall.cluster import Direction
from labelwall.policy.compile import Compiled
from labelwall.policy.flows import FlowView, VerdictEvent, flow_from_json
from labelwall.policy.lookup import Reason

from .scenario import ADDRESS
from .test_flows import compiled  # noqa: F401 - the fixture


def event(i: int) -> VerdictEvent:
    src = ipaddress.ip_address(ADDRESS["tenant/other"][0])
    dst = ipaddress.ip_address(ADDRESS["shop/web"][0])
    return VerdictEvent(i, Direction.INGRESS, False, Reason.POLICY_DENIED, 0, 0, 0, 0, 6,
                        40000 + i, 80, src, dst)  # fmt: skip


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_ring_keeps_the_last_n_and_pages_by_sequence() -> None:
    ring = FlowRing(3)
    ring.add([event(i) for i in range(5)], None)
    entries, first, nxt = ring.since(0)
    assert [seq for seq, _, _ in entries] == [3, 4, 5]
    assert (first, nxt, len(ring)) == (3, 5, 3)
    assert ring.since(4)[0][0][0] == 5
    assert ring.since(5)[0] == []
    assert [s for s, _, _ in ring.since(0, limit=2)[0]] == [3, 4]
    with pytest.raises(ValueError, match="at least 1"):
        FlowRing(0)


def test_only_flows_a_following_client_missed_count_as_lost() -> None:
    clock = Clock()
    ring = FlowRing(2, clock)
    ring.add([event(i) for i in range(10)], None)
    assert ring.lost == 0  # nobody follows: overwriting is what a ring does
    ring.since(0)  # a client reads 9 and 10
    ring.add([event(11), event(12)], None)
    assert ring.lost == 0  # 9 and 10 were read before they went
    ring.add([event(13)], None)
    assert ring.lost == 1  # 11 went unread while the client followed
    clock.now += FOLLOWING_S + 1
    ring.add([event(14), event(15)], None)
    assert ring.lost == 1  # the client left


def test_the_endpoint_serves_hubble_json_on_localhost_only(compiled: Compiled) -> None:  # noqa: F811
    ring = FlowRing(10)
    ring.add([event(1), event(2)], FlowView.of(compiled, "node-a"))
    server = serve_flows(ring, "node-a", 0)
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/flows?since=1") as resp:
            page = json.loads(resp.read())
        assert (page["node_name"], page["first"], page["next"]) == ("node-a", 1, 2)
        (doc,) = page["flows"]
        flow = flow_from_json(doc)
        assert (flow.source.pod_name, flow.destination.pod_name, flow.verdict) == (
            "other", "web", "DROPPED")  # fmt: skip
        assert [p.key for p in flow.ingress_denied_by] == ["shop/allow-web", "shop/default-deny"]
        with pytest.raises(urllib.error.HTTPError, match="400"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/flows?since=x")
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
