"""Conn-disrupt (Cilium's upgrade-test habit) on the real 2-node cluster with labelwall.

Long-lived TCP connections from pods on both nodes to a server on node-2 (to its pod IP
and through its Service) are opened under a NetworkPolicy that admits only
``role=allowed`` clients, then labelwall is disrupted three ways: ``helm upgrade`` with a
changed value (both the DaemonSet and the Deployment roll), ``kubectl delete pod`` of the
agent on the server's node, and ``kill -9`` of the operator process. Afterwards: 0
broken allowed connections, 0 new connections admitted from a denied client (it retries
all along), the agent restarted without a change wrote 0 map entries at startup, and the
operator restarted by the kill gives a label set new after it its Identity within 20 s.

The clients are small Python programs run in the labelwall image (it has python3); every
loop is bounded in rounds and time, and the traffic stays in the cluster's namespaces.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from typing import Any

import pytest
import yaml

from labelwall.testenv import cgroups
from labelwall.testenv.cluster import CHART, LABELWALL_NAMESPACE, RELEASE
from labelwall.testenv.nodebins import LABELWALL_IMAGE, find_helm

from .nodes_helpers import Env, kubectl

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.netns]

NS = "tenv-disrupt"
PORT = 7000
#: Upper bound of the clients' lifetime (they stop earlier on /tmp/stop).
CLIENT_MAX_S = 600

SERVER = """
import socket, threading
def serve(c):
    with c:
        while data := c.recv(4096):
            c.sendall(data)
s = socket.create_server(("0.0.0.0", @PORT@), backlog=64)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
""".replace("@PORT@", str(PORT))

# Keeps one connection per target open; every 0.2 s each sends a line and expects it back
# within 2 s. A connection that fails is counted broken once and not reopened.
ALLOWED = """
import json, os, socket, sys, time
targets = sys.argv[1:]
while not os.path.exists("/tmp/go"):
    time.sleep(0.1)
conns, broken, rounds = {}, [], 0
for t in targets:
    host, port = t.rsplit(":", 1)
    conns[t] = socket.create_connection((host, int(port)), timeout=5)
    conns[t].settimeout(2)
deadline = time.monotonic() + @MAX_S@
while time.monotonic() < deadline and not os.path.exists("/tmp/stop"):
    rounds += 1
    for t, c in list(conns.items()):
        msg = b"r%d\\n" % rounds
        try:
            c.sendall(msg)
            got = b""
            while len(got) < len(msg):
                chunk = c.recv(len(msg) - len(got))
                if not chunk:
                    raise ConnectionError("closed")
                got += chunk
            if got != msg:
                raise ConnectionError(f"echo {got!r}")
        except OSError as e:
            broken.append({"target": t, "round": rounds, "error": repr(e)})
            del conns[t]
    time.sleep(0.2)
print(json.dumps({"opened": len(targets), "broken": broken, "rounds": rounds}), flush=True)
""".replace("@MAX_S@", str(CLIENT_MAX_S))

# Tries a new connection every 0.3 s (1 s timeout) and counts the ones admitted.
DENIED = """
import json, os, socket, sys, time
targets = sys.argv[1:]
while not os.path.exists("/tmp/go"):
    time.sleep(0.1)
attempts, admitted = 0, []
deadline = time.monotonic() + @MAX_S@
while time.monotonic() < deadline and not os.path.exists("/tmp/stop"):
    for t in targets:
        host, port = t.rsplit(":", 1)
        attempts += 1
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            admitted.append(t)
        except OSError:
            pass
    time.sleep(0.3)
print(json.dumps({"attempts": attempts, "admitted": admitted}), flush=True)
""".replace("@MAX_S@", str(CLIENT_MAX_S))


def _pod(name: str, node: str, labels: dict[str, str], script: str, args: list[str]) -> Any:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": LABELWALL_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-u", "-c", script, *args],
                }
            ],
        },
    }


PROBE = """
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
try:
    socket.create_connection((host, int(port)), timeout=1).close()
except OSError:
    sys.exit(1)
