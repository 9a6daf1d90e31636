"""The OCI image archives tools/images/build.sh writes (pause, agnhost, labelwall).

Checked independently of the writer: every digest and size in index.json, the manifest and
the config matches the blob it names, the config's diff_ids are the (uncompressed) layers,
the containerd name annotation is the one the nodes and the chart expect, and nothing else
is in the archive. As root: the labelwall image's layers, unpacked in order, give a root
file system where `labelwall --help` runs (chroot) with its runtime libraries, and a
throwaway containerd (our build, private mount namespace, its own root and socket) imports
all three archives.

    make images && sudo .venv/bin/pytest tests/tools/test_images.py
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES_BUILD = REPO / "tools" / "images" / "build.sh"
NODE_BUILD = REPO / "tools" / "node" / "build.sh"
EXPECTED = {
    "pause": "registry.k8s.io/pause:3.10",
    "agnhost": "registry.k8s.io/e2e-test-images/agnhost:2.53",
    "labelwall": "docker.io/library/labelwall:dev",
}
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"

Doc = dict[str, Any]


def _dir_of(script: Path) -> Path:
    out = subprocess.run(
        ["bash", str(script), "--print-dir"], capture_output=True, text=True, check=True
    ).stdout
    return Path(out.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def images() -> Path:
    directory = _dir_of(IMAGES_BUILD)
    missing = [f"{n}.tar" for n in EXPECTED if not (directory / f"{n}.tar").is_file()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing in {directory}: run `make images` "
            "(CI: `make tools` builds them)",
            pytrace=False,
        )
    return directory


class Archive:
    """An OCI image-layout tar, read member by member (no extraction)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tar = tarfile.open(path)  # noqa: SIM115 (closed by the fixture)
        self.members = {m.name.rstrip("/"): m for m in self.tar.getmembers()}

    def read(self, name: str) -> bytes:
        f = self.tar.extractfile(self.members[name])
        assert f is not None, f"{self.path}: {name} is not a regular file"
        return f.read()

    def blob_name(self, digest: str) -> str:
        algo, _, hexd = digest.partition(":")
        assert algo == "sha256", digest
        return f"blobs/sha256/{hexd}"

    def blob(self, descriptor: Doc) -> bytes:
        """The blob a descriptor names, checked against its digest and size."""
        name = self.blob_name(descriptor["digest"])
        assert name in self.members, f"{self.path}: {name} missing"
        data = self.read(name)
        assert len(data) == descriptor["size"], f"{name}: size {len(data)} != {descriptor['size']}"
        assert "sha256:" + hashlib.sha256(data).hexdigest() == descriptor["digest"], name
        return data

    def close(self) -> None:
        self.tar.close()


@pytest.fixture(params=sorted(EXPECTED), scope="module")
def archive(request: pytest.FixtureRequest, images: Path) -> Iterator[tuple[str, Archive]]:
    a = Archive(images / f"{request.param}.tar")
    try:
        yield request.param, a
    finally:
        a.close()


def _manifest_and_config(a: Archive) -> tuple[Doc, Doc, Doc]:
    index = json.loads(a.read("index.json"))
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    (entry,) = index["manifests"]
    manifest = json.loads(a.blob(entry))
    config = json.loads(a.blob(manifest["config"]))
    return entry, manifest, config


def test_layout_digests_sizes_and_name(archive: tuple[str, Archive]) -> None:
    key, a = archive
    assert json.loads(a.read("oci-layout")) == {"imageLayoutVersion": "1.0.0"}
    entry, manifest, config = _manifest_and_config(a)
    assert entry["annotations"]["io.containerd.image.name"] == EXPECTED[key]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == EXPECTED[key].split(":")[-1]
    assert (
        manifest["mediaType"] == entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    )
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    layers = manifest["layers"]
    assert layers
    assert all(layer["mediaType"] == LAYER_TYPE for layer in layers)
    for layer in layers:  # digest and size, streamed (layers are up to hundreds of MB)
        name = a.blob_name(layer["digest"])
        f = a.tar.extractfile(a.members[name])
        assert f is not None
        h = hashlib.sha256()
        size = 0
        for chunk in iter(lambda: f.read(1 << 20), b""):  # noqa: B023
            h.update(chunk)
            size += len(chunk)
        assert (size, "sha256:" + h.hexdigest()) == (layer["size"], layer["digest"]), name
    # Uncompressed layers: each diff_id is the layer's own digest.
    assert config["rootfs"] == {"type": "layers", "diff_ids": [la["digest"] for la in layers]}
    referenced = {a.blob_name(d["digest"]) for d in [entry, manifest["config"], *layers]}
    blobs = {n for n, m in a.members.items() if n.startswith("blobs/sha256/") and m.isfile()}
    assert blobs == referenced, f"unreferenced or missing blobs: {blobs ^ referenced}"


