"""Locate the node binaries, the OCI image archives and helm that the tools/ scripts build.

tools/node/build.sh and tools/images/build.sh own the versions and the cache layout;
``--print-dir`` asks them where their output is without building anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from labelwall.testenv.binaries import BinariesMissingError

_TOOLS = Path(__file__).resolve().parents[2] / "tools"
NODE_BUILD = _TOOLS / "node" / "build.sh"
IMAGES_BUILD = _TOOLS / "images" / "build.sh"
HELM_BUILD = _TOOLS / "helm" / "build.sh"
#: Overrides: directories (or the helm binary) to use instead of asking the scripts.
NODE_BIN_DIR_ENV = "LABELWALL_NODE_BIN_DIR"
IMAGES_DIR_ENV = "LABELWALL_IMAGES_DIR"
HELM_ENV = "LABELWALL_HELM"

NODE_PROGRAMS = (
    "kubelet",
    "kube-proxy",
    "kube-scheduler",
    "kube-controller-manager",
    "containerd",
    "ctr",
    "containerd-shim-runc-v2",
    "runc",
    "ptp",
    "host-local",
    "loopback",
)
#: Archive -> the image name it carries (io.containerd.image.name).
IMAGES = {
    "pause.tar": "registry.k8s.io/pause:3.10",
    "agnhost.tar": "registry.k8s.io/e2e-test-images/agnhost:2.53",
    "labelwall.tar": "docker.io/library/labelwall:dev",
}
PAUSE_IMAGE = IMAGES["pause.tar"]
LABELWALL_IMAGE = IMAGES["labelwall.tar"]


@dataclass(frozen=True)
class NodeBinaries:
    """The bin directory (kubelet ... and the CNI plugins) and the image archives."""

    bin_dir: Path
    images: tuple[Path, ...]
    e2e_test: Path
    ginkgo: Path

    def path(self, name: str) -> Path:
        return self.bin_dir / name


def _print_dir(script: Path, env: str) -> Path:
    override = os.environ.get(env)
    if override:
        return Path(override)
    if not script.is_file():
        raise BinariesMissingError(f"{script} not found; set {env} to the directory it builds")
    out = subprocess.run(
        ["bash", str(script), "--print-dir"], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def find_node_binaries(with_labelwall: bool = True) -> NodeBinaries:
    """Find everything a node needs; name what is missing and the script that builds it."""
    bin_dir = _print_dir(NODE_BUILD, NODE_BIN_DIR_ENV)
    missing = [n for n in NODE_PROGRAMS if not os.access(bin_dir / n, os.X_OK)]
    if missing:
        raise BinariesMissingError(
            f"missing {', '.join(missing)} in {bin_dir}: run `bash {NODE_BUILD}`"
        )
    image_dir = _print_dir(IMAGES_BUILD, IMAGES_DIR_ENV)
    names = [n for n in IMAGES if with_labelwall or n != "labelwall.tar"]
    absent = [n for n in names if not (image_dir / n).is_file()]
    if absent:
        raise BinariesMissingError(
            f"missing {', '.join(absent)} in {image_dir}: run `bash {IMAGES_BUILD}`"
        )
    return NodeBinaries(
        bin_dir=bin_dir,
        images=tuple(image_dir / n for n in names),
        e2e_test=bin_dir / "e2e.test",
        ginkgo=bin_dir / "ginkgo",
    )


def find_helm() -> Path:
    """The helm binary: $LABELWALL_HELM, the tools/helm cache, else PATH."""
    explicit = os.environ.get(HELM_ENV)
    if explicit:
        return Path(explicit)
    if HELM_BUILD.is_file():
        for flag in ("--print-path", "--print-dir"):
            out = subprocess.run(
                ["bash", str(HELM_BUILD), flag], check=False, capture_output=True, text=True
            )
            last = out.stdout.strip().splitlines()[-1:] if out.returncode == 0 else []
            if last:
                cand = Path(last[0])
                cand = cand / "helm" if cand.is_dir() else cand
                if os.access(cand, os.X_OK):
                    return cand
    found = shutil.which("helm")
    if found:
        return Path(found)
    raise BinariesMissingError(f"helm not found: run `bash {HELM_BUILD}`")
