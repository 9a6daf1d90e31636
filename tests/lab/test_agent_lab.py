"""The agent enforcing the lab with real packets: pod IP change, kill -9 restart, atomic
policy changes under continuous probes, drift repair and bad input."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from labelwall.agent.dirsource import STATUS_FILE
from labelwall.datapath import codecs
from labelwall.errors import InvalidInputError
from labelwall.lab import topology
from labelwall.lab.control import Lab, agent_entry, alive, start_agent
from labelwall.lab.layout import read_record

from .helpers import ContinuousProbes, Flow, as_docs, metric, sync_to

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.netns]

NS = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "app", "labels": {"t": "1"}}}


def pod(name: str, ip: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "app", "labels": labels or {"app": name}},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "ports": [
                        {"containerPort": 80, "name": "http"},
                        {"containerPort": 80, "protocol": "UDP", "name": "dns"},
                    ],
                }
            ]
        },
        "status": {"podIP": ip},
    }


def b_admits(name: str = "b-admits-a", selector: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "app"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "b"}},
            "ingress": [
                {
                    "from": [{"podSelector": selector or {"matchLabels": {"app": "a"}}}],
                    "ports": [{"port": 80}],
                }
            ],
        },
    }


A, B, C = pod("a", "10.244.10.1"), pod("b", "10.244.10.2"), pod("c", "10.244.10.3")
BASE = [NS, A, B, C, b_admits()]
ALLOWED = [Flow("app/a", "app/b", 80), Flow("app/b", "app/a", 80), Flow("app/c", "app/a", 80)]
DENIED = [Flow("app/c", "app/b", 80), Flow("app/c", "app/b", 80, "UDP")]


@pytest.fixture
def base(lab: Lab) -> Lab:
    sync_to(lab, BASE)
    return lab


def outcomes(lab: Lab, flows: list[Flow], timeout: float = 0.5) -> list[str]:
    return [r["outcome"] for r in lab.probe([f.request() for f in flows], timeout)]


def assert_enforced(lab: Lab) -> None:
    assert outcomes(lab, ALLOWED) == ["ok"] * len(ALLOWED)
    assert outcomes(lab, DENIED) == ["timeout"] * len(DENIED)


def policy_writes(lab: Lab) -> float:
    return metric(lab, "labelwall_agent_map_writes_total", {"map": "lw_policy_v1"})


def test_base_scenario_is_enforced_with_real_packets(base: Lab) -> None:
    assert_enforced(base)


def test_pod_recreated_with_a_new_ip_is_enforced_and_the_policy_map_is_not_written(
    base: Lab,
) -> None:
    before = policy_writes(base)
    ipcache_before = metric(base, "labelwall_agent_map_writes_total", {"map": "lw_ipcache_v1"})
    base.delete(as_docs([A]))
    moved = pod("a", "10.244.10.11")
    base.apply(as_docs([moved]))
    assert outcomes(base, [Flow("app/a", "app/b", 80)]) == ["ok"]
    assert outcomes(base, DENIED) == ["timeout"] * len(DENIED)
    assert policy_writes(base) == before
    assert metric(base, "labelwall_agent_map_writes_total", {"map": "lw_ipcache_v1"}) > (
        ipcache_before
    )
    # and a pod IP change in place (one apply) is the same: only addresses move
    base.apply(as_docs([A]))
    assert_enforced(base)
    assert policy_writes(base) == before


def _wait_agent_synced(lab: Lab, pid: int, limit_s: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            status = json.loads((lab.paths.state / STATUS_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            status = {}
        if status.get("pid") == pid and status.get("ok") and status.get("pending") == 0:
            return status
        time.sleep(0.02)
    raise AssertionError(f"restarted agent {pid} did not sync: {status}")


def test_kill_9_and_restart_keeps_enforcing_and_the_restart_writes_nothing(base: Lab) -> None:
    flows = ALLOWED + DENIED
    with ContinuousProbes(base, flows, timeout=0.5, max_seconds=90) as probes:
        probes.wait_rounds(3)
        entry = agent_entry(base.paths)
        assert entry is not None
        assert alive(entry)
        os.kill(int(entry["pid"]), signal.SIGKILL)
        outage_start = len(probes.rounds)
        probes.wait_rounds(5)  # the maps enforce on their own while no agent runs
        assert len(probes.rounds) > outage_start
        new = start_agent(base.paths, metrics_port=9962)
        _wait_agent_synced(base, int(new["pid"]))
        probes.wait_rounds(5)
    for i, flow in enumerate(flows):
        want = "ok" if flow in ALLOWED else "timeout"
        got = probes.outcomes(i)
        assert set(got) == {want}, f"{flow}: {got}"
    assert metric(base, "labelwall_agent_startup_writes") == 0
    assert read_record(base.paths)["agent"]["pid"] == new["pid"]


def test_replacing_a_policy_with_an_equivalent_one_or_opening_more_never_drops_allowed_flows(
    base: Lab,
) -> None:
    flows = [Flow("app/a", "app/b", 80), Flow("app/b", "app/a", 80)]
    equivalent = b_admits(
        selector={"matchExpressions": [{"key": "app", "operator": "In", "values": ["a"]}]}
    )
    opens_more = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "b-admits-c-udp", "namespace": "app"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "b"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "c"}}}],
                         "ports": [{"port": 80, "protocol": "UDP"}]}],
        },
    }  # fmt: skip
    with ContinuousProbes(base, flows, timeout=0.5, max_seconds=90) as probes:
        probes.wait_rounds(2)
        for _ in range(5):
            base.apply(as_docs([equivalent]))
            base.apply(as_docs([opens_more]))
            base.apply(as_docs([b_admits()]))
            base.delete(as_docs([opens_more]))
        probes.wait_rounds(2)
    for i, flow in enumerate(flows):
        assert set(probes.outcomes(i)) == {"ok"}, f"{flow} dropped: {probes.outcomes(i)}"
    assert len(probes.rounds) >= 4


def _bpftool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bpftool", *args], capture_output=True, text=True, timeout=10)


def test_an_ipcache_entry_deleted_by_hand_with_bpftool_is_restored(base: Lab) -> None:
    import ipaddress

    table = codecs.IPCACHE
    key = table.encode_key(ipaddress.ip_address("10.244.10.2"))
    hexkey = [f"0x{b:02x}" for b in key]
    pin = table.spec.pin_path
    assert (
        _bpftool("map", "lookup", "pinned", pin, "key", "hex", *[h[2:] for h in hexkey]).returncode
        == 0
    )
    drift_before = metric(base, "labelwall_agent_drift_repaired_entries_total")
    deleted = _bpftool("map", "delete", "pinned", pin, "key", "hex", *[h[2:] for h in hexkey])
    assert deleted.returncode == 0, deleted.stderr
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if (
            _bpftool(
                "map", "lookup", "pinned", pin, "key", "hex", *[h[2:] for h in hexkey]
            ).returncode
            == 0
        ):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the deleted ipcache entry was not restored within 5 s")
    assert metric(base, "labelwall_agent_drift_repaired_entries_total") >= drift_before + 1
    assert_enforced(base)


def test_lab_rejects_a_pod_without_an_ip_and_keeps_the_running_state(base: Lab) -> None:
    objects = base.status()["objects"]
    no_ip = pod("d", "10.244.10.4")
    del no_ip["status"]
    with pytest.raises(InvalidInputError, match=r"app/d.*status.podIP"):
        base.apply(as_docs([no_ip, b_admits(selector={"matchLabels": {"app": "c"}})]))
    assert base.status()["objects"] == objects
    assert_enforced(base)


def test_lab_rejects_two_pods_with_one_ip_and_keeps_the_running_state(base: Lab) -> None:
    objects = base.status()["objects"]
    with pytest.raises(InvalidInputError, match=r"10\.244\.10\.2"):
        base.apply(as_docs([pod("d", "10.244.10.2")]))
    assert base.status()["objects"] == objects
    assert_enforced(base)


def _cli(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LABELWALL_LAB_DIR": str(lab.paths.root),
           "LABELWALL_LAB_PREFIX": lab.paths.prefix}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "labelwall.cli.main", "lab", *args],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def test_lab_apply_of_a_policy_file_that_does_not_parse_fails_clearly(
    base: Lab, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x\n")
    r = _cli(base, "apply", "-f", str(bad))
    assert r.returncode == 2
    assert str(bad) in r.stderr
    assert "error" in r.stderr
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: x, namespace: app}\nspec: {podSelector: {}, policyTypes: [Sideways]}\n"
    )
    r = _cli(base, "apply", "-f", str(invalid))
    assert r.returncode == 2
    assert "policyTypes" in r.stderr
    assert str(invalid) in r.stderr
    assert_enforced(base)


def test_agent_rejects_a_broken_file_in_its_directory_and_keeps_enforcing(base: Lab) -> None:
    broken = base.paths.state / "networkpolicy" / "app.broken.yaml"
    broken.write_text("kind: NetworkPolicy\nmetadata: [\n")
    try:
        deadline = time.monotonic() + 5
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = json.loads((base.paths.state / STATUS_FILE).read_text())
            if not status["ok"]:
                break
            time.sleep(0.02)
        assert not status["ok"]
        assert any("app.broken.yaml" in e for e in status["errors"])
        assert_enforced(base)
    finally:
        broken.unlink()
    assert base.wait_enforced()["enforced"]
    assert_enforced(base)


def test_lab_probe_prints_measured_and_expected_tables_and_json_cells(base: Lab) -> None:
    r = _cli(base, "probe", "--port", "80", "--protocol", "TCP", "-o", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    cells = json.loads(r.stdout)["cells"]
    cell = next(c for c in cells if c["from"] == "app/c" and c["to"] == "app/b")
    assert cell["measured"] is False
    assert cell["expected"] is False
    assert cell["port"] == 80
    r = _cli(base, "probe", "--port", "80")
    assert r.returncode == 0
    assert "TCP/80 measured" in r.stdout
    assert "TCP/80 expected" in r.stdout


FORGED_COUNT = 20  # packets per case: bounded, between lab namespaces only


def _udp4(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """An IPv4 + UDP datagram (kernel fills the IP checksum with IP_HDRINCL; UDP sum 0)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    ) + udp  # fmt: skip


