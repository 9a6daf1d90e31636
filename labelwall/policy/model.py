"""The validated NetworkPolicy model (networking.k8s.io/v1), as frozen values."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from labelwall.cluster import Direction, IPNetwork, Labels, Protocol


class Operator(Enum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()


@dataclass(frozen=True)
class LabelSelector:
    """metav1.LabelSelector. An empty selector (no labels, no expressions) selects everything."""

    match_labels: Labels = field(default_factory=Labels)
    match_expressions: tuple[Requirement, ...] = ()

    def is_empty(self) -> bool:
        return not self.match_labels and not self.match_expressions


@dataclass(frozen=True)
class IPBlock:
    """``cidr`` is normalised (host bits cleared); every ``except_`` is a strict subnet of it."""

    cidr: IPNetwork
    except_: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class Peer:
    """One NetworkPolicyPeer. Exactly one of: selectors (one or both), or ip_block."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class PortSpec:
    """NetworkPolicyPort. ``port`` None = all ports of ``protocol``; str = named port."""

    protocol: Protocol = Protocol.TCP
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True)
class Rule:
    """An ingress or egress rule.

    ``peers`` empty = all peers (in the cluster and outside it); ``ports`` empty = all ports
    and all protocols.
    """

    peers: tuple[Peer, ...] = ()
    ports: tuple[PortSpec, ...] = ()


@dataclass(frozen=True)
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: LabelSelector
    policy_types: frozenset[Direction]
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def rules(self, direction: Direction) -> tuple[Rule, ...]:
        return self.ingress if direction is Direction.INGRESS else self.egress
