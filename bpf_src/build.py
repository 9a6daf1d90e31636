"""Compile the labelwall classifier: the one place that knows the clang command line.

Used by setup.py (at ``pip install .`` / ``pip install -e .``) and by ``make bpf``.
Standard library only, so it runs inside pip's isolated build environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "bpf_src" / "labelwall.bpf.c"
INCLUDE = ROOT / "bpf_src" / "include"
OUTPUT = ROOT / "labelwall" / "datapath" / "bpf" / "labelwall.bpf.o"
# The netfilter program (egress through a Service) is its own object: see its source.
NF_SOURCE = ROOT / "bpf_src" / "labelwall_nf.bpf.c"
NF_OUTPUT = ROOT / "labelwall" / "datapath" / "bpf" / "labelwall_nf.bpf.o"
# asm/types.h lives in the multiarch directory on Debian; -target bpf does not search it.
MULTIARCH_INCLUDE = "/usr/include/x86_64-linux-gnu"
CFLAGS = ["-O2", "-g", "-target", "bpf", "-Wall", "-Wextra", "-Werror"]


def command(
    output: Path = OUTPUT,
    clang: str | None = None,
    defines: dict[str, int] | None = None,
    source: Path = SOURCE,
) -> list[str]:
    """``defines`` override the #ifndef map sizes in maps.h, e.g. {"LW_CT_MAX": 65536}."""
    cc = clang or os.environ.get("CLANG") or "clang"
    macros = [f"-D{k}={int(v)}" for k, v in sorted((defines or {}).items())]
    return [cc, *CFLAGS, *macros, f"-I{INCLUDE}", f"-idirafter{MULTIARCH_INCLUDE}", "-c",
            str(source), "-o", str(output)]  # fmt: skip


def build(
    output: Path = OUTPUT, defines: dict[str, int] | None = None, source: Path = SOURCE
) -> Path:
    """Compile ``source`` into ``output``; raises RuntimeError with clang's message on failure.

    With the default output, the netfilter object (NF_SOURCE -> NF_OUTPUT) is built too.
    """
    if output == OUTPUT and source == SOURCE:
        build(NF_OUTPUT, defines, NF_SOURCE)
    cmd = command(output, defines=defines, source=source)
    if shutil.which(cmd[0]) is None:
        raise RuntimeError(
            f"{cmd[0]} not found: install clang (Debian: apt-get install clang libbpf-dev) "
            "to build the labelwall BPF object"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return output


if __name__ == "__main__":
    # usage: build.py [--netfilter] [OUTPUT] [-DLW_<MAP>_MAX=N ...]
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    defs = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("-D"))
    src = NF_SOURCE if "--netfilter" in sys.argv[1:] else SOURCE
    default = NF_OUTPUT if src == NF_SOURCE else OUTPUT
    out = build(Path(args[0]) if args else default, {k: int(v) for k, v in defs.items()}, src)
    print(out)
