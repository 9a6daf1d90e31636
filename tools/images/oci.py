#!/usr/bin/env python3
"""Write OCI image-layout archives without a registry or a container engine.

Standard library only (runs with the system python3 as well as the project venv).

    oci.py layer --out L.tar --root DIR [--exclude-contents dev ...]
        a deterministic, uncompressed layer tar of a directory tree (sorted entries,
        numeric owners kept, mtimes clamped to SOURCE_DATE_EPOCH, hard links kept)
    oci.py files --out L.tar [--file SRC:DEST:MODE] [--dir DEST] [--symlink DEST:TARGET]
        a layer from a few named files (owner 0:0, parent directories added)
    oci.py image --out IMAGE.tar --name REF --layer L1.tar [--layer L2.tar ...]
        [--entrypoint JSON] [--cmd JSON] [--env K=V ...] [--user U] [--workdir D]
        [--port 80/tcp ...]
        an OCI image layout (oci-layout, index.json with io.containerd.image.name and
        org.opencontainers.image.ref.name, blobs/sha256/...) as one tar, which
        `ctr -n k8s.io images import IMAGE.tar` takes as it is

Layers stay uncompressed (media type ...layer.v1.tar): the diff_id is then the layer's own
digest, and importing skips a decompression on every node.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import stat
import sys
import tarfile
import tempfile
from pathlib import Path

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sorted_tree(root: Path, exclude_contents: set[str]) -> list[Path]:
    """Every path under root (relative), sorted, so parents come before their children."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        out.extend(rel / n for n in dirnames + filenames)
        # Symlinks to directories are listed but never followed (os.walk's default).
        dirnames[:] = [d for d in dirnames if (rel / d).as_posix() not in exclude_contents]
    return sorted(out, key=lambda p: p.as_posix())


def _clamp(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = min(int(info.mtime), EPOCH) if EPOCH else int(info.mtime)
    info.uname = ""
    info.gname = ""
    return info


def cmd_layer(args: argparse.Namespace) -> None:
    root = Path(args.root)
    exclude = {e.strip("/") for e in args.exclude_contents}
    seen_inodes: dict[tuple[int, int], str] = {}
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for rel in _sorted_tree(root, exclude):
            full = root / rel
            st = os.lstat(full)
            name = rel.as_posix()
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
                continue  # the runtime provides /dev; a layer needs no device nodes
            if stat.S_ISSOCK(st.st_mode):
                continue
            info = tar.gettarinfo(str(full), arcname=name)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in seen_inodes:
                    info.type = tarfile.LNKTYPE
                    info.linkname = seen_inodes[key]
                    info.size = 0
                    tar.addfile(_clamp(info))
                    continue
                seen_inodes[key] = name
            if info.isreg():
                with full.open("rb") as f:
                    tar.addfile(_clamp(info), f)
            else:
                tar.addfile(_clamp(info))
    tmp.replace(out)


def _add_dir(tar: tarfile.TarFile, name: str, done: set[str]) -> None:
    parts = name.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d in done:
            continue
        info = tarfile.TarInfo(d)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        info.mtime = EPOCH
        tar.addfile(info)
        done.add(d)


def cmd_files(args: argparse.Namespace) -> None:
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    entries: list[tuple[str, str, str]] = []
    for spec in args.file:
        src, dest, mode = spec.rsplit(":", 2)
        entries.append((dest.strip("/"), "file", f"{src}\0{mode}"))
    for dest in args.dir:
        entries.append((dest.strip("/"), "dir", ""))
    for spec in args.symlink:
        dest, target = spec.split(":", 1)
        entries.append((dest.strip("/"), "symlink", target))
    entries.sort()
    done: set[str] = set()
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for dest, kind, extra in entries:
            parent = dest.rsplit("/", 1)[0] if "/" in dest else ""
            if parent:
                _add_dir(tar, parent, done)
            if kind == "dir":
                _add_dir(tar, dest, done)
                continue
            info = tarfile.TarInfo(dest)
            info.mtime = EPOCH
            if kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = extra
                tar.addfile(info)
                continue
            src, mode = extra.split("\0")
            data = Path(src).read_bytes()
            info.size = len(data)
            info.mode = int(mode, 8)
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)


