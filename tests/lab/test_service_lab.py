"""Egress through a Service with real packets and kube-proxy's DNAT (issue 11 item 1).

The lab node netns gets the NAT rules kube-proxy writes, in nftables mode (``table ip
kube-proxy`` / ``ip6 kube-proxy``: the service-ips verdict map, one chain per service
port and per endpoint, ``dnat to``) and in iptables mode (iptables-nft: KUBE-SERVICES,
KUBE-SVC-*, KUBE-SEP-* with ``-j DNAT``). The client pods get a route to the Service
range through their node (what a CNI's default route does). Policies name pods only; the
clients reach the backends through their ClusterIPs exactly when their egress admits the
backend pod and port, and their replies come back although the clients admit nothing in.
Traffic only between the lab's namespaces; every probe is bounded by its timeout; the NAT
rules and routes are removed in a finally.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from labelwall.datapath import mapspecs
from labelwall.lab import topology
from labelwall.lab.control import Lab

from .helpers import metric, sync_to

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.netns]

NS_NAME = "svc"
ADDRS = {
    "client": ("10.244.40.1", "fd00:10:244:40::1"),
    "nope": ("10.244.40.2", "fd00:10:244:40::2"),
    "blk": ("10.244.40.3", "fd00:10:244:40::3"),
    "wide": ("10.244.40.4", "fd00:10:244:40::4"),
    "web": ("10.244.40.10", "fd00:10:244:40::10"),
    "coredns": ("10.244.40.11", "fd00:10:244:40::11"),
}
WEB_SVC, DNS_SVC, WEB_SVC6 = "10.96.0.20", "10.96.0.10", "fd00:10:96::20"
IPT_SVC = "10.96.0.30"  # the same backend, written in iptables mode
NO_ENDPOINTS = "10.96.0.99"  # a ClusterIP without a DNAT rule: judged as it is (world)
CLIENTS = ("client", "nope", "blk", "wide")


def pod(name: str, labels: dict[str, str], ports: list[dict[str, Any]]) -> dict[str, Any]:
    v4, v6 = ADDRS[name]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS_NAME, "labels": labels},
        "spec": {"containers": [{"name": "c", "ports": ports}]},
        "status": {"podIP": v4, "podIPs": [{"ip": v4}, {"ip": v6}]},
    }


def egress(name: str, app: str, to: list[dict[str, Any]]) -> dict[str, Any]:
    """``app`` isolated both ways (it admits nothing in), sending only where ``to`` says."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": NS_NAME},
        "spec": {
            "podSelector": {"matchLabels": {"app": app}},
            "policyTypes": ["Ingress", "Egress"],
            "egress": to,
        },
    }


WEB = {"podSelector": {"matchLabels": {"app": "web"}}}
DNS = {"podSelector": {"matchLabels": {"app": "coredns"}}}
TCP_8080 = [{"port": 8080, "protocol": "TCP"}]
UDP_53 = [{"port": 53, "protocol": "UDP"}]
OBJECTS = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS_NAME}},
    pod("web", {"app": "web"}, [{"containerPort": 8080}]),
    pod("coredns", {"app": "coredns"}, [{"containerPort": 53, "protocol": "UDP"}]),
    *(pod(c, {"app": c}, []) for c in CLIENTS),
    # the common rule: the backend pods on their pod port, and DNS to the kube-dns pods
    egress("client", "client", [{"to": [WEB], "ports": TCP_8080}, {"to": [DNS], "ports": UDP_53}]),
    egress("nope", "nope", [{"to": [DNS], "ports": UDP_53}]),  # DNS only, not web
    # an ipBlock around the pod addresses, not the Service range: policies see pods
    egress(
        "blk",
        "blk",
        [
            {
                "to": [
                    {"ipBlock": {"cidr": "10.244.40.0/24"}},
                    {"ipBlock": {"cidr": "fd00:10:244:40::/64"}},
                ],
                "ports": TCP_8080,
            }
        ],
    ),
    # today's workaround, an ipBlock on the Service range: no longer a hole (the backend
    # pod is not in it), on the Service port or any
    egress(
        "wide",
        "wide",
        [
            {
                "to": [
                    {"ipBlock": {"cidr": "10.96.0.0/12"}},
                    {"ipBlock": {"cidr": "fd00:10:96::/112"}},
                ]
            }
        ],
    ),
]


