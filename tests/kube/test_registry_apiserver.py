"""KubeIdentityRegistry against the real API server: concurrent writers race on creates."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

import pytest
from kubernetes.client import ApiClient, CustomObjectsApi

from labelwall.cluster import Labels
from labelwall.identity.allocator import NumberRange, allocate
from labelwall.identity.labels import LabelSet
from labelwall.kube.client import api_client
from labelwall.kube.registry import KubeIdentityRegistry, allocate_concurrently
from labelwall.testenv import TestEnv

pytestmark = pytest.mark.apiserver

WRITERS = 8


@pytest.fixture
def client(crds: TestEnv) -> Iterator[ApiClient]:
    c = api_client(str(crds.kubeconfig))
    try:
        yield c
    finally:
        c.close()  # type: ignore[no-untyped-call]


def _labelset(ns: str, app: str) -> LabelSet:
    return LabelSet(ns, Labels({"app": app}), Labels({"kubernetes.io/metadata.name": ns}))


def _race(writers: int, work: Callable[[int], int]) -> list[int]:
    """Run ``work(i)`` in ``writers`` threads released at the same instant."""
    barrier = threading.Barrier(writers)
    results: list[int | BaseException] = [0] * writers

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except BaseException as e:  # reported below, with the thread's result slot
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    return [r for r in results if isinstance(r, int)]


def _objects_of(api: CustomObjectsApi, ns: str) -> list[dict[str, object]]:
    out = api.list_cluster_custom_object(
        "labelwall.io", "v1alpha1", "identities", label_selector=f"labelwall.io/namespace={ns}"
    )
    assert isinstance(out, dict)
    items: list[dict[str, object]] = out["items"]
    return items


def test_writers_racing_on_one_label_set_all_end_with_one_number_and_one_object(
    client: ApiClient, fresh_ns: Callable[[str], str]
) -> None:
    ns = fresh_ns("reg-same")
    ls = _labelset(ns, "web")
    api = CustomObjectsApi(client)
    # Each writer has its own registry and empty cache: nothing but the server arbitrates.
    registries = [KubeIdentityRegistry(api) for _ in range(WRITERS)]

    numbers = _race(WRITERS, lambda i: allocate(ls, registries[i]))

    assert len(set(numbers)) == 1
    assert len(_objects_of(api, ns)) == 1
    assert sum(r.created for r in registries) == 1
    assert sum(r.conflicts for r in registries) == WRITERS - 1


def test_label_sets_racing_for_one_hash_all_get_distinct_numbers(
    client: ApiClient, fresh_ns: Callable[[str], str]
) -> None:
    ns = fresh_ns("reg-collide")
    api = CustomObjectsApi(client)
    registries = [KubeIdentityRegistry(api) for _ in range(WRITERS)]
    sets = [_labelset(ns, f"app{i}") for i in range(WRITERS)]
    # Every label set hashes to the same slot of a small range near the top of the number
    # space (per-process offset, so reruns against one server do not meet old objects).
    base = 16_000_000 + (os.getpid() % 5000) * 100
    window = NumberRange(base, base + 99)

    numbers = _race(
        WRITERS,
        lambda i: allocate(sets[i], registries[i], hash_fn=lambda _ls: 0, number_range=window),
    )

    assert sorted(numbers) == list(range(base, base + WRITERS))
    objects = _objects_of(api, ns)
    assert len(objects) == WRITERS
    # Each number's object holds the label set that was told it owns that number.
    held = {int(str(o["metadata"]["name"])): o["spec"]["labels"]["app"] for o in objects}  # type: ignore[index]
    assert held == {n: f"app{i}" for i, n in enumerate(numbers)}


def test_a_second_registry_finds_existing_numbers_without_creating(
    client: ApiClient, fresh_ns: Callable[[str], str]
) -> None:
    ns = fresh_ns("reg-again")
    api = CustomObjectsApi(client)
    sets = [_labelset(ns, f"s{i}") for i in range(40)]
    first = KubeIdentityRegistry(api)
    numbers = allocate_concurrently(sets, first, workers=4)
    second = KubeIdentityRegistry(api)
    second.cache.rebase(first.list_records())

    assert allocate_concurrently(sets, second, workers=4) == numbers
    assert first.created == 40
    assert second.created == 0
    assert second.conflicts == 0
