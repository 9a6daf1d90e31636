"""`labelwall lab observe` on real connections: flows named exactly as `explain` predicts.

Default deny plus two allowing policies (scenario.py). Real TCP connections, UDP datagrams
and ICMP echoes, IPv4 and IPv6, from sockets opened inside the lab's pod namespaces; the
lab agent's flow ring read through the same client `labelwall lab observe` uses.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from observe.scenario import ADDRESS, OBJECTS

from labelwall.cli.lab import lab_flow_source, lab_state
from labelwall.cluster import Protocol
from labelwall.lab import topology
from labelwall.lab.control import Lab
from labelwall.policy.compile import compile_cluster
from labelwall.policy.flows import Flow, PolicyRef, flow_from_json
from labelwall.policy.lookup import Reason
from labelwall.policy.matrix import Side, explain

from .conftest import PREFIX
from .helpers import metric, sync_to

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.netns]

_ports = iter(range(42000, 43000))


@pytest.fixture(scope="module")
def shop(lab: Lab) -> Iterator[Lab]:
    sync_to(lab, OBJECTS)
    yield lab
    sync_to(lab, [])


@dataclass(frozen=True)
class Sent:
    src: str
    dst: str
    proto: Protocol
    port: int  # destination port (ICMP: the echo id)
    sport: int
    family: int  # 0 = IPv4, 1 = IPv6
    reached: bool


def _icmp4(ident: int) -> bytes:
    body = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"observe!"
    total = sum(struct.unpack(f"!{len(body) // 2}H", body))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return body[:2] + struct.pack("!H", ~total & 0xFFFF) + body[4:]


def send(where: Lab, src: str, dst: str, proto: Protocol, port: int, family: int) -> Sent:
    """One real connection/datagram/echo from pod ``src``; bounded by a 1 s timeout."""
    fam = (socket.AF_INET, socket.AF_INET6)[family]
    s_addr, d_addr = ADDRESS[src][family], ADDRESS[dst][family]
    sport = next(_ports)
    with topology.in_netns(where.paths.pod_netns(src)):
        if proto is Protocol.TCP:
            s = socket.socket(fam, socket.SOCK_STREAM)
        elif proto is Protocol.UDP:
            s = socket.socket(fam, socket.SOCK_DGRAM)
        elif family == 0:
            s = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        else:
            s = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    reached = False
    try:
        s.settimeout(1.0)
        if proto in (Protocol.TCP, Protocol.UDP):
            s.bind((s_addr, sport))
        if proto is Protocol.TCP:
            try:
                s.connect((d_addr, port))
                s.sendall(b"ping")
                reached = s.recv(16) == b"ping"
            except OSError:
                reached = False
        elif proto is Protocol.UDP:
            s.sendto(b"ping", (d_addr, port))
            try:
                reached = s.recv(16) == b"ping"
            except OSError:
                reached = False
        else:
            sport = port
            msg = _icmp4(port) if family == 0 else struct.pack("!BBHHH", 128, 0, 0, port, 1)
            s.sendto(msg, (d_addr, 0))
            deadline = time.monotonic() + 1.0
            while not reached and time.monotonic() < deadline:
                if not select.select([s], [], [], 0.2)[0]:
                    continue
                data = s.recv(256)
                icmp = data[(data[0] & 0x0F) * 4 :] if family == 0 else data
                reached = icmp[0] in (0, 129) and struct.unpack("!H", icmp[4:6])[0] == port
    finally:
        s.close()
    return Sent(src, dst, proto, port, sport, family, reached)


def flows_of(where: Lab) -> list[Flow]:
    page = lab_flow_source(where).fetch(0)
    return [flow_from_json(d) for d in page["flows"]]


def matching(flows: list[Flow], s: Sent, reply: bool = False) -> list[Flow]:
    src, dst = ADDRESS[s.src][s.family], ADDRESS[s.dst][s.family]
    if reply:
        src, dst = dst, src
    out = []
    for f in flows:
        if (f.ip_source, f.ip_destination, f.is_reply) != (src, dst, reply):
            continue
        if s.proto in (Protocol.TCP, Protocol.UDP):
            ports = (s.port, s.sport) if reply else (s.sport, s.port)
            if (f.source_port, f.destination_port) != ports or f.protocol != s.proto.name:
                continue
        elif not f.protocol.startswith("ICMP"):
            continue
        out.append(f)
    return out


def predicted(side: Side) -> tuple[str, tuple[PolicyRef, ...], tuple[PolicyRef, ...]]:
    """(verdict, allowed_by, denied_by) of one end, from explain's Side."""
    v = side.verdict
    if v.reason is Reason.POLICY:
        assert side.rule is not None
        return "FORWARDED", (PolicyRef.of_rule(side.rule),), ()
    if not v.allowed:
        return "DROPPED", (), tuple(PolicyRef.of_policy(p) for p in side.policies)
    return "FORWARDED", (), ()


