"""Reading manifests from files, directories and stdin: documents, lists, syntax errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from labelwall.errors import FieldError, InvalidInputError
from labelwall.manifest_files import read_sources
from labelwall.manifests import SourceDoc, load_cluster

NS = "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {}}}\n"


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def errors_of(paths: list[str], stdin: io.StringIO | None = None) -> list[FieldError]:
    with pytest.raises(InvalidInputError) as info:
        read_sources(paths, stdin)
    return info.value.errors


def test_multi_document_file_skips_empty_documents_but_keeps_their_index(tmp_path: Path) -> None:
    f = write(
        tmp_path / "a.yaml",
        "# header\n" + NS.format("a") + "---\n---\n# only a comment\n---\n" + NS.format("b"),
    )
    assert [(d.source, d.index, d.obj["metadata"]["name"], d.path) for d in read_sources([f])] == [
        (f, 0, "a", ""),
        (f, 3, "b", ""),
    ]


def test_list_documents_are_expanded_with_item_paths(tmp_path: Path) -> None:
    text = """\
apiVersion: v1
kind: NamespaceList
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: a}}
- {apiVersion: v1, kind: Namespace, metadata: {name: b}}
"""
    f = write(tmp_path / "list.yaml", text)
    assert [(d.index, d.path, d.obj["metadata"]["name"]) for d in read_sources([f])] == [
        (0, "items[0]", "a"),
        (0, "items[1]", "b"),
    ]


def test_directories_are_read_recursively_in_sorted_order(tmp_path: Path) -> None:
    write(tmp_path / "b" / "z.yml", NS.format("bz"))
    write(tmp_path / "b" / "a" / "deep.yaml", NS.format("bad"))
    write(
        tmp_path / "a.json",
        json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "aj"}}),
    )
    write(tmp_path / "README.md", "not yaml: [")
    names = [d.obj["metadata"]["name"] for d in read_sources([str(tmp_path)])]
    assert names == ["aj", "bad", "bz"]


def test_stdin_is_read_for_dash() -> None:
    docs = read_sources(["-"], io.StringIO(NS.format("s") + "---\n" + NS.format("t")))
    assert [(d.source, d.index, d.obj["metadata"]["name"]) for d in docs] == [
        ("-", 0, "s"),
        ("-", 1, "t"),
    ]


def test_yaml_syntax_error_names_file_document_and_line(tmp_path: Path) -> None:
    f = write(tmp_path / "bad.yaml", NS.format("a") + "---\nkind: Pod\nmetadata: {name: a}}\n")
    (error,) = errors_of([f])
    assert (error.source, error.index, error.obj) == (f, 1, "YAML")
    assert error.field == "line 6, column 20"
    assert error.message.startswith("syntax error:")


def test_json_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    f = write(tmp_path / "bad.json", '{\n  "kind": "Pod",\n}\n')
    (error,) = errors_of([f])
    assert (error.source, error.field) == (f, "line 3, column 1")


def test_repeated_key_is_a_syntax_error_naming_both_lines(tmp_path: Path) -> None:
    text = """\
kind: NetworkPolicy
spec:
  podSelector: {}
  podSelector: {matchLabels: {app: a}}
"""
    f = write(tmp_path / "dup.yaml", text)
    (error,) = errors_of([f])
    assert error.field == "line 4, column 3"
    assert "duplicate field 'podSelector' (first at line 3)" in error.message


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    text = "base: &b {a: 1}\nitem:\n  <<: *b\n  a: 2\n"
    f = write(tmp_path / "merge.yaml", text)
    assert read_sources([f])[0].obj["item"] == {"a": 2}


def test_missing_file_is_invalid_input_and_other_files_still_report(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", "a: [\n")
    errors = errors_of([str(tmp_path / "nope.yaml"), bad])
    assert (errors[0].source, errors[0].message) == (
        str(tmp_path / "nope.yaml"),
        "no such file or directory",
    )
    assert errors[1].source == bad


def test_document_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    f = write(tmp_path / "s.yaml", NS.format("a") + "---\n- just\n- a list\n")
    (error,) = errors_of([f])
    assert (error.index, error.message) == (1, "a document must be a mapping, got list")


def test_files_and_stdin_feed_one_cluster(tmp_path: Path) -> None:
    pol = (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: p, namespace: a}\nspec: {podSelector: {}}\n"
    )
    f = write(tmp_path / "ns.yaml", NS.format("a"))
    docs = read_sources([f, "-"], io.StringIO(pol))
    state = load_cluster(docs).state
    assert sorted(state.namespaces) == ["a"]
    assert sorted(state.policies) == ["a/p"]
    assert all(isinstance(d, SourceDoc) for d in docs)
