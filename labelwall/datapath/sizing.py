"""Map sizes from the config: the ``-D`` macros, the object built with them, the layouts to expect.

The shipped object has maps.h's default sizes. Other sizes are compile-time constants of
the object (pylibbpf 0.0.6 cannot change max_entries before load), so, as Cilium does, the
agent compiles the classifier with the node's sizes into a cache keyed by the source and
the sizes, and the loader then expects exactly those sizes (``mapspecs.resized``). A pinned map
of another size is refused, as any other layout mismatch: changing sizes on a running node
needs ``labelwall agent --cleanup`` first.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from labelwall.datapath import loader, mapspecs
from labelwall.datapath.errors import DatapathError


def defines_for(sizes: Mapping[str, int]) -> dict[str, int]:
    """Size macros that differ from the shipped object's, from {map name: max_entries}."""
    defaults = {m.name: m.max_entries for m in mapspecs.MAPS}
    out: dict[str, int] = {}
    for name, size in sizes.items():
        macro = mapspecs.SIZE_MACROS.get(name)
        if macro is None:
            raise DatapathError(
                f"map {name} has no size macro; sizable: {sorted(mapspecs.SIZE_MACROS)}"
            )
        if size != defaults[name]:
            if out.get(macro, size) != size:
                raise DatapathError(f"{macro} asked with two sizes: {out[macro]} and {size}")
            out[macro] = int(size)
    return out


def source_dir() -> Path:
    """bpf_src/: $LABELWALL_BPF_SRC (the container image), else the source checkout."""
    env = os.environ.get("LABELWALL_BPF_SRC")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "bpf_src"


def _digest(src: Path, defines: Mapping[str, int]) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in src.rglob("*") if p.suffix in {".c", ".h", ".py"}):
        h.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(repr(sorted(defines.items())).encode())
    return h.hexdigest()[:16]


def object_for(
    defines: Mapping[str, int], cache: Path | None = None, netfilter: bool = False
) -> Path:
    """The object with these size macros: the shipped one when there are none.

    ``netfilter``: the netfilter object (labelwall_nf.bpf.o), which must be built with the
    same sizes as the classifier whose pinned maps it reuses.
    """
    if not defines:
        if netfilter:
            from labelwall.datapath import netfilter as nf

            return nf.object_path()
        return loader.object_path()
    src = source_dir()
    if not (src / "build.py").exists():
        raise DatapathError(
            f"custom map sizes need the classifier source to compile, and {src} has none "
            "(set LABELWALL_BPF_SRC)"
        )
    root = cache or Path(os.environ.get("LABELWALL_BPF_CACHE", "/tmp/labelwall-bpf"))
    kind = "labelwall_nf" if netfilter else "labelwall"
    out = root / f"{kind}-{_digest(src, defines)}.bpf.o"
    if out.exists():
        return out
    root.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    args = [sys.executable, str(src / "build.py"), str(tmp)]
    args += ["--netfilter"] if netfilter else []
    args += [f"-D{k}={v}" for k, v in sorted(defines.items())]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DatapathError(f"building the classifier with {dict(defines)} failed:\n{proc.stderr}")
    tmp.replace(out)  # atomic: a concurrent reader sees the whole object or none
    return out
