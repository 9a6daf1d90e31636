"""`testenv up --nodes 2`: real nodes, real pods, Services through kube-proxy, labelwall
installed by its chart; `down` (also after kill -9 of `up`) leaves nothing behind.

Everything runs through the CLI as a user would. Root and slow: the 2-node cluster with
labelwall takes about a minute and a half to come up on this machine (most of it importing
the ~1 GB labelwall image into both nodes' containerd).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from labelwall.testenv.cluster import CLUSTER_STATE, LABELWALL_NAMESPACE

from .nodes_helpers import (
    Env,
    Snapshot,
    assert_nothing_left,
    cli,
    kubectl,
    record,
)

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.netns]

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"
NS = "tenv-nodes"


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
            kubectl(),
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


def _diagnostics(env: Env) -> str:
    """What a failed Service probe needs to be understood after teardown (seen once in a
    local run, a ClusterIP unanswered for 40 s on one node): the endpoint slices, each
    node's kube-proxy log tail and the labelwall drops the agents saw."""
    try:
        return _gather_diagnostics(env)
    except Exception as e:  # never hide the probe failure behind a diagnostics error
        return f"(diagnostics failed: {e!r})"


def _gather_diagnostics(env: Env) -> str:
    parts = [env.kubectl("get", "endpointslices", "-n", NS, "-o", "wide")]
    for log in sorted((env.directory / "logs").glob("kube-proxy-*.log")):
        parts.append(f"--- {log.name} (tail)\n" + "\n".join(log.read_text().splitlines()[-25:]))
    res = subprocess.run(
        [sys.executable, "-m", "labelwall.cli.main", "observe",
         f"--kubeconfig={env.contract['kubeconfig']}", "-n", NS, "--last", "50"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    parts.append("--- labelwall observe -n " + NS + "\n" + res.stdout[-4000:] + res.stderr[-2000:])
    return "\n".join(parts)


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
    assert results == {k: "ok" for k in results}, _diagnostics(cluster)
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
    rec = record(directory)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    res = cli("down", "--dir", str(directory))
    assert res.returncode == 0, res.stderr
    assert_nothing_left(directory, before, rec)
    # The first environment was not disturbed.
    assert "node-1" in cluster.kubectl("get", "nodes", "-o", "name")
