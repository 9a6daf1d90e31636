"""Real traffic: pods as network namespaces, the classifier on their host-side veths,
maps written by the real writer from the real compiler's output.

Cluster (namespace ``x``, one node whose address is the lab node's ``lw-host0``):

    b  ingress from app=a on TCP/UDP 80          (ingress isolated)
    c  egress to app=a on TCP/UDP 81             (egress isolated)
    a, d  no policy

Every pod serves TCP and UDP echo on 80 and 81, so an allowed probe is answered and a
dropped one times out (a closed port would be "refused", which never happens here).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any

import pytest

from labelwall.datapath import codecs, mapspecs
from labelwall.datapath.facade import Datapath
from labelwall.lab import topology as L  # noqa: N812 - L.create_pod reads like the lab's API
from labelwall.lab.node import LabNode
from labelwall.lab.prober import Probe, ProbeHelper
from labelwall.manifests import SourceDoc, load_cluster
from labelwall.policy.compile import Compiled, compile_cluster
from labelwall.policy.mapstate import diff

from .conftest import fresh_datapath, lw_pins

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.netns]

PREFIX = "lw-tt-"
NODE = PREFIX + "node"
LAB_NODE = LabNode("lab", NODE)
PODS = {  # name -> (labels, IPv4, IPv6)
    "a": ({"app": "a"}, "10.244.9.2", "fd00:10:244:9::2"),
    "b": ({"app": "b"}, "10.244.9.3", "fd00:10:244:9::3"),
    "c": ({"app": "c"}, "10.244.9.4", "fd00:10:244:9::4"),
    "d": ({"app": "d"}, "10.244.9.5", "fd00:10:244:9::5"),
}
PORTS = (80, 81)
TIMEOUT_S = 0.4  # per probe; the echo answers in well under a millisecond here


def _ports(port: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port}, {"protocol": "UDP", "port": port}]


POLICIES: list[dict[str, Any]] = [
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "b-from-a", "namespace": "x"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "b"}},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": _ports(80)}
            ],
        },
    },
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "c-to-a", "namespace": "x"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "c"}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": _ports(81)}
            ],
        },
    },
]


def compile_for(ips: dict[str, tuple[str, str]]) -> Compiled:
    """The compiler's output for the cluster above with pods at ``ips``."""
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}},
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "lab"},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": LAB_NODE.host_v4},
                    {"type": "InternalIP", "address": LAB_NODE.host_v6},
                ]
            },
        },
    ]
    for name, (labels, _, _) in PODS.items():
        v4, v6 = ips[name]
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "x", "labels": labels},
                "spec": {"nodeName": "lab", "containers": [{"name": "c", "image": "i"}]},
                "status": {"podIP": v4, "podIPs": [{"ip": v4}, {"ip": v6}]},
            }
        )
    docs += POLICIES
    state = load_cluster(SourceDoc("test_traffic", i, d) for i, d in enumerate(docs)).state
    return compile_cluster(state)


@dataclass
class Lab:
    dp: Datapath
    pods: dict[str, L.PodNet] = field(default_factory=dict)
    agents: dict[str, ProbeHelper] = field(default_factory=dict)
    ips: dict[str, tuple[str, str]] = field(default_factory=dict)

    def add_pod(self, name: str, v4: str, v6: str, identity: int) -> None:
        pod = L.create_pod(PREFIX + name, v4, v6, node=LAB_NODE)
        self.pods[name] = pod
        self.ips[name] = (v4, v6)
        self.dp.set_endpoint(pod.host_ifindex, identity, (ip_address(v4), ip_address(v6)))
        with L.in_netns(NODE):  # the host-side veth lives in the lab's node netns
            self.dp.attach(pod.host_ifname)
        agent = self.agents[name] = ProbeHelper.start(pod.name)
        agent.serve(tcp=PORTS, udp=PORTS)

    def remove_pod(self, name: str) -> None:
        self.agents.pop(name).close()
        pod = self.pods.pop(name)
        self.dp.delete_endpoint(pod.host_ifindex)
        L.delete_pod(pod.name, node=LAB_NODE)

    def probe(self, cases: list[tuple[str, str, str, int, int]]) -> dict[tuple[Any, ...], str]:
        """Outcome per (client, server, proto, port, family); client/server "node" = lw-host0."""
        by_client: dict[str, list[tuple[tuple[Any, ...], Probe]]] = {}
        for client, server, proto, port, family in cases:
            dst = (LAB_NODE.host_v4, LAB_NODE.host_v6) if server == "node" else self.ips[server]
            src = (LAB_NODE.host_v4, LAB_NODE.host_v6)[family == 6] if client == "node" else None
            probe = Probe(proto, dst[family == 6], port, TIMEOUT_S, src)  # type: ignore[arg-type]
            by_client.setdefault(client, []).append(((client, server, proto, port, family), probe))
        out: dict[tuple[Any, ...], str] = {}
        for client, items in by_client.items():
            results = self.agents[client].probe([p for _, p in items])
            out.update({case: r.outcome for (case, _), r in zip(items, results, strict=True)})
        return out


