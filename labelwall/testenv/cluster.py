"""A real cluster on one machine: control plane and N kubelet nodes in private namespaces.

Layout (``labelwall testenv up --dir DIR --nodes N``):

* A cgroup sub-tree ``/labelwall-testenv-<id>`` in every hierarchy (labelwall.testenv.
  cgroups). Every process started here joins it first, so `down` finds all of them,
  shims and containers included, even after ``kill -9`` of `up`.
* A control-plane holder (own netns + mount ns, labelwall.testenv.holder) running etcd,
  kube-apiserver (10.250.0.1:6443), kube-controller-manager and kube-scheduler.
* **How the host reaches the API server:** the host's network is never changed, and a
  namespace cannot reach the host's loopback nor the host the namespace's. So the API
  server lives in the control-plane namespace, where every node reaches it over its
  underlay link, and a relay process (labelwall.testenv.relay) listens on the host's
  127.0.0.1:PORT and connects from inside that namespace. DIR/kubeconfig points at the
  relay; kubectl and helm on the host use it as they would any cluster.
* Per node ``node-i``: a holder with its own netns (node IP 10.250.0.(10+i)/32 on lo, a
  veth to the control plane) and private mounts (bpffs, /var/log tmpfs, /proc/sys
  files; labelwall.testenv.nodesetup), containerd with its own root/state/socket and the
  locally built images imported by ctr, the kubelet (client cert system:node:node-i),
  kube-proxy (nftables, or iptables; cert system:kube-proxy) and the ptp + host-local CNI
  (10.244.i.0/24).
* Then ``helm install`` of charts/labelwall with the local image (pullPolicy Never).

Every pid, holder and the cgroup path are written to DIR/cluster-state.json the moment
they exist; :func:`down` reads only that file. DIR/testenv.json is written last (the
contract for tests and `make e2e-upstream`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from labelwall.testenv import cgroups
from labelwall.testenv.binaries import Binaries
from labelwall.testenv.certs import Pki, issue_client_cert
from labelwall.testenv.controlplane import controller_manager_argv, scheduler_argv
from labelwall.testenv.env import MARKER, NETNS_APISERVER_PORT, SERVICE_CIDR, Placement, TestEnv
from labelwall.testenv.holder import enter, run_in, start_holder
from labelwall.testenv.kubeconfig import write_cert_kubeconfig
from labelwall.testenv.nodebins import NodeBinaries, find_helm
from labelwall.testenv.nodeconfig import (
    CONTROL_PLANE_IP,
    KUBERNETES_SERVICE_IP,
    NodeLayout,
    cni_conflist,
    containerd_config,
    kube_proxy_config,
    kubelet_argv,
    kubelet_config,
)
from labelwall.testenv.nodesetup import (
    control_plane_net,
    node_mounts,
    node_net,
    underlay_link,
)
from labelwall.testenv.processes import cmdline, is_running, log_tail, spawn, stop_pid

#: The cluster's own state (pids, holders, cgroup); `down` needs nothing else.
CLUSTER_STATE = "cluster-state.json"
#: The contract file for tests and the e2e runner.
CONTRACT = "testenv.json"
CHART = Path(__file__).resolve().parents[2] / "charts" / "labelwall"
LABELWALL_NAMESPACE = "labelwall-system"
RELEASE = "labelwall"

Progress = Callable[[str], None]


class ClusterError(Exception):
    """The cluster could not be brought up or torn down; the message says where."""


@dataclass
class State:
    """What `down` needs, saved after every change."""

    directory: Path
    cgroup: str
    holders: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)

    def save(self) -> None:
        data = {
            "cgroup": self.cgroup,
            "holders": self.holders,
            "pids": self.pids,
        }
        tmp = self.directory / f".{CLUSTER_STATE}.tmp"
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.directory / CLUSTER_STATE)

    @classmethod
    def load(cls, directory: Path) -> State:
        data = json.loads((directory / CLUSTER_STATE).read_text())
        return cls(
            directory=directory,
            cgroup=str(data["cgroup"]),
            holders={k: int(v) for k, v in data["holders"].items()},
            pids={k: int(v) for k, v in data["pids"].items()},
        )


def is_cluster(directory: Path) -> bool:
    return (directory / CLUSTER_STATE).is_file()


@dataclass(frozen=True)
class Options:
    nodes: int
    labelwall: bool = True
    proxy_mode: str = "nftables"
    timeout_s: float = 300.0


class Cluster:
    """Brings the cluster up step by step, recording everything in :class:`State`."""

    def __init__(
        self,
        directory: Path,
        k8s: Binaries,
        node_bins: NodeBinaries,
        options: Options,
        progress: Progress,
    ) -> None:
        self.directory = directory
        self.k8s = k8s
        self.bins = node_bins
        self.options = options
        self.progress = progress
        self.logs = directory / "logs"
        self.state = State(directory, f"/labelwall-testenv-{secrets.token_hex(4)}")
        self.env: TestEnv | None = None
        self.nodes: list[NodeLayout] = []
        self._popens: list[subprocess.Popen[bytes]] = []

    # --- helpers ------------------------------------------------------------------------

    def _cg(self, sub: str) -> list[str]:
        return cgroups.join_prefix(f"{self.state.cgroup}/{sub}")

    def _spawn(self, name: str, argv: list[str], holder: str) -> subprocess.Popen[bytes]:
        proc = spawn(
            [*self._cg("daemons"), *enter(self.state.holders[holder], argv)],
            self.logs / f"{name}.log",
        )
        self._popens.append(proc)
        self.state.pids[name] = proc.pid
        self.state.save()
        return proc

    def _wait(
        self, what: str, probe: Callable[[], bool], log: str | None, timeout_s: float
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, pid in self.state.pids.items():
                if not is_running(pid):
                    tail = log_tail(self.logs / f"{name}.log")
                    raise ClusterError(f"{name} (pid {pid}) exited; log tail:\n{tail}")
            if probe():
                return
            time.sleep(0.5)
        tail = "" if log is None else f"; log tail:\n{log_tail(self.logs / f'{log}.log')}"
        raise ClusterError(f"{what}: not ready after {timeout_s:.0f}s{tail}")

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        assert self.env is not None
        return self.env.kubectl(*args, stdin=stdin, check=check).stdout

    # --- steps --------------------------------------------------------------------------

    def up(self) -> None:
        d = self.directory
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        (d / MARKER).write_text("created by labelwall.testenv.cluster; removed by down\n")
        self.logs.mkdir()
        self.state.save()
        cgroups.create(f"{self.state.cgroup}/daemons")
        self.progress(f"cgroup sub-tree {self.state.cgroup} created in every hierarchy")
        self._holders()
        self._control_plane()
        for node in self.nodes:
            self._start_containerd(node)
        self._import_images()
        for node in self.nodes:
            self._node_daemons(node)
        self._wait_nodes_ready()
        if self.options.labelwall:
            self._install_labelwall()
        self._write_contract()

    def _holders(self) -> None:
        marker = str(self.directory)
        for name in ["cp", *(f"node-{i}" for i in range(1, self.options.nodes + 1))]:
            proc = start_holder(marker, self.logs / f"holder-{name}.log", self._cg("daemons"))
            self._popens.append(proc)
            self.state.holders[name] = proc.pid
            self.state.save()
            # unshare execs the holder only once the namespaces exist.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if os.readlink(f"/proc/{proc.pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                    break
                time.sleep(0.05)
            else:
                raise ClusterError(f"holder {name} (pid {proc.pid}) never entered its netns")
        control_plane_net(self.state.holders["cp"])
        for i in range(1, self.options.nodes + 1):
            name = f"node-{i}"
            node = NodeLayout(
                index=i,
                name=name,
                directory=self.directory / "nodes" / name,
                bin_dir=self.bins.bin_dir,
                cgroup_root=f"{self.state.cgroup}/{name}",
                ca_cert=self.directory / "cp" / "pki" / "ca.crt",
                proxy_mode=self.options.proxy_mode,
            )
            node.directory.mkdir(parents=True)
            cgroups.create(node.cgroup_root)
            holder = self.state.holders[name]
            node_net(holder, node)
            underlay_link(self.state.holders["cp"], holder, node)
            node_mounts(holder, node)
            self.nodes.append(node)
        self.progress(
            f"holders up: control plane {CONTROL_PLANE_IP}, "
            + ", ".join(f"{n.name} {n.ip} pods {n.pod_cidr}" for n in self.nodes)
        )

    def _control_plane(self) -> None:
        cp = self.state.holders["cp"]
        port_file = self.directory / "relay.port"
        relay = spawn(
            [
                *self._cg("daemons"),
                os.environ.get("LABELWALL_PYTHON", _python()),
                "-m",
                "labelwall.testenv.relay",
                str(port_file),
                str(cp),
                CONTROL_PLANE_IP,
                str(NETNS_APISERVER_PORT),
            ],
            self.logs / "relay.log",
        )
        self._popens.append(relay)
        self.state.pids["relay"] = relay.pid
        self.state.save()
        self._wait("relay", port_file.exists, "relay", 20)
        host_port = int(port_file.read_text())
        placement = Placement(
            argv_prefix=(*self._cg("daemons"), *enter(cp, [])),
            advertise_ip=CONTROL_PLANE_IP,
            host_port=host_port,
            extra_sans=(KUBERNETES_SERVICE_IP,),
        )
        self.env = TestEnv.start(self.directory / "cp", self.k8s, self.options.timeout_s, placement)
        assert self.env.apiserver_pid is not None
        assert self.env.etcd_pid is not None
        self.state.pids["kube-apiserver"] = self.env.apiserver_pid
        self.state.pids["etcd"] = self.env.etcd_pid
        self.state.save()
        shutil.copyfile(self.env.kubeconfig, self.directory / "kubeconfig")
        os.chmod(self.directory / "kubeconfig", 0o600)
        self.progress(
            f"kube-apiserver ready at {CONTROL_PLANE_IP}:{NETNS_APISERVER_PORT}, "
            f"host relay {self.env.server}"
        )
        pki = self.env.pki
        inside = write_cert_kubeconfig(
            self.directory / "cp" / "admin-inside.kubeconfig",
            f"https://{CONTROL_PLANE_IP}:{NETNS_APISERVER_PORT}",
            pki.ca_cert,
            pki.admin_cert,
            pki.admin_key,
        )
        bins = self.bins
        self._spawn(
            "kube-controller-manager",
            controller_manager_argv(
                bins.path("kube-controller-manager"), inside, pki, SERVICE_CIDR
            ),
            "cp",
        )
        self._spawn("kube-scheduler", scheduler_argv(bins.path("kube-scheduler"), inside), "cp")
        self.progress("kube-controller-manager and kube-scheduler started")

    def _node_kubeconfig(self, node: NodeLayout, user: str, cn: str, org: str | None) -> Path:
        assert self.env is not None
        pki: Pki = self.env.pki
        crt, key = issue_client_cert(pki, node.directory / f"{user}-client", cn, org)
        return write_cert_kubeconfig(
            node.directory / f"{user}.kubeconfig",
            f"https://{CONTROL_PLANE_IP}:{NETNS_APISERVER_PORT}",
            pki.ca_cert,
            crt,
            key,
        )

    def _start_containerd(self, node: NodeLayout) -> None:
        node.containerd_dir.mkdir(parents=True)
        conf = node.containerd_dir / "config.toml"
        conf.write_text(containerd_config(node))
        node.cni_conf_dir.mkdir(parents=True)
        (node.cni_conf_dir / "10-labelwall-testenv.conflist").write_text(cni_conflist(node))
        path = f"PATH={self.bins.bin_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin')}"
        self._spawn(
            f"containerd-{node.name}",
            ["env", path, str(self.bins.path("containerd")), "--config", str(conf)],
            node.name,
        )

    def _ctr(self, node: NodeLayout, *args: str, timeout_s: float = 120) -> str:
        argv = [
            str(self.bins.path("ctr")),
            "--address",
            str(node.containerd_socket),
            "-n",
            "k8s.io",
            *args,
        ]
        return run_in(self.state.holders[node.name], argv, timeout_s=timeout_s)

    def _containerd_ready(self, node: NodeLayout) -> None:
        def containerd_up() -> bool:
            try:
                self._ctr(node, "version", timeout_s=10)
            except Exception:
                return False
            return True

        self._wait(f"containerd on {node.name}", containerd_up, f"containerd-{node.name}", 60)

    def _import_images(self) -> None:
        """Import every archive into every node's containerd, the nodes in parallel."""
        for node in self.nodes:
            self._containerd_ready(node)
        t0 = time.monotonic()

        def one(node: NodeLayout) -> None:
            for image in self.bins.images:
                self._ctr(node, "images", "import", str(image), timeout_s=600)

        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            list(pool.map(one, self.nodes))
        self.progress(
            f"{len(self.bins.images)} images imported into {len(self.nodes)} node(s) "
            f"in {time.monotonic() - t0:.1f}s"
        )

    def _node_daemons(self, node: NodeLayout) -> None:
        k = node.kubelet_dir
        k.mkdir(parents=True)
        (k / "resolv.conf").write_text("nameserver 127.0.0.1\noptions ndots:1\n")
        (k / "config.yaml").write_text(kubelet_config(node))
        shutil.copyfile(
            self._node_kubeconfig(node, "kubelet", f"system:node:{node.name}", "system:nodes"),
            k / "kubeconfig",
        )
        (node.directory / "pod-logs").mkdir()
        self._spawn(
            f"kubelet-{node.name}", kubelet_argv(node, self.bins.path("kubelet")), node.name
        )
        kp_kc = self._node_kubeconfig(node, "kube-proxy", "system:kube-proxy", None)
        kp_conf = node.directory / "kube-proxy.yaml"
        kp_conf.write_text(kube_proxy_config(node, kp_kc))
        self._spawn(
            f"kube-proxy-{node.name}",
            [str(self.bins.path("kube-proxy")), f"--config={kp_conf}", "--v=1"],
            node.name,
        )
        self.progress(f"{node.name}: kubelet and kube-proxy ({node.proxy_mode}) started")

    def _wait_nodes_ready(self) -> None:
        patched: set[str] = set()

        def ready() -> bool:
            out = self.kubectl("get", "nodes", "-o", "json", check=False)
            try:
                items = json.loads(out)["items"]
            except (ValueError, KeyError):
                return False
            by_name = {i["metadata"]["name"]: i for i in items}
            for node in self.nodes:
                item = by_name.get(node.name)
                if item is None:
                    continue
                if node.name not in patched and not item["spec"].get("podCIDR"):
                    spec = {"spec": {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr]}}
                    self.kubectl("patch", "node", node.name, "--type=merge", "-p", json.dumps(spec))
                    patched.add(node.name)
            ok = [
                n.name
                for n in self.nodes
                if n.name in by_name and _condition(by_name[n.name], "Ready")
            ]
            return len(ok) == len(self.nodes)

        t0 = time.monotonic()
        self._wait("nodes Ready", ready, None, self.options.timeout_s)
        self.progress(f"{len(self.nodes)} node(s) Ready after {time.monotonic() - t0:.1f}s")

    def _install_labelwall(self) -> None:
        helm = find_helm()
        values = {
            "image": {
                "repository": "docker.io/library/labelwall",
                "tag": "dev",
                "pullPolicy": "Never",
            },
            "agent": {"bpffs": "/sys/fs/bpf"},
        }
        vf = self.directory / "labelwall-values.yaml"
        vf.write_text(yaml.safe_dump(values, sort_keys=False))
        helm_home = self.directory / "helm"
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(helm_home / "cache"),
            "HELM_CONFIG_HOME": str(helm_home / "config"),
            "HELM_DATA_HOME": str(helm_home / "data"),
        }
        argv = [
            str(helm),
            f"--kubeconfig={self.directory / 'kubeconfig'}",
            "install",
            RELEASE,
            str(CHART),
            "--namespace",
            LABELWALL_NAMESPACE,
            "--create-namespace",
            "-f",
            str(vf),
        ]
        res = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=300, check=False
        )
        if res.returncode != 0:
            raise ClusterError(f"helm install exited {res.returncode}: {res.stderr.strip()}")
        self.progress(f"helm install {RELEASE} {CHART} done; waiting for the pods")
        expected = len(self.nodes) + 1
        t0 = time.monotonic()

        def pods_ready() -> bool:
            out = self.kubectl("get", "pods", "-n", LABELWALL_NAMESPACE, "-o", "json", check=False)
            try:
                items = json.loads(out)["items"]
            except (ValueError, KeyError):
                return False
            ready = [p for p in items if _condition(p, "Ready")]
            return len(ready) >= expected and len(ready) == len(items)

        self._wait("labelwall pods Ready", pods_ready, None, self.options.timeout_s)
        self.progress(
            f"labelwall: operator and {len(self.nodes)} agent pod(s) Ready after "
            f"{time.monotonic() - t0:.1f}s"
        )

    def _write_contract(self) -> None:
        data: dict[str, Any] = {
            "kubeconfig": str(self.directory / "kubeconfig"),
            "nodes": [
                {"name": n.name, "internalIP": n.ip, "podCIDR": n.pod_cidr} for n in self.nodes
            ],
            "e2e_test": str(self.bins.e2e_test),
            "ginkgo": str(self.bins.ginkgo),
            "labelwall": self.options.labelwall,
        }
        tmp = self.directory / f".{CONTRACT}.tmp"
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.directory / CONTRACT)


