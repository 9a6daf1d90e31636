"""The operator's pure logic: usage, status, garbage collection, Identity objects, reports."""

from __future__ import annotations

import datetime
import json
from typing import Any

from labelwall.cluster import Labels, Namespace, Pod
from labelwall.identity.labels import LabelSet
from labelwall.kube.objects import (
    CANONICAL_ANNOTATION,
    STATUS_ANNOTATION,
    SUMMARY_MAX,
    IdentityRecord,
    identity_body,
    identity_labelset,
    kube_labels,
    parse_policy,
    summary,
)
from labelwall.kube.registry import IdentityCache, KubeIdentityRegistry
from labelwall.operator.metrics import OperatorMetrics
from labelwall.operator.plan import (
    identity_usage,
    plan_identities,
    policy_reports,
    still_used,
)
from labelwall.operator.sync import IndexSnapshot, Syncer

T0 = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
GRACE = datetime.timedelta(seconds=30)
NS = Namespace("shop", Labels({"kubernetes.io/metadata.name": "shop", "team": "a"}))


def _ls(app: str) -> LabelSet:
    return LabelSet("shop", Labels({"app": app}), NS.labels)


def _record(
    n: int, app: str, pods: int | None, last_used: datetime.datetime | None
) -> IdentityRecord:
    cond = None if pods is None else ("True" if pods else "False")
    return IdentityRecord(n, _ls(app), f"uid-{n}", str(n), pods, last_used, cond)


def _pod(name: str, app: str, **kw: Any) -> Pod:
    return Pod("shop", name, Labels({"app": app, "pod-template-hash": name}), **kw)


def test_usage_counts_pods_per_label_set_without_excluded_labels_or_host_network_pods() -> None:
    pods = [
        _pod("a", "web"),
        _pod("b", "web"),
        _pod("c", "db"),
        _pod("h", "web", host_network=True),
    ]
    usage = identity_usage(pods, {"shop": NS}, ["pod-template-hash"])
    assert usage == {_ls("web"): 2, _ls("db"): 1}


def test_label_sets_without_an_identity_are_allocated_and_new_objects_get_status() -> None:
    usage = {_ls("web"): 2, _ls("db"): 1}
    records = {300: _record(300, "web", None, None)}
    plan = plan_identities(usage, records, {_ls("web"): 300}, T0, GRACE)
    assert plan.allocate == {_ls("db")}
    assert [(u.number, u.pods, u.last_used) for u in plan.status] == [(300, 2, T0)]
    patch = plan.status[0].patch()
    assert patch["pods"] == 2
    assert patch["lastUsed"] == "2025-01-01T00:00:00.000000Z"
    assert patch["conditions"][0]["status"] == "True"


def test_up_to_date_identities_need_no_write() -> None:
    records = {300: _record(300, "web", 2, T0)}
    plan = plan_identities({_ls("web"): 2}, records, {_ls("web"): 300}, T0 + GRACE * 10, GRACE)
    assert plan.status == ()
    assert plan.collect == ()
    assert plan.allocate == frozenset()


def test_an_identity_losing_its_last_pod_is_stamped_and_collected_only_after_the_grace() -> None:
    records = {300: _record(300, "web", 1, T0)}
    stamped = plan_identities({}, records, {_ls("web"): 300}, T0 + GRACE, GRACE)
    assert [(u.pods, u.last_used, u.condition_changed) for u in stamped.status] == [
        (0, T0 + GRACE, True)
    ]
    assert stamped.next_deadline == T0 + 2 * GRACE

    unused = {300: _record(300, "web", 0, T0 + GRACE)}
    early = plan_identities(
        {}, unused, {_ls("web"): 300}, T0 + 2 * GRACE - datetime.timedelta(seconds=1), GRACE
    )
    assert early.collect == ()
    assert early.next_deadline == T0 + 2 * GRACE
    due = plan_identities({}, unused, {_ls("web"): 300}, T0 + 2 * GRACE, GRACE)
    assert [r.number for r in due.collect] == [300]


