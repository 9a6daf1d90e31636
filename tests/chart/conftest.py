"""Fixtures for the Helm chart tests: the helm binary and cached renders of the chart."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from .chart_helpers import CHART, Docs, render, template_cached


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of helm; fails (never skips) with how to build it when it is missing."""
    try:
        path: str = render.helm_path()
    except render.HelmMissingError as e:
        pytest.fail(f"{e} (CI: .ci/run must run `bash tools/helm/build.sh` first)")
    return path


@pytest.fixture(scope="session")
def rendered(helm: str) -> Callable[..., Docs]:
    """rendered(values_files=(), set_values=()) -> the parsed manifests (cached per input)."""

    def _render(values_files: Sequence[str | Path] = (), set_values: Sequence[str] = ()) -> Docs:
        return template_cached(tuple(str(f) for f in values_files), tuple(set_values))

    return _render


@pytest.fixture(scope="session")
def default_docs(rendered: Callable[..., Docs]) -> Docs:
    return rendered()


@pytest.fixture(scope="session")
def full_docs(rendered: Callable[..., Docs]) -> Docs:
    return rendered([CHART / "ci" / "full-values.yaml"])
