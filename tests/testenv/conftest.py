"""The 2-node cluster with labelwall, brought up once per session by the real-node tests.

``LABELWALL_TESTENV_DIR=DIR`` uses a cluster already up in DIR instead (and leaves it up):
for iterating on one test; CI never sets it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labelwall.testenv.cluster import CONTRACT

from .nodes_helpers import Env, Snapshot, assert_nothing_left, cli, record


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.fail("real nodes need root (namespaces, mounts, cgroups)")
    reuse = os.environ.get("LABELWALL_TESTENV_DIR")
    if reuse:  # a developer's cluster already up (`labelwall testenv up --nodes 2`): left up
        existing = Path(reuse)
        yield Env(existing, json.loads((existing / CONTRACT).read_text()), 0.0)
        return
    directory = tmp_path_factory.mktemp("nodes") / "env"
    before = Snapshot.take()
    t0 = time.monotonic()
    res = cli("up", "--dir", str(directory), "--nodes", "2")
    up_s = time.monotonic() - t0
    print(f"testenv up --nodes 2: {up_s:.1f}s\n{res.stdout}")
    assert res.returncode == 0, f"up failed:\n{res.stdout}\n{res.stderr}"
    contract = json.loads((directory / CONTRACT).read_text())
    rec = record(directory)
    try:
        yield Env(directory, contract, up_s)
    finally:
        if directory.exists():
            rec = record(directory)
            t1 = time.monotonic()
            res = cli("down", "--dir", str(directory))
            print(f"testenv down: {time.monotonic() - t1:.1f}s\n{res.stdout}")
            assert res.returncode == 0, res.stderr
        assert_nothing_left(directory, before, rec)
