"""What tools/e2e/upstream.py selects from the upstream e2e.test, checked by a ginkgo dry run
(no cluster): the full run is the 47 Netpol specs this kernel can run (SCTP connectivity
skipped), and every line of the CI subset selects exactly one spec, 10 in all.

    make node-tools && .venv/bin/pytest tests/tools/test_e2e_selection.py
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
NODE_BUILD = REPO / "tools" / "node" / "build.sh"
#: Netpol (45 specs) + Netpol API (2) in k8s.io/kubernetes v1.33.13, minus 3 SCTP specs.
FULL_COUNT = 47
SUBSET_COUNT = 10


def _load_upstream() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lw_upstream", REPO / "tools/e2e/upstream.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


upstream = _load_upstream()


@pytest.fixture(scope="module")
def node_dir() -> Path:
    out = subprocess.run(
        ["bash", str(NODE_BUILD), "--print-dir"], capture_output=True, text=True, check=True
    ).stdout
    directory = Path(out.strip().splitlines()[-1])
    missing = [b for b in ("e2e.test", "ginkgo") if not (directory / b).is_file()]
    if missing:
        pytest.fail(f"{missing} missing in {directory}: run `make node-tools`", pytrace=False)
    return directory


def _dry_run(node_dir: Path, tmp_path: Path, subset: bool) -> list[str]:
    """The full texts of the specs ginkgo would run with upstream.py's exact command."""
    cmd: list[str] = upstream.ginkgo_command(
        str(node_dir / "ginkgo"), str(node_dir / "e2e.test"), "/nonexistent/kubeconfig",
        tmp_path, 1, subset,
    )  # fmt: skip
    cmd.insert(1, "--dry-run")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    suites: list[dict[str, Any]] = json.loads((tmp_path / "ginkgo.json").read_text())
    names = []
    for suite in suites:
        for spec in suite.get("SpecReports") or []:
            if spec.get("LeafNodeType") == "It" and spec.get("State") == "passed":
                texts = [*spec.get("ContainerHierarchyTexts", []), spec["LeafNodeText"]]
                names.append(" ".join(texts))
    return names


@pytest.mark.slow
def test_full_selection_is_every_netpol_spec_but_sctp(node_dir: Path, tmp_path: Path) -> None:
    names = _dry_run(node_dir, tmp_path, subset=False)
    assert len(names) == FULL_COUNT, "\n".join(sorted(names))
    assert all("Netpol" in n for n in names)
    assert not [n for n in names if "using SCTP" in n]


@pytest.mark.slow
def test_subset_lines_each_select_one_spec(node_dir: Path, tmp_path: Path) -> None:
    lines = upstream.subset_specs()
    assert len(lines) == SUBSET_COUNT
    names = _dry_run(node_dir, tmp_path, subset=True)
    assert len(names) == SUBSET_COUNT, "\n".join(sorted(names))
    for line in lines:
        hits = [n for n in names if line in n]
        assert len(hits) == 1, f"{line!r} selects {hits}"


def test_go_regex_escape_leaves_letters_and_escapes_punctuation() -> None:
    assert upstream.go_regex_escape("a 'b' (c) [d].") == r"a 'b' \(c\) \[d\]\."
    assert upstream.focus_args(False) == ["--focus=Netpol"]
    assert len(upstream.focus_args(True)) == SUBSET_COUNT


def test_summarize_counts_only_its_and_names_failures(tmp_path: Path) -> None:
    def spec(text: str, state: str, kind: str = "It") -> dict[str, Any]:
        return {
            "ContainerHierarchyTexts": ["[sig-network] Netpol", "ctx"],
            "LeafNodeText": text, "LeafNodeType": kind, "State": state,
        }  # fmt: skip

    report = [
        {"SpecReports": [spec("a", "passed"), spec("b", "failed"), spec("c", "skipped"),
                         spec("setup", "passed", "SynchronizedBeforeSuite"), spec("d", "timedout")]}
    ]  # fmt: skip
    (tmp_path / "r.json").write_text(json.dumps(report))
    s = upstream.summarize(tmp_path / "r.json")
    assert (s["selected"], s["passed"], s["failed"]) == (4 - 1, 1, 2)
    assert s["failed_specs"] == [
        "[sig-network] Netpol ctx b [failed]",
        "[sig-network] Netpol ctx d [timedout]",
    ]