def _python() -> str:
    import sys

    return sys.executable


def _condition(obj: dict[str, Any], kind: str) -> bool:
    for cond in obj.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == kind:
            return bool(cond.get("status") == "True")
    return False


def up(
    directory: Path,
    k8s: Binaries,
    node_bins: NodeBinaries,
    options: Options,
    progress: Progress = print,
) -> Cluster:
    """Bring the cluster up; on any failure tear down everything started, then raise."""
    directory = directory.resolve()
    if directory.exists() and any(directory.iterdir()):
        raise ClusterError(f"{directory} is not empty (use `testenv down --dir {directory}`)")
    if options.nodes < 1:
        raise ClusterError(f"--nodes must be at least 1, got {options.nodes}")
    if options.proxy_mode not in ("nftables", "iptables"):
        raise ClusterError(f"--proxy-mode must be nftables or iptables, got {options.proxy_mode}")
    cluster = Cluster(directory, k8s, node_bins, options, progress)
    try:
        cluster.up()
    except BaseException:
        progress("bring-up failed; tearing down")
        keep = directory.parent / f"{directory.name}.failed-logs"
        if (directory / "logs").is_dir():
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(directory / "logs", keep)
            progress(f"logs kept in {keep}")
        down(directory, progress)
        raise
    return cluster