CASES = [
    ("shop/client", "shop/web", Protocol.TCP, 80, True),
    ("shop/client", "shop/web", Protocol.UDP, 53, True),
    ("shop/client", "shop/web", Protocol.ICMP, 0, True),  # allow-web rule 1 (no ports)
    ("tenant/other", "shop/web", Protocol.TCP, 80, False),  # denied by isolation at web
    ("tenant/other", "shop/web", Protocol.UDP, 53, False),
    ("shop/client", "tenant/other", Protocol.TCP, 80, False),  # denied at client's egress
]


def wait_for(where: Lab, sent: list[Sent], limit_s: float = 10.0) -> list[Flow]:
    deadline = time.monotonic() + limit_s
    while True:
        flows = flows_of(where)
        if all(matching(flows, s) for s in sent) or time.monotonic() > deadline:
            return flows
        time.sleep(0.2)


def test_flows_of_real_connections_are_named_as_explain_predicts(shop: Lab) -> None:
    compiled = compile_cluster(lab_state(shop))
    sent: list[Sent] = []
    for family in (0, 1):
        for i, (src, dst, proto, port, ok) in enumerate(CASES):
            if proto is Protocol.ICMP:
                port = 700 + 10 * family + i  # the echo id
            s = send(shop, src, dst, proto, port, family)
            assert s.reached == ok, s
            sent.append(s)
    flows = wait_for(shop, sent)
    for s in sent:
        proto = Protocol.ICMPV6 if s.proto is Protocol.ICMP and s.family else s.proto
        ex = explain(compiled, s.src, s.dst, s.port, proto)
        got = matching(flows, s)
        at_src = [f for f in got if f.traffic_direction == "EGRESS"]
        at_dst = [f for f in got if f.traffic_direction == "INGRESS"]
        assert at_src, f"no egress flow for {s}"
        for f in got:
            assert (f.source.pod_name, f.destination.pod_name) == (
                s.src.split("/")[1], s.dst.split("/")[1]), f  # fmt: skip
            assert (f.source.identity, f.destination.identity) == (
                ex.src_identity, ex.dst_identity)  # fmt: skip
            assert f.ip_version == (4, 6)[s.family]
        for f in at_src:
            verdict, allowed, denied = predicted(ex.egress)
            assert (f.verdict, f.egress_allowed_by, f.egress_denied_by) == (
                verdict, allowed, denied), (s, f)  # fmt: skip
            assert f.ingress_allowed_by + f.ingress_denied_by == ()
        if ex.egress.verdict.allowed:
            assert at_dst, f"no ingress flow for {s}"
        else:
            assert at_dst == [], "a packet dropped at the source never reaches the destination"
        for f in at_dst:
            verdict, allowed, denied = predicted(ex.ingress)
            assert (f.verdict, f.ingress_allowed_by, f.ingress_denied_by) == (
                verdict, allowed, denied), (s, f)  # fmt: skip
            if verdict == "DROPPED":
                assert f.drop_reason_desc == "POLICY_DENIED"
                assert [p.key for p in f.ingress_denied_by] == [
                    "shop/allow-web", "shop/default-deny"]  # fmt: skip
        if s.reached:
            replies = matching(flows, s, reply=True)
            # the first reply (TCP: the SYN-ACK; UDP: the answer; ICMP: the echo reply) at
            # web's veth (web's ingress connection) and at client's, each once
            assert sorted(f.traffic_direction for f in replies) == ["EGRESS", "INGRESS"], s
            assert all(f.verdict == "FORWARDED" and f.policies == () for f in replies)
            if s.proto is Protocol.TCP:
                assert all("SYN" in f.tcp_flags and "ACK" in f.tcp_flags for f in replies)
            if s.proto is Protocol.ICMP:
                assert all(f.icmp_type == (0, 129)[s.family] for f in replies)
        if s.proto is Protocol.ICMP:
            assert all(f.icmp_type == (8, 128)[s.family] for f in got)