def _layer_members(a: Archive, manifest: Doc, index: int) -> dict[str, tarfile.TarInfo]:
    f = a.tar.extractfile(a.members[a.blob_name(manifest["layers"][index]["digest"])])
    assert f is not None
    with tarfile.open(fileobj=f) as layer:
        return {m.name: m for m in layer.getmembers()}


def test_pause_and_agnhost_run_their_binary_as_upstream(images: Path) -> None:
    for key, binary, entrypoint in [
        ("pause", "pause", ["/pause"]),
        ("agnhost", "agnhost", ["/agnhost"]),
    ]:
        a = Archive(images / f"{key}.tar")
        try:
            _, manifest, config = _manifest_and_config(a)
            assert config["config"]["Entrypoint"] == entrypoint
            members = _layer_members(a, manifest, 0)
            info = members[binary]
            assert info.isfile(), f"{key}: /{binary} is not a file"
            assert info.mode & 0o111, f"{key}: /{binary} not executable"
            assert (info.uid, info.gid) == (0, 0)
        finally:
            a.close()
    a = Archive(images / "agnhost.tar")
    try:
        _, manifest, config = _manifest_and_config(a)
        assert config["config"]["Cmd"] == ["pause"]
        members = _layer_members(a, manifest, 0)
        assert members["agnhost-2"].issym()
        assert members["agnhost-2"].linkname == "agnhost"
        assert {"etc/passwd", "localhost.crt", "localhost.key", "uploads", "tmp"} <= set(members)
    finally:
        a.close()
    a = Archive(images / "pause.tar")
    try:
        assert _manifest_and_config(a)[2]["config"]["User"] == "65535:65535"
    finally:
        a.close()


def _static(path: Path) -> bool:
    """No PT_INTERP program header: the ELF needs no dynamic loader."""
    out = subprocess.run(["readelf", "-lW", str(path)], capture_output=True, text=True, check=True)
    return "INTERP" not in out.stdout


def test_pause_and_agnhost_binaries_are_static() -> None:
    node = _dir_of(NODE_BUILD)
    for name in ("pause", "agnhost"):
        assert (node / name).is_file(), f"{node / name} missing: run `make node-tools`"
        assert _static(node / name), f"{name} is dynamically linked; the images have no libc"


def test_labelwall_config_matches_the_dockerfile(images: Path) -> None:
    a = Archive(images / "labelwall.tar")
    try:
        _, manifest, config = _manifest_and_config(a)
    finally:
        a.close()
    cfg = config["config"]
    assert cfg["User"] == "65532:65532"  # the chart's operator uid; the Dockerfile's USER
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["PATH"].split(":")[0] == "/opt/labelwall/bin"
    assert env["LABELWALL_BPF_SRC"] == "/opt/labelwall/bpf_src"
    assert env["PYTHONDONTWRITEBYTECODE"] == env["PYTHONUNBUFFERED"] == "1"
    assert cfg["Cmd"] == ["labelwall", "--help"]
    assert len(manifest["layers"]) == 2  # the Debian base, then the app layer
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ENV PATH=/opt/labelwall/bin:" in dockerfile
    assert "LABELWALL_BPF_SRC=/opt/labelwall/bpf_src" in dockerfile


