"""Identity numbers by stable hash with linear probing, behind a registry interface.

A label set's preferred number is ``lo + hash mod (hi - lo + 1)``; when that number is held
by another label set the allocator probes the next one (wrapping). With ~10k label sets in
2^24 slots a collision is more likely than not, so probing is a normal path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from labelwall.cluster import IPNetwork
from labelwall.identity import numbers
from labelwall.identity.labels import LabelSet


class IdentitySpaceExhaustedError(Exception):
    """Every number of the range is held by another label set."""


class IdentityRegistry(Protocol):
    """Where numbers are claimed. The Kubernetes one is the Identity custom resource."""

    def get(self, number: int) -> LabelSet | None:
        """The label set holding ``number``, or None when it is free."""
        ...

    def claim(self, number: int, labelset: LabelSet) -> bool:
        """Claim ``number`` for ``labelset``; False when another label set already holds it.

        Claiming a number already held by an equal label set succeeds (idempotent), like a
        create that finds its own object. Create-conflict semantics decide races.
        """
        ...

    def find(self, labelset: LabelSet) -> int | None:
        """The number ``labelset`` already holds, if any."""
        ...


class InMemoryRegistry:
    """A registry in two dicts, for the CLI, tests and the compiler's default."""

    def __init__(self) -> None:
        self._by_number: dict[int, LabelSet] = {}
        self._by_labels: dict[LabelSet, int] = {}

    def get(self, number: int) -> LabelSet | None:
        return self._by_number.get(number)

    def claim(self, number: int, labelset: LabelSet) -> bool:
        held = self._by_number.get(number)
        if held is not None:
            return held == labelset
        self._by_number[number] = labelset
        self._by_labels.setdefault(labelset, number)
        return True

    def find(self, labelset: LabelSet) -> int | None:
        return self._by_labels.get(labelset)

    def release(self, number: int) -> None:
        """Forget ``number`` (garbage collection of an unused identity)."""
        held = self._by_number.pop(number, None)
        if held is not None and self._by_labels.get(held) == number:
            del self._by_labels[held]

    def items(self) -> Mapping[int, LabelSet]:
        return dict(self._by_number)


class PublishedRegistry:
    """A read-only registry over the Identity objects that exist (Kubernetes mode).

    The compiler treats a label set this registry does not know as not published yet:
    its pods get the reserved ``init`` identity (see ``policy/compile.py``).
    """

    def __init__(self, published: Mapping[LabelSet, int] | None = None) -> None:
        self.by_labels: dict[LabelSet, int] = {}
        self.by_number: dict[int, LabelSet] = {}
        self.set(published or {})

    def set(self, published: Mapping[LabelSet, int]) -> None:
        self.by_labels = dict(published)
        self.by_number = {n: ls for ls, n in published.items()}

    def get(self, number: int) -> LabelSet | None:
        return self.by_number.get(number)

    def claim(self, number: int, labelset: LabelSet) -> bool:
        return self.by_labels.get(labelset) == number

    def find(self, labelset: LabelSet) -> int | None:
        return self.by_labels.get(labelset)


HashFn = Callable[[LabelSet], int]


def default_hash(labelset: LabelSet) -> int:
    """First 8 bytes of sha256(canonical form), big-endian."""
    return int.from_bytes(labelset.digest()[:8], "big")


@dataclass(frozen=True)
class NumberRange:
    """Inclusive bounds; tests inject a tiny range to force collisions."""

    lo: int = numbers.CLUSTER_MIN
    hi: int = numbers.CLUSTER_MAX

    @property
    def size(self) -> int:
        return self.hi - self.lo + 1


CLUSTER_RANGE = NumberRange()


def allocate(
    labelset: LabelSet,
    registry: IdentityRegistry,
    *,
    hash_fn: HashFn = default_hash,
    number_range: NumberRange = CLUSTER_RANGE,
) -> int:
    """The number of ``labelset``: the one it holds, else the first free one from its hash."""
    held = registry.find(labelset)
    if held is not None:
        return held
    start = hash_fn(labelset) % number_range.size
    for step in range(number_range.size):
        n = number_range.lo + (start + step) % number_range.size
        owner = registry.get(n)
        if owner == labelset:
            return n
        # A claim can still lose a race to another allocator between get() and claim():
        # then the number is someone else's and we probe on.
        if owner is None and registry.claim(n, labelset):
            return n
    raise IdentitySpaceExhaustedError(
        f"no free number in {number_range.lo}..{number_range.hi} for {labelset}"
    )


def allocation_order(
    labelsets: Iterable[LabelSet], hash_fn: HashFn = default_hash
) -> list[LabelSet]:
    """Canonical processing order (hash, canonical string): input order never matters."""
    return sorted(set(labelsets), key=lambda ls: (hash_fn(ls), ls.canonical()))


def allocate_all(
    labelsets: Iterable[LabelSet],
    registry: IdentityRegistry,
    *,
    hash_fn: HashFn = default_hash,
    number_range: NumberRange = CLUSTER_RANGE,
) -> dict[LabelSet, int]:
    """Numbers for many label sets; on an empty registry the result depends only on the set."""
    return {
        ls: allocate(ls, registry, hash_fn=hash_fn, number_range=number_range)
        for ls in allocation_order(labelsets, hash_fn)
    }


LOCAL_RANGE = NumberRange(numbers.LOCAL_MIN, numbers.LOCAL_MAX)


def prefix_hash(prefix: IPNetwork) -> int:
    return int.from_bytes(hashlib.sha256(str(prefix).encode("ascii")).digest()[:8], "big")


def allocate_local(
    prefixes: Iterable[IPNetwork],
    *,
    hash_fn: Callable[[IPNetwork], int] = prefix_hash,
    number_range: NumberRange = LOCAL_RANGE,
) -> dict[IPNetwork, int]:
    """Node-local CIDR identities: hash + probe in (hash, text) order, a function of the set.

    These are never published in the registry; every node derives the same numbers from
    the same policies.
    """
    taken: set[int] = set()
    out: dict[IPNetwork, int] = {}
    for prefix in sorted(set(prefixes), key=lambda p: (hash_fn(p), p.version, str(p))):
        start = hash_fn(prefix) % number_range.size
        for step in range(number_range.size):
            n = number_range.lo + (start + step) % number_range.size
            if n not in taken:
                taken.add(n)
                out[prefix] = n
                break
        else:
            raise IdentitySpaceExhaustedError(f"no free local identity for {prefix}")
    return out
