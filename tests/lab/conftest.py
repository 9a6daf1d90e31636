"""One lab for the whole test session (root, BPF, network namespaces), removed in a finally."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from labelwall.lab import topology
from labelwall.lab.control import Lab, down
from labelwall.lab.layout import LabPaths

PREFIX = "lwt-"


def _require() -> None:
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (network namespaces, BPF, tc)")
    for tool in ("ip", "bpftool"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: install iproute2 and bpftool (linux-tools)")


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    _require()
    paths = LabPaths.from_env(f"/tmp/labelwall-test-lab-{os.getpid()}", PREFIX)
    if topology.list_netns(PREFIX):
        down(paths)  # a crashed earlier session of ours
    the_lab = Lab(paths)
    try:
        the_lab.up([], metrics_port=9962)
        yield the_lab
    finally:
        down(paths)
        assert not topology.list_netns(PREFIX), "lab down left namespaces behind"
