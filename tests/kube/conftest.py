"""Fixtures of the operator tests: the chart's CRDs on the shared API server, operator processes."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from labelwall.testenv import TestEnv

from .operator_harness import CRDS, OperatorProcess

_COUNTER = itertools.count()


@pytest.fixture(scope="session")
def crds(apiserver: TestEnv) -> TestEnv:
    """The API server with the chart's Identity and ClusterKopfPeering CRDs established."""
    # --force-conflicts: other suites apply the same files with their own field manager.
    apiserver.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    for name in ("identities.labelwall.io", "clusterkopfpeerings.kopf.dev"):
        apiserver.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    return apiserver


@pytest.fixture
def fresh_ns() -> Callable[[str], str]:
    """Unique namespace names: deleted namespaces stay Terminating (no controller manager)."""

    def make(stem: str) -> str:
        return f"{stem}-{os.getpid() % 10000}-{next(_COUNTER)}"

    return make


@pytest.fixture
def operators(crds: TestEnv, tmp_path: Path) -> Iterator[Callable[..., OperatorProcess]]:
    """Start operator subprocesses; every one is stopped (by its own pid) afterwards."""
    started: list[OperatorProcess] = []

    def start(**kwargs: object) -> OperatorProcess:
        name = f"op{len(started)}"
        proc = OperatorProcess(crds, tmp_path, name=name, **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc.start()

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()
