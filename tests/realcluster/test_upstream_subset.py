"""The CI subset of the upstream NetworkPolicy e2e suite on a real 2-node cluster.

tools/e2e/upstream.py --subset brings up `labelwall testenv up --nodes 2` (kubelet,
containerd, CNI and kube-proxy per node; labelwall installed by its chart from the locally
built image), runs the 10 specs of tools/e2e/subset.txt with ginkgo on 2 processes (every
probe through the target's Service; ingress and egress, named ports, ipBlock with except,
namespace and pod relabels, UDP) and tears the cluster down. The test passes when ginkgo
passed every one of them. About 5-10 minutes.

    make tools && sudo .venv/bin/pytest tests/realcluster/test_upstream_subset.py
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

REPO = Path(__file__).resolve().parents[2]
UPSTREAM = REPO / "tools" / "e2e" / "upstream.py"
SUBSET_COUNT = 10
#: Bring-up, the 10 specs (15-52 s each on 2 procs) and teardown, with room to spare.
TIMEOUT_S = 30 * 60

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


def test_upstream_netpol_subset_passes_on_two_real_nodes(short_dir: Path) -> None:
    tmp_path = short_dir
    if os.geteuid() != 0:
        pytest.fail("run as root: real nodes need network namespaces and mounts", pytrace=False)
    env = dict(os.environ)
    env.setdefault("LABELWALL", str(Path(sys.executable).with_name("labelwall")))
    proc = subprocess.run(
        [sys.executable, str(UPSTREAM), "--subset", "--workdir", str(tmp_path)],
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
    # The teardown ran: the testenv directory is gone.
    assert not (tmp_path / "env" / "testenv.json").exists(), "testenv down did not run"
