"""The operator's desired state as pure functions: identity use, status, GC and policy reports.

No I/O and no clock: the sync passes ``now`` in and carries the plan out. Everything here
is level-triggered: it looks only at the current objects, never at what changed.
"""

from __future__ import annotations

import datetime
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from labelwall.cluster import Namespace, Pod
from labelwall.identity.allocator import InMemoryRegistry
from labelwall.identity.labels import LabelSet
from labelwall.kube.events import DEGRADED_CONDITION
from labelwall.kube.objects import IN_USE_CONDITION, IdentityRecord, PolicyEntry, format_time
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import CompileOptions, compile_cluster
from labelwall.policy.selectors import matches


def identity_usage(
    pods: Iterable[Pod], namespaces: Mapping[str, Namespace], exclude: Iterable[str]
) -> Counter[LabelSet]:
    """How many pods carry each label set (hostNetwork pods have the node's identity)."""
    excluded = frozenset(exclude)
    return Counter(
        LabelSet.from_pod(p, namespaces.get(p.namespace), excluded)
        for p in pods
        if not p.host_network
    )


@dataclass(frozen=True)
class StatusUpdate:
    """A merge patch for one Identity's status subresource."""

    number: int
    pods: int
    last_used: datetime.datetime
    condition_changed: bool

    def patch(self) -> dict[str, Any]:
        body: dict[str, Any] = {"pods": self.pods, "lastUsed": format_time(self.last_used)}
        if self.condition_changed:
            used = self.pods > 0
            body["conditions"] = [
                {
                    "type": IN_USE_CONDITION,
                    "status": "True" if used else "False",
                    "reason": "PodsUseIdentity" if used else "NoPods",
                    "message": f"{self.pods} pod(s) carry this label set"
                    if used
                    else "no pod carries this label set; deleted after the grace period",
                    "lastTransitionTime": format_time(self.last_used),
                }
            ]
        return body


@dataclass(frozen=True)
class IdentityPlan:
    """What to write so the Identity objects match the pods.

    ``allocate``: label sets in use without an Identity. ``status``: objects whose status
    is out of date. ``collect``: objects unused for the whole grace period (candidates:
    the sync re-checks each against the server before deleting). ``next_deadline``: when
    the next unused identity's grace period ends (for scheduling), or None.
    """

    allocate: frozenset[LabelSet]
    status: tuple[StatusUpdate, ...]
    collect: tuple[IdentityRecord, ...]
    next_deadline: datetime.datetime | None
    in_use: int
    unused: int


def plan_identities(
    usage: Mapping[LabelSet, int],
    records: Mapping[int, IdentityRecord],
    published: Mapping[LabelSet, int],
    now: datetime.datetime,
    grace: datetime.timedelta,
) -> IdentityPlan:
    """Compare pod usage with the Identity objects.

    ``published`` is label set -> the number in use for it (the lowest when several objects
    hold one label set; the others then count as unused and are collected).
    A record's ``pods`` is written whenever it differs; ``lastUsed`` is stamped with each
    such write, so once ``pods`` is 0 it says when the last pod went away. Garbage
    collection reads both from the object, so a restarted operator continues the same
    countdown instead of restarting or skipping it.
    """
    status: list[StatusUpdate] = []
    collect: list[IdentityRecord] = []
    deadline: datetime.datetime | None = None
    in_use = 0
    for n in sorted(records):
        rec = records[n]
        ls = rec.labelset
        count = usage.get(ls, 0) if ls is not None and published.get(ls) == n else 0
        in_use += count > 0
        want_cond = "True" if count > 0 else "False"
        if rec.pods != count or rec.last_used is None or rec.in_use_condition != want_cond:
            status.append(StatusUpdate(n, count, now, rec.in_use_condition != want_cond))
            if count == 0:
                deadline = _earliest(deadline, now + grace)
            continue
        if count == 0 and rec.last_used is not None:
            expires = rec.last_used + grace
            if expires <= now:
                collect.append(rec)
            else:
                deadline = _earliest(deadline, expires)
    missing = frozenset(ls for ls in usage if ls not in published)
    return IdentityPlan(
        allocate=missing,
        status=tuple(status),
        collect=tuple(collect),
        next_deadline=deadline,
        in_use=in_use,
        unused=len(records) - in_use,
    )


def _earliest(a: datetime.datetime | None, b: datetime.datetime) -> datetime.datetime:
    return b if a is None or b < a else a


def still_used(
    record: IdentityRecord,
    pods: Iterable[Pod],
    namespace: Namespace | None,
    exclude: Iterable[str],
) -> bool:
    """Whether any of ``pods`` (fresh from the server) carries ``record``'s label set."""
    if record.labelset is None:
        return False
    usage = identity_usage(pods, {} if namespace is None else {namespace.name: namespace}, exclude)
    return usage.get(record.labelset, 0) > 0


