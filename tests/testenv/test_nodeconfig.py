"""The node configuration files say what REAL-NODE.md found necessary (pure, no root)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import yaml

from labelwall.cli.testenv import build_parser
from labelwall.testenv import cgroups
from labelwall.testenv.nodeconfig import (
    NodeLayout,
    cni_conflist,
    containerd_config,
    kube_proxy_config,
    kubelet_config,
    node_ip,
    pod_cidr,
)

NODE = NodeLayout(
    index=2,
    name="node-2",
    directory=Path("/env/nodes/node-2"),
    bin_dir=Path("/bins"),
    cgroup_root="/labelwall-testenv-abcd/node-2",
    ca_cert=Path("/env/cp/pki/ca.crt"),
)


def test_addresses_are_private_to_the_test_and_distinct_per_node() -> None:
    assert [node_ip(i) for i in (1, 2)] == ["10.250.0.11", "10.250.0.12"]
    assert [pod_cidr(i) for i in (1, 2)] == ["10.244.1.0/24", "10.244.2.0/24"]


def test_pods_get_no_default_route_and_their_node_s_slash_24() -> None:
    conf = json.loads(cni_conflist(NODE))
    ptp = conf["plugins"][0]
    assert ptp["type"] == "ptp"
    assert ptp["ipMasq"] is False
    ipam = ptp["ipam"]
    assert ipam["ranges"] == [[{"subnet": "10.244.2.0/24"}]]
    dsts = [r["dst"] for r in ipam["routes"]]
    assert "0.0.0.0/0" not in dsts
    assert dsts == ["10.244.0.0/16", "10.96.0.0/12"]
    assert ipam["dataDir"].startswith("/env/nodes/node-2/")


def test_containerd_keeps_everything_in_the_node_directory() -> None:
    conf = tomllib.loads(containerd_config(NODE))
    assert conf["version"] == 3
    assert conf["root"].startswith("/env/nodes/node-2/")
    assert conf["grpc"]["address"] == str(NODE.containerd_socket)
    rt = conf["plugins"]["io.containerd.cri.v1.runtime"]
    assert rt["restrict_oom_score_adj"] is True
    assert rt["netns_mounts_under_state_dir"] is True
    assert rt["cni"]["conf_dir"] == str(NODE.cni_conf_dir)
    images = conf["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == "registry.k8s.io/pause:3.10"
    assert conf["plugins"]["io.containerd.nri.v1.nri"]["disable"] is True


def test_kubelet_has_no_anonymous_api_and_its_own_cgroup_root() -> None:
    conf = yaml.safe_load(kubelet_config(NODE))
    assert conf["authentication"]["anonymous"]["enabled"] is False
    assert conf["authentication"]["x509"]["clientCAFile"] == str(NODE.ca_cert)
    assert conf["authorization"]["mode"] == "Webhook"
    assert conf["readOnlyPort"] == 0
    assert conf["cgroupRoot"] == "/labelwall-testenv-abcd/node-2"
    assert conf["address"] == "10.250.0.12"


def test_kube_proxy_leaves_the_global_conntrack_settings_alone() -> None:
    conf = yaml.safe_load(kube_proxy_config(NODE, Path("/kp.kubeconfig")))
    assert conf["mode"] == "nftables"
    assert conf["conntrack"]["maxPerCore"] == 0
    assert conf["nodePortAddresses"] == ["10.250.0.12/32"]


def test_cgroup_hierarchies_are_read_from_mountinfo() -> None:
    mountinfo = "\n".join(
        [
            "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755",
            "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu",
            "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw",
            "50 23 0:40 / /mnt/elsewhere rw - cgroup cgroup rw,pids",
        ]
    )
    assert cgroups.hierarchies(mountinfo) == [
        Path("/sys/fs/cgroup/cpu"),
        Path("/sys/fs/cgroup/unified"),
    ]


def test_up_takes_nodes_no_labelwall_and_the_proxy_mode() -> None:
    args = build_parser().parse_args(
        ["up", "--dir", "/d", "--nodes", "2", "--no-labelwall", "--proxy-mode", "iptables"]
    )
    assert (args.nodes, args.no_labelwall, args.proxy_mode) == (2, True, "iptables")
    assert build_parser().parse_args(["up", "--dir", "/d"]).nodes is None
