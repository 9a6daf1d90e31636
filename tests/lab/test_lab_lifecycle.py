"""`lab up` then a crash (kill -9 of supervisor and agent), then `lab down` from a fresh process.

Runs in a private mount namespace with its own bpffs, so its pins never meet the session
lab's (one lab per bpffs: both agents would own the same pinned maps).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.netns]

SCRIPT = textwrap.dedent(
    """
    import json, os, signal, subprocess, sys, time
    from labelwall.lab import topology
    from labelwall.lab.control import Lab, alive
    from labelwall.lab.layout import LabPaths, read_record
    from labelwall.manifests import SourceDoc

    root, prefix, cluster = sys.argv[1], sys.argv[2], sys.argv[3]
    paths = LabPaths.from_env(root, prefix)
    lab = Lab(paths)
    from labelwall.manifest_files import read_sources
    answer = lab.up(read_sources([cluster]), metrics_port=0)
    assert answer.get("enforced"), answer
    record = read_record(paths)
    helpers = [p["helper_pid"] for p in lab.status()["pods"].values()]
    made = topology.list_netns(prefix)
    assert len(made) == 6, made  # five pods and the node
    for name in ("supervisor", "agent"):
        os.kill(record[name]["pid"], signal.SIGKILL)
    time.sleep(0.5)
    env = dict(os.environ, LABELWALL_LAB_DIR=root, LABELWALL_LAB_PREFIX=prefix)
    out = subprocess.run([sys.executable, "-m", "labelwall.cli.main", "lab", "down"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    print(json.dumps({
        "down": out.stdout,
        "left_netns": topology.list_netns(prefix),
        "left_links": topology.list_links(prefix),
        "alive": [n for n in ("supervisor", "agent") if alive(record[n])],
        "helpers_alive": [p for p in helpers if os.path.exists(f"/proc/{p}")
                          and "labelwall.lab.prober" in open(f"/proc/{p}/cmdline").read()],
        "dir_left": os.path.exists(root),
        "pins_left": [p for p in os.listdir("/sys/fs/bpf") if p.startswith("lw_")],
    }))
    """
)


def test_lab_down_from_a_fresh_process_after_a_crash_removes_everything(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root")
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is missing")
    script = tmp_path / "crash.py"
    script.write_text(SCRIPT)
    cluster = Path(__file__).resolve().parents[2] / "examples" / "cluster.yaml"
    root = tmp_path / "lab"
    shell = (
        "mount --make-rprivate / && mount -t bpf bpf /sys/fs/bpf && "
        f"{sys.executable} {script} {root} lwc- {cluster}"
    )
    try:
        r = subprocess.run(
            ["unshare", "-m", "sh", "-c", shell], capture_output=True, text=True, timeout=180
        )
        assert r.returncode == 0, r.stdout + r.stderr
        import json

        result = json.loads(r.stdout.strip().splitlines()[-1])
        assert "lab down" in result["down"]
        assert result["left_netns"] == []
        assert result["left_links"] == []
        assert result["alive"] == []
        assert result["helpers_alive"] == []
        assert result["dir_left"] is False
        assert result["pins_left"] == []
    finally:
        # The private mount namespace is gone; remove any name files it left on /run/netns.
        from labelwall.lab import topology

        topology.cleanup("lwc-")