# --- NetworkPolicy reports ----------------------------------------------------------------


@dataclass(frozen=True)
class PolicyReport:
    """The compile outcome of one policy: the annotation value and the Event to post."""

    compiled: bool
    subjects: int = 0
    peers: int = 0
    error: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    #: Nodes running a pod the policy selects whose agent could not write every map entry
    #: (a full map: the pods stay isolated, with part of their allows; see
    #: ``degraded_nodes``). Not in the annotation when empty.
    degraded_nodes: tuple[str, ...] = ()

    @property
    def outcome(self) -> str:
        """``compiled``, ``warnings`` or ``invalid`` (the metrics label)."""
        if not self.compiled:
            return "invalid"
        return "warnings" if self.warnings else "compiled"

    def annotation(self) -> str:
        body: dict[str, Any] = {
            "compiled": self.compiled,
            "subjects": self.subjects,
            "peers": self.peers,
            "error": self.error,
        }
        if self.warnings:
            body["warnings"] = list(self.warnings)
        if self.degraded_nodes:
            body["degradedNodes"] = list(self.degraded_nodes)
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    def event(self) -> tuple[str, str, str]:
        """(type, reason, message) of the Kubernetes Event for this outcome."""
        if not self.compiled:
            return "Warning", "Invalid", f"not compiled: {self.error}"
        counts = f"selects {self.subjects} subject and {self.peers} peer identities"
        if self.degraded_nodes:
            return (
                "Warning",
                "NotEnforcedWhole",
                (
                    f"{counts}; not enforced whole on {', '.join(self.degraded_nodes)}: a full "
                    "map refused entries (the selected pods stay isolated and may lose allowed "
                    f"traffic; see the nodes' {DEGRADED_CONDITION} condition)"
                ),
            )
        if self.warnings:
            return "Warning", "CompiledWithWarnings", f"{counts}; " + "; ".join(self.warnings)
        return "Normal", "Compiled", counts


def degraded_condition(node: Mapping[str, Any]) -> str | None:
    """The message of a Node object's degraded condition when it is True, else None."""
    for cond in (node.get("status") or {}).get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == DEGRADED_CONDITION:
            return str(cond.get("message") or "degraded") if cond.get("status") == "True" else None
    return None


def degraded_nodes(
    entry: PolicyEntry, pods: Mapping[str, Pod], degraded: Mapping[str, str]
) -> tuple[str, ...]:
    """The degraded nodes that run a pod ``entry`` selects (its subjects)."""
    policy = entry.policy
    if policy is None or not degraded:
        return ()
    return tuple(
        sorted(
            {
                p.node
                for p in pods.values()
                if p.node is not None
                and p.node in degraded
                and p.namespace == policy.namespace
                and matches(policy.pod_selector, p.labels)
            }
        )
    )


def _field_message(field_path: str, message: str) -> str:
    return f"{field_path}: {message}" if field_path else message


def policy_reports(
    entries: Mapping[str, PolicyEntry],
    pods: Mapping[str, Pod],
    namespaces: Mapping[str, Namespace],
    numbers: Mapping[LabelSet, int],
    exclude: Iterable[str],
    degraded: Mapping[str, str] | None = None,
) -> dict[str, PolicyReport]:
    """Compile every valid policy against the cluster; report invalid ones by field.

    ``numbers`` seeds the compiler's registry with the published identities, so counts
    refer to the same numbers the agents use.
    """
    registry = InMemoryRegistry()
    for ls, n in sorted(numbers.items(), key=lambda item: item[1]):
        registry.claim(n, ls)
    valid = {k: e.policy for k, e in entries.items() if e.policy is not None}
    state = ClusterState(
        namespaces=dict(namespaces),
        pods=dict(pods),
        policies=valid,
    )
    compiled = compile_cluster(state, CompileOptions(exclude=frozenset(exclude)), registry)
    warnings: dict[str, list[str]] = {}
    for w in compiled.warnings:
        warnings.setdefault(w.policy, []).append(_field_message(w.field, w.message))
    out: dict[str, PolicyReport] = {}
    for key, entry in entries.items():
        if entry.policy is None:
            error = "; ".join(_field_message(e.field, e.message) for e in entry.errors)
            out[key] = PolicyReport(False, error=error or "invalid")
            continue
        stats = compiled.stats.get(key)
        parse_warnings = [_field_message(w.field, w.message) for w in entry.warnings]
        out[key] = PolicyReport(
            True,
            subjects=0 if stats is None else stats.subject_identities,
            peers=0 if stats is None else stats.peer_identities,
            warnings=tuple(parse_warnings + warnings.get(key, [])),
            degraded_nodes=degraded_nodes(entry, pods, degraded or {}),
        )
    return out
