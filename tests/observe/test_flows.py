"""Pure: verdict events -> flows named exactly as `labelwall explain` names the same runs."""

from __future__ import annotations

import dataclasses
import ipaddress
import json

import pytest

from labelwall.cluster import Direction, Protocol
from labelwall.identity.numbers import Reserved
from labelwall.manifests import SourceDoc, load_cluster
from labelwall.policy.compile import Compiled, compile_cluster
from labelwall.policy.flows import FlowView, PolicyRef, VerdictEvent, flow_from_json, to_flow
from labelwall.policy.lookup import Reason, decide
from labelwall.policy.matrix import Side, explain

from .scenario import ADDRESS, OBJECTS

T0 = 1_764_692_400_000_000_000  # 2025-12-02T16:20:00Z
IN, OUT = Direction.INGRESS, Direction.EGRESS


@pytest.fixture(scope="module")
def compiled() -> Compiled:
    docs = [SourceDoc("scenario", i, o) for i, o in enumerate(OBJECTS)]
    return compile_cluster(load_cluster(docs).state)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def kernel_event(c: Compiled, direction: Direction, src: str, dst: str, proto: Protocol,
                 dport: int, family: int = 0) -> VerdictEvent:  # fmt: skip
    """What the classifier reports for the first packet src -> dst at one end's hook, built
    from the lookup model (the kernel's specification; tests/datapath checks they agree)."""
    s, d = ADDRESS[src][family], ADDRESS[dst][family]
    subject = dst if direction is IN else src
    peer = s if direction is IN else d
    v = decide(c.map_state, c.pod_identity[subject], direction, ip(peer), ip(d), proto, dport)
    sport = dport if proto is Protocol.ICMP else 40000
    return VerdictEvent(T0, direction, v.allowed, v.reason, v.cookie, c.pod_identity[subject],
                        v.peer_identity, v.cidr_identity, int(proto) if proto is not
                        Protocol.ICMP or family == 0 else 58, sport, dport, ip(s), ip(d),
                        0x02 if proto is Protocol.TCP else 0,
                        # an echo request: type 8 (ICMPv4) / 128 (ICMPv6), code 0
                        (8, 128)[family] if proto is Protocol.ICMP else None,
                        0 if proto is Protocol.ICMP else None)  # fmt: skip


def expected(side: Side) -> tuple[tuple[PolicyRef, ...], tuple[PolicyRef, ...]]:
    """explain's names for one run as a flow's (allowed_by, denied_by)."""
    if side.verdict.reason is Reason.POLICY:
        assert side.rule is not None
        return (PolicyRef.of_rule(side.rule),), ()
    if not side.verdict.allowed:
        return (), tuple(PolicyRef.of_policy(p) for p in side.policies)
    return (), ()


CASES = [
    ("shop/client", "shop/web", Protocol.TCP, 80),
    ("shop/client", "shop/web", Protocol.UDP, 53),
    ("shop/client", "shop/web", Protocol.TCP, 8080),  # rule 1 of allow-web (any port)
    ("shop/client", "tenant/other", Protocol.TCP, 80),  # egress denied at client
    ("tenant/other", "shop/web", Protocol.TCP, 80),  # ingress denied at web by isolation
    ("tenant/other", "shop/web", Protocol.UDP, 53),
]


