"""The Dockerfile's inputs exist in the build context .dockerignore leaves, and its BPF step
builds from exactly that context (no container engine here, so the steps run directly)."""

from __future__ import annotations

import fnmatch
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .chart_helpers import CHART, REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()


def _copy_sources() -> list[str]:
    """Sources of every COPY from the build context (not --from another stage)."""
    text = DOCKERFILE.replace("\\\n", " ")
    sources = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if not words or words[0].upper() != "COPY":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]):
            continue
        sources += args[:-1]
    return sources


def _ignore_rules() -> list[tuple[bool, str]]:
    rules = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        rules.append((negate, line.lstrip("!").rstrip("/")))
    return rules


def _excluded(rel: str) -> bool:
    # Docker semantics: the last matching rule wins; a rule matching a parent directory
    # matches everything below it. "**/" matches any depth (including none).
    excluded = False
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for negate, pattern in _ignore_rules():
        pats = {pattern}
        if pattern.startswith("**/"):
            pats.add(pattern[3:])
        # fnmatch's "*" also matches "/", which is close enough for our few patterns.
        if any(fnmatch.fnmatch(p, pat) for p in prefixes for pat in pats):
            excluded = not negate
    return excluded


def _context(dest: Path) -> Path:
    """Copy the repository files the build context would hold into ``dest``."""
    for path in sorted(REPO.rglob("*")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith((".git/", ".venv/")) or not path.is_file() or _excluded(rel):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return dest


def test_every_copied_path_exists_and_is_in_the_context() -> None:
    sources = _copy_sources()
    assert {"pyproject.toml", "setup.py", "README.md", "bpf_src/", "labelwall/"} <= set(sources)
    for src in sources:
        assert (REPO / src).exists(), f"Dockerfile copies {src}, which does not exist"
        assert not _excluded(src.rstrip("/")), f".dockerignore drops {src}"


def test_context_leaves_out_built_objects_and_caches() -> None:
    assert _excluded("labelwall/datapath/bpf/labelwall.bpf.o")
    assert _excluded("labelwall/__pycache__/config.cpython-311.pyc")
    assert _excluded("charts/labelwall/values.yaml")
    assert not _excluded("bpf_src/include/labelwall/abi.h")
    assert not _excluded("labelwall/config.py")


def test_runtime_stage_has_iproute2_the_package_and_a_non_root_user() -> None:
    runtime = DOCKERFILE[DOCKERFILE.index("AS runtime") :]
    assert "iproute2" in runtime
    assert "pip install --no-cache-dir --no-index --find-links /tmp/wheels labelwall" in runtime
    assert "USER 65532:65532" in runtime
    # The chart's operator runs as this uid; keep the two in step.
    deployment = (CHART / "templates" / "operator" / "deployment.yaml").read_text()
    assert "runAsUser: 65532" in deployment


@pytest.mark.slow
def test_bpf_object_builds_from_the_docker_context(tmp_path: Path) -> None:
    if shutil.which("clang") is None:
        pytest.fail("clang is missing: .ci/run installs it (scripts/install-system-deps.sh)")
    ctx = _context(tmp_path / "ctx")
    assert not list(ctx.rglob("*.o")), "the context must not carry a prebuilt object"
    # The same command setup.py's build hook runs inside `pip wheel .` in the build stage.
    proc = subprocess.run(
        [sys.executable, str(ctx / "bpf_src" / "build.py")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    obj = ctx / "labelwall" / "datapath" / "bpf" / "labelwall.bpf.o"
    assert obj.read_bytes()[:4] == b"\x7fELF"