def down(directory: Path, progress: Progress = print) -> list[str]:
    """Stop everything DIR/cluster-state.json names, sweep its cgroup tree, remove DIR.

    Works after a crash or ``kill -9`` of `up`: recorded pids are stopped only if their
    command line still names DIR; whatever is left in the cgroup sub-tree (shims,
    containers, holders) is killed by pid from its cgroup.procs. Returns what it did.
    """
    directory = directory.resolve()
    if not is_cluster(directory):
        progress(f"no cluster state in {directory}; nothing to stop")
        return []
    state = State.load(directory)
    marker = str(directory)
    done: list[str] = []
    # Everything is throwaway: SIGTERM every recorded daemon at once (only if its command
    # line still names DIR: a recorded pid may belong to someone else by now), give them
    # a few seconds together, then the cgroup sweep kills whatever is left.
    termed = []
    for name, pid in state.pids.items():
        if is_running(pid) and any(marker in a for a in cmdline(pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                termed.append((name, pid))
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(is_running(p) for _n, p in termed):
        time.sleep(0.1)
    done.extend(f"stopped {n} ({p})" for n, p in termed)
    killed = cgroups.kill_tree(state.cgroup)
    if killed:
        done.append(f"killed {len(killed)} process(es) left in {state.cgroup}")
    for name, pid in state.holders.items():
        if is_running(pid):
            stop_pid(pid, marker, grace_s=2.0)
            done.append(f"stopped holder {name} ({pid})")
    left = cgroups.remove(state.cgroup)
    if left:
        raise ClusterError(f"cgroups still in use: {', '.join(map(str, left))}")
    done.append(f"removed cgroup sub-tree {state.cgroup}")
    shutil.rmtree(directory, ignore_errors=True)
    done.append(f"removed {directory}")
    for line in done:
        progress(line)
    return done