def test_per_rule_counters_move_by_exactly_the_connections_made(shop: Lab) -> None:
    rule = {"namespace": "shop", "policy": "allow-web", "rule": "0", "direction": "ingress"}
    drops = {"reason": "policy_denied", "direction": "ingress"}
    before = metric(shop, "labelwall_policy_rule_packets_total", rule)
    dropped = metric(shop, "labelwall_drops_total", drops)
    n = 7
    for _ in range(n):
        assert send(shop, "shop/client", "shop/web", Protocol.TCP, 80, 0).reached
    assert not send(shop, "tenant/other", "shop/web", Protocol.UDP, 53, 1).reached
    assert metric(shop, "labelwall_policy_rule_packets_total", rule) - before == n
    assert metric(shop, "labelwall_drops_total", drops) - dropped == 1


def test_follow_prints_a_new_flow_within_one_second(shop: Lab) -> None:
    env = dict(os.environ, LABELWALL_LAB_PREFIX=PREFIX)
    argv = [sys.executable, "-m", "labelwall.cli.main", "lab", "--dir", str(shop.paths.root),
            "observe", "-f", "-o", "json", "--from-pod", "shop/client",
            "--protocol", "udp"]  # fmt: skip
    send(shop, "shop/client", "shop/web", Protocol.UDP, 53, 0)  # something to print at start
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        assert select.select([proc.stdout], [], [], 30)[0], "observe printed nothing"
        os.set_blocking(proc.stdout.fileno(), False)
        time.sleep(0.5)
        proc.stdout.read()  # the flows before ours
        s = send(shop, "shop/client", "shop/web", Protocol.UDP, 53, 0)
        t0 = time.monotonic()
        text = b""
        while time.monotonic() - t0 < 5 and f'"source_port": {s.sport}'.encode() not in text:
            if select.select([proc.stdout], [], [], 0.05)[0]:
                text += proc.stdout.read() or b""
        took = time.monotonic() - t0
        assert f'"source_port": {s.sport}'.encode() in text
        assert took < 1.0, f"the new flow took {took:.2f} s to appear"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_observe_against_a_lab_whose_agent_does_not_answer_names_it(
    shop: Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    from labelwall.cli import observe as cli
    from labelwall.lab.control import LAB_FLOWS_PORT

    node = shop.paths.node_netns
    dead = cli.HttpFlowSource("lab-b", f"http://127.0.0.1:{LAB_FLOWS_PORT + 1}",
                              lambda: topology.in_netns(node), timeout=1.0)  # fmt: skip
    live = lab_flow_source(shop)
    p = __import__("argparse").ArgumentParser()
    cli.add_arguments(p)
    q = cli.query_of(p.parse_args(["--last", "1"]))
    lines: list[str] = []
    assert cli.observe([dead, live], q, "compact", False, out=lines.append) == 1
    assert len(lines) == 1
    assert "lab-b" in capsys.readouterr().err
