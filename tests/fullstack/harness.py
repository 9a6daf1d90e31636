"""The full stack on one machine: API server, helm-installed chart, operator, agent, lab kubelet.

Everything runs inside one lab node network namespace (``PREFIX + "node"``, made with
``labelwall.lab.topology.setup_node``), so nothing touches the host's network: the calling
thread enters that netns for the life of the stack and every process it starts (etcd,
kube-apiserver, helm, kubectl, the operator, the agent, the kubelet's pod helpers)
inherits it, which is what a node with ``hostNetwork`` pods looks like.

- etcd + kube-apiserver: ``labelwall.testenv.TestEnv`` (RBAC on), private to the stack.
- The chart: ``helm install labelwall charts/labelwall -n labelwall-system
  --create-namespace``; its CRDs, RBAC, ServiceAccounts, ConfigMap and peering object
  are what the processes below use.
- The operator and the agent run with the container ``command`` and ``env`` of the
  installed Deployment and DaemonSet (fieldRefs resolved as the kubelet would), the
  ConfigMap's ``config.yaml`` as the file ``--config`` names, and a TokenRequest token of
  the chart's ServiceAccount (so exactly the chart's ClusterRoles apply). The agent runs in
  a private mount namespace with its own bpffs at ``agent.bpffs`` (the DaemonSet mounts
  the node's): its pins can never collide with another test's, and vanish with it.
- ``labelwall.lab.kubelet.Kubelet`` plays the kubelet for node ``NODE_NAME``.

Library for tests/fullstack and bench/e2e_latency.py (loaded by path there)::

    with Stack(workdir, "lwf-") as stack:  # tests/fullstack/harness.py
        stack.kubectl("apply", "-f", "-", stdin=...)
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from labelwall.kube.client import api_client
from labelwall.lab import topology
from labelwall.lab.kubelet import POD_IP_ANNOTATION, Kubelet
from labelwall.lab.node import LabNode
from labelwall.testenv import TestEnv, find_binaries, service_account_kubeconfig
from labelwall.testenv.processes import log_tail

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "labelwall"
RELEASE = "labelwall"
NAMESPACE = "labelwall-system"
NODE_NAME = "lab-node"
#: The console script the image installs as `labelwall` (the chart's command[0]).
LABELWALL = Path(sys.executable).parent / "labelwall"


class StackError(RuntimeError):
    """The stack could not be brought up (a tool is missing, a process died)."""


def load_render() -> ModuleType:
    """tools/helm/render.py (not a package: loaded by path, as the chart tests do)."""
    path = REPO / "tools" / "helm" / "render.py"
    spec = importlib.util.spec_from_file_location("lw_helm_render_fullstack", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def requirements() -> list[str]:
    """What is missing to run the stack (empty: all there)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces, BPF, mounts)")
    for tool in ("ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (iproute2/util-linux)")
    if not LABELWALL.exists():
        missing.append(f"{LABELWALL} (pip install -e . into the venv)")
    try:
        find_binaries()
    except Exception as e:  # BinariesMissingError: say how to build them
        missing.append(str(e))
    try:
        load_render().helm_path()
    except Exception as e:  # HelmMissingError
        missing.append(str(e))
    return missing


def parse_metrics(text: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """The sum of the samples of ``name`` whose labels include ``labels`` (None: absent)."""
    total, found = 0.0, False
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in (labels or {}).items()):
            total += float(m.group(4))
            found = True
    return total if found else None


