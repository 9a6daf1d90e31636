"""Set up the inside of the holders: addresses, routes, the underlay links, private mounts.

The control plane's holder is the hub of a star underlay: one veth pair per node, created
from inside the control-plane namespace with its peer moved straight into the node's
namespace (``peer ... netns PID``), so no link ever exists in the host's namespace.

    control plane ns: lo 10.250.0.1/32; lwn<i> -> node i (10.250.0.1<i>), 10.244.<i>.0/24 via it
    node i ns:        lo 10.250.0.1<i>/32 (the node IP); eth0 -> 10.250.0.1, and via it the
                      other nodes, the other pod CIDRs and the Service range

No default route anywhere; forwarding is switched on in these namespaces only (per-netns
sysctls). Inside each node's private mount namespace: its own bpffs at /sys/fs/bpf (made
shared there, for the agent's mounts), tmpfs on /run, /var/lib and /var/log (paths the
node's programs write no matter their flags: containerd's shim sockets and runc state
under /run/containerd, libcni's cache in /var/lib/cni, the kubelet's device-plugin socket
in /var/lib/kubelet, /var/log/containers), and plain files bound over the /proc/sys
entries the kubelet would otherwise change for the whole machine.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from labelwall.testenv.holder import sh_in
from labelwall.testenv.nodeconfig import (
    CLUSTER_CIDR,
    CONTROL_PLANE_IP,
    SERVICE_RANGE,
    UNDERLAY_CIDR,
    NodeLayout,
)

#: /proc/sys entries the kubelet writes (protectKernelDefaults: false): kept per node.
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
#: Host directories each node gets a private tmpfs on (see the module docstring).
PRIVATE_TMPFS = ("/run", "/var/lib", "/var/log")
#: What node programs would create on the host without those (tests check they do not).
HOST_PATHS_NOT_TOUCHED = (
    "/run/containerd",
    "/var/lib/cni",
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/etc/cni",
    "/opt/cni",
    "/opt/containerd",
)


def control_plane_net(holder: int) -> None:
    sh_in(
        holder,
        f"""
ip link set lo up
ip addr add {CONTROL_PLANE_IP}/32 dev lo
echo 1 > /proc/sys/net/ipv4/ip_forward
""",
    )


def node_net(holder: int, node: NodeLayout) -> None:
    sh_in(
        holder,
        f"""
ip link set lo up
ip addr add {node.ip}/32 dev lo
echo 1 > /proc/sys/net/ipv4/ip_forward
""",
    )


def underlay_link(cp_holder: int, node_holder: int, node: NodeLayout) -> None:
    """The veth pair control plane <-> node, with the routes on both sides."""
    cp_side = f"lwn{node.index}"
    sh_in(
        cp_holder,
        f"""
ip link add {cp_side} type veth peer name eth0 netns {node_holder}
ip link set {cp_side} up
ip route add {node.ip}/32 dev {cp_side}
ip route add {node.pod_cidr} via {node.ip} dev {cp_side}
""",
    )
    sh_in(
        node_holder,
        f"""
ip link set eth0 up
ip route add {CONTROL_PLANE_IP}/32 dev eth0
ip route add {UNDERLAY_CIDR} via {CONTROL_PLANE_IP} dev eth0
ip route add {CLUSTER_CIDR} via {CONTROL_PLANE_IP} dev eth0
ip route add {SERVICE_RANGE} via {CONTROL_PLANE_IP} dev eth0
ip route add unreachable {node.pod_cidr}
""",
    )


def node_mounts(holder: int, node: NodeLayout) -> None:
    """The node's private mounts (see the module docstring); host mounts stay unchanged."""
    procsys = node.directory / "procsys"
    procsys.mkdir(parents=True, exist_ok=True)
    binds = []
    for entry in KUBELET_SYSCTLS:
        src = Path("/proc/sys") / entry
        if not src.exists():
            continue
        copy = procsys / entry.replace("/", ".")
        copy.write_text(src.read_text())
        binds.append(f"mount --bind {shlex.quote(str(copy))} {src}")
    script = "\n".join(
        [
            # Whatever is mounted there is the caller's (containerd would look at the
            # lowest of stacked mounts); only this namespace loses them.
            "while mountpoint -q /sys/fs/bpf; do umount -l /sys/fs/bpf; done",
            "mount -t bpf bpf /sys/fs/bpf",
            "mount --make-shared /sys/fs/bpf",
            *(f"mount -t tmpfs -o mode=0755 tmpfs {d}" for d in PRIVATE_TMPFS),
            "mkdir -p /run/containerd",
            *binds,
        ]
    )
    sh_in(holder, script)
