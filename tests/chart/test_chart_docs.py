"""Every value is documented (`# --`), listed in the README, and set by ci/full-values.yaml."""

from __future__ import annotations

import yaml

from .chart_helpers import CHART, values_doc

VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)
DOCUMENTED: set[str] = {d.path for d in values_doc.documented_values(VALUES_TEXT)}


def _covered(path: str) -> str | None:
    """The documented key that covers leaf ``path`` (itself or an ancestor)."""
    for doc in DOCUMENTED:
        if path == doc or path.startswith(doc + "."):
            return doc
    return None


def test_every_value_has_a_doc_comment() -> None:
    missing = [p for p in values_doc.leaf_paths(VALUES) if _covered(p) is None]
    assert missing == []


def test_every_documented_value_appears_in_the_readme() -> None:
    readme = (CHART / "README.md").read_text()
    missing = [p for p in sorted(DOCUMENTED) if f"| `{p}` |" not in readme]
    assert missing == []
    assert len(DOCUMENTED) >= 40


def test_readme_table_is_up_to_date() -> None:
    readme = (CHART / "README.md").read_text()
    assert values_doc.render_readme(readme, VALUES_TEXT) == readme, (
        "run python tools/helm/values_doc.py"
    )


def test_full_ci_values_set_every_value() -> None:
    full = yaml.safe_load((CHART / "ci" / "full-values.yaml").read_text())
    full_paths = set(values_doc.leaf_paths(full))
    not_set = [
        doc
        for doc in sorted(DOCUMENTED)
        if not any(p == doc or p.startswith(doc + ".") for p in full_paths)
    ]
    assert not_set == []


def test_doc_parser_reads_multi_line_comments() -> None:
    text = "a:\n  # -- first line\n  # second line\n  b: 1\n  # not a doc\n  c: 2\n"
    docs = values_doc.documented_values(text)
    assert [(d.path, d.description, d.default) for d in docs] == [
        ("a.b", "first line second line", 1)
    ]
