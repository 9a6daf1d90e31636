"""LabelSelector matching per Kubernetes, and the label index that narrows candidates."""

from __future__ import annotations

import pytest
from builders import req, sel
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import label_selector_matches
from strategies import VALUES, labels_st, selectors

from labelwall.cluster import Labels
from labelwall.policy.model import LabelSelector
from labelwall.policy.selectors import LabelIndex, matches, selector_keys


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        (sel(), {}, True),
        (sel(), {"app": "a"}, True),
        (sel({"app": "a"}), {"app": "a", "x": "y"}, True),
        (sel({"app": "a"}), {"app": "b"}, False),
        (sel({"app": "a"}), {}, False),
        (sel(None, req("app", "In", "a", "b")), {"app": "b"}, True),
        (sel(None, req("app", "In", "a")), {}, False),
        (sel(None, req("app", "NotIn", "a")), {}, True),
        (sel(None, req("app", "NotIn", "a")), {"app": "a"}, False),
        (sel(None, req("app", "NotIn", "a")), {"app": "b"}, True),
        (sel(None, req("app", "Exists")), {"app": ""}, True),
        (sel(None, req("app", "Exists")), {}, False),
        (sel(None, req("app", "DoesNotExist")), {}, True),
        (sel(None, req("app", "DoesNotExist")), {"app": "a"}, False),
        (sel({"app": "a"}, req("tier", "Exists")), {"app": "a"}, False),
        (sel({"app": "a"}, req("tier", "Exists")), {"app": "a", "tier": "x"}, True),
    ],
)
def test_selector_matching_follows_kubernetes(
    selector: LabelSelector, labels: dict[str, str], expected: bool
) -> None:
    assert matches(selector, Labels(labels)) is expected


def test_selector_keys_lists_every_key_looked_at() -> None:
    assert selector_keys(sel({"a": "1"}, req("b", "Exists"))) == {"a", "b"}


@settings(max_examples=200, deadline=None)
@given(selectors(), labels_st)
def test_matching_agrees_with_the_reference_evaluator(
    selector: LabelSelector, labels: dict[str, str]
) -> None:
    assert matches(selector, labels) == label_selector_matches(selector, labels)


@settings(max_examples=150, deadline=None)
@given(selectors(), st.lists(labels_st, max_size=8), st.sets(st.integers(0, 7)))
def test_index_selects_exactly_the_matching_owners(
    selector: LabelSelector, owners: list[dict[str, str]], removed: set[int]
) -> None:
    idx: LabelIndex[int] = LabelIndex()
    for i, labels in enumerate(owners):
        idx.add(i, Labels(labels))
    for i in removed:
        idx.remove(i)
    live = {i for i in range(len(owners)) if i not in removed}
    assert idx.select(selector) == {i for i in live if matches(selector, owners[i])}


def test_index_re_adding_an_owner_replaces_its_labels() -> None:
    idx: LabelIndex[str] = LabelIndex()
    idx.add("x", Labels({"team": VALUES[0]}))
    idx.add("x", Labels({"team": VALUES[1]}))
    assert idx.select(sel({"team": VALUES[0]})) == set()
    assert idx.select(sel({"team": VALUES[1]})) == {"x"}