def test_an_unused_identity_that_gets_a_pod_again_is_not_collected() -> None:
    unused = {300: _record(300, "web", 0, T0)}
    plan = plan_identities({_ls("web"): 1}, unused, {_ls("web"): 300}, T0 + GRACE * 5, GRACE)
    assert plan.collect == ()
    assert [(u.pods, u.condition_changed) for u in plan.status] == [(1, True)]


def test_of_two_objects_for_one_label_set_the_unpublished_one_counts_as_unused() -> None:
    records = {300: _record(300, "web", 1, T0), 900: _record(900, "web", 1, T0)}
    plan = plan_identities({_ls("web"): 1}, records, {_ls("web"): 300}, T0, GRACE)
    assert [(u.number, u.pods) for u in plan.status] == [(900, 0)]


def test_still_used_checks_fresh_pods_with_the_namespace_labels() -> None:
    record = _record(300, "web", 0, T0)
    assert still_used(record, [_pod("a", "web")], NS, ["pod-template-hash"])
    assert not still_used(record, [_pod("a", "db")], NS, ["pod-template-hash"])
    relabelled = Namespace("shop", Labels({"kubernetes.io/metadata.name": "shop", "team": "b"}))
    assert not still_used(record, [_pod("a", "web")], relabelled, ["pod-template-hash"])


# --- Identity objects ------------------------------------------------------------------


def test_identity_body_round_trips_to_the_same_label_set() -> None:
    body = identity_body(4242, _ls("web"))
    assert body["metadata"]["name"] == "4242"
    assert body["spec"]["summary"] == "app=web"
    assert identity_labelset(body) == _ls("web")


def test_a_pod_label_under_the_reserved_prefix_stays_apart_through_the_annotation() -> None:
    tricky = LabelSet(
        "shop",
        Labels({"labelwall.io/ns.team": "a"}),
        Labels({"kubernetes.io/metadata.name": "shop"}),
    )
    body = identity_body(4242, tricky)
    assert identity_labelset(body) == tricky
    # Without the annotation the flat form is ambiguous: it reads as a namespace label.
    del body["metadata"]["annotations"][CANONICAL_ANNOTATION]
    assert identity_labelset(body) != tricky


def test_an_annotation_that_disagrees_with_the_immutable_spec_is_ignored() -> None:
    body = identity_body(4242, _ls("web"))
    body["metadata"]["annotations"][CANONICAL_ANNOTATION] = _ls("db").canonical()
    assert identity_labelset(body) == _ls("web")


def test_kube_labels_keep_selectable_keys_and_drop_prefixed_namespace_keys() -> None:
    labels = kube_labels(_ls("web"))
    assert labels == {"app": "web", "labelwall.io/ns.team": "a", "labelwall.io/namespace": "shop"}


def test_summary_is_capped_for_the_crd() -> None:
    big = LabelSet("shop", Labels({f"k{i}": "v" * 60 for i in range(40)}))
    assert len(summary(big)) == SUMMARY_MAX
    assert summary(big).endswith("...")


# --- the cache ---------------------------------------------------------------------------


def test_cache_keeps_own_writes_until_the_watch_catches_up() -> None:
    cache = IdentityCache()
    own = IdentityRecord(300, _ls("web"), "u1", "10")
    cache.upsert(own)
    cache.rebase([])  # the watch has not seen the create yet
    assert cache.find(_ls("web")) == 300
    cache.rebase([IdentityRecord(300, _ls("web"), "u1", "11", pods=1)])
    assert cache.get(300) == IdentityRecord(300, _ls("web"), "u1", "11", pods=1)


def test_cache_hides_an_object_this_process_deleted_until_it_is_recreated() -> None:
    cache = IdentityCache()
    cache.rebase([IdentityRecord(300, _ls("web"), "u1", "10")])
    cache.removed(300, "10")
    cache.rebase([IdentityRecord(300, _ls("web"), "u1", "10")])  # stale watch
    assert cache.get(300) is None
    assert cache.find(_ls("web")) is None
    cache.rebase([IdentityRecord(300, _ls("db"), "u2", "20")])  # someone re-created it
    assert cache.find(_ls("db")) == 300


