"""The identity registry backed by Identity objects: a claim is a create, 409 decides races.

``IdentityCache`` is the local view (fed from a watch: kopf's index in the operator, a
reflector in the agent) plus an overlay of this process's own writes that the watch has
not delivered yet, so a just-created number is never claimed twice and a just-deleted one
is not reused from a stale view. The cache may be incomplete or stale at any time: a claim
on a number the cache thinks free still goes to the API server, whose create conflict is
the only arbiter. That is what keeps two writers on one label set at one number, and two
label sets hashing to one number at two numbers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kubernetes.client import CustomObjectsApi, V1DeleteOptions, V1Preconditions
from kubernetes.client.exceptions import ApiException

from labelwall.identity.allocator import (
    CLUSTER_RANGE,
    HashFn,
    NumberRange,
    allocate,
    allocation_order,
    default_hash,
)
from labelwall.identity.labels import LabelSet
from labelwall.kube.objects import (
    GROUP,
    PLURAL,
    VERSION,
    IdentityRecord,
    identity_body,
)

#: (connect, read) seconds for every registry request; a hung server must not hang a sync.
DEFAULT_REQUEST_TIMEOUT = (5.0, 30.0)
#: A label set that equals no real one (namespaces are never empty): what get() returns
#: for a number held by a malformed Identity object, so the number counts as taken.
_MALFORMED = LabelSet(namespace="")


def _rv(value: str) -> int:
    # resourceVersion is opaque by contract; every etcd-backed server uses the etcd
    # revision (a decimal integer), which orders writes. Non-numeric: treat as newest.
    try:
        return int(value)
    except ValueError:
        return 1 << 62


@dataclass(frozen=True)
class _Tombstone:
    """This process deleted the object at this resourceVersion; hide older views of it."""

    resource_version: str


class IdentityCache:
    """Thread-safe number <-> label set view of the Identity objects."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._base: dict[int, IdentityRecord] = {}
        self._overlay: dict[int, IdentityRecord | _Tombstone] = {}
        self._view: dict[int, IdentityRecord] = {}
        self._by_labels: dict[LabelSet, int] = {}

    # --- feeding ------------------------------------------------------------------------

    def rebase(self, records: Iterable[IdentityRecord]) -> None:
        """Replace the watched view (a full, consistent list from an index or reflector)."""
        with self._lock:
            self._base = {r.number: r for r in records}
            for n, own in list(self._overlay.items()):
                seen = self._base.get(n)
                if isinstance(own, _Tombstone):
                    if seen is None or _rv(seen.resource_version) > _rv(own.resource_version):
                        del self._overlay[n]  # the watch saw the delete, or a re-create
                elif seen is not None and _rv(seen.resource_version) >= _rv(own.resource_version):
                    del self._overlay[n]  # the watch caught up with our write
            self._rebuild()

    def upsert(self, record: IdentityRecord) -> None:
        """Record an object this process just created or read (newer than the watch)."""
        with self._lock:
            self._overlay[record.number] = record
            self._rebuild()

    def removed(self, number: int, resource_version: str) -> None:
        """Record that this process deleted ``number`` (at ``resource_version``)."""
        with self._lock:
            self._overlay[number] = _Tombstone(resource_version)
            self._rebuild()

    def _rebuild(self) -> None:
        view = dict(self._base)
        for n, own in self._overlay.items():
            if isinstance(own, _Tombstone):
                seen = view.get(n)
                if seen is not None and _rv(seen.resource_version) <= _rv(own.resource_version):
                    del view[n]
            else:
                view[n] = own
        by_labels: dict[LabelSet, int] = {}
        # Two objects with one label set can only come from a lost race of an older
        # version or a manual create; the lowest number wins everywhere, deterministically.
        for n in sorted(view):
            ls = view[n].labelset
            if ls is not None:
                by_labels.setdefault(ls, n)
        self._view = view
        self._by_labels = by_labels

    # --- reading ------------------------------------------------------------------------

    def get(self, number: int) -> IdentityRecord | None:
        with self._lock:
            return self._view.get(number)

    def find(self, labelset: LabelSet) -> int | None:
        with self._lock:
            return self._by_labels.get(labelset)

    def records(self) -> dict[int, IdentityRecord]:
        with self._lock:
            return dict(self._view)

    def published(self) -> dict[LabelSet, int]:
        """Label set -> number for every existing Identity (what an agent may use)."""
        with self._lock:
            return dict(self._by_labels)


def _mapping(obj: object) -> Mapping[str, Any]:
    # The custom-objects API returns decoded JSON (typed as object by the client).
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a JSON object from the API, got {type(obj).__name__}")
    return obj