def _chain(name: str, *lines: str) -> str:
    body = "".join(f"        {line}\n" for line in lines)
    return f"    chain {name} {{\n{body}    }}\n"


NAT_HOOK = "type nat hook {} priority {}; policy accept;"


def nftables_rules() -> str:
    """What kube-proxy --proxy-mode=nftables writes for web:80 -> 8080 and kube-dns 53/udp."""
    web4, web6 = ADDRS["web"]
    dns4 = ADDRS["coredns"][0]
    web_svc = "service-WEBSVC4A-svc/web/tcp/http"
    web_ep = f"endpoint-WEBEP4AA-svc/web/tcp/http__{web4}/8080"
    dns_svc = "service-DNSSVC4A-kube-system/kube-dns/udp/dns"
    dns_ep = f"endpoint-DNSEP4AA-kube-system/kube-dns/udp/dns__{dns4}/53"
    web6_svc = "service-WEBSVC6A-svc/web/tcp/http"
    web6_ep = "endpoint-WEBEP6AA-svc/web/tcp/http__fd00-10-244-40--10/8080"  # no ':' in names
    v4 = "".join([
        _chain("mark-for-masquerade", "mark set mark or 0x4000"),
        _chain("masquerading", "mark and 0x4000 == 0 return", "mark set mark xor 0x4000",
               "masquerade fully-random"),
        _chain("services", "ip daddr . meta l4proto . th dport vmap @service-ips"),
        _chain("nat-prerouting", NAT_HOOK.format("prerouting", "dstnat"), "jump services"),
        _chain("nat-output", NAT_HOOK.format("output", "-100"), "jump services"),
        _chain("nat-postrouting", NAT_HOOK.format("postrouting", "srcnat"), "jump masquerading"),
        _chain(web_ep, f"ip saddr {web4} jump mark-for-masquerade",
               f"meta l4proto tcp dnat to {web4}:8080"),
        _chain(web_svc, f"ip daddr {WEB_SVC} tcp dport 80 ip saddr != 10.244.0.0/16 jump "
               "mark-for-masquerade", f'numgen random mod 1 vmap {{ 0 : goto {web_ep} }}'),
        _chain(dns_ep, f"ip saddr {dns4} jump mark-for-masquerade",
               f"meta l4proto udp dnat to {dns4}:53"),
        _chain(dns_svc, f"ip daddr {DNS_SVC} udp dport 53 ip saddr != 10.244.0.0/16 jump "
               "mark-for-masquerade", f'numgen random mod 1 vmap {{ 0 : goto {dns_ep} }}'),
    ])  # fmt: skip
    v6 = "".join([
        _chain("services", "ip6 daddr . meta l4proto . th dport vmap @service-ips"),
        _chain("nat-prerouting", NAT_HOOK.format("prerouting", "dstnat"), "jump services"),
        _chain(web6_ep, f"meta l4proto tcp dnat to [{web6}]:8080"),
        _chain(web6_svc, f'numgen random mod 1 vmap {{ 0 : goto {web6_ep} }}'),
    ])  # fmt: skip
    return (
        "table ip kube-proxy {\n"
        '    comment "rules for kube-proxy"\n'
        "    map service-ips {\n"
        "        type ipv4_addr . inet_proto . inet_service : verdict\n"
        '        comment "ClusterIP, ExternalIP and LoadBalancer IP traffic"\n'
        "    }\n"
        f"{v4}"
        "}\n"
        f"add element ip kube-proxy service-ips {{ {WEB_SVC} . tcp . 80 : goto {web_svc} }}\n"
        f"add element ip kube-proxy service-ips {{ {DNS_SVC} . udp . 53 : goto {dns_svc} }}\n"
        "table ip6 kube-proxy {\n"
        "    map service-ips {\n"
        "        type ipv6_addr . inet_proto . inet_service : verdict\n"
        "    }\n"
        f"{v6}"
        "}\n"
        f"add element ip6 kube-proxy service-ips {{ {WEB_SVC6} . tcp . 80 : "
        f"goto {web6_svc} }}\n"
    )


