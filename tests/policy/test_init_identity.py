"""Pods whose Identity is not published yet: the compiler decides ``init``, so matrix/explain
and the agent's desired state agree by construction."""

from __future__ import annotations

import ipaddress

from builders import cluster, cport, ns, pod, pods_peer, policy, port, rule, sel

from labelwall.agent.desired import DesiredState
from labelwall.cluster import Direction, Protocol
from labelwall.identity.labels import LabelSet
from labelwall.identity.numbers import Reserved
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import INIT_FLAGS, compile_cluster
from labelwall.policy.incremental import IncrementalCompiler
from labelwall.policy.lookup import decide
from labelwall.policy.mapstate import IpcacheEntry, diff
from labelwall.policy.matrix import explain, reachability

IP = ipaddress.ip_address


def shop() -> ClusterState:
    return cluster(
        [ns("shop", team="shop")],
        [
            pod("shop", "web", {"app": "web"}, ["10.244.1.10"]),
            pod("shop", "api", {"app": "api"}, ["10.244.1.11"], ports=[cport(8080, "http")]),
            pod("shop", "db", {"app": "db"}, ["10.244.1.12"], ports=[cport(5432, "pg")]),
        ],
        [
            policy("shop", "deny", sel(), ingress=[]),
            policy(
                "shop",
                "to-db",
                sel({"app": "db"}),
                ingress=[rule([pods_peer({"app": "api"})], [port("pg")])],
            ),
            policy(
                "shop",
                "to-api",
                sel({"app": "api"}),
                ingress=[rule([pods_peer({"app": "web"})], [port("http")])],
            ),
        ],
    )


def published_without(state: ClusterState, *unpublished: str) -> dict[LabelSet, int]:
    namespace = state.namespaces["shop"]
    return {
        LabelSet.from_pod(p, namespace): 1000 + i
        for i, p in enumerate(state.pods.values())
        if p.key not in unpublished
    }


def test_matrix_explain_and_the_agents_desired_state_agree_for_a_pod_without_an_identity() -> None:
    state = shop()
    published = published_without(state, "shop/db")
    desired = DesiredState(published_mode=True)
    desired.update(state, 0.0, published)
    compiled = compile_cluster(state, published=published)

    # One decision: the maps the agent writes are the compiler's.
    assert desired.map_state() == compiled.map_state
    assert compiled.pod_identity["shop/db"] == int(Reserved.INIT)
    for p in state.pods.values():
        assert desired.identity_of(p) == compiled.pod_identity[p.key]
    assert compiled.map_state.ipcache[IP("10.244.1.12")] == IpcacheEntry(int(Reserved.INIT))
    assert compiled.map_state.subjects[int(Reserved.INIT)] == INIT_FLAGS
    assert not any(k.address == IP("10.244.1.12") for k in compiled.map_state.named_ports)

    # matrix and explain read those maps: db waits isolated both ways, api still reaches
    # nothing through db's policy, web -> api is untouched.
    cells = {
        (c.src, c.dst, c.port): c.allowed
        for c in reachability(compiled, [(5432, Protocol.TCP), (8080, Protocol.TCP)])
    }
    assert cells[("shop/api", "shop/db", 5432)] is False
    assert cells[("shop/db", "shop/api", 8080)] is False
    assert cells[("shop/web", "shop/api", 8080)] is True
    why = explain(compiled, "shop/api", "shop/db", 5432, Protocol.TCP)
    assert not why.allowed
    assert why.dst_identity == int(Reserved.INIT)
    ms = desired.map_state()
    ingress = decide(
        ms, desired.identity_of(state.pods["shop/db"]) or 0, Direction.INGRESS,
        IP("10.244.1.11"), IP("10.244.1.12"), Protocol.TCP, 5432,
    )  # fmt: skip
    assert ingress == why.ingress.verdict


def test_publishing_an_identity_later_equals_compiling_with_it_from_the_start() -> None:
    state = shop()
    before = published_without(state, "shop/db")
    after = published_without(state)
    inc = IncrementalCompiler(state, published=before)
    start = inc.map_state
    delta = inc.set_published(after)
    full = compile_cluster(state, published=after)
    assert inc.map_state == full.map_state
    assert delta == diff(start, full.map_state)
    assert (
        inc.identity_of("shop/db")
        == after[LabelSet.from_pod(state.pods["shop/db"], state.namespaces["shop"])]
    )
    # and back: an unpublished label set sends its pods to init again
    delta = inc.set_published(before)
    assert inc.map_state == compile_cluster(state, published=before).map_state
    assert delta == diff(full.map_state, inc.map_state)


def test_a_namespace_relabel_that_unpublishes_a_label_set_moves_its_pods_to_init() -> None:
    state = shop()
    published = published_without(state)
    inc = IncrementalCompiler(state, published=published)
    relabelled = ns("shop", team="other")
    delta = inc.upsert_namespace(relabelled)
    new = ClusterState({"shop": relabelled}, state.pods, state.nodes, state.policies)
    full = compile_cluster(new, published=published)
    assert inc.map_state == full.map_state
    assert set(full.pod_identity.values()) == {int(Reserved.INIT)}
    assert delta == diff(compile_cluster(state, published=published).map_state, full.map_state)


def test_ghosts_are_compiler_input_so_a_recreated_pod_keeps_its_identity() -> None:
    state = shop()
    desired = DesiredState(grace_s=10.0)
    desired.update(state, 0.0)
    db = state.pods["shop/db"]
    number = desired.identity_of(db)
    gone = ClusterState(
        state.namespaces, {k: p for k, p in state.pods.items() if k != db.key}, {}, state.policies
    )
    update = desired.update(gone, 1.0)
    assert not update.touched["policy"]  # the ghost keeps db's identity and its entries
    assert IP("10.244.1.12") not in desired.map_state().ipcache
    # The maps are exactly the compile of the input the agent gathered (ghost included).
    assert desired.map_state() == compile_cluster(desired.compiler.state).map_state
    back = cluster(
        [ns("shop", team="shop")],
        [*gone.pods.values(), pod("shop", "db", {"app": "db"}, ["10.244.1.99"], ports=db.ports)],
        gone.policies.values(),
    )
    update = desired.update(back, 2.0)
    assert not update.touched["policy"]
    assert desired.identity_of(back.pods["shop/db"]) == number
    assert desired.map_state() == compile_cluster(back).map_state
    # Past the grace, a ghost leaves the input and its entries go.
    desired.update(gone, 3.0)
    desired.update(gone, 20.0)
    assert desired.ghosts == {}
    assert desired.map_state() == compile_cluster(gone).map_state
