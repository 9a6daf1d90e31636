"""Locate the etcd, kube-apiserver and kubectl binaries that tools/k8s/build.sh produced."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: The build script; it owns the version pins and the cache layout (one source of truth).
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "k8s" / "build.sh"
#: Overrides the directory holding the binaries (skips asking the build script).
BIN_DIR_ENV = "LABELWALL_K8S_BIN_DIR"


class BinariesMissingError(Exception):
    """The server binaries are not built; the message says how to build them."""


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of the three programs a test environment runs."""

    etcd: Path
    kube_apiserver: Path
    kubectl: Path


def binary_dir() -> Path:
    """The cache directory for the pinned versions, as the build script computes it."""
    override = os.environ.get(BIN_DIR_ENV)
    if override:
        return Path(override)
    if not BUILD_SCRIPT.is_file():
        raise BinariesMissingError(
            f"{BUILD_SCRIPT} not found; set {BIN_DIR_ENV} to a directory holding "
            "etcd and kube-apiserver"
        )
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-dir"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def find_binaries() -> Binaries:
    """Find the built binaries; kubectl comes from the cache if built there, else PATH."""
    directory = binary_dir()
    missing = [n for n in ("etcd", "kube-apiserver") if not os.access(directory / n, os.X_OK)]
    kubectl = directory / "kubectl"
    if not os.access(kubectl, os.X_OK):
        found = shutil.which("kubectl")
        if found is None:
            missing.append("kubectl")
        else:
            kubectl = Path(found)
    if missing:
        raise BinariesMissingError(
            f"missing {', '.join(missing)} in {directory}: run tools/k8s/build.sh "
            "(builds them from source once, then reuses them)"
        )
    return Binaries(
        etcd=directory / "etcd", kube_apiserver=directory / "kube-apiserver", kubectl=kubectl
    )