"""


def _probe(env: Env, pod: str, target: str) -> bool:
    """One new connection from ``pod`` to ``target``: True if it was accepted."""
    res = subprocess.run(
        [kubectl(), f"--kubeconfig={env.contract['kubeconfig']}", "exec", "-n", NS, pod,
         "--", "python3", "-c", PROBE, target],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return res.returncode == 0


def _pods_json(env: Env, ns: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(env.kubectl("get", "pods", "-n", ns, "-o", "json"))[
        "items"
    ]
    return items


def _wait(what: str, probe: Any, timeout_s: float = 180, detail: Any = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(1)
    pytest.fail(f"{what}: not within {timeout_s:.0f}s" + (f"; {detail()}" if detail else ""))


def _labelwall_ready(env: Env, nodes: int) -> bool:
    pods = _pods_json(env, LABELWALL_NAMESPACE)
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    ready = [
        p
        for p in live
        if all(c.get("ready") for c in p.get("status", {}).get("containerStatuses", []) or [{}])
    ]
    return len(ready) == len(live) == nodes + 1


def _agent_on(env: Env, node: str) -> str:
    for p in _pods_json(env, LABELWALL_NAMESPACE):
        labels = p["metadata"]["labels"]
        if (
            labels.get("app.kubernetes.io/component") == "agent"
            and p["spec"]["nodeName"] == node
            and not p["metadata"].get("deletionTimestamp")
        ):
            return str(p["metadata"]["name"])
    raise AssertionError(f"no agent pod on {node}")


def _startup_writes(env: Env, agent_pod: str) -> float:
    raw = env.kubectl(
        "get", "--raw",
        f"/api/v1/namespaces/{LABELWALL_NAMESPACE}/pods/{agent_pod}:9962/proxy/metrics",
    )  # fmt: skip
    m = re.search(r"^labelwall_agent_startup_writes (\S+)$", raw, re.M)
    assert m is not None, "no labelwall_agent_startup_writes in the agent's /metrics"
    return float(m.group(1))


def _operator_pids(cgroup: str) -> list[int]:
    """Host pids of `labelwall operator` processes, found in the cluster's cgroup tree."""
    out = []
    for pid in cgroups.tree_pids(cgroup):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"operator" in argv and any(a.endswith(b"labelwall") for a in argv):
            out.append(pid)
    return out