@pytest.mark.parametrize("family", [0, 1], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize(("src", "dst", "proto", "port"), CASES)
def test_each_end_of_a_flow_is_named_as_explain_names_it(
    compiled: Compiled, src: str, dst: str, proto: Protocol, port: int, family: int
) -> None:
    ex = explain(compiled, src, dst, port, proto)
    view = FlowView.of(compiled, "node-a")
    for side, direction in ((ex.egress, OUT), (ex.ingress, IN)):
        flow = to_flow(kernel_event(compiled, direction, src, dst, proto, port, family), view)
        allowed, denied = expected(side)
        ingress = direction is IN
        assert flow.traffic_direction == direction.name
        assert flow.verdict == ("FORWARDED" if side.verdict.allowed else "DROPPED")
        assert (flow.ingress_allowed_by if ingress else flow.egress_allowed_by) == allowed
        assert (flow.ingress_denied_by if ingress else flow.egress_denied_by) == denied
        assert (flow.egress_allowed_by + flow.egress_denied_by if ingress else
                flow.ingress_allowed_by + flow.ingress_denied_by) == ()  # fmt: skip
        assert (flow.source.pod_name, flow.destination.pod_name) == (
            src.split("/")[1], dst.split("/")[1])  # fmt: skip
        assert (flow.source.identity, flow.destination.identity) == (
            ex.src_identity, ex.dst_identity)  # fmt: skip
        assert flow.ip_version == (4, 6)[family]
        assert flow_from_json(json.loads(json.dumps(flow.as_json()))) == flow


def test_a_drop_by_isolation_names_every_isolating_policy_and_says_policy_denied(
    compiled: Compiled,
) -> None:
    flow = to_flow(kernel_event(compiled, IN, "tenant/other", "shop/web", Protocol.TCP, 80),
                   FlowView.of(compiled, "node-a"))  # fmt: skip
    assert flow.drop_reason_desc == "POLICY_DENIED"
    assert [p.key for p in flow.ingress_denied_by] == ["shop/allow-web", "shop/default-deny"]
    doc = flow.as_json()["flow"]
    assert doc["ingress_denied_by"] == [
        {"name": "allow-web", "namespace": "shop", "kind": "NetworkPolicy"},
        {"name": "default-deny", "namespace": "shop", "kind": "NetworkPolicy"},
    ]
    assert doc["l4"] == {"TCP": {"source_port": 40000, "destination_port": 80,
                                 "flags": {"SYN": True}}}  # fmt: skip
    assert doc["source"]["labels"] == ["k8s:app=other", "k8s:io.kubernetes.pod.namespace=tenant"]
    assert doc["time"] == "2025-12-02T16:20:00.000000000Z"


def test_an_allow_names_the_rule_and_its_index(compiled: Compiled) -> None:
    view = FlowView.of(compiled, "node-a")
    flow = to_flow(kernel_event(compiled, IN, "shop/client", "shop/web", Protocol.TCP, 8080), view)
    assert flow.as_json()["flow"]["ingress_allowed_by"] == [
        {"name": "allow-web", "namespace": "shop", "kind": "NetworkPolicy", "rule_index": 1}
    ]


def test_icmp_type_and_code_are_the_kernel_record_s(compiled: Compiled) -> None:
    view = FlowView.of(compiled, "node-a")
    echo = kernel_event(compiled, IN, "shop/client", "shop/web", Protocol.ICMP, 7, 0)
    unreachable = dataclasses.replace(echo, icmp_type=3, icmp_code=4)
    assert to_flow(unreachable, view).as_json()["flow"]["l4"] == {"ICMPv4": {"type": 3, "code": 4}}
    # no ICMP header was read (a non-first fragment): the type is unknown, not "echo reply"
    unknown = dataclasses.replace(echo, icmp_type=None, icmp_code=None)
    assert to_flow(unknown, view).as_json()["flow"]["l4"] == {
        "ICMPv4": {"type": None, "code": None}
    }


def test_icmp_echo_and_the_first_tcp_reply(compiled: Compiled) -> None:
    view = FlowView.of(compiled, "node-a")
    echo = to_flow(kernel_event(compiled, IN, "shop/client", "shop/web", Protocol.ICMP, 7, 1),
                   view)  # fmt: skip
    assert echo.as_json()["flow"]["l4"] == {"ICMPv6": {"type": 128, "code": 0}}
    assert [p.rule_index for p in echo.ingress_allowed_by] == [1]
    web, client = ip(ADDRESS["shop/web"][0]), ip(ADDRESS["shop/client"][0])
    reply = VerdictEvent(T0, OUT, True, Reason.CT_REPLY, 0, 0, 0, 0, 6, 80, 40000, web, client,
                         0x12)  # fmt: skip
    r = to_flow(reply, view)
    assert (r.is_reply, r.traffic_direction, r.verdict, r.policies) == (
        True, "INGRESS", "FORWARDED", ())  # fmt: skip
    assert r.tcp_flags == ("SYN", "ACK")
    assert r.source.pod_name == "web"
    assert r.source.identity == compiled.pod_identity["shop/web"]


def test_world_node_and_cidr_peers_are_named(compiled: Compiled) -> None:
    view = FlowView.of(compiled, "node-a")
    ev = VerdictEvent(T0, OUT, False, Reason.POLICY_DENIED, 0, compiled.pod_identity[
        "shop/client"], int(Reserved.WORLD), 0, 17, 40000, 53, ip(ADDRESS["shop/client"][0]),
        ip("8.8.8.8"))  # fmt: skip
    f = to_flow(ev, view)
    assert (f.destination.identity, f.destination.labels) == (2, ("reserved:world",))
    assert [p.key for p in f.egress_denied_by] == ["shop/allow-client", "shop/default-deny"]


def test_the_agents_cheap_naming_equals_the_full_compile_result(compiled: Compiled) -> None:
    """What the agent snapshots per sync (IncrementalCompiler.naming) names as Compiled does."""
    from labelwall.policy.attribution import Naming
    from labelwall.policy.incremental import IncrementalCompiler

    inc = IncrementalCompiler(compiled.state)
    cheap, full = inc.naming(), Naming.of_compiled(inc.compiled)
    assert cheap.cookies == full.cookies
    assert cheap.policy_subjects == full.policy_subjects
    assert cheap.cidrs == full.cidrs
    assert cheap.identities == full.identities
    for pod in compiled.state.pods.values():
        assert cheap.identity_of(pod) == full.identity_of(pod) == inc.compiled.pod_identity[pod.key]
