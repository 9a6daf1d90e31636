"""One pod flooding new flows cannot break another pod's connection (issue 11 item 5).

Real packets between lab namespaces, conntrack sized small (4,096 + 4,096 entries, a
promotion budget of 50/s, burst 100): 20,000 unanswered and 20,000 answered UDP flows from
one pod, then the idle TCP connection of an ingress-isolated pod gets its delayed answer.
On the code before the two tables (one LRU of 4,096) the answer never arrives: the flood
evicted the connection's entry (measured once against main's object, README).
The lab runs in a child process (tests/lab/ct_flood_child.py) in a private mount
namespace with its own bpffs: its map sizes differ from the session lab's pins.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.netns]

HERE = Path(__file__).resolve().parent
CONFIG: dict[str, Any] = {
    "mapSizes": {"conntrack": 4096, "conntrackNew": 4096, "endpoints": 64, "subjects": 1024,
                 "policy": 4096, "ipcache": 4096, "cidrs": 1024, "ports": 4096},
    "conntrack": {"promotePerSecond": 50, "promoteBurst": 100},
}  # fmt: skip


def run_child(config: dict[str, Any], timeout_s: float = 240) -> dict[str, Any]:
    """The flood scenario in its own lab; its JSON result."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("unshare (util-linux) is missing")
    root = f"/tmp/labelwall-ct-flood-{os.getpid()}"
    script = (
        "mount -t bpf bpf /sys/fs/bpf && exec "
        f'"{sys.executable}" "{HERE / "ct_flood_child.py"}" "$0" lwt-ct "$1"'
    )
    env = dict(os.environ, PYTHONPATH=str(HERE.parents[1]))
    proc = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", "-c", script, root,
         json.dumps(config)],
        capture_output=True, text=True, timeout=timeout_s, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_a_flood_of_new_flows_from_one_pod_leaves_an_idle_connection_working() -> None:
    r = run_child(CONFIG)
    assert r["flood_flows"] == 40_000, r  # all sent within the time bound
    assert r["echoed"] > 4096, r  # answered flows: more than either table holds
    pressure = r["pressure"]
    assert pressure["lw_ct_new_v1"] > 0.9, r  # the flood filled the unreplied table
    # promotions stayed within the budget: two veths (flooder, sink) x (burst + rate x s)
    seconds = r["flood_seconds"] + 2
    assert pressure["lw_ct_v3"] * 4096 <= 2 * (100 + 50 * seconds) + 16, r
    assert r["ct_unpromoted_packets"] > 0, r  # the budget refused promotions, flows passed
    assert r["answer"] == "answer", r  # the idle connection's delayed answer arrived
