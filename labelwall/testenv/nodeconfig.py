"""Configuration files of one node: containerd, CNI conflist, kubelet and kube-proxy.

Pure: each function returns file contents from a :class:`NodeLayout`; the settings are the
ones ../shared/REAL-NODE.md records as working on this kind of machine (each was an
error first), with every path inside the environment's directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: Pod addresses of the whole cluster; node i gets 10.244.i.0/24.
CLUSTER_CIDR = "10.244.0.0/16"
#: The Service range pods route to (the API server's --service-cluster-ip-range is a
#: /16 inside it; ClusterIPs are DNATed by kube-proxy in the node namespace).
SERVICE_RANGE = "10.96.0.0/12"
#: The underlay: the control plane's address and the nodes' addresses.
UNDERLAY_CIDR = "10.250.0.0/24"
CONTROL_PLANE_IP = "10.250.0.1"
#: The `kubernetes` Service's ClusterIP (first address of SERVICE_CIDR).
KUBERNETES_SERVICE_IP = "10.96.0.1"
#: containerd's sockets, in the node's private /run (labelwall.testenv.nodesetup).
RUN_DIR = Path("/run/containerd")


def node_ip(index: int) -> str:
    """Node ``index`` (1-based) has 10.250.0.(10+index) on its namespace's lo."""
    return f"10.250.0.{10 + index}"


def pod_cidr(index: int) -> str:
    return f"10.244.{index}.0/24"


@dataclass(frozen=True)
class NodeLayout:
    """Where one node's files and sockets are, and its names and addresses."""

    index: int
    name: str
    directory: Path
    bin_dir: Path
    cgroup_root: str
    ca_cert: Path
    proxy_mode: str = "nftables"

    @property
    def ip(self) -> str:
        return node_ip(self.index)

    @property
    def pod_cidr(self) -> str:
        return pod_cidr(self.index)

    @property
    def containerd_dir(self) -> Path:
        return self.directory / "containerd"

    @property
    def containerd_socket(self) -> Path:
        """Inside the node's private /run tmpfs (a path under DIR can exceed the 108-byte
        limit of a unix socket path); only processes in the node's namespace use it."""
        return RUN_DIR / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.directory / "cni" / "net.d"

    @property
    def kubelet_dir(self) -> Path:
        return self.directory / "kubelet"


def containerd_config(n: NodeLayout) -> str:
    """containerd 2.x config (version 3) with its own root, state, sockets and CNI dirs."""
    d = n.containerd_dir
    cri_rt = "plugins.'io.containerd.cri.v1.runtime'"
    runc = f"{cri_rt}.containerd.runtimes.runc"
    lines = [
        "version = 3",
        f'root = "{d / "root"}"',
        f'state = "{d / "state"}"',
        "",
        "[grpc]",
        f'  address = "{n.containerd_socket}"',
        "[ttrpc]",
        f'  address = "{RUN_DIR / "containerd.sock.ttrpc"}"',
        "[debug]",
        f'  address = "{RUN_DIR / "debug.sock"}"',
        '  level = "info"',
        "",
        "[plugins.'io.containerd.internal.v1.opt']",
        f'  path = "{d / "opt"}"',
        # NRI would listen on /var/run/nri/nri.sock, outside the environment.
        "[plugins.'io.containerd.nri.v1.nri']",
        "  disable = true",
        "[plugins.'io.containerd.grpc.v1.cri']",
        '  stream_server_address = "127.0.0.1"',
        "[plugins.'io.containerd.cri.v1.images']",
        '  snapshotter = "overlayfs"',
        "[plugins.'io.containerd.cri.v1.images'.pinned_images]",
        '  sandbox = "registry.k8s.io/pause:3.10"',
        f"[{cri_rt}]",
        "  enable_selinux = false",
        "  disable_apparmor = true",
        # No CAP_SYS_RESOURCE in this VM's bounding set: never raise oom_score_adj.
        "  restrict_oom_score_adj = true",
        # Pod netns bind mounts under the state dir, not the host's /run/netns.
        "  netns_mounts_under_state_dir = true",
        f"[{cri_rt}.cni]",
        f'  bin_dirs = ["{n.bin_dir}"]',
        f'  conf_dir = "{n.cni_conf_dir}"',
        "  max_conf_num = 1",
        f"[{cri_rt}.containerd]",
        '  default_runtime_name = "runc"',
        f"[{runc}]",
        '  runtime_type = "io.containerd.runc.v2"',
        f"[{runc}.options]",
        "  SystemdCgroup = false",
        f'  BinaryName = "{n.bin_dir / "runc"}"',
        "",
    ]
    return "\n".join(lines)


def cni_conflist(n: NodeLayout) -> str:
    """ptp + host-local: a /24 per node, /32 host routes, pods route only to pods/Services."""
    conf: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": "labelwall-testenv",
        "plugins": [
            {
                "type": "ptp",
                "mtu": 1500,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": n.pod_cidr}]],
                    # No default route in any pod: other pods and Services only.
                    "routes": [{"dst": CLUSTER_CIDR}, {"dst": SERVICE_RANGE}],
                    "dataDir": str(n.directory / "cni" / "ipam"),
                },
            }
        ],
    }
    return json.dumps(conf, indent=2) + "\n"


def kubelet_config(n: NodeLayout) -> str:
    k = n.kubelet_dir
    conf: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": n.cgroup_root,
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{n.containerd_socket}",
        "imageServiceEndpoint": f"unix://{n.containerd_socket}",
        "address": n.ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "resolvConf": str(k / "resolv.conf"),
        "makeIPTablesUtilChains": False,
        "serializeImagePulls": False,
        "protectKernelDefaults": False,
        "podLogsDir": str(n.directory / "pod-logs"),
        "maxPods": 60,
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "clusterDomain": "cluster.local",
        # No anonymous kubelet API: the API server presents its kubelet client
        # certificate (x509) and every request is authorised by a SubjectAccessReview.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(n.ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
    }
    return yaml.safe_dump(conf, sort_keys=False)


def kubelet_argv(n: NodeLayout, binary: Path) -> list[str]:
    k = n.kubelet_dir
    return [
        str(binary),
        f"--config={k / 'config.yaml'}",
        f"--kubeconfig={k / 'kubeconfig'}",
        f"--root-dir={k / 'root'}",
        f"--cert-dir={k / 'pki'}",
        f"--hostname-override={n.name}",
        f"--node-ip={n.ip}",
        "--v=1",
    ]


def kube_proxy_config(n: NodeLayout, kubeconfig: Path) -> str:
    conf: dict[str, Any] = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": n.proxy_mode,
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "clusterCIDR": CLUSTER_CIDR,
        "hostnameOverride": n.name,
        "bindAddress": n.ip,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # Zero: leave the (global) conntrack limit and timeouts alone.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "nodePortAddresses": [f"{n.ip}/32"],
    }
    return yaml.safe_dump(conf, sort_keys=False)