def _helm_upgrade(env: Env) -> None:
    helm_home = env.directory / "helm"
    res = subprocess.run(
        [
            str(find_helm()),
            f"--kubeconfig={env.contract['kubeconfig']}",
            "upgrade", RELEASE, str(CHART),
            "--namespace", LABELWALL_NAMESPACE,
            "--reuse-values",
            "--set", "logLevel=debug",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "HELM_CACHE_HOME": str(helm_home / "cache"),
             "HELM_CONFIG_HOME": str(helm_home / "config"),
             "HELM_DATA_HOME": str(helm_home / "data")},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr


def test_connections_survive_upgrade_agent_delete_and_operator_kill(cluster: Env) -> None:
    env = cluster
    state = json.loads((env.directory / "cluster-state.json").read_text())
    server = _pod("srv", "node-2", {"app": "srv"}, SERVER, [])
    # A readiness probe on the isolated server: the kubelet probes from the node's ptp
    # gateway address (10.244.<i>.1), which the agent counts as the node (agent/routes.py),
    # so the server stays Ready under its ingress policy (traffic from its own node).
    server["spec"]["containers"][0]["readinessProbe"] = {
        "tcpSocket": {"port": PORT},
        "periodSeconds": 1,
        "failureThreshold": 2,
    }
    docs: list[Any] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        server,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "srv", "namespace": NS},
            "spec": {"selector": {"app": "srv"}, "ports": [{"port": PORT}]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "srv-from-allowed", "namespace": NS},
            "spec": {
                "podSelector": {"matchLabels": {"app": "srv"}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"role": "allowed"}}}],
                        "ports": [{"protocol": "TCP", "port": PORT}],
                    }
                ],
            },
        },
    ]
    env.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    env.kubectl("wait", "-n", NS, "--for=condition=Ready", "pod/srv", "--timeout=90s")
    srv_ip = next(p for p in _pods_json(env, NS) if p["metadata"]["name"] == "srv")["status"][
        "podIP"
    ]
    svc_ip = json.loads(env.kubectl("get", "svc", "-n", NS, "srv", "-o", "json"))["spec"][
        "clusterIP"
    ]
    targets = [f"{srv_ip}:{PORT}", f"{svc_ip}:{PORT}"]
    clients = [
        _pod("ok-1", "node-1", {"role": "allowed"}, ALLOWED, targets),
        _pod("ok-2", "node-2", {"role": "allowed"}, ALLOWED, targets),
        _pod("deny-1", "node-1", {"role": "denied"}, DENIED, targets),
        _pod("deny-2", "node-2", {"role": "denied"}, DENIED, targets),
    ]
    names = [c["metadata"]["name"] for c in clients]
    env.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(clients))
    env.kubectl("wait", "-n", NS, "--for=condition=Ready", *[f"pod/{n}" for n in names],
                "--timeout=90s")  # fmt: skip

    # The policy is enforced before any counted traffic: ok-* connect, deny-* do not.
    last: dict[str, bool] = {}

    def enforced() -> bool:
        last.update({f"{n}->{t}": _probe(env, n, t) for n in names for t in targets})
        return all(ok == k.startswith("ok") for k, ok in last.items())

    _wait("the policy enforced on both nodes", enforced, 120, lambda: f"last probes: {last}")
    time.sleep(3)  # > failureThreshold x periodSeconds of the server's readiness probe
    srv = next(p for p in _pods_json(env, NS) if p["metadata"]["name"] == "srv")
    ready = {c["type"]: c["status"] for c in srv["status"]["conditions"]}["Ready"]
    assert ready == "True", "kubelet probes from the node are dropped by the isolated server"
    for n in names:
        env.kubectl("exec", "-n", NS, n, "--", "touch", "/tmp/go")
    time.sleep(3)

    # 1. helm upgrade with a changed value: both workloads roll.
    _helm_upgrade(env)
    env.kubectl("rollout", "status", "-n", LABELWALL_NAMESPACE, "daemonset/labelwall-agent",
                "--timeout=240s")  # fmt: skip
    env.kubectl("rollout", "status", "-n", LABELWALL_NAMESPACE, "deployment/labelwall-operator",
                "--timeout=240s")  # fmt: skip
    _wait("labelwall Ready after the upgrade", lambda: _labelwall_ready(env, 2))

    # 2. Delete the agent on the server's node; its replacement changes nothing.
    old = _agent_on(env, "node-2")
    env.kubectl("delete", "pod", "-n", LABELWALL_NAMESPACE, old, "--wait=true")
    _wait("a new agent on node-2", lambda: _labelwall_ready(env, 2))
    new = _agent_on(env, "node-2")
    assert new != old
    assert _startup_writes(env, new) == 0

    # 3. kill -9 of the operator process (from the host: PID 1 of its container).
    pids = _operator_pids(state["cgroup"])
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)
    _wait("the operator restarted", lambda: _operator_pids(state["cgroup"]) not in ([], pids))
    _wait("labelwall Ready after the operator kill", lambda: _labelwall_ready(env, 2))
    # The restarted operator acts at once: a label set new since the kill gets its Identity
    # (kopf used to pause it until the dead process's peering entry expired, up to 60 s,
    # and the new pod stayed init, isolated, all that time; seen as a failed probe in CI).
    late = _pod("after-kill", "node-1", {"role": "after-kill"}, "import time; time.sleep(300)", [])
    env.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(late))
    applied = time.monotonic()
    _wait(
        "an Identity for a label set first seen after the operator kill",
        lambda: env.kubectl("get", "identities", "-l", "role=after-kill", "-o", "name").strip(),
        20,
        lambda: env.kubectl(
            "logs", "-n", LABELWALL_NAMESPACE, "deployment/labelwall-operator", "--tail=15"
        ),
    )
    print(f"a new label set's Identity after the operator kill: {time.monotonic() - applied:.1f} s")
    time.sleep(3)

    for n in names:
        env.kubectl("exec", "-n", NS, n, "--", "touch", "/tmp/stop")
    results: dict[str, Any] = {}
    for n in names:
        env.kubectl("wait", "-n", NS, "--for=jsonpath={.status.phase}=Succeeded", f"pod/{n}",
                    "--timeout=60s")  # fmt: skip
        results[n] = json.loads(env.kubectl("logs", "-n", NS, n).strip().splitlines()[-1])
    print(json.dumps(results, indent=1))
    for n in ("ok-1", "ok-2"):
        assert results[n]["opened"] == len(targets)
        assert results[n]["rounds"] > 50, results[n]
        assert results[n]["broken"] == [], results[n]
    for n in ("deny-1", "deny-2"):
        assert results[n]["attempts"] > 50, results[n]
        assert results[n]["admitted"] == [], results[n]
    env.kubectl("delete", "namespace", NS, "--wait=false")
