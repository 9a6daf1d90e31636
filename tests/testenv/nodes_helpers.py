"""Shared by the real-node tests: the CLI, leftover snapshots, and the running cluster."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelwall.testenv import cgroups
from labelwall.testenv.binaries import find_binaries
from labelwall.testenv.cluster import CLUSTER_STATE
from labelwall.testenv.nodesetup import HOST_PATHS_NOT_TOUCHED


def kubectl() -> str:
    """The kubectl the environment itself uses (tools/k8s cache, else PATH)."""
    return str(find_binaries().kubectl)


def cli(*args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labelwall.cli.testenv", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def netns_inodes(pids: list[int]) -> set[int]:
    out = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            out.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
    return out


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def pids_naming(directory: Path) -> list[int]:
    found = []
    needle = str(directory).encode()
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if needle in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def host_links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return sorted(line.split(":")[1].strip() for line in out.stdout.splitlines())


def mountpoints() -> list[str]:
    return sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())


@dataclass
class Snapshot:
    links: list[str]
    mounts: list[str]
    host_paths: list[str]

    @classmethod
    def take(cls) -> Snapshot:
        present = [p for p in HOST_PATHS_NOT_TOUCHED if Path(p).exists()]
        return cls(host_links(), mountpoints(), present)


@dataclass
class Recorded:
    """What the environment created, read while it runs (for the leftover checks)."""

    cgroup: str
    netns: set[int]


def record(directory: Path) -> Recorded:
    state = json.loads((directory / CLUSTER_STATE).read_text())
    pids = cgroups.tree_pids(state["cgroup"])
    return Recorded(cgroup=state["cgroup"], netns=netns_inodes(pids))


def assert_nothing_left(directory: Path, before: Snapshot, rec: Recorded) -> None:
    assert not directory.exists()
    assert pids_naming(directory) == []
    assert cgroups.tree_pids(rec.cgroup) == []
    assert cgroups.existing(rec.cgroup) == []
    # Every node, pod and control-plane namespace is gone: no process is in one.
    assert rec.netns, "recorded no namespaces (the record is wrong, not the cleanup)"
    assert netns_inodes(all_pids()) & rec.netns == set()
    assert host_links() == before.links
    assert mountpoints() == before.mounts
    assert Snapshot.take().host_paths == before.host_paths


@dataclass
class Env:
    directory: Path
    contract: dict[str, Any]
    up_seconds: float

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        res = subprocess.run(
            [kubectl(), f"--kubeconfig={self.contract['kubeconfig']}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert res.returncode == 0, f"kubectl {' '.join(args)}: {res.stderr}"
        return res.stdout
