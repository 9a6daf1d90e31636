"""Exposure per workload (np-guard's ``--exposure``): who reaches it from far, what it reaches.

For each workload (or pod): from outside the cluster (rules with no peers or an ipBlock
peer), from every namespace (a ``namespaceSelector: {}`` peer, with no or an empty
``podSelector``: every pod there is, or ever will be), from every pod of the inputs (the
ports on which each other row's flow is allowed, from the grouped matrix), and to outside
the cluster (egress rules with no peers or an ipBlock). A direction no policy isolates is
open to everything. Each rule-level answer names the policy rule. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from labelwall.cluster import Direction
from labelwall.policy.compile import Compiled
from labelwall.policy.lookup import isolation_flag
from labelwall.policy.mapstate import SubjectFlags
from labelwall.policy.matrix import PortProto
from labelwall.policy.model import Peer, PortSpec
from labelwall.policy.netpol import lower_network_policy
from labelwall.policy.reachgroups import GroupedMatrix
from labelwall.policy.rules import PolicyRule

ANY_ADDRESS = "any address"
EVERY_NAMESPACE = "every namespace"


def ports_text(ports: Sequence[PortSpec]) -> str:
    """``TCP/80, TCP/http, UDP/1000-2000``; ``any port`` for a rule without ports."""
    if not ports:
        return "any port"
    out = []
    for p in ports:
        if p.port is None:
            out.append(f"{p.protocol.name}/any")
        elif p.end_port is not None:
            out.append(f"{p.protocol.name}/{p.port}-{p.end_port}")
        else:
            out.append(f"{p.protocol.name}/{p.port}")
    return ", ".join(out)


@dataclass(frozen=True)
class Reach:
    """One rule's answer: the peer (``any address``, a CIDR, ``every namespace``), ports."""

    peer: str
    ports: str
    rule: str  # "ns/policy spec.ingress[0]"; "" when the direction is not isolated

    def text(self) -> str:
        return f"{self.peer}: {self.ports}" + (f" ({self.rule})" if self.rule else "")

    def as_dict(self) -> dict[str, Any]:
        return {"peer": self.peer, "ports": self.ports, "rule": self.rule or None}


@dataclass(frozen=True)
class Exposure:
    workload: str
    ingress_isolated: bool
    egress_isolated: bool
    from_outside: tuple[Reach, ...]
    from_every_namespace: tuple[Reach, ...]
    from_every_pod: tuple[str, ...]  # probe ports, "TCP/http"
    to_outside: tuple[Reach, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "ingress": {
                "isolated": self.ingress_isolated,
                "fromOutside": [r.as_dict() for r in self.from_outside],
                "fromEveryNamespace": [r.as_dict() for r in self.from_every_namespace],
                "fromEveryPod": list(self.from_every_pod),
            },
            "egress": {
                "isolated": self.egress_isolated,
                "toOutside": [r.as_dict() for r in self.to_outside],
            },
        }


def _block_text(peer: Peer) -> str:
    assert peer.ip_block is not None
    b = peer.ip_block
    text = str(b.cidr)
    if b.except_:
        text += " except " + ", ".join(str(n) for n in b.except_)
    return text


def _every_namespace(peer: Peer) -> bool:
    return (
        peer.namespace_selector is not None
        and peer.namespace_selector.is_empty()
        and (peer.pod_selector is None or peer.pod_selector.is_empty())
    )


def _rules_by_subject(c: Compiled) -> dict[int, list[PolicyRule]]:
    """Identity -> the rules of every policy selecting it, in policy order."""
    out: dict[int, list[PolicyRule]] = {}
    for key in sorted(c.policy_subjects):
        rules = lower_network_policy(c.state.policies[key]).rules
        for ident in c.policy_subjects[key]:
            out.setdefault(ident, []).extend(rules)
    return out


def _far(rules: Sequence[PolicyRule], isolated: bool) -> tuple[Reach, ...]:
    """Rules that let in (or out) addresses outside the cluster."""
    if not isolated:
        return (Reach(ANY_ADDRESS, "any port", ""),)
    out: list[Reach] = []
    for r in rules:
        ports = ports_text(r.ports)
        if not r.peers:
            out.append(Reach(ANY_ADDRESS, ports, str(r.ref)))
        out += [Reach(_block_text(p), ports, str(r.ref)) for p in r.peers if p.ip_block]
    return tuple(out)


def _from_every_pod(m: GroupedMatrix, ports: Sequence[PortProto]) -> dict[int, list[str]]:
    """Group -> the probe ports on which every row (every other pod) reaches it."""
    out: dict[int, list[str]] = {}
    for pp in ports:
        everyone = m.resolved[pp]
        for g in m.groups:
            row = m.allowed[pp][g.index]
            if len(g.members) == 1:
                row |= 1 << g.index  # a row does not judge itself (loopback)
            everyone &= row
        for g in m.groups:
            if everyone >> g.index & 1:
                out.setdefault(g.index, []).append(f"{pp[1].name}/{pp[0]}")
    return out


def exposure(m: GroupedMatrix) -> list[Exposure]:
    """Every row of ``m`` (its probe ports judge "from every pod")."""
    c = m.compiled
    every_pod = _from_every_pod(m, m.ports)
    rules = _rules_by_subject(c)
    out: list[Exposure] = []
    for key in m.pods:
        ident = c.pod_identity[key]
        flags = c.map_state.subjects.get(ident, SubjectFlags.NONE)
        iso_in = bool(flags & isolation_flag(Direction.INGRESS))
        iso_out = bool(flags & isolation_flag(Direction.EGRESS))
        mine = rules.get(ident, [])
        ingress = [r for r in mine if r.ref.direction is Direction.INGRESS]
        egress = [r for r in mine if r.ref.direction is Direction.EGRESS]
        if iso_in:
            namespaces = tuple(
                Reach(EVERY_NAMESPACE, ports_text(r.ports), str(r.ref))
                for r in ingress
                if not r.peers or any(_every_namespace(p) for p in r.peers)
            )
        else:
            namespaces = (Reach(EVERY_NAMESPACE, "any port", ""),)
        out.append(
            Exposure(
                key,
                iso_in,
                iso_out,
                _far(ingress, iso_in),
                namespaces,
                tuple(every_pod.get(m.group_of[key], ())),
                _far(egress, iso_out),
            )
        )
    return out