class KubeIdentityRegistry:
    """``IdentityRegistry`` over Identity objects; safe to use from many threads at once."""

    def __init__(
        self,
        api: CustomObjectsApi,
        cache: IdentityCache | None = None,
        *,
        request_timeout: tuple[float, float] = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        self.api = api
        self.cache = cache if cache is not None else IdentityCache()
        self.request_timeout = request_timeout
        self._lock = threading.Lock()
        #: Creates that found the number taken (by anyone, for any label set).
        self.conflicts = 0
        #: Identity objects this registry created.
        self.created = 0

    # --- IdentityRegistry ---------------------------------------------------------------

    def get(self, number: int) -> LabelSet | None:
        record = self.cache.get(number)
        if record is None:
            return None
        return record.labelset if record.labelset is not None else _MALFORMED

    def find(self, labelset: LabelSet) -> int | None:
        return self.cache.find(labelset)

    def claim(self, number: int, labelset: LabelSet) -> bool:
        """Create Identity ``number`` for ``labelset``; on 409 compare with the holder."""
        # A holder can be deleted (garbage collection) between our 409 and our read; then
        # the number is free again and we try once more. Two rounds are plenty: a third
        # loss means someone is deleting and recreating in a loop, so let the caller probe.
        for _ in range(3):
            try:
                created = self.api.create_cluster_custom_object(
                    GROUP,
                    VERSION,
                    PLURAL,
                    identity_body(number, labelset),
                    _request_timeout=self.request_timeout,
                )
            except ApiException as e:
                if e.status != 409:
                    raise
                with self._lock:
                    self.conflicts += 1
                holder = self.read(number)
                if holder is None:
                    continue
                return holder.labelset == labelset
            record = IdentityRecord.from_object(_mapping(created))
            if record is not None:
                self.cache.upsert(record)
            with self._lock:
                self.created += 1
            return True
        return False

    # --- beyond the protocol ------------------------------------------------------------

    def _remember(self, obj: object) -> IdentityRecord | None:
        """The Identity the server returned, now in the cache (None if it does not parse)."""
        record = IdentityRecord.from_object(_mapping(obj))
        if record is not None:
            self.cache.upsert(record)
        return record

    def read(self, number: int) -> IdentityRecord | None:
        """GET Identity ``number`` fresh from the server (and remember it)."""
        try:
            obj = self.api.get_cluster_custom_object(
                GROUP, VERSION, PLURAL, str(number), _request_timeout=self.request_timeout
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return self._remember(obj)

    def delete(self, record: IdentityRecord) -> bool:
        """Delete exactly this version of the object; False if it changed or is gone."""
        try:
            self.api.delete_cluster_custom_object(
                GROUP,
                VERSION,
                PLURAL,
                str(record.number),
                body=V1DeleteOptions(
                    preconditions=V1Preconditions(
                        uid=record.uid, resource_version=record.resource_version
                    )
                ),
                _request_timeout=self.request_timeout,
            )
        except ApiException as e:
            if e.status in (404, 409):
                return False
            raise
        self.cache.removed(record.number, record.resource_version)
        return True

    def patch_status(self, number: int, status: Mapping[str, Any]) -> IdentityRecord | None:
        """Merge-patch the status subresource; None if the object is gone."""
        try:
            obj = self.api.patch_cluster_custom_object_status(
                GROUP,
                VERSION,
                PLURAL,
                str(number),
                {"status": dict(status)},
                _request_timeout=self.request_timeout,
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return self._remember(obj)

    def list_records(self) -> list[IdentityRecord]:
        """A full LIST (for tools and tests; the operator reads its watch instead)."""
        out = self.api.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, _request_timeout=self.request_timeout
        )
        records = (IdentityRecord.from_object(o) for o in _mapping(out).get("items", []))
        return [r for r in records if r is not None]


def allocate_concurrently(
    labelsets: Iterable[LabelSet],
    registry: KubeIdentityRegistry,
    *,
    workers: int = 8,
    hash_fn: HashFn = default_hash,
    number_range: NumberRange = CLUSTER_RANGE,
) -> dict[LabelSet, int]:
    """``allocate`` for many label sets with ``workers`` requests in flight.

    Each label set is still decided by create conflicts, so concurrency changes only which
    of two colliding label sets gets the lower number, never correctness. Round trips
    dominate allocation (one create each), hence the threads.
    """
    ordered = allocation_order(labelsets, hash_fn)
    if len(ordered) <= 1 or workers <= 1:
        return {
            ls: allocate(ls, registry, hash_fn=hash_fn, number_range=number_range) for ls in ordered
        }
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lw-alloc") as pool:
        numbers = pool.map(
            lambda ls: allocate(ls, registry, hash_fn=hash_fn, number_range=number_range),
            ordered,
        )
        return dict(zip(ordered, numbers, strict=True))
