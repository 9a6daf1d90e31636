"""The cluster source keeps a policy's last good version when a newer one fails to parse."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client import ApiClient

from labelwall.cluster import Direction
from labelwall.errors import FieldError
from labelwall.kube.objects import PolicyEntry
from labelwall.kube.source import KubernetesSource
from labelwall.policy.model import LabelSelector, NetworkPolicy


def _policy(name: str) -> NetworkPolicy:
    return NetworkPolicy("x", name, LabelSelector(), frozenset({Direction.INGRESS}))


def _source(monkeypatch: pytest.MonkeyPatch, entries: dict[str, PolicyEntry]) -> KubernetesSource:
    src = KubernetesSource(node="n1", client=ApiClient())
    for r in src._reflectors:
        r.synced.set()
        monkeypatch.setattr(r, "items", lambda: {})
    current: dict[str, Any] = {"entries": entries}
    monkeypatch.setattr(src.policies, "items", lambda: current["entries"])
    return src


def test_an_invalid_new_version_keeps_the_last_good_policy_and_is_only_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = PolicyEntry("x", "deny", "uid1", _policy("deny"))
    src = _source(monkeypatch, {"x/deny": good})
    first = src.snapshot()
    assert first.errors == ()
    assert set(first.state.policies) == {"x/deny"}

    err = FieldError("<api>", None, "NetworkPolicy x/deny", "spec.podSelector", "bad")
    bad = PolicyEntry("x", "deny", "uid1", None, (err,))
    monkeypatch.setattr(src.policies, "items", lambda: {"x/deny": bad})
    second = src.snapshot()
    assert second.errors == ()
    assert second.state.policies["x/deny"] == _policy("deny")
    assert any("spec.podSelector" in w for w in second.warnings)


def test_a_deleted_policy_is_forgotten_even_if_it_was_kept_for_being_invalid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = _source(monkeypatch, {"x/deny": PolicyEntry("x", "deny", "u", _policy("deny"))})
    src.snapshot()
    monkeypatch.setattr(src.policies, "items", lambda: {})
    assert src.snapshot().state.policies == {}
    err = FieldError("<api>", None, "NetworkPolicy x/deny", "spec", "bad")
    monkeypatch.setattr(
        src.policies, "items", lambda: {"x/deny": PolicyEntry("x", "deny", "u", None, (err,))}
    )
    # Never valid since it came back: nothing to keep, reported as a warning.
    snap = src.snapshot()
    assert snap.state.policies == {}
    assert snap.warnings
