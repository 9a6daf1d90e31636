"""Why a reachability cell changed between two policy sets: the rules and isolation behind it.

A cell is two classifier runs (egress at the source, ingress at the destination); a change
is attributed per run whose verdict changed: the rule that now allows it, the rule that no
longer does, or the policies that now isolate the pod. Pure: it reads compiled results only.
"""

from __future__ import annotations

from labelwall.cluster import Direction
from labelwall.policy.compile import Compiled
from labelwall.policy.lookup import Reason, Verdict
from labelwall.policy.matrix import Cell, side


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
    isolating = side(now, direction, pod, after).policies
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
