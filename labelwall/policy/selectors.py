"""Kubernetes LabelSelector matching, and an inverted label index to select among many owners."""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable, Mapping
from typing import Generic, TypeVar

from labelwall.policy.model import LabelSelector, Operator, Requirement

T = TypeVar("T", bound=Hashable)


def requirement_matches(req: Requirement, labels: Mapping[str, str]) -> bool:
    """One matchExpressions entry, as in k8s.io/apimachinery/pkg/labels.Requirement.Matches.

    "NotIn" and "DoesNotExist" match when the key is absent (the API docs: "NotIn ... the
    label key ... does not exist or its value is not in the set").
    """
    value = labels.get(req.key)
    if req.operator is Operator.IN:
        return value is not None and value in req.values
    if req.operator is Operator.NOT_IN:
        return value is None or value not in req.values
    if req.operator is Operator.EXISTS:
        return value is not None
    return value is None  # DoesNotExist


def matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """matchLabels AND every matchExpressions requirement; the empty selector matches all."""
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    return all(requirement_matches(r, labels) for r in selector.match_expressions)


def selector_keys(selector: LabelSelector) -> frozenset[str]:
    """Every label key a selector looks at (for warnings about excluded keys)."""
    return frozenset(selector.match_labels) | {r.key for r in selector.match_expressions}


class LabelIndex(Generic[T]):
    """Owners (namespaces, identities) indexed by each (key, value) label they carry.

    ``select`` narrows candidates with the rarest ``matchLabels`` pair (or an ``In``
    requirement) before running the full match, so a selector over 1,000 namespaces costs
    a few dict lookups instead of 1,000 evaluations.
    """

    def __init__(self) -> None:
        self._labels: dict[T, Mapping[str, str]] = {}
        self._by_item: dict[tuple[str, str], set[T]] = {}
        self._by_key: dict[str, set[T]] = {}

    def __contains__(self, owner: object) -> bool:
        return owner in self._labels

    def __len__(self) -> int:
        return len(self._labels)

    def labels(self, owner: T) -> Mapping[str, str]:
        return self._labels[owner]

    def owners(self) -> Collection[T]:
        return self._labels.keys()

    def add(self, owner: T, labels: Mapping[str, str]) -> None:
        if owner in self._labels:
            self.remove(owner)
        self._labels[owner] = labels
        for key, value in labels.items():
            self._by_item.setdefault((key, value), set()).add(owner)
            self._by_key.setdefault(key, set()).add(owner)

    def remove(self, owner: T) -> None:
        labels = self._labels.pop(owner, None)
        if labels is None:
            return
        for key, value in labels.items():
            owners = self._by_item[(key, value)]
            owners.discard(owner)
            if not owners:
                del self._by_item[(key, value)]
            by_key = self._by_key[key]
            by_key.discard(owner)
            if not by_key:
                del self._by_key[key]

    def _candidates(self, selector: LabelSelector) -> Iterable[T]:
        best: Iterable[T] | None = None
        best_len = len(self._labels) + 1
        for item in selector.match_labels.items():
            owners = self._by_item.get(item, set())
            if len(owners) < best_len:
                best, best_len = owners, len(owners)
        for req in selector.match_expressions:
            if req.operator is Operator.IN:
                union: set[T] = set()
                for v in req.values:
                    union |= self._by_item.get((req.key, v), set())
                cand: set[T] = union
            elif req.operator is Operator.EXISTS:
                cand = self._by_key.get(req.key, set())
            else:
                continue
            if len(cand) < best_len:
                best, best_len = cand, len(cand)
        return self._labels.keys() if best is None else best

    def select(self, selector: LabelSelector) -> set[T]:
        return {o for o in self._candidates(selector) if matches(selector, self._labels[o])}
