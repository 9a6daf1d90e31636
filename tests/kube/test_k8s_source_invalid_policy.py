"""The cluster source keeps a policy's last good version when a newer one fails to parse.

Pure: ``build_snapshot`` is what ``KubernetesSource.snapshot`` runs on its watches' items.
"""

from __future__ import annotations

from collections.abc import Mapping

from labelwall.cluster import Direction
from labelwall.errors import FieldError
from labelwall.kube.objects import PolicyEntry
from labelwall.kube.snapshot import Listed, build_snapshot, keep_last_good
from labelwall.policy.model import LabelSelector, NetworkPolicy
from labelwall.source import SourceSnapshot


def _policy(name: str) -> NetworkPolicy:
    return NetworkPolicy("x", name, LabelSelector(), frozenset({Direction.INGRESS}))


class _Source:
    """The snapshot half of the cluster source: its policies' watch replaced by a dict."""

    def __init__(self, entries: Mapping[str, PolicyEntry]) -> None:
        self.entries = entries
        self.last_good: dict[str, NetworkPolicy] = {}

    def snapshot(self) -> SourceSnapshot:
        listed = Listed({}, {}, {}, {}, self.entries, {})
        snap, self.last_good = build_snapshot("n1", listed, self.last_good, 0)
        return snap


def test_an_invalid_new_version_keeps_the_last_good_policy_and_is_only_a_warning() -> None:
    good = PolicyEntry("x", "deny", "uid1", _policy("deny"))
    src = _Source({"x/deny": good})
    first = src.snapshot()
    assert first.errors == ()
    assert set(first.state.policies) == {"x/deny"}

    err = FieldError("<api>", None, "NetworkPolicy x/deny", "spec.podSelector", "bad")
    bad = PolicyEntry("x", "deny", "uid1", None, (err,))
    src.entries = {"x/deny": bad}
    second = src.snapshot()
    assert second.errors == ()
    assert second.state.policies["x/deny"] == _policy("deny")
    assert any("spec.podSelector" in w for w in second.warnings)


def test_a_deleted_policy_is_forgotten_even_if_it_was_kept_for_being_invalid() -> None:
    src = _Source({"x/deny": PolicyEntry("x", "deny", "u", _policy("deny"))})
    src.snapshot()
    src.entries = {}
    assert src.snapshot().state.policies == {}
    err = FieldError("<api>", None, "NetworkPolicy x/deny", "spec", "bad")
    src.entries = {"x/deny": PolicyEntry("x", "deny", "u", None, (err,))}
    # Never valid since it came back: nothing to keep, reported as a warning.
    snap = src.snapshot()
    assert snap.state.policies == {}
    assert snap.warnings


def test_keep_last_good_takes_the_newest_version_that_parsed() -> None:
    old, new = _policy("a"), NetworkPolicy("x", "a", LabelSelector(), frozenset(Direction))
    err = FieldError("<api>", None, "NetworkPolicy x/a", "spec", "bad")
    assert keep_last_good({"x/a": PolicyEntry("x", "a", "u", new)}, {"x/a": old}) == {"x/a": new}
    assert keep_last_good({"x/a": PolicyEntry("x", "a", "u", None, (err,))}, {"x/a": old}) == {
        "x/a": old
    }
    assert keep_last_good({}, {"x/a": old}) == {}
