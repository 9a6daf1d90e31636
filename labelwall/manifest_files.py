"""Read Kubernetes YAML/JSON from files, directories and stdin into SourceDocs.

Shared by the offline commands, the lab and the agent's directory source (so it sits below
all three); decoding the documents into cluster values is ``labelwall/manifests.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from labelwall.errors import FieldError, InvalidInputError
from labelwall.manifests import SourceDoc, expand_lists

STDIN = "-"
#: The file names read as manifests (directories, the lab's watched directory).
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

# libyaml's parser is several times faster than the pure-Python one on large
# `kubectl get -A -o yaml` dumps; the constructor (and our duplicate check) is the same.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):  # type: ignore[misc]  # base chosen at import time
    """SafeLoader that rejects a key repeated in one mapping.

    PyYAML keeps the last value silently; ``kubectl --validate=strict`` calls a duplicate
    field an error, and a repeated ``podSelector`` is exactly the kind of mistake to catch.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: dict[tuple[str, str], yaml.Node] = {}
        for key_node, _ in node.value:
            if (
                not isinstance(key_node, yaml.ScalarNode)
                or key_node.tag == "tag:yaml.org,2002:merge"
            ):
                continue
            ident = (key_node.tag, key_node.value)
            if ident in seen:
                first = seen[ident].start_mark
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"duplicate field {key_node.value!r} (first at line {first.line + 1})",
                    key_node.start_mark,
                )
            seen[ident] = key_node
        result: dict[Hashable, Any] = super().construct_mapping(node, deep)
        return result

    def construct_document(self, node: yaml.Node) -> Any:
        # Where each document starts (1-based), for findings that point at the YAML line.
        self.document_lines.append(node.start_mark.line + 1)
        return super().construct_document(node)


def _load_all(text: str) -> tuple[list[tuple[object, int | None]], yaml.YAMLError | None]:
    """``yaml.load_all`` that also gives the line each document starts on.

    Returns the documents that decoded and the error that stopped it, if any (the failing
    document is the one after the last that decoded).
    """
    loader = _StrictLoader(text)
    loader.document_lines = []
    out: list[tuple[object, int | None]] = []
    try:
        while loader.check_data():
            obj = loader.get_data()
            out.append((obj, loader.document_lines[-1] if loader.document_lines else None))
    except yaml.YAMLError as exc:
        return out, exc
    finally:
        loader.dispose()
    return out, None


def _yaml_error(source: str, index: int | None, exc: yaml.YAMLError) -> FieldError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    # The "field" of a syntax error is its position in the file.
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return FieldError(source, index, "YAML", where, f"syntax error: {problem}")


def _documents(source: str, text: str) -> list[SourceDoc]:
    """Every non-empty document of one file, Lists expanded; InvalidInputError on any error."""
    raw: list[tuple[int, object, int | None]] = []
    if source.endswith(".json"):
        try:
            raw = [(0, json.loads(text), 1)]
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno}, column {exc.colno}"
            err = FieldError(source, 0, "JSON", where, f"syntax error: {exc.msg}")
            raise InvalidInputError([err]) from None
    else:
        loaded, error = _load_all(text)
        if error is not None:
            raise InvalidInputError([_yaml_error(source, len(loaded), error)])
        raw = [(i, doc, line) for i, (doc, line) in enumerate(loaded)]
    docs: list[SourceDoc] = []
    errors: list[FieldError] = []
    for index, obj, line in raw:
        if obj is None:
            continue  # an empty document (`---` twice, or only comments)
        if not isinstance(obj, dict):
            kind = type(obj).__name__
            errors.append(
                FieldError(source, index, "YAML", "", f"a document must be a mapping, got {kind}")
            )
            continue
        for entry in expand_lists(SourceDoc(source, index, obj, line=line)):
            if isinstance(entry, FieldError):
                errors.append(entry)
            else:
                docs.append(entry)
    if errors:
        raise InvalidInputError(errors)
    return docs


def _files(path: str) -> list[str]:
    """``path`` itself, or every manifest file below a directory, in sorted order."""
    if not os.path.isdir(path):
        return [path]
    found = [str(p) for p in Path(path).rglob("*") if p.suffix in MANIFEST_SUFFIXES and p.is_file()]
    return sorted(found)


def read_sources(paths: Sequence[str], stdin: TextIO | None = None) -> list[SourceDoc]:
    """Decode every document of every path (``-`` = ``stdin``); InvalidInputError on any error.

    Directories are read recursively (*.yaml, *.yml, *.json, sorted so results do not depend
    on the file system's order); ``kind: List`` and ``*List`` documents are expanded with
    field paths ``items[N]``. Errors of all files are collected and raised together.
    """
    docs: list[SourceDoc] = []
    errors: list[FieldError] = []
    for path in paths:
        if path == STDIN:
            if stdin is None:
                errors.append(FieldError(STDIN, None, "input", "", "stdin is not available"))
                continue
            sources: list[tuple[str, str | None]] = [(STDIN, stdin.read())]
        else:
            if not os.path.exists(path):
                errors.append(FieldError(path, None, "input", "", "no such file or directory"))
                continue
            sources = [(f, None) for f in _files(path)]
        for source, text in sources:
            try:
                if text is None:
                    text = Path(source).read_text(encoding="utf-8")
                docs.extend(_documents(source, text))
            except InvalidInputError as exc:
                errors.extend(exc.errors)
            except (OSError, UnicodeDecodeError) as exc:
                errors.append(FieldError(source, None, "input", "", f"cannot read: {exc}"))
    if errors:
        raise InvalidInputError(errors)
    return docs