def _received(sock: socket.socket) -> list[bytes]:
    got = []
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        try:
            got.append(sock.recv(2048))
        except BlockingIOError:
            time.sleep(0.01)
    return got


def test_a_pod_sending_with_another_pods_source_address_is_dropped_and_counted(
    base: Lab,
) -> None:
    # c (raw socket: CAP_NET_RAW, as containerd grants) sends UDP to a, which is not
    # isolated: with c's own source the datagrams arrive, with b's they are dropped at c's
    # veth, counted as source_invalid, whatever the policy.
    a_ip, b_ip, c_ip, port = "10.244.10.1", "10.244.10.2", "10.244.10.3", 5999
    labels = {"direction": "egress", "reason": "source_invalid", "verdict": "drop"}
    with topology.in_netns(base.paths.pod_netns("app/a")):
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with topology.in_netns(base.paths.pod_netns("app/c")):
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        sink.bind((a_ip, port))
        sink.setblocking(False)
        before = metric(base, "labelwall_datapath_packets_total", labels)
        for i in range(FORGED_COUNT):
            raw.sendto(_udp4(b_ip, a_ip, 40000, port, b"forged %d" % i), (a_ip, 0))
        assert _received(sink) == []
        assert metric(base, "labelwall_datapath_packets_total", labels) - before == FORGED_COUNT
        for i in range(FORGED_COUNT):
            raw.sendto(_udp4(c_ip, a_ip, 40000, port, b"genuine %d" % i), (a_ip, 0))
        assert len(_received(sink)) == FORGED_COUNT
        assert metric(base, "labelwall_datapath_packets_total", labels) - before == FORGED_COUNT
    finally:
        sink.close()
        raw.close()
