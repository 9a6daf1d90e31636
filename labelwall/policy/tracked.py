"""A map that records its net changes between two ``take`` calls (the compiler's delta source)."""

from __future__ import annotations

from typing import Generic, TypeVar

from labelwall.policy.mapstate import MapChanges

K = TypeVar("K")
V = TypeVar("V")
_MISSING = object()


class TrackedMap(Generic[K, V]):
    """A dict that remembers the first-seen value of every key touched since ``take``.

    ``take`` returns the net changes: keys set back to their first-seen value are not
    reported, so a delta never carries a no-op write.
    """

    def __init__(self) -> None:
        self.data: dict[K, V] = {}
        self.tracking = False
        self._before: dict[K, object] = {}

    def set(self, key: K, value: V) -> None:
        if self.tracking and key not in self._before:
            self._before[key] = self.data.get(key, _MISSING)
        self.data[key] = value

    def delete(self, key: K) -> None:
        if key not in self.data:
            return
        if self.tracking and key not in self._before:
            self._before[key] = self.data[key]
        del self.data[key]

    def take(self) -> MapChanges[K, V]:
        upserts = {
            k: self.data[k]
            for k, old in self._before.items()
            if k in self.data and self.data[k] != old
        }
        deletes = frozenset(
            k for k, old in self._before.items() if k not in self.data and old is not _MISSING
        )
        self._before = {}
        return MapChanges(upserts, deletes)