def _blob(blobs: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def cmd_image(args: argparse.Namespace) -> None:
    out = Path(args.out)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".oci-") as tmpd:
        lay = Path(tmpd)
        blobs = lay / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        layers = []
        diff_ids = []
        for layer in args.layer:
            digest = _sha256_file(Path(layer))
            size = os.path.getsize(layer)
            # Hard link when possible: the layer tars can be hundreds of MB.
            target = blobs / digest
            try:
                os.link(layer, target)
            except OSError:
                shutil.copyfile(layer, target)
            layers.append({"mediaType": MT_LAYER, "digest": f"sha256:{digest}", "size": size})
            diff_ids.append(f"sha256:{digest}")
        config: dict[str, object] = {"Env": args.env or ["PATH=" + DEFAULT_PATH]}
        if args.entrypoint:
            config["Entrypoint"] = json.loads(args.entrypoint)
        if args.cmd:
            config["Cmd"] = json.loads(args.cmd)
        if args.user:
            config["User"] = args.user
        if args.workdir:
            config["WorkingDir"] = args.workdir
        if args.port:
            config["ExposedPorts"] = {p: {} for p in args.port}
        image_config = {
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z" if not EPOCH else _iso(EPOCH),
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "labelwall tools/images/oci.py"} for _ in diff_ids],
        }
        cdigest, csize = _blob(blobs, _canonical(image_config))
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": cdigest, "size": csize},
            "layers": layers,
        }
        mdigest, msize = _blob(blobs, _canonical(manifest))
        index = {
            "schemaVersion": 2,
            "mediaType": MT_INDEX,
            "manifests": [
                {
                    "mediaType": MT_MANIFEST,
                    "digest": mdigest,
                    "size": msize,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": args.name,
                        "org.opencontainers.image.ref.name": args.name.rsplit(":", 1)[1],
                    },
                }
            ],
        }
        (lay / "index.json").write_bytes(_canonical(index))
        (lay / "oci-layout").write_bytes(_canonical({"imageLayoutVersion": "1.0.0"}))
        tmp = out.with_name(out.name + ".tmp")
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for name in ["oci-layout", "index.json", "blobs", "blobs/sha256"]:
                tar.add(lay / name, arcname=name, recursive=False, filter=_clamp_owner)
            for blob in sorted(blobs.iterdir()):
                tar.add(blob, arcname=f"blobs/sha256/{blob.name}", filter=_clamp_owner)
        tmp.replace(out)
    print(f"{out}: {args.name} manifest {mdigest}")


def _clamp_owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = EPOCH
    return info


def _iso(epoch: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="oci.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    pl = sub.add_parser("layer", help="a deterministic layer tar of a directory")
    pl.add_argument("--out", required=True)
    pl.add_argument("--root", required=True)
    pl.add_argument("--exclude-contents", action="append", default=[], metavar="RELDIR")
    pl.set_defaults(func=cmd_layer)
    pf = sub.add_parser("files", help="a layer tar from a few named files")
    pf.add_argument("--out", required=True)
    pf.add_argument("--file", action="append", default=[], metavar="SRC:DEST:MODE")
    pf.add_argument("--dir", action="append", default=[], metavar="DEST")
    pf.add_argument("--symlink", action="append", default=[], metavar="DEST:TARGET")
    pf.set_defaults(func=cmd_files)
    pi = sub.add_parser("image", help="an OCI image-layout tar from layer tars")
    pi.add_argument("--out", required=True)
    pi.add_argument("--name", required=True, help="full reference, e.g. registry.k8s.io/pause:3.10")
    pi.add_argument("--layer", action="append", required=True)
    pi.add_argument("--entrypoint", help="JSON list")
    pi.add_argument("--cmd", help="JSON list")
    pi.add_argument("--env", action="append", metavar="K=V")
    pi.add_argument("--user")
    pi.add_argument("--workdir")
    pi.add_argument("--port", action="append", metavar="80/tcp")
    pi.set_defaults(func=cmd_image)
    args = p.parse_args(argv)
    if args.command == "image" and ":" not in args.name.rsplit("/", 1)[-1]:
        p.error(f"--name {args.name!r} needs a tag (NAME:TAG)")
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
