"""Shared helpers of the chart tests: paths, the tools/helm modules, and cached renders."""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "labelwall"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))


def _load(name: str, path: Path) -> ModuleType:
    # tools/helm is not a package (it is not shipped); load its modules by path.
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


render = _load("lw_helm_render", REPO / "tools" / "helm" / "render.py")
values_doc = _load("lw_helm_values_doc", REPO / "tools" / "helm" / "values_doc.py")

Docs = list[dict[str, Any]]


@cache
def template_cached(values_files: tuple[str, ...], set_values: tuple[str, ...]) -> Docs:
    """render.template, cached: the same inputs render once per session."""
    docs: Docs = render.template(values_files, set_values)
    return docs