@pytest.fixture(scope="module")
def labelwall_rootfs(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The labelwall image's layers unpacked in order (as a snapshotter would)."""
    if os.geteuid() != 0:
        pytest.fail("run as root: unpacking keeps owners, and chroot needs root", pytrace=False)
    root = tmp_path_factory.mktemp("labelwall-rootfs")
    a = Archive(images / "labelwall.tar")
    try:
        _, manifest, _ = _manifest_and_config(a)
        for layer in manifest["layers"]:
            f = a.tar.extractfile(a.members[a.blob_name(layer["digest"])])
            assert f is not None
            proc = subprocess.run(
                ["tar", "-x", "--numeric-owner", "-p", "-C", str(root)],
                input=f.read(), capture_output=True, check=False,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr.decode()
    finally:
        a.close()
    try:
        yield root
    finally:
        shutil.rmtree(root)


def _chroot(root: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/opt/labelwall/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return subprocess.run(
        ["chroot", str(root), *cmd],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.root
@pytest.mark.slow
def test_labelwall_image_runs_labelwall_help(labelwall_rootfs: Path) -> None:
    proc = _chroot(labelwall_rootfs, "/opt/labelwall/bin/labelwall", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: labelwall" in proc.stdout
    assert "operator" in proc.stdout
    assert "agent" in proc.stdout


@pytest.mark.root
@pytest.mark.slow
def test_labelwall_image_has_its_runtime_pieces(labelwall_rootfs: Path) -> None:
    # pylibbpf's extension and the ctypes fallback's libbpf.so.1 load; the BPF object is in
    # the installed package; the sources for a mapSizes rebuild are where the env says.
    code = (
        "import ctypes, pylibbpf, labelwall.datapath.libbpf as l; "
        "from importlib.resources import files; "
        "ctypes.CDLL('libbpf.so.1'); l.lib(); "
        "assert files('labelwall').joinpath('datapath/bpf/labelwall.bpf.o').is_file(); "
        "print('ok')"
    )
    proc = _chroot(labelwall_rootfs, "/opt/labelwall/bin/python", "-c", code)
    assert (proc.returncode, proc.stdout.strip()) == (0, "ok"), proc.stderr
    assert (labelwall_rootfs / "opt/labelwall/bpf_src/build.py").is_file()
    # The chart's mount-bpffs init container and debugging from `kubectl exec`.
    proc = _chroot(
        labelwall_rootfs,
        "sh",
        "-c",
        "for t in sh mount stat ip tc bpftool nft clang; do command -v $t; done",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    passwd = (labelwall_rootfs / "etc/passwd").read_text()
    assert "labelwall:x:65532:65532:" in passwd


CONTAINERD_CONFIG = """version = 3
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images",
  "io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing", "io.containerd.snapshotter.v1.erofs",
  "io.containerd.differ.v1.erofs", "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.btrfs",
]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
[metrics]
  address = ""
"""


@pytest.mark.root
@pytest.mark.slow
def test_containerd_imports_every_archive(images: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("run as root: containerd unpacks into overlay snapshots", pytrace=False)
    node = _dir_of(NODE_BUILD)
    for b in ("containerd", "ctr"):
        assert (node / b).is_file(), f"{node / b} missing: run `make node-tools`"
    d = Path("/tmp") / f"lwt-ctd-{os.getpid()}"  # short: unix socket paths are <= 107 bytes
    d.mkdir()
    (d / "config.toml").write_text(CONTAINERD_CONFIG.format(d=d))
    log = (tmp_path / "containerd.log").open("w")
    # Its own mount namespace: the snapshot mounts of the unpack never reach the host.
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private",
         str(node / "containerd"), "--config", str(d / "config.toml")],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    ctr = [str(node / "ctr"), "--address", str(d / "containerd.sock"), "-n", "k8s.io"]
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([*ctr, "version"], capture_output=True, check=False).returncode != 0:
            assert proc.poll() is None, (tmp_path / "containerd.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "containerd did not answer within 30 s"
            time.sleep(0.2)
        for key, name in EXPECTED.items():
            imp = subprocess.run(
                [*ctr, "images", "import", str(images / f"{key}.tar")],
                capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            assert imp.returncode == 0, f"{key}: {imp.stderr}"
            check = subprocess.run(
                [*ctr, "images", "check", f"name=={name}"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            assert name in check.stdout, check.stdout
            assert "complete" in check.stdout, check.stdout
        listed = subprocess.run(
            [*ctr, "images", "ls", "-q"], capture_output=True, text=True, check=True
        )
        assert set(EXPECTED.values()) <= set(listed.stdout.split())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(d)
