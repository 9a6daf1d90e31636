"""The agent's reconcile logic on an in-memory datapath: what it writes, when, in what order."""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import replace

from builders import cluster, ns, pod, pods_peer, policy, port, rule, sel

from labelwall.agent.loop import ATTACH_CHECK_EVERY, Agent
from labelwall.agent.port import MemoryDatapath, StaticRoutes
from labelwall.cluster import Direction, Protocol
from labelwall.datapath import codecs, mapspecs
from labelwall.identity.labels import LabelSet
from labelwall.identity.numbers import Reserved
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import compile_cluster
from labelwall.policy.lookup import Reason, decide
from labelwall.policy.mapstate import TABLES, IpcacheEntry, MapChanges, MapDelta, SubjectFlags, diff
from labelwall.source import SourceSnapshot as Snapshot


def _entries(d: MapDelta) -> list[object]:
    out: list[object] = []
    for t in TABLES:
        ch = t.changes(d)
        out += list(ch.upserts) + list(ch.deletes)
    return out


class ListSource:
    """A source that hands out whatever snapshot the test set last."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def start(self, changed: threading.Event) -> None:
        changed.set()

    def snapshot(self) -> Snapshot:
        return self.snap

    def stop(self) -> None:
        pass


IP = ipaddress.ip_address


def shop(web_ip: str = "10.244.1.10", api_labels: dict[str, str] | None = None) -> ClusterState:
    return cluster(
        [ns("shop", team="shop")],
        [
            pod("shop", "web", {"app": "web"}, [web_ip]),
            pod("shop", "api", api_labels or {"app": "api"}, ["10.244.1.11"]),
            pod("shop", "db", {"app": "db"}, ["10.244.1.12"]),
        ],
        [
            policy("shop", "deny", sel(), ingress=[]),
            policy(
                "shop",
                "api",
                sel({"app": "api"}),
                ingress=[rule([pods_peer({"app": "web"})], [port(80)])],
            ),
        ],
    )


ROUTES = {
    IP("10.244.1.10"): 10,
    IP("10.244.1.11"): 11,
    IP("10.244.1.12"): 12,
    IP("10.244.1.20"): 20,
}


def make(
    dp: MemoryDatapath | None = None, grace_s: float = 300.0
) -> tuple[Agent, MemoryDatapath, StaticRoutes]:
    dp = dp or MemoryDatapath(record=False)
    routes = StaticRoutes(ROUTES)
    agent = Agent(
        ListSource(Snapshot(ClusterState())), dp, routes, grace_s=grace_s, clock=lambda: 0.0
    )
    agent.start()
    return agent, dp, routes


def test_first_sync_writes_exactly_the_compiled_maps_and_one_endpoint_per_local_pod() -> None:
    agent, dp, _ = make()
    result = agent.handle(Snapshot(shop()))
    assert result.ok
    assert dp.read_state() == compile_cluster(shop()).map_state
    assert set(dp.endpoints()) == {10, 11, 12}
    assert dp.attached == {10, 11, 12}


def test_a_restarted_agent_adopting_the_maps_writes_zero_entries() -> None:
    agent, dp, _ = make()
    agent.handle(Snapshot(shop()))
    before = dp.writes
    restarted, _, _ = make(dp)
    result = restarted.handle(Snapshot(shop()))
    assert result.ok
    assert restarted.startup_writes == 0
    assert dp.writes == before


def test_a_restart_after_a_change_writes_only_the_difference() -> None:
    agent, dp, _ = make()
    agent.handle(Snapshot(shop()))
    changed = shop()
    changed = replace(
        changed, policies={k: v for k, v in changed.policies.items() if k != "shop/api"}
    )
    expected = len(list(_entries(diff(dp.read_state(), compile_cluster(changed).map_state))))
    restarted, _, _ = make(dp)
    restarted.handle(Snapshot(changed))
    assert dp.read_state() == compile_cluster(changed).map_state
    assert restarted.startup_writes == expected > 0


def test_endpoint_entry_is_written_before_the_classifier_is_attached() -> None:
    agent, dp, _ = make()
    agent.handle(Snapshot(shop()))
    for ifindex in (10, 11, 12):
        set_at = dp.ops.index(("endpoint", (ifindex, dp.endpoints()[ifindex])))
        attach_at = dp.ops.index(("attach", ifindex))
        assert set_at < attach_at


def test_pod_recreated_with_a_new_ip_and_same_labels_does_not_write_the_policy_map() -> None:
    agent, dp, _ = make()
    agent.handle(Snapshot(shop()))
    gone = replace(shop(), pods={k: v for k, v in shop().pods.items() if k != "shop/web"})
    policy_before = dict(dp.read_state().policy)
    n_ops = len(dp.ops)
    agent.handle(Snapshot(gone))
    agent.handle(Snapshot(shop(web_ip="10.244.1.20")))
    applied = [d for op, d in dp.ops[n_ops:] if op == "apply"]
    assert applied, "the ipcache must change"
    assert all(not d.policy for d in applied)  # type: ignore[attr-defined]
    assert dp.read_state().policy == policy_before
    web_id = compile_cluster(shop()).pod_identity["shop/web"]
    assert dp.read_state().ipcache[IP("10.244.1.20")] == IpcacheEntry(web_id)
    assert dp.endpoints()[20] == web_id
    assert IP("10.244.1.10") not in dp.read_state().ipcache
    assert 20 in dp.endpoints()
    assert 10 not in dp.endpoints()


def test_a_pod_that_leaves_is_detached_before_its_endpoint_entry_is_deleted() -> None:
    agent, dp, _ = make(grace_s=0)
    agent.handle(Snapshot(shop()))
    gone = replace(shop(), pods={k: v for k, v in shop().pods.items() if k != "shop/db"})
    n = len(dp.ops)
    agent.handle(Snapshot(gone))
    tail = dp.ops[n:]
    assert tail.index(("detach", 12)) < tail.index(("delete_endpoint", 12))
    assert dp.read_state() == compile_cluster(gone).map_state


def test_relabel_points_the_endpoint_at_the_new_identity_only_after_its_entries_exist() -> None:
    agent, dp, _ = make(grace_s=0)
    agent.handle(Snapshot(shop()))
    relabelled = shop(api_labels={"app": "api", "v": "2"})
    n = len(dp.ops)
    agent.handle(Snapshot(relabelled))
    want = compile_cluster(relabelled)
    new_id = want.pod_identity["shop/api"]
    tail = dp.ops[n:]
    ep_at = tail.index(("endpoint", (11, new_id)))
    applies = [i for i, (op, _) in enumerate(tail) if op == "apply"]
    # upserts (new identity's subject flags and allows) before, deletes of the old one after
    assert applies[0] < ep_at < applies[-1]
    first = tail[applies[0]][1]
    assert any(k.subject == new_id for k in first.policy.upserts)  # type: ignore[attr-defined]
    assert not any(ch.deletes for ch in (first.policy, first.subjects, first.ipcache))  # type: ignore[attr-defined]
    assert dp.read_state() == want.map_state


def test_drift_repair_restores_a_deleted_entry_and_counts_it() -> None:
    agent, dp, _ = make()
    agent.handle(Snapshot(shop()))
    want = dp.read_state()
    victim = next(iter(want.policy))
    dp.drift(
        MapDelta(
            policy=MapChanges(deletes=frozenset({victim})),
            ipcache=MapChanges({IP("10.244.1.99"): IpcacheEntry(999)}),
        )
    )
    stats = agent.repair()
    assert stats.total == 2
    assert dp.read_state() == want
    assert agent.repair().total == 0


def test_drift_repair_restores_a_deleted_endpoint_and_reattaches() -> None:
    agent, dp, _ = make()
    agent.handle(Snapshot(shop()))
    ident = dp.endpoints()[11]
    dp.drop_endpoint(11)
    dp.attached.discard(11)
    agent.repair()
    assert dp.endpoints()[11] == ident  # the entry at once
    for _ in range(ATTACH_CHECK_EVERY):  # the attachment within a bounded number of checks
        agent.repair()
    assert 11 in dp.attached


def test_source_errors_leave_the_running_state_as_it_was() -> None:
    agent, dp, _ = make()
    agent.handle(Snapshot(shop()))
    state, writes = dp.read_state(), dp.writes
    result = agent.handle(Snapshot(ClusterState(), errors=("policy.yaml: not valid YAML",)))
    assert not result.ok
    assert result.errors == ("policy.yaml: not valid YAML",)
    assert dp.read_state() == state
    assert dp.writes == writes


def test_two_pods_with_one_ip_are_rejected_and_the_running_state_stays() -> None:
    agent, dp, _ = make()
    agent.handle(Snapshot(shop()))
    state, writes = dp.read_state(), dp.writes
    bad = shop(web_ip="10.244.1.11")
    result = agent.handle(Snapshot(bad))
    assert not result.ok
    assert any("10.244.1.11" in e and "shop/api" in e for e in result.errors)
    assert dp.read_state() == state
    assert dp.writes == writes
    # and the next good snapshot is still applied incrementally
    assert agent.handle(Snapshot(shop(api_labels={"app": "api", "x": "y"}))).ok
    assert dp.read_state() == compile_cluster(shop(api_labels={"app": "api", "x": "y"})).map_state


def test_a_pod_without_a_host_route_is_enforced_once_its_route_appears() -> None:
    agent, dp, routes = make()
    routes.routes.pop(IP("10.244.1.12"))
    agent.handle(Snapshot(shop()))
    assert 12 not in dp.endpoints()
    assert agent.reconciler.pending == {"shop/db"}
    routes.routes[IP("10.244.1.12")] = 12
    agent.reconciler.sync(agent.desired, {})
    assert 12 in dp.endpoints()
    assert 12 in dp.attached
    assert not agent.reconciler.pending


def test_mirror_of_desired_maps_equals_a_full_compile_after_many_changes() -> None:
    agent, dp, _ = make(grace_s=0)
    states = [
        shop(),
        shop(api_labels={"app": "api", "v": "2"}),
        shop(web_ip="10.244.1.20"),
        replace(shop(), policies={}),
        cluster([ns("shop", team="other")], shop().pods.values(), shop().policies.values()),
        shop(),
    ]
    for s in states:
        assert agent.handle(Snapshot(s)).ok
        assert agent.desired.map_state() == compile_cluster(s).map_state
        assert dp.read_state() == compile_cluster(s).map_state


def test_unpublished_label_sets_get_the_init_identity() -> None:
    dp = MemoryDatapath()
    agent = Agent(
        ListSource(Snapshot(ClusterState())),
        dp,
        StaticRoutes(ROUTES),
        published_mode=True,
        clock=lambda: 0.0,
    )
    agent.start()
    state = shop()
    namespace = state.namespaces["shop"]
    published = {
        LabelSet.from_pod(p, namespace): 1000 + i
        for i, p in enumerate(state.pods.values())
        if p.name != "db"
    }
    assert agent.handle(Snapshot(state, published)).ok
    ms = dp.read_state()
    assert ms.ipcache[IP("10.244.1.12")] == IpcacheEntry(int(Reserved.INIT))
    assert dp.endpoints()[12] == int(Reserved.INIT)
    assert dp.endpoints()[11] == published[LabelSet.from_pod(state.pods["shop/api"], namespace)]
    # Fail closed: a pod waiting for its identity is isolated both ways (only its node passes).
    init_flags = ms.subjects[int(Reserved.INIT)]
    assert init_flags & SubjectFlags.INGRESS_ISOLATED
    assert init_flags & SubjectFlags.EGRESS_ISOLATED
    v = decide(ms, int(Reserved.INIT), Direction.INGRESS, IP("10.244.1.10"), IP("10.244.1.12"),
               Protocol.TCP, 5432)  # fmt: skip
    assert (v.allowed, v.reason) == (False, Reason.POLICY_DENIED)
    # once published, db gets its number and its own entries
    published[LabelSet.from_pod(state.pods["shop/db"], namespace)] = 1002
    assert agent.handle(Snapshot(state, published)).ok
    assert dp.endpoints()[12] == 1002
    assert dp.read_state().ipcache[IP("10.244.1.12")].identity == 1002
    assert agent.desired.map_state() == dp.read_state()


def test_udp_ports_compile_into_written_entries() -> None:
    agent, dp, _ = make()
    s = shop()
    udp = policy("shop", "dns", sel({"app": "db"}), ingress=[rule([], [port(53, Protocol.UDP)])])
    s = replace(s, policies={**s.policies, udp.key: udp})
    agent.handle(Snapshot(s))
    assert any(k.protocol == Protocol.UDP and k.port == 53 for k in dp.read_state().policy)


def test_each_local_pod_may_send_only_from_its_own_addresses() -> None:
    agent, dp, _ = make(grace_s=0)
    agent.handle(Snapshot(shop()))
    assert dp.endpoint_addresses() == {
        10: frozenset({IP("10.244.1.10")}),
        11: frozenset({IP("10.244.1.11")}),
        12: frozenset({IP("10.244.1.12")}),
    }
    gone = replace(shop(), pods={k: v for k, v in shop().pods.items() if k != "shop/db"})
    agent.handle(Snapshot(gone))
    assert 12 not in dp.endpoint_addresses()
    restarted, _, _ = make(dp)  # adopts the addresses: nothing to rewrite
    before = dp.writes
    restarted.handle(Snapshot(gone))
    assert dp.writes == before


def test_drifted_endpoint_addresses_are_repaired() -> None:
    agent, dp, _ = make()
    agent.handle(Snapshot(shop()))
    dp.io.delete(
        mapspecs.EPADDR_MAP, codecs.encode_epaddr_key(11, IP("10.244.1.11"))
    )  # behind the agent's back
    agent.repair()
    assert dp.endpoint_addresses()[11] == frozenset({IP("10.244.1.11")})
