"""Render the labelwall chart with helm and pick objects out of it (for tests and humans).

Library use (tests load this file by path, it is not part of the installed package)::

    docs = template(values_files=["charts/labelwall/ci/full-values.yaml"])
    rules = cluster_role_rules(docs, "operator")

Command line (what the operator and full-stack tests can shell out to)::

    python tools/helm/render.py rbac operator      # the operator ClusterRole's rules, JSON
    python tools/helm/render.py rbac agent
    python tools/helm/render.py manifests [-f values.yaml] [--set k=v]   # all manifests
    python tools/helm/render.py config             # the rendered config.yaml

helm is found as $LABELWALL_HELM, else the binary tools/helm/build.sh builds (its cache),
else `helm` on PATH; if none exists, HelmMissingError says how to build it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "labelwall"
BUILD_SCRIPT = REPO / "tools" / "helm" / "build.sh"
DEFAULT_RELEASE = "labelwall"
DEFAULT_NAMESPACE = "labelwall-system"


class HelmMissingError(RuntimeError):
    """No helm binary: say exactly how to get one."""


class HelmFailedError(RuntimeError):
    """helm exited non-zero; the message carries its stderr."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"{' '.join(args)} exited {returncode}:\n{stderr}")


def helm_path() -> str:
    """The helm binary to use (see the module docstring for the search order)."""
    explicit = os.environ.get("LABELWALL_HELM")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise HelmMissingError(f"LABELWALL_HELM={explicit} is not an executable file")
        return explicit
    cached = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-path"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if cached and os.access(cached, os.X_OK):
        return cached
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    raise HelmMissingError(
        "helm not found: build it from source with `bash tools/helm/build.sh` "
        f"(expected at {cached}), or set LABELWALL_HELM=/path/to/helm"
    )


def run_helm(args: Sequence[str]) -> str:
    """Run helm with ``args``; return stdout or raise HelmFailedError with stderr."""
    cmd = [helm_path(), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise HelmFailedError(cmd, proc.returncode, proc.stderr)
    return proc.stdout


def template_text(
    values_files: Sequence[str | Path] = (),
    set_values: Sequence[str] = (),
    *,
    release: str = DEFAULT_RELEASE,
    namespace: str = DEFAULT_NAMESPACE,
    chart: Path = CHART,
    include_crds: bool = True,
) -> str:
    """`helm template` output as text."""
    args = ["template", release, str(chart), "--namespace", namespace]
    if include_crds:
        args.append("--include-crds")
    for f in values_files:
        args += ["--values", str(f)]
    for s in set_values:
        args += ["--set", s]
    return run_helm(args)


def template(
    values_files: Sequence[str | Path] = (),
    set_values: Sequence[str] = (),
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """`helm template` output parsed into a list of objects (empty documents dropped)."""
    text = template_text(values_files, set_values, **kwargs)
    return [d for d in yaml.safe_load_all(text) if d]


def find(docs: Sequence[dict[str, Any]], kind: str, component: str | None = None) -> list[Any]:
    """Objects of ``kind``, optionally only the ones labelled with ``component``."""
    out = []
    for d in docs:
        if d.get("kind") != kind:
            continue
        labels = d.get("metadata", {}).get("labels", {}) or {}
        if component is None or labels.get("app.kubernetes.io/component") == component:
            out.append(d)
    return out


def one(docs: Sequence[dict[str, Any]], kind: str, component: str | None = None) -> Any:
    """The single object of ``kind`` (and ``component``); error if not exactly one."""
    found = find(docs, kind, component)
    if len(found) != 1:
        raise LookupError(f"expected one {kind} ({component}), found {len(found)}")
    return found[0]


def cluster_role_rules(docs: Sequence[dict[str, Any]], component: str) -> list[dict[str, Any]]:
    """The rules of the ClusterRole for ``component`` ("operator" or "agent")."""
    rules: list[dict[str, Any]] = one(docs, "ClusterRole", component)["rules"]
    return rules


def config_text(docs: Sequence[dict[str, Any]]) -> str:
    """The config.yaml the ConfigMap carries (what both processes read)."""
    text: str = one(docs, "ConfigMap", "config")["data"]["config.yaml"]
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("manifests", "config", "rbac"):
        p = sub.add_parser(name)
        if name == "rbac":
            p.add_argument("component", choices=["operator", "agent"])
        p.add_argument("-f", "--values", action="append", default=[])
        p.add_argument("--set", action="append", default=[])
        p.add_argument("--namespace", default=DEFAULT_NAMESPACE)
        p.add_argument("--release", default=DEFAULT_RELEASE)
    args = parser.parse_args(argv)
    kw = {"release": args.release, "namespace": args.namespace}
    try:
        if args.what == "manifests":
            sys.stdout.write(template_text(args.values, args.set, **kw))
            return 0
        docs = template(args.values, args.set, **kw)
    except (HelmMissingError, HelmFailedError) as e:
        print(e, file=sys.stderr)
        return 2
    if args.what == "config":
        sys.stdout.write(config_text(docs))
    else:
        json.dump(cluster_role_rules(docs, args.component), sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
