"""The kind-neutral rule form every policy kind lowers into before compilation.

A lowering module (``policy/netpol.py`` for NetworkPolicy v1) turns one policy object into
a ``LoweredPolicy``: whom it applies to, which directions it isolates, and rules that
carry a tier, a priority and an action. The compiler, the selector cache and the map
encoding read only this form, so an admin tier (ClusterNetworkPolicy) is one more
lowering module. Today the map encoding has one tier and one action: NetworkPolicy, allow.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

from labelwall.cluster import Direction
from labelwall.policy.cookies import RuleRef
from labelwall.policy.model import LabelSelector, Peer, PortSpec


class Tier(IntEnum):
    """Evaluation tiers, first tier first. Admin tiers will go before and after this one."""

    NETWORK_POLICY = 1


class Action(Enum):
    ALLOW = "allow"


@dataclass(frozen=True)
class PolicyRule:
    """One rule: traffic in ``ref.direction`` to/from ``peers`` on ``ports`` gets ``action``.

    ``peers`` empty = all peers (in the cluster and outside it); ``ports`` empty = all ports
    and all protocols. ``ref`` names the rule (its cookie and field path); ``priority``
    orders rules inside a tier (smaller first; NetworkPolicy rules are all 0).
    """

    ref: RuleRef
    peers: tuple[Peer, ...]
    ports: tuple[PortSpec, ...]
    tier: Tier = Tier.NETWORK_POLICY
    priority: int = 0
    action: Action = Action.ALLOW


@dataclass(frozen=True)
class LoweredPolicy:
    """A policy in rule form: subjects are the pods of ``namespace`` that ``subject_selector``
    matches; each direction in ``isolates`` denies what no rule of that direction allows."""

    key: str
    namespace: str
    subject_selector: LabelSelector
    isolates: frozenset[Direction]
    rules: tuple[PolicyRule, ...]
