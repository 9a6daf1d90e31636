"""Bottom-layer values every package shares: protocols, directions, labels, addresses, and the
namespaces, pods and nodes of a cluster (frozen; no I/O, no imports from labelwall).

The whole compiler input, with the policies, is ``labelwall.policy.clusterstate.ClusterState``:
it names the policy model, so it lives above it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Protocol(IntEnum):
    """IP protocol numbers (mirrors LW_PROTO_* in bpf_src abi.h). ANY is a wildcard in map keys."""

    ANY = 0
    ICMP = 1
    TCP = 6
    UDP = 17
    ICMPV6 = 58
    SCTP = 132


#: The protocols a Kubernetes port may name (ContainerPort, NetworkPolicyPort), by API name.
PORT_PROTOCOLS_BY_NAME: Mapping[str, Protocol] = {
    "TCP": Protocol.TCP,
    "UDP": Protocol.UDP,
    "SCTP": Protocol.SCTP,
}


class Direction(IntEnum):
    """Policy direction from the subject pod's point of view (mirrors LW_DIR_*)."""

    INGRESS = 1
    EGRESS = 2


class Labels(Mapping[str, str]):
    """An immutable, hashable str->str mapping (Kubernetes labels)."""

    __slots__ = ("_items", "_map")

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        data = dict(items or {})
        self._map = data
        self._items = tuple(sorted(data.items()))

    def __getitem__(self, key: str) -> str:
        return self._map[key]

    def __iter__(self) -> Iterator[str]:
        return iter(k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Labels):
            return self._items == other._items
        if isinstance(other, Mapping):
            return dict(self._map) == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"Labels({dict(self._items)!r})"

    def items_sorted(self) -> tuple[tuple[str, str], ...]:
        return self._items


@dataclass(frozen=True)
class ContainerPort:
    """A declared container port; ``name`` is what named ports in policies resolve against."""

    port: int
    protocol: Protocol = Protocol.TCP
    name: str | None = None


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Labels = field(default_factory=Labels)


@dataclass(frozen=True)
class Pod:
    """A pod as policy sees it. ``ips`` may hold one IPv4 and one IPv6 address."""

    namespace: str
    name: str
    labels: Labels = field(default_factory=Labels)
    ips: tuple[IPAddress, ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    node: str | None = None
    host_network: bool = False
    #: Set (to its kind) for a workload read from a manifest: one row for all its pods, with
    #: a stand-in address that ipBlocks never select (the real ones are not known).
    workload: str | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Node:
    """A node; its addresses map to the reserved ``host`` identity on that node."""

    name: str
    addresses: tuple[IPAddress, ...] = ()