def test_cache_publishes_the_lowest_number_of_a_duplicated_label_set() -> None:
    cache = IdentityCache()
    cache.rebase(
        [IdentityRecord(900, _ls("web"), "a", "1"), IdentityRecord(300, _ls("web"), "b", "2")]
    )
    assert cache.published() == {_ls("web"): 300}


# --- policy reports ----------------------------------------------------------------------


def _policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}"}, "spec": spec}


def test_invalid_policy_is_reported_with_its_field_and_valid_ones_with_counts() -> None:
    entries = {
        "shop/bad": parse_policy(
            _policy("bad", {"podSelector": {}, "policyTypes": ["Sideways"]}), STATUS_ANNOTATION
        ),
        "shop/db": parse_policy(
            _policy(
                "db",
                {
                    "podSelector": {"matchLabels": {"app": "db"}},
                    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
                },
            ),
            STATUS_ANNOTATION,
        ),
    }
    pods = {p.key: p for p in (_pod("a", "web"), _pod("b", "db"))}
    reports = policy_reports(entries, pods, {"shop": NS}, {}, ["pod-template-hash"])
    bad = reports["shop/bad"]
    assert bad.outcome == "invalid"
    assert bad.error is not None
    assert bad.error.startswith("spec.policyTypes[0]: ")
    kind, reason, message = bad.event()
    assert (kind, reason) == ("Warning", "Invalid")
    assert "spec.policyTypes[0]" in message
    assert json.loads(bad.annotation())["compiled"] is False
    good = reports["shop/db"]
    assert (good.outcome, good.subjects, good.peers) == ("compiled", 1, 1)


class _FakeNetworking:
    def __init__(self) -> None:
        self.patches: list[tuple[str, str, dict[str, Any]]] = []

    def patch_namespaced_network_policy(
        self, name: str, ns: str, body: dict[str, Any], **_: Any
    ) -> None:
        self.patches.append((ns, name, body))


class _FakeCore:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def create_namespaced_event(self, ns: str, body: Any, **_: Any) -> None:
        self.events.append(body)


def test_sync_annotates_and_posts_an_event_once_per_outcome_change() -> None:
    networking, core = _FakeNetworking(), _FakeCore()
    syncer = Syncer(
        KubeIdentityRegistry(api=None),  # type: ignore[arg-type] # no pods: never called
        core,  # type: ignore[arg-type]
        networking,  # type: ignore[arg-type]
        OperatorMetrics(),
        exclude=("pod-template-hash",),
        grace=GRACE,
        instance="test",
        clock=lambda: T0,
    )
    bad = parse_policy(
        _policy("bad", {"podSelector": {}, "policyTypes": ["Sideways"]}), STATUS_ANNOTATION
    )
    syncer.run(IndexSnapshot({}, {"shop": NS}, {bad.key: bad}, (), policy_generation=1))
    assert len(networking.patches) == 1
    value = networking.patches[0][2]["metadata"]["annotations"][STATUS_ANNOTATION]
    assert json.loads(value)["error"].startswith("spec.policyTypes[0]")
    assert [(e.type, e.reason) for e in core.events] == [("Warning", "Invalid")]
    assert core.events[0].involved_object.name == "bad"
    assert syncer.metrics.policies.labels(outcome="invalid")._value.get() == 1

    # The next sync sees its own annotation on the object: nothing more is written.
    obj = _policy("bad", {"podSelector": {}, "policyTypes": ["Sideways"]})
    obj["metadata"]["annotations"] = {STATUS_ANNOTATION: value}
    annotated = parse_policy(obj, STATUS_ANNOTATION)
    syncer.run(IndexSnapshot({}, {"shop": NS}, {annotated.key: annotated}, (), policy_generation=2))
    assert len(networking.patches) == 1
    assert len(core.events) == 1
