"""`testenv up --nodes 2`: real nodes, real pods, Services through kube-proxy, labelwall
installed by its chart; `down` (also after kill -9 of `up`) leaves nothing behind.

Everything runs through the CLI as a user would. Root and slow: the 2-node cluster with
labelwall takes about a minute and a half to come up on this machine (most of it importing
the ~1 GB labelwall image into both nodes' containerd).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from labelwall.testenv import cgroups
from labelwall.testenv.cluster import CLUSTER_STATE, CONTRACT, LABELWALL_NAMESPACE
from labelwall.testenv.nodesetup import HOST_PATHS_NOT_TOUCHED

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.netns]

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"
NS = "tenv-nodes"


def _cli(*args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labelwall.cli.testenv", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _netns_inodes(pids: list[int]) -> set[int]:
    out = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            out.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
    return out


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _pids_naming(directory: Path) -> list[int]:
    found = []
    needle = str(directory).encode()
    for pid in _all_pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if needle in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def _host_links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return sorted(line.split(":")[1].strip() for line in out.stdout.splitlines())


def _mountpoints() -> list[str]:
    return sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())


@dataclass
class Snapshot:
    links: list[str]
    mounts: list[str]
    host_paths: list[str]

    @classmethod
    def take(cls) -> Snapshot:
        present = [p for p in HOST_PATHS_NOT_TOUCHED if Path(p).exists()]
        return cls(_host_links(), _mountpoints(), present)


@dataclass
class Recorded:
    """What the environment created, read while it runs (for the leftover checks)."""

    cgroup: str
    netns: set[int]


def _record(directory: Path) -> Recorded:
    state = json.loads((directory / CLUSTER_STATE).read_text())
    pids = cgroups.tree_pids(state["cgroup"])
    return Recorded(cgroup=state["cgroup"], netns=_netns_inodes(pids))


def _assert_nothing_left(directory: Path, before: Snapshot, rec: Recorded) -> None:
    assert not directory.exists()
    assert _pids_naming(directory) == []
    assert cgroups.tree_pids(rec.cgroup) == []
    assert cgroups.existing(rec.cgroup) == []
    # Every node, pod and control-plane namespace is gone: no process is in one.
    assert rec.netns, "recorded no namespaces (the record is wrong, not the cleanup)"
    assert _netns_inodes(_all_pids()) & rec.netns == set()
    assert _host_links() == before.links
    assert _mountpoints() == before.mounts
    assert Snapshot.take().host_paths == before.host_paths


@dataclass
class Env:
    directory: Path
    contract: dict[str, Any]
    up_seconds: float

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        res = subprocess.run(
            ["kubectl", f"--kubeconfig={self.contract['kubeconfig']}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert res.returncode == 0, f"kubectl {' '.join(args)}: {res.stderr}"
        return res.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.fail("real nodes need root (namespaces, mounts, cgroups)")
    directory = tmp_path_factory.mktemp("nodes") / "env"
    before = Snapshot.take()
    t0 = time.monotonic()
    res = _cli("up", "--dir", str(directory), "--nodes", "2")
    up_s = time.monotonic() - t0
    print(f"testenv up --nodes 2: {up_s:.1f}s\n{res.stdout}")
    assert res.returncode == 0, f"up failed:\n{res.stdout}\n{res.stderr}"
    contract = json.loads((directory / CONTRACT).read_text())
    rec = _record(directory)
    try:
        yield Env(directory, contract, up_s)
    finally:
        if directory.exists():
            rec = _record(directory)
            t1 = time.monotonic()
            res = _cli("down", "--dir", str(directory))
            print(f"testenv down: {time.monotonic() - t1:.1f}s\n{res.stdout}")
            assert res.returncode == 0, res.stderr
        _assert_nothing_left(directory, before, rec)


def test_up_writes_the_contract_and_every_node_is_ready(cluster: Env) -> None:
    c = cluster.contract
    assert c["labelwall"] is True
    assert [n["name"] for n in c["nodes"]] == ["node-1", "node-2"]
    assert [n["podCIDR"] for n in c["nodes"]] == ["10.244.1.0/24", "10.244.2.0/24"]
    assert Path(c["e2e_test"]).name == "e2e.test"
    assert Path(c["ginkgo"]).name == "ginkgo"
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json"))["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    for n in c["nodes"]:
        node = by_name[n["name"]]
        ready = [x for x in node["status"]["conditions"] if x["type"] == "Ready"]
        assert ready[0]["status"] == "True"
        internal = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
        assert internal == [n["internalIP"]]
        assert node["spec"]["podCIDR"] == n["podCIDR"]


def test_labelwall_operator_and_one_agent_per_node_run_as_ready_pods(cluster: Env) -> None:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", LABELWALL_NAMESPACE, "-o", "json"))
    items = pods["items"]
    comp = {
        p["metadata"]["name"]: (
            p["metadata"]["labels"]["app.kubernetes.io/component"],
            p["spec"]["nodeName"],
            all(c["ready"] for c in p["status"]["containerStatuses"]),
            p["spec"]["containers"][0]["image"],
        )
        for p in items
    }
    agents = sorted(v[1] for v in comp.values() if v[0] == "agent")
    assert agents == ["node-1", "node-2"]
    assert [v[0] for v in comp.values()].count("operator") == 1
    assert all(v[2] for v in comp.values()), comp
    assert {v[3] for v in comp.values()} == {"docker.io/library/labelwall:dev"}


def _server(name: str, node: str) -> list[dict[str, Any]]:
    labels = {"app": name}
    return [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": {
                "nodeName": node,
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "agnhost",
                        "image": AGNHOST,
                        "imagePullPolicy": "Never",
                        "args": ["netexec", "--http-port=8080"],
                        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                    }
                ],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    ]


def _connect(env: Env, pod: str, target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "kubectl",
            f"--kubeconfig={env.contract['kubeconfig']}",
            "exec",
            "-n",
            NS,
            pod,
            "--",
            "/agnhost",
            "connect",
            target,
            "--timeout=3s",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_pod_on_each_node_reaches_the_other_through_its_service_and_directly(
    cluster: Env,
) -> None:
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    ]
    docs += _server("a", "node-1") + _server("b", "node-2")
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    cluster.kubectl("wait", "-n", NS, "--for=condition=Ready", "pod/a", "pod/b", "--timeout=90s")
    pods = json.loads(cluster.kubectl("get", "pods", "-n", NS, "-o", "json"))["items"]
    ip = {p["metadata"]["name"]: p["status"]["podIP"] for p in pods}
    assert ip["a"].startswith("10.244.1.")
    assert ip["b"].startswith("10.244.2.")
    svc = {
        name: json.loads(cluster.kubectl("get", "svc", "-n", NS, name, "-o", "json"))["spec"][
            "clusterIP"
        ]
        for name in ("a", "b")
    }
    targets = [
        ("a", f"{svc['b']}:80"),
        ("a", f"{ip['b']}:8080"),
        ("b", f"{svc['a']}:80"),
        ("b", f"{ip['a']}:8080"),
    ]
    results: dict[tuple[str, str], str] = {}
    for pod, target in targets:
        # kube-proxy programs a new Service within a second or two; bounded retries.
        for _ in range(10):
            res = _connect(cluster, pod, target)
            if res.returncode == 0:
                break
            time.sleep(1)
        results[(pod, target)] = "ok" if res.returncode == 0 else res.stderr.strip()
    assert results == {k: "ok" for k in results}
    # A port nothing listens on is refused: the probe can fail.
    assert _connect(cluster, "a", f"{ip['b']}:8081").returncode != 0


def test_down_after_kill_9_of_up_leaves_nothing_behind(cluster: Env, tmp_path: Path) -> None:
    """A second, 1-node environment beside the first; `up` is killed mid-way."""
    directory = tmp_path / "killed"
    before = Snapshot.take()
    proc = subprocess.Popen(
        [sys.executable, "-m", "labelwall.cli.testenv", "up", "--dir", str(directory),
         "--nodes", "1", "--no-labelwall"],
        stdout=(tmp_path / "up.log").open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    state = directory / CLUSTER_STATE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if state.exists() and "kubelet-node-1" in json.loads(state.read_text())["pids"]:
            break
        if proc.poll() is not None:
            pytest.fail(
                f"up exited before the kubelet started:\n{(tmp_path / 'up.log').read_text()}"
            )
        time.sleep(0.2)
    else:
        pytest.fail("the kubelet never started")
    rec = _record(directory)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    res = _cli("down", "--dir", str(directory))
    assert res.returncode == 0, res.stderr
    _assert_nothing_left(directory, before, rec)
    # The first environment was not disturbed.
    assert "node-1" in cluster.kubectl("get", "nodes", "-o", "name")