def iptables_rules() -> list[list[str]]:
    """What kube-proxy --proxy-mode=iptables writes (through iptables-nft) for web:80."""
    web4 = ADDRS["web"][0]
    nat = ["iptables", "-w", "-t", "nat"]
    return [
        [*nat, "-N", "KUBE-SERVICES"],
        [*nat, "-N", "KUBE-SVC-LWWEBSVC"],
        [*nat, "-N", "KUBE-SEP-LWWEBSEP"],
        [*nat, "-A", "PREROUTING", "-m", "comment", "--comment", "kubernetes service portals",
         "-j", "KUBE-SERVICES"],
        [*nat, "-A", "KUBE-SERVICES", "-d", f"{IPT_SVC}/32", "-p", "tcp", "-m", "comment",
         "--comment", "svc/web:http cluster IP", "-m", "tcp", "--dport", "80",
         "-j", "KUBE-SVC-LWWEBSVC"],
        [*nat, "-A", "KUBE-SVC-LWWEBSVC", "-m", "comment", "--comment", "svc/web:http -> "
         f"{web4}:8080", "-j", "KUBE-SEP-LWWEBSEP"],
        [*nat, "-A", "KUBE-SEP-LWWEBSEP", "-p", "tcp", "-m", "tcp", "-j", "DNAT",
         "--to-destination", f"{web4}:8080"],
    ]  # fmt: skip


def _ok(proc: Any, what: str) -> None:
    assert proc.returncode == 0, f"{what}: {proc.stderr}"


@pytest.fixture
def services(lab: Lab) -> Iterator[Lab]:
    sync_to(lab, OBJECTS)
    node = lab.paths.node_netns
    made: list[str] = []
    try:
        proc = _nft(node, nftables_rules())
        _ok(proc, "nft -f (kube-proxy nftables mode)")
        made.append("nft")
        for argv in iptables_rules():
            _ok(topology.run(node, argv), " ".join(argv))
            made.append("iptables")
        for c in CLIENTS:
            ns = lab.paths.pod_netns(f"{NS_NAME}/{c}")
            _ok(topology.run(ns, ["ip", "route", "add", "10.96.0.0/12", "via", "169.254.1.1",
                                  "dev", "eth0"]), "route")  # fmt: skip
            _ok(topology.run(ns, ["ip", "-6", "route", "add", "fd00:10:96::/112", "via",
                                  "fe80::1", "dev", "eth0"]), "route6")  # fmt: skip
        yield lab
    finally:
        if "nft" in made:
            topology.run(node, ["nft", "delete", "table", "ip", "kube-proxy"])
            topology.run(node, ["nft", "delete", "table", "ip6", "kube-proxy"])
        if "iptables" in made:
            topology.run(node, ["nft", "delete", "table", "ip", "nat"])  # iptables-nft's table
        for c in CLIENTS:
            ns = lab.paths.pod_netns(f"{NS_NAME}/{c}")
            if topology.netns_exists(ns):
                topology.run(ns, ["ip", "route", "del", "10.96.0.0/12"])
                topology.run(ns, ["ip", "-6", "route", "del", "fd00:10:96::/112"])


def _nft(node: str, rules: str) -> Any:
    return subprocess.run(
        topology.exec_argv(node, ["nft", "-f", "-"]), input=rules, capture_output=True,
        text=True, timeout=30, check=False,
    )  # fmt: skip


def _probe(lab: Lab, src: str, ip: str, port: int, protocol: str = "TCP") -> str:
    req = {"src": f"{NS_NAME}/{src}", "dst": "", "ip": ip, "port": port, "protocol": protocol}
    (r,) = lab.probe([req], timeout=0.5)
    return str(r["outcome"])