class Process:
    """One long-running child (operator or agent), stopped by its own pid."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=dict(env), start_new_session=True,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        return log_tail(self.log, lines)

    def stop(self, grace_s: float = 15.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Stack:
    """Bring the full stack up in ``__enter__``/``up()``; ``down()`` removes all of it."""

    def __init__(self, workdir: Path, prefix: str = "lwf-", subnet: str = "10.244.100.0/24"):
        if not prefix or len(prefix) > 6:
            raise ValueError("prefix must be 1..6 characters (interface names are 15)")
        self.workdir = workdir.resolve()
        self.prefix = prefix
        self.subnet = subnet
        self.node_netns = f"{prefix}node"
        self.node = LabNode(NODE_NAME, self.node_netns, f"{prefix}host0")
        self._exit = contextlib.ExitStack()
        self.env: TestEnv | None = None
        self.kubelet: Kubelet | None = None
        self.operator: Process | None = None
        self.agent: Process | None = None
        self.config: dict[str, Any] = {}
        self.timings: dict[str, float] = {}

    # ---- lifecycle ----

    def __enter__(self) -> Stack:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> Stack:
        missing = requirements()
        if missing:
            raise StackError("cannot run the full stack: missing " + "; ".join(missing))
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        return self

    def _up(self) -> None:
        t0 = time.monotonic()
        if topology.list_netns(self.prefix):
            topology.cleanup(self.prefix, [self.node_netns])  # a crashed earlier run of ours
        node = topology.setup_node(self.node)
        self._exit.callback(topology.teardown_node, node)
        # Runs before teardown_node (LIFO): pod netns and veths the kubelet left behind.
        self._exit.callback(topology.cleanup, self.prefix, [self.node_netns])
        self._exit.enter_context(topology.in_netns(self.node_netns))
        self.env = TestEnv.start(self.workdir / "apiserver", find_binaries())
        self._exit.callback(self.env.stop)
        self.timings["apiserver_s"] = time.monotonic() - t0

        t1 = time.monotonic()
        self.helm_install()
        self.timings["helm_install_s"] = time.monotonic() - t1
        for crd in ("identities.labelwall.io", "clusterkopfpeerings.kopf.dev"):
            self.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        config_text = self._one("configmap", "config")["data"]["config.yaml"]
        self.config = yaml.safe_load(config_text)
        config_path = self.workdir / "config.yaml"
        config_path.write_text(config_text)

        self.kubelet = Kubelet(
            self.node, prefix=self.prefix, subnet=self.subnet,
            client=api_client(str(self.env.kubeconfig)),
        )  # fmt: skip
        self.kubelet.register_node()
        self.kubelet.start()
        self._exit.callback(self.kubelet.stop)

        t2 = time.monotonic()
        self.operator = self._start("operator", "deployment", config_path)
        self.agent = self._start("agent", "daemonset", config_path)
        self._wait_healthy(self.operator, int(self.config["operator"]["healthPort"]))
        self._wait_healthy(self.agent, int(self.config["agent"]["healthPort"]))
        self.timings["processes_s"] = time.monotonic() - t2

    def down(self) -> None:
        """Stop the processes (by pid), the kubelet (its pod netns), the API server, then
        the node netns; safe to call twice and after a failed ``up``."""
        try:
            self._exit.close()
        finally:
            self.env, self.kubelet, self.operator, self.agent = None, None, None, None

    # ---- the chart ----

    def helm_install(self) -> str:
        env = self._env()
        render = load_render()
        home = self.workdir / "helm-home"
        out = subprocess.run(
            [
                render.helm_path(), "install", RELEASE, str(CHART),
                "-n", NAMESPACE, "--create-namespace", "--kubeconfig", str(env.kubeconfig),
            ],
            capture_output=True, text=True, timeout=180, check=False,
            env={
                **os.environ,
                "HELM_CACHE_HOME": str(home / "cache"),
                "HELM_CONFIG_HOME": str(home / "config"),
                "HELM_DATA_HOME": str(home / "data"),
            },
        )  # fmt: skip
        if out.returncode != 0:
            raise StackError(f"helm install exited {out.returncode}:\n{out.stderr}")
        return out.stdout

    def _one(self, kind: str, component: str) -> dict[str, Any]:
        data = json.loads(
            self.kubectl(
                "get", kind, "-n", NAMESPACE, "-o", "json",
                "-l", f"app.kubernetes.io/instance={RELEASE},"
                f"app.kubernetes.io/component={component}",
            ).stdout
        )  # fmt: skip
        items: list[dict[str, Any]] = data["items"]
        if len(items) != 1:
            raise StackError(f"expected one {kind} of component {component}, got {len(items)}")
        return items[0]

    def _start(self, component: str, kind: str, config_path: Path) -> Process:
        """Run the container of the installed workload the way its pod would run it."""
        env = self._env()
        workload = self._one(kind, component)
        pod_spec = workload["spec"]["template"]["spec"]
        [container] = [c for c in pod_spec["containers"] if c["name"] == component]
        argv = list(container["command"])
        if argv[0] != "labelwall" or "--config" not in argv:
            raise StackError(f"unexpected {component} command {argv}")
        argv[0] = str(LABELWALL)
        argv[argv.index("--config") + 1] = str(config_path)
        pod_name = f"{workload['metadata']['name']}-lab"
        field_values = {
            "spec.nodeName": NODE_NAME,
            "metadata.name": pod_name,
            "metadata.namespace": NAMESPACE,
        }
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        for item in container.get("env") or ():
            if "value" in item:
                child_env[item["name"]] = item["value"]
            else:
                child_env[item["name"]] = field_values[item["valueFrom"]["fieldRef"]["fieldPath"]]
        account = pod_spec["serviceAccountName"]
        child_env["KUBECONFIG"] = str(
            service_account_kubeconfig(
                env, NAMESPACE, account, self.workdir / f"{account}.kubeconfig"
            )
        )
        if component == "agent":
            # The DaemonSet mounts the node's bpffs at agent.bpffs; here a private mount
            # namespace gets a fresh bpffs there (exec keeps the agent's pid).
            bpffs = str(self.config["agent"]["bpffs"])
            argv = [
                "unshare", "--mount", "--propagation", "private",
                "sh", "-c", 'mount -t bpf bpf "$0" && exec "$@"', bpffs, *argv,
            ]  # fmt: skip
        proc = Process(component, argv, child_env, self.workdir / f"{component}.log")
        # The agent does not exit on SIGTERM within 15 s with --source kubernetes (its six
        # watch threads are joined one after the other, each until its watch ends): do not
        # wait that long; SIGKILL is safe for it (the pinned maps stay, nothing else).
        self._exit.callback(proc.stop, 5.0 if component == "agent" else 15.0)
        return proc

    def _wait_healthy(self, proc: Process, port: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not proc.alive():
                raise StackError(f"{proc.name} exited {proc.proc.returncode}:\n{proc.tail()}")
            url = f"http://127.0.0.1:{port}/healthz"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
            time.sleep(0.1)
        raise StackError(f"{proc.name} not healthy after {timeout_s}s:\n{proc.tail()}")

    # ---- using it ----

    def _env(self) -> TestEnv:
        if self.env is None:
            raise StackError("the stack is not up")
        return self.env

    def _kubelet(self) -> Kubelet:
        if self.kubelet is None:
            raise StackError("the stack is not up")
        return self.kubelet

    def kubectl(
        self,
        *args: str,
        stdin: str | None = None,
        check: bool = True,
        timeout_s: float = 60.0,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """kubectl as the cluster admin (or as whoever ``kubeconfig`` names)."""
        return self._env().kubectl(
            *args, stdin=stdin, check=check, timeout_s=timeout_s, kubeconfig=kubeconfig
        )

    def apply(self, objs: Iterable[Mapping[str, Any]]) -> None:
        self.kubectl("apply", "-f", "-", stdin=as_list_json([dict(o) for o in objs]))

    def probe(
        self, requests: Sequence[Mapping[str, Any]], timeout: float = 0.3
    ) -> list[dict[str, Any]]:
        return self._kubelet().probe(requests, timeout)

    def agent_metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        port = int(self.config["agent"]["metricsPort"])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        value = parse_metrics(text, name, labels)
        return 0.0 if value is None else value

    def agent_syncs(self) -> float:
        return self.agent_metric("labelwall_agent_syncs_total")

    def policy_map_writes(self) -> float:
        return self.agent_metric("labelwall_agent_map_writes_total", {"map": "lw_policy_v1"})

    def wait_agent_quiet(
        self, before: float, quiet_s: float = 0.3, timeout_s: float = 15.0
    ) -> bool:
        """Until the agent handled a snapshot after ``before`` (its sync count then) and
        then none for ``quiet_s``; False on timeout (callers still check with packets)."""
        deadline = time.monotonic() + timeout_s
        last, since = self.agent_syncs(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.02)
            now = self.agent_syncs()
            if now != last:
                last, since = now, time.monotonic()
            elif now > before and time.monotonic() - since >= quiet_s:
                return True
        return False

    def check_alive(self) -> None:
        for proc in (self.operator, self.agent):
            if proc is not None and not proc.alive():
                raise StackError(f"{proc.name} exited {proc.proc.returncode}:\n{proc.tail()}")


# ---------------------------------------------------------------- manifests


def as_list_json(objs: Iterable[Mapping[str, Any]]) -> str:
    """Objects as one JSON ``v1 List`` for ``kubectl apply -f -``. JSON, not YAML: kubectl
    reads YAML 1.1, where an unquoted ``y`` (the model's namespace y) is a boolean."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [dict(o) for o in objs]})


def as_pod_manifest(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A model Pod (with status.podIP) as the user would apply it to the lab node: bound
    to NODE_NAME, its address asked for by annotation, no status (the kubelet writes it)."""
    meta = dict(doc["metadata"])
    ip = (doc.get("status") or {}).get("podIP")
    if ip:
        meta["annotations"] = {**(meta.get("annotations") or {}), POD_IP_ANNOTATION: ip}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {**doc["spec"], "nodeName": NODE_NAME},
    }


def _labels(doc: Mapping[str, Any]) -> dict[str, str]:
    return dict((doc.get("metadata") or {}).get("labels") or {})


def _nskey(doc: Mapping[str, Any]) -> str:
    meta = doc["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


#: Set by the API server on every namespace; never changed by hand.
_NS_NAME_LABEL = "kubernetes.io/metadata.name"


class Converger:
    """Brings the API server to a wanted set of Namespaces, Pods and NetworkPolicies with
    the kubectl verbs a user would type: ``apply``, ``label``, ``delete``.

    It remembers what it applied (the stack is private, nobody else writes these objects),
    so only differences are sent: relabels become ``kubectl label``, a policy that is not
    wanted any more ``kubectl delete networkpolicy``. Namespaces are never deleted (without
    a controller manager they would stay Terminating).
    """

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.namespaces: dict[str, dict[str, str]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        self.commands: list[list[str]] = []

    def _run(self, *args: str, stdin: str | None = None) -> None:
        self.commands.append(list(args))
        self.stack.kubectl(*args, stdin=stdin)

    def converge(self, docs: Iterable[Mapping[str, Any]]) -> int:
        """Make the cluster hold ``docs`` (model docs: Pods may carry status.podIP); returns
        how many kubectl commands it ran. Waits until the kubelet runs exactly the wanted
        pods with their addresses."""
        before = len(self.commands)
        namespaces = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Namespace"}
        pods = {_nskey(d): as_pod_manifest(d) for d in docs if d["kind"] == "Pod"}
        policies = {_nskey(d): dict(d) for d in docs if d["kind"] == "NetworkPolicy"}

        new_ns = [d for n, d in namespaces.items() if n not in self.namespaces]
        if new_ns:
            self._run("apply", "-f", "-", stdin=as_list_json(new_ns))
            for n in (d["metadata"]["name"] for d in new_ns):
                self.namespaces[n] = _labels(namespaces[n])
        for name, doc in sorted(namespaces.items()):
            self._relabel("namespace", [name], self.namespaces[name], _labels(doc))
            self.namespaces[name] = _labels(doc)

        # Pods whose spec or address changed are re-created (their sandbox would be).
        def same_pod(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
            return a["spec"] == b["spec"] and (a["metadata"].get("annotations") or {}) == (
                b["metadata"].get("annotations") or {}
            )

        gone = [k for k in self.pods if k not in pods or not same_pod(self.pods[k], pods[k])]
        for key in sorted(gone):
            ns, name = key.split("/", 1)
            self._run("delete", "pod", "-n", ns, name, "--wait=true", "--timeout=60s")
            del self.pods[key]
        for key, doc in sorted(pods.items()):
            if key in self.pods:
                ns, name = key.split("/", 1)
                self._relabel("pod", ["-n", ns, name], _labels(self.pods[key]), _labels(doc))
                self.pods[key] = doc
        fresh = [d for k, d in sorted(pods.items()) if k not in self.pods]
        if fresh:
            self._run("apply", "-f", "-", stdin=as_list_json(fresh))
            self.pods.update({_nskey(d): d for d in fresh})

        stale = sorted(k for k in self.policies if k not in policies)
        for ns in sorted({k.split("/", 1)[0] for k in stale}):
            names = [k.split("/", 1)[1] for k in stale if k.startswith(ns + "/")]
            self._run("delete", "networkpolicy", "-n", ns, *names)
        for key in stale:
            del self.policies[key]
        changed = [d for k, d in sorted(policies.items()) if self.policies.get(k) != d]
        if changed:
            self._run("apply", "-f", "-", stdin=as_list_json(changed))
            self.policies.update({_nskey(d): d for d in changed})

        want = {
            k: (d["metadata"].get("annotations") or {}).get(POD_IP_ANNOTATION)
            for k, d in pods.items()
        }
        self.stack._kubelet().wait_running(want)
        return len(self.commands) - before

    def _relabel(
        self, kind: str, target: list[str], have: Mapping[str, str], want: Mapping[str, str]
    ) -> None:
        args = [f"{k}={v}" for k, v in sorted(want.items()) if have.get(k) != v]
        args += [f"{k}-" for k in sorted(have) if k not in want and k != _NS_NAME_LABEL]
        args = [a for a in args if not a.startswith(_NS_NAME_LABEL + "=")]
        if args:
            self._run("label", kind, *target, *args, "--overwrite")
