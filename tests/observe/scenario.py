"""The observe scenario: default deny plus two allowing policies, IPv4 and IPv6 pods.

shop/client may reach shop/web (allow-client: egress to app=web, any protocol); shop/web
admits shop/client on TCP 80 and UDP 53 (allow-web rule 0) and on anything else (rule 1,
no ports: ICMP too); tenant/other is not isolated and is denied at web's ingress by
isolation (default-deny and allow-web both isolate web's ingress).
"""

from __future__ import annotations

from typing import Any

CLIENT4, CLIENT6 = "10.244.30.1", "fd00:10:244::30:1"
WEB4, WEB6 = "10.244.30.2", "fd00:10:244::30:2"
OTHER4, OTHER6 = "10.244.30.3", "fd00:10:244::30:3"
ADDRESS = {"shop/client": (CLIENT4, CLIENT6), "shop/web": (WEB4, WEB6),
           "tenant/other": (OTHER4, OTHER6)}  # fmt: skip


def _ns(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name,
            "labels": {"team": name}}}  # fmt: skip


def _pod(ns: str, name: str, v4: str, v6: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"containers": [{"name": "c", "ports": [
            {"containerPort": 80, "name": "http"},
            {"containerPort": 53, "protocol": "UDP", "name": "dns"},
        ]}]},
        "status": {"podIP": v4, "podIPs": [{"ip": v4}, {"ip": v6}]},
    }  # fmt: skip


def _policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "shop"}, "spec": spec}  # fmt: skip


CLIENT_SEL = {"podSelector": {"matchLabels": {"app": "client"}}}
OBJECTS: list[dict[str, Any]] = [
    _ns("shop"),
    _ns("tenant"),
    _pod("shop", "client", CLIENT4, CLIENT6),
    _pod("shop", "web", WEB4, WEB6),
    _pod("tenant", "other", OTHER4, OTHER6),
    _policy("default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    _policy("allow-client", {
        "podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
    }),
    _policy("allow-web", {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [
            {"from": [CLIENT_SEL], "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]},
            {"from": [CLIENT_SEL]},
        ],
    }),
]  # fmt: skip
