"""Lower a NetworkPolicy (networking.k8s.io/v1) into the kind-neutral rule form."""

from __future__ import annotations

from labelwall.cluster import Direction
from labelwall.policy.cookies import RuleRef
from labelwall.policy.model import NetworkPolicy
from labelwall.policy.rules import Action, LoweredPolicy, PolicyRule, Tier


def lower_network_policy(policy: NetworkPolicy) -> LoweredPolicy:
    """Allow rules in the NetworkPolicy tier, for the directions in policyTypes only.

    Rules of a direction missing from policyTypes are ignored, as upstream does; each
    direction listed isolates the selected pods in that direction.
    """
    rules = [
        PolicyRule(
            RuleRef(policy.key, direction, i),
            rule.peers,
            rule.ports,
            tier=Tier.NETWORK_POLICY,
            priority=0,
            action=Action.ALLOW,
        )
        for direction in (Direction.INGRESS, Direction.EGRESS)
        if direction in policy.policy_types
        for i, rule in enumerate(policy.rules(direction))
    ]
    return LoweredPolicy(
        policy.key, policy.namespace, policy.pod_selector, policy.policy_types, tuple(rules)
    )
