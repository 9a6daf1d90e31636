"""The compiler: NetworkPolicy semantics (ARCHITECTURE §4) as map entries, plus its metadata."""

from __future__ import annotations

import ipaddress
import zlib

from builders import (
    block,
    both_peer,
    cluster,
    cport,
    node,
    ns,
    ns_peer,
    pod,
    pods_peer,
    policy,
    port,
    rule,
    sel,
)

from labelwall.cluster import Direction, Protocol
from labelwall.identity import numbers
from labelwall.identity.numbers import Reserved
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import (
    EXCLUDED_LABEL_KEY,
    SELECTS_NOTHING,
    UNKNOWN_PORT_NAME,
    CompileOptions,
    compile_cluster,
)
from labelwall.policy.cookies import RuleRef, cookie
from labelwall.policy.mapstate import IpcacheEntry, NamedPortKey, PolicyKey, SubjectFlags
from labelwall.policy.matrix import reachability
from labelwall.policy.ports import allocate_name_ids, range_blocks

ING, EG = Direction.INGRESS, Direction.EGRESS
TCP = Protocol.TCP


def ip(s: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(s)


def allowed(state: ClusterState, src: str, dst: str, p: int | str = 80, pr: Protocol = TCP) -> bool:
    cells = [c for c in reachability(state, [(p, pr)]) if (c.src, c.dst) == (src, dst)]
    assert len(cells) == 1
    return cells[0].allowed


BASE = [ns("x", team="a"), ns("y", team="b")]
PODS = [
    pod("x", "a", {"app": "a"}, ["10.244.0.1"]),
    pod("x", "b", {"app": "b"}, ["10.244.0.2"]),
    pod("y", "a", {"app": "a"}, ["10.244.1.1"]),
    pod("y", "b", {"app": "b"}, ["10.244.1.2"]),
]


def test_a_pod_no_policy_selects_is_not_isolated() -> None:
    c = compile_cluster(cluster(BASE, PODS))
    assert c.map_state.subjects == {}
    assert allowed(cluster(BASE, PODS), "y/b", "x/a")


def test_an_ingress_policy_isolates_only_ingress_of_the_selected_identity() -> None:
    state = cluster(BASE, PODS, [policy("x", "p", sel({"app": "a"}), ingress=[])])
    c = compile_cluster(state)
    xa = c.pod_identity["x/a"]
    assert c.map_state.subjects == {xa: SubjectFlags.INGRESS_ISOLATED}
    assert c.map_state.policy == {}
    assert not allowed(state, "x/b", "x/a")
    assert allowed(state, "x/a", "x/b")


def test_policy_types_default_adds_egress_only_with_egress_rules() -> None:
    state = cluster(BASE, PODS, [policy("x", "p", sel({"app": "a"}), egress=[rule()])])
    xa = compile_cluster(state).pod_identity["x/a"]
    flags = compile_cluster(state).map_state.subjects[xa]
    assert flags == SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED


def test_rules_of_a_direction_missing_from_policy_types_are_ignored() -> None:
    pol = policy("x", "p", sel({"app": "a"}), egress=[rule()], types=[ING])
    c = compile_cluster(cluster(BASE, PODS, [pol]))
    assert all(k.direction is ING for k in c.map_state.policy)
    assert c.map_state.subjects[c.pod_identity["x/a"]] == SubjectFlags.INGRESS_ISOLATED


def test_a_rule_without_peers_or_ports_is_one_any_peer_any_protocol_entry() -> None:
    c = compile_cluster(
        cluster(BASE, PODS, [policy("x", "p", sel({"app": "a"}), ingress=[rule()])])
    )
    xa = c.pod_identity["x/a"]
    ref = RuleRef("x/p", ING, 0)
    assert c.map_state.policy == {PolicyKey(xa, numbers.ANY, ING, Protocol.ANY, 0, 0): cookie(ref)}
    assert c.cookies[cookie(ref)] == ref


def test_a_pod_selector_peer_admits_only_pods_of_the_policy_namespace() -> None:
    state = cluster(
        BASE, PODS, [policy("x", "p", sel({"app": "a"}), ingress=[rule([pods_peer({"app": "b"})])])]
    )
    assert allowed(state, "x/b", "x/a")
    assert not allowed(state, "y/b", "x/a")


def test_a_namespace_selector_peer_admits_every_pod_of_matching_namespaces() -> None:
    state = cluster(
        BASE, PODS, [policy("x", "p", sel({"app": "a"}), ingress=[rule([ns_peer({"team": "b"})])])]
    )
    assert allowed(state, "y/a", "x/a")
    assert allowed(state, "y/b", "x/a")
    assert not allowed(state, "x/b", "x/a")


def test_both_selectors_in_one_peer_are_anded() -> None:
    peer = both_peer({"team": "b"}, {"app": "b"})
    state = cluster(BASE, PODS, [policy("x", "p", sel({"app": "a"}), ingress=[rule([peer])])])
    assert allowed(state, "y/b", "x/a")
    assert not allowed(state, "y/a", "x/a")
    assert not allowed(state, "x/b", "x/a")


def test_namespace_selector_can_use_the_metadata_name_label() -> None:
    peer = ns_peer({"kubernetes.io/metadata.name": "y"})
    state = cluster(BASE, PODS, [policy("x", "p", sel({"app": "a"}), ingress=[rule([peer])])])
    assert allowed(state, "y/a", "x/a")
    assert not allowed(state, "x/b", "x/a")


def test_ip_block_prefixes_get_local_identities_and_addresses_their_longest_prefix() -> None:
    pol = policy(
        "x", "p", sel({"app": "a"}), ingress=[rule([block("10.244.0.0/16", "10.244.1.0/24")])]
    )
    state = cluster(BASE, PODS, [pol])
    c = compile_cluster(state)
    cidrs = c.map_state.cidrs
    assert set(map(str, cidrs)) == {"10.244.0.0/16", "10.244.1.0/24"}
    assert all(numbers.is_local(v) for v in cidrs.values())
    outer, hole = (
        cidrs[ipaddress.ip_network("10.244.0.0/16")],
        cidrs[ipaddress.ip_network("10.244.1.0/24")],
    )
    assert c.map_state.ipcache[ip("10.244.0.2")].cidr_identity == outer
    assert c.map_state.ipcache[ip("10.244.1.2")].cidr_identity == hole
    xa = c.pod_identity["x/a"]
    assert {k.peer for k in c.map_state.policy} == {outer}
    assert {k.subject for k in c.map_state.policy} == {xa}
    # ipBlock matches pod IPs too; the except carves y's pods out.
    assert allowed(state, "x/b", "x/a")
    assert not allowed(state, "y/b", "x/a")


def test_host_bits_in_an_ip_block_are_normalised() -> None:
    pol = policy("x", "p", sel({"app": "a"}), ingress=[rule([block("10.244.1.1/4")])])
    c = compile_cluster(cluster(BASE, PODS, [pol]))
    assert set(map(str, c.map_state.cidrs)) == {"0.0.0.0/4"}


def test_end_port_ranges_become_minimal_aligned_blocks() -> None:
    assert range_blocks(80, 90) == [(80, 13), (88, 15), (90, 16)]
    assert range_blocks(0, 65535) == [(0, 0)]
    assert range_blocks(443, 443) == [(443, 16)]
    assert len(range_blocks(1, 65535)) == 16
    pol = policy("x", "p", sel({"app": "a"}), ingress=[rule([], [port(80, end=90)])])
    c = compile_cluster(cluster(BASE, PODS, [pol]))
    assert sorted((k.port, k.port_bits) for k in c.map_state.policy) == [
        (80, 13),
        (88, 15),
        (90, 16),
    ]
    state = cluster(BASE, PODS, [pol])
    assert [allowed(state, "x/b", "x/a", p) for p in (79, 80, 87, 90, 91)] == [
        False,
        True,
        True,
        True,
        False,
    ]


def test_named_ports_resolve_per_destination_pod_even_within_one_identity() -> None:
    pods = [
        pod("x", "a1", {"app": "a"}, ["10.244.0.1"], [cport(80, "http")]),
        pod("x", "a2", {"app": "a"}, ["10.244.0.3"], [cport(8080, "http")]),
        pod("x", "b", {"app": "b"}, ["10.244.0.2"]),
    ]
    state = cluster(
        BASE, pods, [policy("x", "p", sel({"app": "a"}), ingress=[rule([], [port("http")])])]
    )
    c = compile_cluster(state)
    assert c.pod_identity["x/a1"] == c.pod_identity["x/a2"]
    nid = c.name_ids["http"]
    assert c.map_state.named_ports == {
        NamedPortKey(ip("10.244.0.1"), TCP, 80): nid,
        NamedPortKey(ip("10.244.0.3"), TCP, 8080): nid,
    }
    assert allowed(state, "x/b", "x/a1", 80)
    assert not allowed(state, "x/b", "x/a1", 8080)
    assert allowed(state, "x/b", "x/a2", 8080)
    assert not allowed(state, "x/b", "x/a2", 80)
    assert allowed(state, "x/b", "x/a1", "http")
    assert allowed(state, "x/b", "x/a2", "http")


def test_named_port_with_another_protocol_does_not_match() -> None:
    pods = [pod("x", "a", {"app": "a"}, ["10.244.0.1"], [cport(53, "dns", Protocol.UDP)]), PODS[1]]
    state = cluster(
        BASE, pods, [policy("x", "p", sel({"app": "a"}), ingress=[rule([], [port("dns")])])]
    )
    assert not allowed(state, "x/b", "x/a", 53, Protocol.UDP)
    assert not allowed(state, "x/b", "x/a", 53, TCP)


def test_name_ids_are_stable_distinct_and_probe_on_collision() -> None:
    ids = allocate_name_ids(["http", "dns", "metrics"])
    assert ids == allocate_name_ids(["metrics", "dns", "http"])
    assert len(set(ids.values())) == 3
    assert ids["http"] == 1 + zlib.crc32(b"http") % 0xFFFF


def test_host_network_pods_and_nodes_are_the_host_identity_and_never_subjects() -> None:
    hp = pod("x", "h", {"app": "a"}, ["192.168.0.1"], host_network=True)
    state = cluster(
        BASE,
        [*PODS, hp],
        [policy("x", "p", sel(), ingress=[])],
        [node("n1", "192.168.0.1", "192.168.0.9")],
    )
    c = compile_cluster(state)
    assert c.pod_identity["x/h"] == Reserved.HOST
    assert c.map_state.ipcache[ip("192.168.0.1")] == IpcacheEntry(Reserved.HOST, 0)
    assert c.map_state.ipcache[ip("192.168.0.9")].identity == Reserved.HOST
    assert Reserved.HOST not in c.map_state.subjects
    assert allowed(state, "x/h", "x/a")  # the host always reaches its pods
    assert not allowed(state, "x/b", "x/a")


def test_pods_without_addresses_get_an_identity_but_no_ipcache_entry() -> None:
    state = cluster(BASE, [pod("x", "a", {"app": "z"})])
    c = compile_cluster(state)
    assert c.identities[c.pod_identity["x/a"]].pod_labels == {"app": "z"}
    assert c.map_state.ipcache == {}


def test_equal_label_sets_share_one_identity_and_namespaces_split_them() -> None:
    c = compile_cluster(cluster(BASE, [*PODS, pod("x", "a2", {"app": "a"}, ["10.244.0.5"])]))
    assert c.pod_identity["x/a"] == c.pod_identity["x/a2"]
    assert c.pod_identity["x/a"] != c.pod_identity["y/a"]
    assert len(c.identities) == 4


def test_the_smallest_cookie_wins_when_two_rules_make_one_entry() -> None:
    pols = [
        policy("x", "p", sel({"app": "a"}), ingress=[rule()]),
        policy("x", "q", sel({"app": "a"}), ingress=[rule(), rule()]),
    ]
    c = compile_cluster(cluster(BASE, PODS, pols))
    refs = [RuleRef("x/p", ING, 0), RuleRef("x/q", ING, 0), RuleRef("x/q", ING, 1)]
    assert list(c.map_state.policy.values()) == [min(cookie(r) for r in refs)]
    assert {c.cookies[cookie(r)] for r in refs} == set(refs)
    assert cookie(RuleRef("x/p", ING, 0)) == zlib.crc32(b"x/p/ingress/0")


def test_warnings_name_the_policy_and_the_field() -> None:
    pol = policy(
        "x",
        "p",
        sel({"app": "nobody"}),
        ingress=[
            rule([pods_peer({"pod-template-hash": "1"}), ns_peer({"team": "none"})], [port("web")])
        ],
    )
    c = compile_cluster(cluster(BASE, PODS, [pol]))
    found = {(w.code, w.field) for w in c.warnings}
    assert found == {
        (SELECTS_NOTHING, "spec.podSelector"),
        (SELECTS_NOTHING, "spec.ingress[0].from[0]"),
        (EXCLUDED_LABEL_KEY, "spec.ingress[0].from[0].podSelector"),
        (SELECTS_NOTHING, "spec.ingress[0].from[1]"),
        (UNKNOWN_PORT_NAME, "spec.ingress[0].ports[0].port"),
    }
    assert all(w.policy == "x/p" for w in c.warnings)
    assert "x/p" in str(c.warnings[0])


def test_stats_count_subject_and_peer_identities() -> None:
    pol = policy(
        "x",
        "p",
        sel(),
        ingress=[rule([ns_peer({"team": "b"})])],
        egress=[rule([block("1.2.3.0/24")])],
    )
    s = compile_cluster(cluster(BASE, PODS, [pol])).stats["x/p"]
    assert (s.subject_identities, s.peer_identities) == (2, 3)
    assert s.isolated == {ING, EG}


def test_local_identities_limit_the_subjects_compiled() -> None:
    pols = [policy("x", "p", sel(), ingress=[rule()])]
    full = compile_cluster(cluster(BASE, PODS, pols))
    xa = full.pod_identity["x/a"]
    local = compile_cluster(
        cluster(BASE, PODS, pols), CompileOptions(local_identities=frozenset({xa}))
    )
    assert set(local.map_state.subjects) == {xa}
    assert {k.subject for k in local.map_state.policy} == {xa}
    assert local.map_state.ipcache == full.map_state.ipcache


def test_audit_flags_isolated_subjects_globally_or_per_namespace() -> None:
    pols = [policy("x", "p", sel(), ingress=[]), policy("y", "p", sel(), ingress=[])]
    state = cluster(BASE, PODS, pols)
    per_ns = compile_cluster(state, CompileOptions(audit_namespaces=frozenset({"y"})))
    for key in ("x/a", "y/a"):
        flags = per_ns.map_state.subjects[per_ns.pod_identity[key]]
        assert bool(flags & SubjectFlags.AUDIT) is key.startswith("y")
    everywhere = compile_cluster(state, CompileOptions(audit=True))
    assert all(f & SubjectFlags.AUDIT for f in everywhere.map_state.subjects.values())
    assert allowed(state, "x/b", "x/a") is False
