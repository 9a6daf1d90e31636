"""Canonical label sets: exclusion, namespace labels, a stable serialisation that parses back."""

from __future__ import annotations

import subprocess
import sys

import pytest
from builders import ns, pod

from labelwall.cluster import Labels
from labelwall.identity.labels import (
    DEFAULT_EXCLUDE,
    NAMESPACE_LABEL_PREFIX,
    NAMESPACE_NAME_KEY,
    LabelSet,
    LabelSetError,
    parse_canonical,
)


def test_default_exclude_list_matches_the_architecture() -> None:
    assert {
        "pod-template-hash",
        "controller-revision-hash",
        "statefulset.kubernetes.io/pod-name",
        "apps.kubernetes.io/pod-index",
        "batch.kubernetes.io/job-completion-index",
        "pod-template-generation",
    } == DEFAULT_EXCLUDE


def test_excluded_pod_labels_do_not_split_a_workload_into_two_identities() -> None:
    a = pod("x", "a", {"app": "web", "pod-template-hash": "1"})
    b = pod("x", "b", {"app": "web", "pod-template-hash": "2"})
    assert LabelSet.from_pod(a, ns("x")) == LabelSet.from_pod(b, ns("x"))
    assert dict(LabelSet.from_pod(a, ns("x")).pod_labels) == {"app": "web"}


def test_a_custom_exclude_list_replaces_the_default() -> None:
    p = pod("x", "a", {"app": "web", "pod-template-hash": "1", "version": "3"})
    ls = LabelSet.from_pod(p, ns("x"), exclude=["version"])
    assert dict(ls.pod_labels) == {"app": "web", "pod-template-hash": "1"}


def test_namespace_name_and_labels_are_part_of_the_label_set() -> None:
    p = pod("x", "a", {"app": "web"})
    assert LabelSet.from_pod(p, ns("x", team="a")) != LabelSet.from_pod(p, ns("x", team="b"))
    ls = LabelSet.from_pod(p, ns("x", team="a"))
    assert ls.namespace == "x"
    assert dict(ls.namespace_labels) == {"team": "a", "kubernetes.io/metadata.name": "x"}


def test_a_missing_namespace_object_still_gives_the_metadata_name_label() -> None:
    ls = LabelSet.from_pod(pod("y", "a"), None)
    assert dict(ls.namespace_labels) == {"kubernetes.io/metadata.name": "y"}


def test_canonical_form_parses_back_to_an_equal_label_set() -> None:
    ls = LabelSet.from_pod(pod("x", "a", {"app": "wéb", "z": "1"}), ns("x", team="a"))
    assert parse_canonical(ls.canonical()) == ls


def test_canonical_form_ignores_label_insertion_order() -> None:
    a = LabelSet("x", Labels({"a": "1", "b": "2"}), Labels({"t": "1"}))
    b = LabelSet("x", Labels({"b": "2", "a": "1"}), Labels({"t": "1"}))
    assert a.canonical() == b.canonical()
    assert a.digest() == b.digest()


def test_canonical_form_is_stable_across_processes() -> None:
    ls = LabelSet("x", Labels({"app": "web"}), Labels({"team": "a"}))
    code = (
        "from labelwall.identity.labels import LabelSet; from labelwall.cluster import Labels;"
        "print(LabelSet('x', Labels({'app': 'web'}), Labels({'team': 'a'})).digest().hex())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ls.digest().hex()


def test_a_pod_label_cannot_impersonate_another_namespace() -> None:
    spoof = LabelSet("x", Labels({NAMESPACE_NAME_KEY: "kube-system"}))
    real = LabelSet("kube-system", Labels())
    assert spoof.canonical() != real.canonical()


def test_flat_form_puts_namespace_labels_under_the_reserved_prefix() -> None:
    ls = LabelSet("x", Labels({"app": "web"}), Labels({"team": "a"}))
    assert ls.flat() == {
        "app": "web",
        NAMESPACE_LABEL_PREFIX + "team": "a",
        NAMESPACE_NAME_KEY: "x",
    }


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"v":2,"namespace":"x","namespaceLabels":{},"podLabels":{}}',
        '{"v":1,"namespace":"x","namespaceLabels":{},"podLabels":{"a":1}}',
        '{"v":1,"namespace":"x","namespaceLabels":{},"podLabels":{},"extra":1}',
        '{"namespace":"x","v":1,"namespaceLabels":{},"podLabels":{}}',
    ],
)
def test_parse_rejects_anything_but_the_canonical_form(text: str) -> None:
    with pytest.raises(LabelSetError):
        parse_canonical(text)
