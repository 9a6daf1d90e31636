"""Allocation by stable hash with linear probing; the registry decides conflicts."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelwall.cluster import IPNetwork, Labels
from labelwall.identity import numbers
from labelwall.identity.allocator import (
    IdentitySpaceExhaustedError,
    InMemoryRegistry,
    NumberRange,
    PublishedRegistry,
    allocate,
    allocate_all,
    allocate_local,
    default_hash,
)
from labelwall.identity.labels import LabelSet


def ls(app: str, namespace: str = "x") -> LabelSet:
    return LabelSet(namespace, Labels({"app": app}))


def const_hash(_: LabelSet) -> int:
    return 0


TINY = NumberRange(256, 259)


def test_numbers_fall_in_the_cluster_range() -> None:
    reg = InMemoryRegistry()
    for i in range(50):
        assert numbers.is_cluster(allocate(ls(str(i)), reg))


def test_the_preferred_number_comes_from_the_hash_of_the_canonical_form() -> None:
    reg = InMemoryRegistry()
    a = ls("web")
    expected = numbers.CLUSTER_MIN + default_hash(a) % (
        numbers.CLUSTER_MAX - numbers.CLUSTER_MIN + 1
    )
    assert allocate(a, reg) == expected


def test_allocating_twice_returns_the_held_number() -> None:
    reg = InMemoryRegistry()
    assert allocate(ls("web"), reg) == allocate(ls("web"), reg)


def test_a_collision_probes_to_the_next_free_number() -> None:
    reg = InMemoryRegistry()
    got = [allocate(ls(str(i)), reg, hash_fn=const_hash, number_range=TINY) for i in range(4)]
    assert got == [256, 257, 258, 259]
    assert reg.get(257) == ls("1")


def test_probing_wraps_around_the_end_of_the_range() -> None:
    reg = InMemoryRegistry()
    assert reg.claim(259, ls("other"))
    n = allocate(ls("web"), reg, hash_fn=lambda _: 3, number_range=TINY)
    assert n == 256


def test_a_full_range_raises_a_typed_error() -> None:
    reg = InMemoryRegistry()
    for i in range(4):
        allocate(ls(str(i)), reg, hash_fn=const_hash, number_range=TINY)
    with pytest.raises(IdentitySpaceExhaustedError):
        allocate(ls("fifth"), reg, hash_fn=const_hash, number_range=TINY)


def test_claim_conflicts_like_a_kubernetes_create() -> None:
    reg = InMemoryRegistry()
    assert reg.claim(300, ls("a"))
    assert reg.claim(300, ls("a"))  # same label set: idempotent
    assert not reg.claim(300, ls("b"))
    assert reg.find(ls("a")) == 300
    assert reg.find(ls("b")) is None


class RacingRegistry(InMemoryRegistry):
    """Another allocator claims the number between our get() and claim()."""

    def __init__(self, thief: LabelSet) -> None:
        super().__init__()
        self.thief = thief
        self.stolen = False

    def claim(self, number: int, labelset: LabelSet) -> bool:
        if not self.stolen:
            self.stolen = True
            super().claim(number, self.thief)
        return super().claim(number, labelset)


def test_losing_a_claim_race_probes_on() -> None:
    reg = RacingRegistry(ls("thief"))
    n = allocate(ls("web"), reg, hash_fn=const_hash, number_range=TINY)
    assert n == 257
    assert reg.get(256) == ls("thief")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from("abcdefghij"), min_size=1, unique=True), st.randoms())
def test_allocate_all_gives_the_same_numbers_in_any_input_order(apps: list[str], rnd) -> None:  # type: ignore[no-untyped-def]
    sets = [ls(a) for a in apps]
    shuffled = list(sets)
    rnd.shuffle(shuffled)
    # A tiny range with a constant hash makes every label set collide.
    first = allocate_all(
        sets, InMemoryRegistry(), hash_fn=const_hash, number_range=NumberRange(256, 300)
    )
    second = allocate_all(
        shuffled, InMemoryRegistry(), hash_fn=const_hash, number_range=NumberRange(256, 300)
    )
    assert first == second
    assert len(set(first.values())) == len(sets)


def test_local_cidr_identities_are_deterministic_and_distinct_under_collisions() -> None:
    import ipaddress

    nets: list[IPNetwork] = [ipaddress.ip_network(f"10.0.{i}.0/24") for i in range(5)]
    a = allocate_local(nets, hash_fn=lambda _: 7)
    b = allocate_local(reversed(nets), hash_fn=lambda _: 7)
    assert a == b
    assert len(set(a.values())) == 5
    assert all(numbers.is_local(v) for v in a.values())
    assert sorted(a.values()) == [numbers.LOCAL_MIN + 7 + i for i in range(5)]


def test_local_identities_use_the_real_hash_by_default() -> None:
    import ipaddress

    nets = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
    ids = allocate_local(nets)
    assert all(numbers.is_local(v) for v in ids.values())
    assert ids == allocate_local(list(itertools.chain(reversed(nets))))


def test_the_published_registry_knows_only_the_published_numbers_and_claims_nothing_new() -> None:
    web = LabelSet("shop", Labels({"app": "web"}))
    db = LabelSet("shop", Labels({"app": "db"}))
    reg = PublishedRegistry({web: 1000})
    assert reg.find(web) == 1000
    assert reg.get(1000) == web
    assert reg.find(db) is None
    assert reg.get(1001) is None
    assert reg.claim(1000, web)
    assert not reg.claim(1001, db)
    reg.set({db: 1001})
    assert reg.find(web) is None
    assert reg.find(db) == 1001
