"""Full kernel maps (made tiny through the config's mapSizes): the pod stays isolated, and heals.

The classifier is built with the config's sizes (``sizing.object_for``, as the agent does
at start) and judged with BPF_PROG_TEST_RUN; the kernel answers a full map itself (E2BIG
for the ipcache hash, ENOSPC for the policy trie). The dict-map versions are in
test_writer_full.py.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import cluster, ns, pod, pods_peer, policy, port, rule, sel

from labelwall.agent.app import build_agent
from labelwall.agent.loop import Agent
from labelwall.agent.port import StaticRoutes
from labelwall.cluster import Direction, IPAddress, Pod, Protocol
from labelwall.config import load_config
from labelwall.datapath import abi, libbpf, mapspecs
from labelwall.datapath.errors import MapFullError
from labelwall.datapath.facade import TO_POD, Datapath
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import compile_cluster
from labelwall.policy.mapstate import IpcacheEntry, MapState, PolicyKey, SubjectFlags, diff
from labelwall.source import SourceSnapshot as Snapshot

from . import packets
from .conftest import lw_pins, require_root_bpf
from .helpers import LO

IP = ipaddress.ip_address
IN = Direction.INGRESS
ISO_IN = SubjectFlags.INGRESS_ISOLATED
# serviceCIDRs empty: this agent runs in the host's netns, which must not get netfilter hooks
CONFIG = "mapSizes:\n  ipcache: 4\n  policy: 4\nserviceCIDRs: []\n"


class NoTc:
    """The real Datapath with tc left out: the test's 'pod' is lo (ifindex 1) of the
    host, which must never get our filters; BPF_PROG_TEST_RUN judges its packets."""

    def __init__(self, dp: Datapath) -> None:
        self.dp = dp

    def __getattr__(self, name: str) -> object:
        return getattr(self.dp, name)

    def attach(self, link: str | int) -> None:
        pass

    def detach(self, link: str | int) -> None:
        pass

    def is_attached(self, link: str | int) -> bool:
        return True


@pytest.fixture
def small_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Agent, Datapath]]:
    """An agent wired by app.build_agent from a config with mapSizes ipcache 4, policy 4."""
    require_root_bpf()
    if lw_pins():
        pytest.fail(f"stale labelwall pins in {mapspecs.PIN_ROOT}: {lw_pins()} (another run?)")
    monkeypatch.setenv("LABELWALL_BPF_CACHE", str(tmp_path / "cache"))
    (tmp_path / "config.yaml").write_text(CONFIG)
    (tmp_path / "src").mkdir()
    dp = None
    try:
        agent, dp = build_agent(
            load_config(str(tmp_path / "config.yaml")), f"dir:{tmp_path / 'src'}", None, 1.0
        )
        agent.reconciler.dp = NoTc(dp)  # type: ignore[assignment]
        agent.reconciler.routes = StaticRoutes({IP("10.244.1.10"): LO})
        agent.start()
        yield agent, dp
    finally:
        if dp is not None:
            dp.close()
        Datapath.unpin_all()
        assert lw_pins() == []


def pods(n: int) -> list[Pod]:
    return [pod("shop", f"p{i}", {"app": f"p{i}"}, [f"10.244.1.{10 + i}"]) for i in range(n)]


def isolating(n: int) -> ClusterState:
    """p0 (the pod on lo) admits p1 on TCP 80, ingress; n pods in all."""
    only = policy("shop", "p0", sel({"app": "p0"}),
                  ingress=[rule([pods_peer({"app": "p1"})], [port(80)])])  # fmt: skip
    return cluster([ns("shop")], pods(n), [only])


SPORTS = itertools.count(40000)  # a new flow each probe (an earlier pass is tracked)


def verdict(dp: Datapath, src: str, dport: int = 80) -> abi.TcVerdict:
    syn = packets.packet(IP(src), IP("10.244.1.10"), packets.TCP, next(SPORTS), dport)
    return dp.test_run(TO_POD, syn, LO).verdict


def sample(agent: Agent, name: str, **labels: str) -> float | None:
    return agent.metrics.registry.get_sample_value(name, labels)


PASS, DROP = abi.TcVerdict.ALLOW, abi.TcVerdict.DROP


@pytest.mark.root
@pytest.mark.bpf
def test_a_full_kernel_ipcache_keeps_the_new_policys_pod_isolated_and_heals(
    small_agent: tuple[Agent, Datapath],
) -> None:
    agent, dp = small_agent
    ipc = libbpf.map_info(dp.map_fds[mapspecs.IPCACHE_MAP.name]).max_entries
    assert ipc == 4  # the config's size reached the kernel
    assert agent.handle(Snapshot(cluster([ns("shop")], pods(4), []))).ok
    assert verdict(dp, "10.244.1.12") is PASS  # no policy yet: open
    # A policy isolating p0 and two more pods: the ipcache needs 6 of 4 (E2BIG at 4/6).
    assert agent.handle(Snapshot(isolating(6))).ok
    assert sample(agent, "labelwall_agent_enforcement_degraded") == 1
    assert sample(agent, "labelwall_bpf_map_pressure", map=mapspecs.IPCACHE_MAP.name) == 1.0
    assert agent.degraded == ("map lw_ipcache_v1 is full: it holds 4 entries and needed 6",)
    assert verdict(dp, "10.244.1.11") is PASS  # admitted, and its address fitted
    assert verdict(dp, "10.244.1.12") is DROP  # today: PASS (p0 left open)
    assert verdict(dp, "10.244.1.11", 81) is DROP
    assert verdict(dp, "10.244.1.14") is DROP  # its address did not fit: world
    agent.repair()  # the drift check retries into the same failure, still closed
    assert verdict(dp, "10.244.1.12") is DROP
    # Space returns: two pods leave; the next sync writes everything, the gauge clears.
    assert agent.handle(Snapshot(isolating(4))).ok
    assert dp.read_state() == compile_cluster(isolating(4)).map_state
    assert sample(agent, "labelwall_agent_enforcement_degraded") == 0
    assert verdict(dp, "10.244.1.11") is PASS
    assert verdict(dp, "10.244.1.12") is DROP


def addr(i: int) -> IPAddress:
    return IP(f"10.0.1.{i}")


@pytest.mark.root
@pytest.mark.bpf
def test_a_full_kernel_policy_trie_isolates_with_the_rules_that_fitted_then_heals(
    small_agent: tuple[Agent, Datapath],
) -> None:
    _, dp = small_agent
    dp.set_endpoint(LO, 300)
    before = MapState(ipcache={addr(1): IpcacheEntry(400), addr(2): IpcacheEntry(401)})
    dp.apply(diff(MapState(), before))
    rules = {PolicyKey(300, 400, IN, Protocol.TCP, 80 + i, 16): i + 1 for i in range(5)}
    after = MapState(subjects={300: ISO_IN}, policy=rules, ipcache=before.ipcache)
    with pytest.raises(MapFullError) as full:
        dp.apply(diff(before, after))  # ENOSPC at 4 of 5
    assert (full.value.map_name, full.value.max_entries, full.value.needed) == (
        mapspecs.POLICY_MAP.name, 4, 5)  # fmt: skip
    fitted = {k.port for k in dp.read_state().policy}
    assert len(fitted) == 4
    syn = packets.packet(addr(2), IP("10.244.1.10"), packets.TCP, next(SPORTS), 80)
    assert dp.test_run(TO_POD, syn, LO).verdict is DROP  # 401 not admitted: today PASS
    for p in range(80, 85):
        syn = packets.packet(addr(1), IP("10.244.1.10"), packets.TCP, next(SPORTS), p)
        assert dp.test_run(TO_POD, syn, LO).verdict is (PASS if p in fitted else DROP)
    fewer = MapState(subjects=after.subjects, policy=dict(list(rules.items())[:3]),
                     ipcache=before.ipcache)  # fmt: skip
    dp.apply(diff(dp.read_state(), fewer))  # a rule removed: space returns, written whole
    assert dp.read_state() == fewer
    syn = packets.packet(addr(1), IP("10.244.1.10"), packets.TCP, next(SPORTS), 82)
    assert dp.test_run(TO_POD, syn, LO).verdict is PASS
