"""Which policies a verdict is owed to: the one module explain, diff and observe name them with.

- ``isolating_policies``: every policy that isolates an identity in a direction (it selects
  the identity and lists the direction in policyTypes). A drop with no allow matched is
  owed to all of them, not to one: removing any single one would not admit the packet.
- ``allowing_rule``: the rule behind a POLICY allow, from the cookie its map entry carries.
- ``Attribution``: both lists for one classifier run (what a flow's ``*_allowed_by`` /
  ``*_denied_by`` hold, and explain's "policies" and "rule").
- ``attribute``: why a reachability cell changed between two policy sets (``labelwall diff``).

Pure: it reads compiled results only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from labelwall.cluster import Direction, IPNetwork, Pod
from labelwall.identity.labels import LabelSet
from labelwall.identity.numbers import Reserved
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import Compiled
from labelwall.policy.cookies import RuleRef
from labelwall.policy.lookup import Reason, Verdict

if TYPE_CHECKING:  # matrix imports this module: the type only, no cycle at run time
    from labelwall.policy.matrix import Cell


class Policies(Protocol):
    """What attribution reads: a ``Compiled`` (explain) or a ``Naming`` (observe)."""

    @property
    def cookies(self) -> Mapping[int, RuleRef]: ...

    @property
    def policy_subjects(self) -> Mapping[str, frozenset[int]]: ...

    @property
    def state(self) -> ClusterState: ...


@dataclass(frozen=True)
class Naming:
    """Everything that names a verdict, without a full ``Compiled`` (whose warnings cost
    hundreds of ms on a large cluster): what the agent snapshots after each sync.

    ``labelsets``: label set -> identity number (a pod whose set has none is ``init``).
    """

    cookies: Mapping[int, RuleRef]
    policy_subjects: Mapping[str, frozenset[int]]
    state: ClusterState
    identities: Mapping[int, LabelSet]
    labelsets: Mapping[LabelSet, int]
    cidrs: Mapping[IPNetwork, int]
    exclude: frozenset[str]
    pod_identity: Mapping[str, int] = field(default_factory=dict)  # known ones, if any

    @classmethod
    def of_compiled(cls, c: Compiled) -> Naming:
        return cls(
            c.cookies, c.policy_subjects, c.state, c.identities,
            {ls: n for n, ls in c.identities.items()}, c.map_state.cidrs, c.options.exclude,
            c.pod_identity,
        )  # fmt: skip

    def identity_of(self, pod: Pod) -> int:
        known = self.pod_identity.get(pod.key)
        if known is not None:
            return known
        ls = LabelSet.from_pod(pod, self.state.namespaces.get(pod.namespace), self.exclude)
        return self.labelsets.get(ls, int(Reserved.INIT))


def isolating_policies(c: Policies, identity: int, direction: Direction) -> tuple[str, ...]:
    """``namespace/name`` of every policy that selects ``identity`` with ``direction`` in its
    policyTypes, sorted."""
    return tuple(
        sorted(
            k
            for k, subjects in c.policy_subjects.items()
            if identity in subjects and direction in c.state.policies[k].policy_types
        )
    )


def allowing_rule(c: Policies, verdict: Verdict) -> RuleRef | None:
    """The rule whose map entry allowed ``verdict`` (None unless reason POLICY)."""
    if verdict.reason is not Reason.POLICY:
        return None
    return c.cookies.get(verdict.cookie)


@dataclass(frozen=True)
class Attribution:
    """One classifier run's policies: the rule that allowed it, or the policies that denied
    it (for a drop by isolation, and for an AUDIT pass: every isolating policy)."""

    allowed_by: tuple[RuleRef, ...] = ()
    denied_by: tuple[str, ...] = ()


def attribution(
    c: Policies, identity: int, direction: Direction, reason: Reason, cookie: int
) -> Attribution:
    """Names for a verdict of the classifier at ``identity`` for ``direction``."""
    if reason is Reason.POLICY:
        rule = c.cookies.get(cookie)
        return Attribution(allowed_by=(rule,) if rule is not None else ())
    if reason in (Reason.POLICY_DENIED, Reason.AUDIT):
        return Attribution(denied_by=isolating_policies(c, identity, direction))
    return Attribution()


def _one(
    direction: Direction,
    pod: str,
    before: Verdict,
    after: Verdict,
    was: Compiled,
    now: Compiled,
) -> str | None:
    if before.allowed == after.allowed:
        return None
    word = direction.name.lower()
    if after.allowed:
        if after.reason is Reason.POLICY and after.cookie in now.cookies:
            return f"{word} at {pod} allowed by {now.cookies[after.cookie]}"
        if after.reason is Reason.NOT_ISOLATED:
            return f"{word} at {pod} no longer isolated"
        return f"{word} at {pod} allowed ({after.reason.name})"
    if before.reason is Reason.POLICY and before.cookie in was.cookies:
        return f"{word} at {pod}: {was.cookies[before.cookie]} no longer allows it"
    isolating = isolating_policies(now, now.pod_identity[pod], direction)
    if isolating:
        return f"{word} at {pod} now isolated by {', '.join(isolating)}; no rule allows it"
    return f"{word} at {pod} blocked ({after.reason.name})"


def attribute(before: Cell | None, after: Cell | None, was: Compiled, now: Compiled) -> list[str]:
    """The reasons ``before`` became ``after`` (either None: the pair exists on one side only)."""
    if before is None or after is None:
        return ["the pod pair exists only " + ("after" if before is None else "before")]
    out = [
        _one(Direction.EGRESS, before.src, before.egress, after.egress, was, now),
        _one(Direction.INGRESS, before.dst, before.ingress, after.ingress, was, now),
    ]
    return [r for r in out if r is not None]
