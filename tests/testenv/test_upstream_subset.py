"""The CI subset of the upstream NetworkPolicy e2e suite on a real 2-node cluster.

Runs on the session's 2-node cluster (tests/testenv/conftest.py: `labelwall testenv up
--nodes 2`, kubelet, containerd, CNI and kube-proxy per node; labelwall installed by its
chart from the locally built image), which saves a bring-up and a teardown (~1 min of CI).
This file sorts last in tests/testenv on purpose: the other real-node tests see a fresh
cluster, as they did when the subset had a cluster of its own, and the specs, which make
their own namespaces, run on a cluster that has been through helm upgrades, agent deletes
and an operator kill -9. tools/e2e/upstream.py --subset --testenv-json runs the 10 specs of
tools/e2e/subset.txt with ginkgo on 2 processes (every probe through the target's Service;
ingress and egress, named ports, ipBlock with except, namespace and pod relabels, UDP).
The test passes when ginkgo passed every one of them. About 4 minutes.
`make e2e-upstream E2E_ARGS=--subset` runs the same on a cluster of its own.

    make tools node-tools images
    sudo .venv/bin/pytest tests/testenv/test_upstream_subset.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from labelwall.testenv.cluster import CONTRACT

from .nodes_helpers import Env

REPO = Path(__file__).resolve().parents[2]
UPSTREAM = REPO / "tools" / "e2e" / "upstream.py"
SUBSET_COUNT = 10
#: The 10 specs (15-52 s each on 2 procs), with room to spare.
TIMEOUT_S = 25 * 60

pytestmark = [
    pytest.mark.root,
    pytest.mark.apiserver,
    pytest.mark.bpf,
    pytest.mark.netns,
    pytest.mark.slow,
]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A work dir with a short path: the kubelet binds unix sockets under it (pod-resources,
    plugins), and sun_path holds 108 bytes; pytest's tmp_path named after this test is too
    long ("bind: invalid argument", seen in CI)."""
    path = Path(tempfile.mkdtemp(prefix="lwe2e-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_upstream_netpol_subset_passes_on_two_real_nodes(cluster: Env, short_dir: Path) -> None:
    tmp_path = short_dir
    env = dict(os.environ)
    env.setdefault("LABELWALL", str(Path(sys.executable).with_name("labelwall")))
    proc = subprocess.run(
        [sys.executable, str(UPSTREAM), "--subset", "--workdir", str(tmp_path),
         "--testenv-json", str(cluster.directory / CONTRACT)],
        capture_output=True, text=True, env=env, timeout=TIMEOUT_S, check=False,
    )  # fmt: skip
    output = proc.stdout[-6000:] + proc.stderr[-4000:]
    summary_file = tmp_path / "report" / "summary.json"
    assert summary_file.exists(), f"no summary (exit {proc.returncode}):\n{output}"
    summary = json.loads(summary_file.read_text())
    assert summary["labelwall"] is True, summary
    assert summary["nodes"] == 2, summary
    assert summary["failed_specs"] == [], output
    assert (summary["selected"], summary["passed"]) == (SUBSET_COUNT, SUBSET_COUNT), output
    assert proc.returncode == 0, output
    # The shared cluster is left up for the session's teardown (which checks nothing is left).
    assert (cluster.directory / CONTRACT).exists(), "upstream.py took the shared cluster down"
