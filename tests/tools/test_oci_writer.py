"""tools/images/oci.py on small inputs: the same inputs give byte-identical archives (so
image digests change only when contents do), and a directory layer keeps what a root file
system needs (modes, owners, symlinks, hard links) and leaves out device nodes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OCI = REPO / "tools" / "images" / "oci.py"


def _oci(*args: str) -> None:
    env = {**os.environ, "SOURCE_DATE_EPOCH": "0"}
    subprocess.run([sys.executable, str(OCI), *args], check=True, capture_output=True, env=env)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_inputs_give_the_same_archive(tmp_path: Path) -> None:
    binary = tmp_path / "bin"
    binary.write_bytes(b"\x7fELF not really")
    digests = set()
    for i in range(2):
        os.utime(binary, (1_000_000 + i, 1_000_000 + i))  # mtimes do not matter
        layer, image = tmp_path / f"l{i}.tar", tmp_path / f"i{i}.tar"
        _oci("files", "--out", str(layer), "--file", f"{binary}:app/run:0755", "--dir", "tmp")
        _oci("image", "--out", str(image), "--name", "example.test/x:1", "--layer", str(layer))
        digests.add(_digest(image))
    assert len(digests) == 1
    with tarfile.open(tmp_path / "l0.tar") as t:
        members = {m.name: m for m in t.getmembers()}
    assert list(members) == ["app", "app/run", "tmp"]
    assert members["app/run"].mode == 0o755
    assert (members["app/run"].uid, members["app/run"].gid, members["app/run"].mtime) == (0, 0, 0)


def test_a_directory_layer_keeps_links_and_modes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "dev").mkdir()
    tool = root / "usr/bin/tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o4755)
    os.link(tool, root / "usr/bin/tool2")
    (root / "bin").symlink_to("usr/bin")
    os.mkfifo(root / "dev/fifo")
    out = tmp_path / "layer.tar"
    _oci("layer", "--out", str(out), "--root", str(root))
    with tarfile.open(out) as t:
        members = {m.name: m for m in t.getmembers()}
    assert sorted(members) == ["bin", "dev", "usr", "usr/bin", "usr/bin/tool", "usr/bin/tool2"]
    assert members["bin"].issym()
    assert members["bin"].linkname == "usr/bin"
    assert members["usr/bin/tool"].mode == 0o4755
    assert members["usr/bin/tool2"].islnk()
    assert members["usr/bin/tool2"].linkname == "usr/bin/tool"


def test_an_image_name_without_a_tag_is_refused(tmp_path: Path) -> None:
    layer = tmp_path / "l.tar"
    _oci("files", "--out", str(layer), "--dir", "x")
    proc = subprocess.run(
        [sys.executable, str(OCI), "image", "--out", str(tmp_path / "i.tar"),
         "--name", "registry.example:5000/x", "--layer", str(layer)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "needs a tag" in proc.stderr
    assert not (tmp_path / "i.tar").exists()
