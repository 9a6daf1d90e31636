"""Text renderings for the CLI: kubectl-style tables and cyclonus-style reachability grids."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from labelwall.errors import FieldError


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A kubectl-like table: upper-case headers, columns padded by three spaces."""
    body = [[str(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in body:
        widths = [max(w, len(c)) for w, c in zip(widths, r, strict=True)]
    lines = ["   ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table (for a pull-request comment); ``|`` escaped."""

    def cell(v: object) -> str:
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def grid(
    title: str,
    pods: Sequence[str],
    allowed: Mapping[tuple[str, str], bool | None],
    columns: Sequence[str] | None = None,
) -> str:
    """One truth table in cyclonus' style: rows are sources, columns destinations.

    ``.`` allowed, ``X`` blocked, ``-`` not probed (e.g. the destination lacks a named port).
    ``columns`` defaults to ``pods`` (a square table).
    """
    cols = pods if columns is None else columns
    width = max([len(title)] + [len(p) for p in pods])
    sep = "+-" + "-" * width + "-+" + "".join("-" * (len(p) + 2) + "+" for p in cols)
    head = "| " + title.ljust(width) + " |" + "".join(f" {p.upper()} |" for p in cols)
    out = [sep, head, sep]
    for src in pods:
        cells = []
        for dst in cols:
            v = allowed.get((src, dst))
            mark = "-" if v is None else ("." if v else "X")
            cells.append(" " + mark.center(len(dst)) + " |")
        out.append("| " + src.ljust(width) + " |" + "".join(cells))
    out.append(sep)
    return "\n".join(out)


def grid_rows(title: str, names: Sequence[str], rows: Sequence[str], columns: Sequence[str]) -> str:
    """``grid`` from rows already rendered, one character per column (``.``, ``X``, ``-``)."""
    width = max([len(title)] + [len(p) for p in names])
    sep = "+-" + "-" * width + "-+" + "".join("-" * (len(p) + 2) + "+" for p in columns)
    head = "| " + title.ljust(width) + " |" + "".join(f" {p.upper()} |" for p in columns)
    out = [sep, head, sep]
    widths = [len(c) for c in columns]
    for src, row in zip(names, rows, strict=True):
        cells = "".join(" " + ch.center(w) + " |" for ch, w in zip(row, widths, strict=True))
        out.append("| " + src.ljust(width) + " |" + cells)
    out.append(sep)
    return "\n".join(out)


class OutputFormatError(ValueError):
    """An output format no command offers (argparse ``choices`` keep users from it)."""


def dump(obj: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(obj, indent=2, sort_keys=False)
    if fmt == "yaml":
        return str(yaml.safe_dump(obj, sort_keys=False))
    raise OutputFormatError(f"unknown output format {fmt!r}")


def error_object(err: FieldError) -> dict[str, Any]:
    """One input error as the JSON/YAML outputs carry it (``document`` null: not in a file)."""
    return {
        "file": err.source,
        "document": err.index,
        "object": err.obj,
        "field": err.field,
        "line": err.line,
        "message": err.message,
    }
