"""`labelwall agent --cleanup` detaches the classifier from every link and removes every pin
(the netfilter links of egress through Services included).

Runs in a private mount namespace with its own bpffs, and in its own node netns, so it can
neither see nor remove anybody else's classifier or pins.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.netns]

PREFIX = "lwu-"
SCRIPT = textwrap.dedent(
    """
    import json, os, subprocess, sys
    from labelwall.datapath import netfilter, tc
    from labelwall.datapath.facade import Datapath
    from labelwall.lab import topology as netns
    from labelwall.lab.node import LabNode

    node = netns.setup_node(LabNode("lab", "lwu-node"))
    pods = [netns.create_pod(f"lwu-p{i}", f"10.244.77.{10 + i}", node=node.node)
            for i in range(2)]
    dp = Datapath.open()
    with netns.in_netns("lwu-node"):
        for p in pods:
            dp.attach(p.host_ifname)
        before = [dp.is_attached(p.host_ifname) for p in pods]
        services = dp.enable_services(netfilter.DEFAULT_SERVICE_CIDRS).active
    dp.close()
    pins_before = sorted(p for p in os.listdir("/sys/fs/bpf") if p.startswith("lw_"))
    out = subprocess.run(
        [sys.executable, "-m", "labelwall.cli.main", "agent", "--cleanup", "--netns", "lwu-node"],
        capture_output=True, text=True, timeout=60,
    )
    with netns.in_netns("lwu-node"):
        after = [tc.attached_names(p.host_ifname, tc.PARENT_INGRESS)
                 + tc.attached_names(p.host_ifname, tc.PARENT_EGRESS) for p in pods]
    print(json.dumps({
        "before": before, "services": services, "pins_before": pins_before, "code": out.returncode,
        "stdout": out.stdout, "stderr": out.stderr, "after": after,
        "pins_after": sorted(p for p in os.listdir("/sys/fs/bpf") if p.startswith("lw_")),
        "hosts": [p.host_ifname for p in pods],
    }))
    """
)


def test_cleanup_detaches_every_classifier_and_removes_every_pin(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root")
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is missing")
    script = tmp_path / "uninstall.py"
    script.write_text(SCRIPT)
    shell = f"mount --make-rprivate / && mount -t bpf bpf /sys/fs/bpf && {sys.executable} {script}"
    try:
        r = subprocess.run(
            ["unshare", "-m", "sh", "-c", shell], capture_output=True, text=True, timeout=180
        )
        assert r.returncode == 0, r.stdout + r.stderr
        result = json.loads(r.stdout.strip().splitlines()[-1])
        assert result["before"] == [True, True]
        assert "lw_policy_v1" in " ".join(result["pins_before"])
        # the Service-egress netfilter links (pinned in the node netns) go too
        assert result["services"] is True
        assert {"lw_nf_pre4_v1", "lw_nf_pre6_v1", "lw_svcnet_v1"} <= set(result["pins_before"])
        assert result["code"] == 0, result["stderr"]
        assert "detached from 2 links" in result["stdout"]
        assert all(names == [] for names in result["after"])
        assert result["pins_after"] == []
    finally:
        from labelwall.lab import topology

        topology.cleanup(PREFIX)
