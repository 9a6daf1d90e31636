"""Fixtures for datapath tests: a loaded classifier whose pins are always removed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from labelwall.datapath import mapspecs
from labelwall.datapath.facade import Datapath


def lw_pins() -> list[str]:
    return sorted(p for p in os.listdir(mapspecs.PIN_ROOT) if p.startswith("lw_"))


def require_root_bpf() -> None:
    if os.geteuid() != 0:
        pytest.fail("datapath tests need root (CAP_BPF, CAP_NET_ADMIN) and a BPF-capable kernel")
    if not os.path.isdir(mapspecs.PIN_ROOT):
        pytest.fail(f"bpffs is not mounted at {mapspecs.PIN_ROOT}")


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (CI: apt-get install clang libbpf-dev bpftool)")
    return path


@contextmanager
def fresh_datapath() -> Iterator[Datapath]:
    """A freshly loaded datapath on empty maps; unpinned afterwards, even on failure."""
    require_root_bpf()
    if lw_pins():
        pytest.fail(f"stale labelwall pins in {mapspecs.PIN_ROOT}: {lw_pins()} (another run?)")
    datapath = None
    try:
        datapath = Datapath.open()
        yield datapath
    finally:
        if datapath is not None:
            datapath.close()
        Datapath.unpin_all()
        assert lw_pins() == []


@pytest.fixture
def dp() -> Iterator[Datapath]:
    with fresh_datapath() as datapath:
        yield datapath
