"""Generate the chart README's values table from the `# --` comments in values.yaml.

A value is documented by a comment block that starts with `# --` right above its key
(continued by the following `#` lines), as in the cilium chart. The table lists each
documented key with its type and default (from the parsed YAML) between the markers
`<!-- values:begin -->` and `<!-- values:end -->` of charts/labelwall/README.md.

    python tools/helm/values_doc.py           # rewrite the table in the README
    python tools/helm/values_doc.py --check   # exit 1 if the README is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "labelwall"
BEGIN = "<!-- values:begin -->"
END = "<!-- values:end -->"

_KEY = re.compile(r"^(\s*)([A-Za-z0-9_.-]+):(\s|$)")


@dataclass(frozen=True)
class Documented:
    """One documented value: its dotted path, description, and parsed default."""

    path: str
    description: str
    default: Any


def documented_values(values_yaml: str) -> list[Documented]:
    """Every key preceded by a `# --` block, in file order, with its default value."""
    parsed = yaml.safe_load(values_yaml) or {}
    stack: list[tuple[int, str]] = []
    doc: list[str] | None = None
    out: list[Documented] = []
    for line in values_yaml.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            doc = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if doc is not None:
                doc.append(stripped[1:].strip())
            continue
        if not stripped:
            doc = None
            continue
        m = _KEY.match(line)
        if m is None:  # list items and block scalars belong to the key above
            doc = None
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
        if doc is not None:
            path = ".".join(k for _, k in stack)
            out.append(Documented(path, " ".join(p for p in doc if p), _lookup(parsed, path)))
            doc = None
    return out


def leaf_paths(values: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every leaf (non-mapping or empty mapping) in parsed values."""
    if isinstance(values, dict) and values:
        out: list[str] = []
        for k, v in values.items():
            out += leaf_paths(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [prefix]


def _lookup(values: Any, path: str) -> Any:
    for part in path.split("."):
        values = values[part]
    return values


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def table(values_yaml: str) -> str:
    """The Markdown table of every documented value."""
    rows = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for d in documented_values(values_yaml):
        default = json.dumps(d.default, separators=(",", ":")).replace("|", "\\|")
        description = d.description.replace("|", "\\|")
        rows.append(f"| `{d.path}` | {_type(d.default)} | `{default}` | {description} |")
    return "\n".join(rows) + "\n"


def render_readme(readme: str, values_yaml: str) -> str:
    """``readme`` with the text between the markers replaced by the current table."""
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[:start] + "\n" + table(values_yaml) + readme[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the chart README's values table.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the README is stale")
    parser.add_argument("--chart", type=Path, default=CHART)
    args = parser.parse_args(argv)
    readme_path = args.chart / "README.md"
    readme = readme_path.read_text()
    fresh = render_readme(readme, (args.chart / "values.yaml").read_text())
    if args.check:
        if fresh != readme:
            print(f"{readme_path} is stale: run python tools/helm/values_doc.py", file=sys.stderr)
            return 1
        return 0
    readme_path.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