def _leftovers() -> dict[str, list[str]]:
    return {
        "netns": L.list_netns(PREFIX),
        "links": L.list_links(PREFIX),
        "pins": lw_pins(),
    }


@pytest.fixture
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail("traffic tests need root (CAP_NET_ADMIN, CAP_BPF, CAP_SYS_ADMIN)")
    assert L.list_netns(PREFIX) == [], f"stale lab namespaces: {L.list_netns(PREFIX)}"
    node = L.setup_node(LAB_NODE)
    try:
        with fresh_datapath() as dp:
            compiled = compile_for({n: (v4, v6) for n, (_, v4, v6) in PODS.items()})
            dp.apply(diff(dp.read_state(), compiled.map_state))
            lab = Lab(dp)
            try:
                for name, (_, v4, v6) in PODS.items():
                    lab.add_pod(name, v4, v6, compiled.pod_identity[f"x/{name}"])
                node_agent = lab.agents["node"] = ProbeHelper.start(NODE)
                node_agent.serve(tcp=PORTS, udp=PORTS)
                yield lab
            finally:
                agents = list(lab.agents.values())
                for agent in agents:
                    agent.close()
                for pod in lab.pods.values():
                    with L.in_netns(NODE):
                        dp.detach(pod.host_ifname)
                    L.delete_pod(pod.name, node=LAB_NODE)
                assert all(a.proc.poll() is not None for a in agents)
    finally:
        L.cleanup(PREFIX, nodes=[None, NODE])
        L.teardown_node(node)
        assert _leftovers() == {"netns": [], "links": [], "pins": []}
        assert not any(n.startswith(PREFIX) for n in os.listdir(mapspecs.PIN_ROOT))


def _expect(
    allowed: list[tuple[str, str, int]], denied: list[tuple[str, str, int]]
) -> dict[tuple[Any, ...], str]:
    """Both protocols and both families for each (client, server, port)."""
    expected = {}
    for verdict, pairs in (("ok", allowed), ("timeout", denied)):
        for client, server, port in pairs:
            for proto in ("tcp", "udp"):
                for family in (4, 6):
                    expected[(client, server, proto, port, family)] = verdict
    return expected


def test_connections_policy_allows_succeed_and_the_others_time_out_in_both_directions(
    lab: Lab,
) -> None:
    expected = _expect(
        allowed=[
            ("a", "b", 80),  # b's ingress policy admits a on 80
            ("c", "a", 81),  # c's egress policy admits a on 81
            ("d", "c", 80),  # c is not ingress-isolated; its replies pass its egress hook
            ("b", "d", 81),  # b is not egress-isolated; replies pass its ingress hook
            ("a", "d", 80),  # no policy at all
        ],
        denied=[
            ("a", "b", 81),  # b ingress: port 81 not admitted
            ("d", "b", 80),  # b ingress: d is not a peer
            ("c", "a", 80),  # c egress: port 80 not admitted
            ("c", "d", 81),  # c egress: d is not a peer
        ],
    )
    got = lab.probe(list(expected))
    assert {k: v for k, v in got.items() if v != expected[k]} == {}


def test_the_node_reaches_every_pod_and_every_pod_reaches_the_node(lab: Lab) -> None:
    # b admits only a and c may only talk to a:81, but node traffic (host identity) passes.
    expected = _expect(
        allowed=[("node", "b", 81), ("node", "c", 80), ("b", "node", 80), ("c", "node", 80)],
        denied=[],
    )
    got = lab.probe(list(expected))
    assert {k: v for k, v in got.items() if v != expected[k]} == {}


def test_a_pod_recreated_with_a_new_address_and_the_same_labels_needs_no_policy_write(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    dp = lab.dp
    policy_before = dp.read_state().policy
    lab.remove_pod("b")
    new_ips = dict(lab.ips)
    new_ips["b"] = ("10.244.9.30", "fd00:10:244:9::30")
    compiled = compile_for(new_ips)

    writes: list[tuple[str, int]] = []  # (map name, entries) per writer call
    upsert, delete = dp.writer.upsert_raw, dp.writer.delete_raw

    def counting_upsert(spec: mapspecs.MapSpec, keys: list[bytes], values: list[bytes]) -> None:
        writes.append((spec.name, len(keys)))
        upsert(spec, keys, values)

    def counting_delete(spec: mapspecs.MapSpec, keys: list[bytes]) -> None:
        writes.append((spec.name, len(keys)))
        delete(spec, keys)

    monkeypatch.setattr(dp.writer, "upsert_raw", counting_upsert)
    monkeypatch.setattr(dp.writer, "delete_raw", counting_delete)
    dp.apply(diff(dp.read_state(), compiled.map_state))
    written = {name for name, n in writes if n}
    assert written == {codecs.IPCACHE.spec.name}  # old addresses out, new ones in
    assert dp.read_state().policy == policy_before

    lab.add_pod("b", *new_ips["b"], compiled.pod_identity["x/b"])
    expected = _expect(
        allowed=[("a", "b", 80), ("b", "d", 80), ("node", "b", 81)],
        denied=[("a", "b", 81), ("d", "b", 80), ("c", "b", 81)],
    )
    got = lab.probe(list(expected))
    assert {k: v for k, v in got.items() if v != expected[k]} == {}