def _count(lab: Lab, reason: str) -> float:
    return metric(
        lab, "labelwall_datapath_packets_total", {"direction": "egress", "reason": reason}
    )


def test_the_agent_judges_service_egress_after_dnat(services: Lab) -> None:
    assert metric(services, "labelwall_agent_service_egress_after_dnat") == 1.0


def test_egress_allowing_the_backend_pods_reaches_them_through_their_cluster_ips(
    services: Lab,
) -> None:
    deferred = _count(services, "service_deferred")
    web4, web6 = ADDRS["web"]
    assert _probe(services, "client", web4, 8080) == "ok"  # the pod IP, as before
    assert _probe(services, "client", WEB_SVC, 80) == "ok"  # today: timeout (judged world)
    assert _probe(services, "client", DNS_SVC, 53, "UDP") == "ok"  # the kube-dns case
    assert _probe(services, "client", ADDRS["coredns"][0], 53, "UDP") == "ok"
    assert _probe(services, "client", WEB_SVC6, 80) == "ok"  # IPv6 (ip6 kube-proxy)
    assert _probe(services, "client", web6, 8080) == "ok"
    assert _probe(services, "client", IPT_SVC, 80) == "ok"  # kube-proxy iptables mode
    # each Service flow was passed on by tc and judged after DNAT
    assert _count(services, "service_deferred") - deferred >= 4
    # the replies came back through reverse NAT although "client" admits nothing in
    assert _probe(services, "web", ADDRS["client"][0], 8080) == "timeout"


def test_egress_that_does_not_allow_a_backend_cannot_reach_it_through_its_service(
    services: Lab,
) -> None:
    denied = _count(services, "policy_denied")
    assert _probe(services, "nope", WEB_SVC, 80) == "timeout"
    assert _probe(services, "nope", WEB_SVC6, 80) == "timeout"
    assert _probe(services, "nope", IPT_SVC, 80) == "timeout"
    assert _probe(services, "nope", ADDRS["web"][0], 8080) == "timeout"
    assert _probe(services, "nope", DNS_SVC, 53, "UDP") == "ok"  # what it does allow
    assert _count(services, "policy_denied") - denied >= 4


def test_policies_see_pod_addresses_an_ipblock_on_the_service_range_is_no_hole(
    services: Lab,
) -> None:
    # an ipBlock around the pods admits the backend through its Service
    assert _probe(services, "blk", WEB_SVC, 80) == "ok"
    assert _probe(services, "blk", WEB_SVC6, 80) == "ok"
    assert _probe(services, "blk", DNS_SVC, 53, "UDP") == "timeout"  # port 53 not admitted
    # an ipBlock on the Service range (the old workaround) no longer opens every Service
    assert _probe(services, "wide", WEB_SVC, 80) == "timeout"
    assert _probe(services, "wide", DNS_SVC, 53, "UDP") == "timeout"
    assert _probe(services, "wide", WEB_SVC6, 80) == "timeout"
    # a Service address that nothing translates is judged as it is: admitted by "wide"'s
    # block, so it leaves the pod (and goes nowhere: no route); denied for "client"
    denied = _count(services, "policy_denied")
    assert _probe(services, "client", NO_ENDPOINTS, 80) == "timeout"
    assert _count(services, "policy_denied") - denied >= 1


def test_a_netfilter_link_removed_by_hand_is_re_attached_by_the_agent(services: Lab) -> None:
    pin = mapspecs.NF_LINK_PINS[4]
    os.unlink(pin)  # the link (and its hook) goes with its last reference
    deadline = time.monotonic() + 10
    while not os.path.exists(pin) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert os.path.exists(pin), "the agent did not re-attach the IPv4 link"
    time.sleep(0.2)  # the CIDRs are written right after the links
    assert _probe(services, "client", WEB_SVC, 80) == "ok"
    assert _probe(services, "nope", WEB_SVC, 80) == "timeout"
    assert metric(services, "labelwall_agent_service_egress_after_dnat") == 1.0
