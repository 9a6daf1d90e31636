"""Hypothesis strategies: random clusters and random NetworkPolicies over every field."""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from labelwall.cluster import (
    ContainerPort,
    Direction,
    IPAddress,
    IPNetwork,
    Labels,
    Namespace,
    Node,
    Pod,
    Protocol,
)
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.model import (
    IPBlock,
    LabelSelector,
    NetworkPolicy,
    Operator,
    Peer,
    PortSpec,
    Requirement,
    Rule,
)

# Small alphabets so that selectors often match, label sets repeat, and named ports collide.
NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c", "d")
POD_KEYS = ("app", "tier")
NS_KEYS = ("team", "env", "kubernetes.io/metadata.name")
VALUES = ("a", "b", "x", "y")
PORT_NAMES = ("http", "dns", "metrics")
PORT_NUMBERS = (53, 80, 81, 443, 8080)
PROTOCOLS = (Protocol.TCP, Protocol.UDP, Protocol.SCTP)
NODE_V4 = ipaddress.IPv4Address("192.168.0.1")
NODE_V6 = ipaddress.IPv6Address("fd00:192:168::1")
V4_BASE = int(ipaddress.IPv4Address("10.244.0.0"))
V6_BASE = int(ipaddress.IPv6Address("fd00:10:244::"))

#: Probe ports: named-port numbers, a range bound, and one nobody uses; ICMP has no port.
PROBE_PORTS = (53, 80, 81, 85, 8080)
PROBE_PROTOCOLS = (Protocol.TCP, Protocol.UDP, Protocol.SCTP, Protocol.ICMP)


def v4(i: int) -> ipaddress.IPv4Address:
    # Spread over 10.244.0.0/16 so that prefixes of all lengths cut between pods.
    return ipaddress.IPv4Address(V4_BASE + (i * 37 % 65535))


def v6(i: int) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(V6_BASE + (i * 40503 % (1 << 32)))


labels_st = st.dictionaries(st.sampled_from(POD_KEYS), st.sampled_from(VALUES), max_size=2)


@st.composite
def container_ports(draw: st.DrawFn) -> tuple[ContainerPort, ...]:
    """Unique names and unique (port, protocol) per pod, as the API server requires."""
    names = draw(st.lists(st.sampled_from(PORT_NAMES), unique=True, max_size=3))
    out: list[ContainerPort] = []
    used: set[tuple[int, Protocol]] = set()
    for name in [*names, None]:
        number = draw(st.sampled_from(PORT_NUMBERS))
        proto = draw(st.sampled_from(PROTOCOLS))
        if (number, proto) in used:
            continue
        used.add((number, proto))
        out.append(ContainerPort(number, proto, name))
    return tuple(out)


@st.composite
def clusters(draw: st.DrawFn, max_pods: int = 8) -> ClusterState:
    """Namespaces with labels, pods with labels, v4/v6 addresses and named ports, one node."""
    ns_names = draw(st.lists(st.sampled_from(NAMESPACES), min_size=1, max_size=3, unique=True))
    namespaces = {
        n: Namespace(
            n,
            Labels(
                draw(
                    st.dictionaries(
                        st.sampled_from(NS_KEYS[:2]), st.sampled_from(VALUES), max_size=2
                    )
                )
            ),
        )
        for n in ns_names
    }
    pods: dict[str, Pod] = {}
    slots = draw(
        st.lists(
            st.tuples(st.sampled_from(ns_names), st.sampled_from(POD_NAMES)),
            unique=True,
            max_size=max_pods,
        )
    )
    for i, (n, name) in enumerate(slots):
        host = draw(st.integers(0, 9)) == 0
        family = draw(st.sampled_from(("4", "6", "46", "46", "4", "none")))
        if host:
            ips: tuple[IPAddress, ...] = (NODE_V4, NODE_V6)
        else:
            ips = tuple(
                ([v4(i + 1)] if "4" in family else []) + ([v6(i + 1)] if "6" in family else [])
            )
        pods[f"{n}/{name}"] = Pod(
            n, name, Labels(draw(labels_st)), ips, draw(container_ports()), "node-1", host
        )
    nodes = {"node-1": Node("node-1", (NODE_V4, NODE_V6))}
    return ClusterState(namespaces, pods, nodes, {})


def requirements(keys: tuple[str, ...]) -> st.SearchStrategy[Requirement]:
    return st.one_of(
        st.builds(
            Requirement,
            st.sampled_from(keys),
            st.sampled_from((Operator.IN, Operator.NOT_IN)),
            st.frozensets(st.sampled_from(VALUES), min_size=1, max_size=2),
        ),
        st.builds(
            Requirement,
            st.sampled_from(keys),
            st.sampled_from((Operator.EXISTS, Operator.DOES_NOT_EXIST)),
        ),
    )


def selectors(keys: tuple[str, ...] = POD_KEYS) -> st.SearchStrategy[LabelSelector]:
    label_values = VALUES + NAMESPACES
    return st.builds(
        LabelSelector,
        st.builds(
            Labels,
            st.dictionaries(st.sampled_from(keys), st.sampled_from(label_values), max_size=2),
        ),
        st.lists(requirements(keys), max_size=2).map(tuple),
    )


def networks(addresses: list[IPAddress]) -> st.SearchStrategy[IPNetwork]:
    """A prefix around a pod address or a random one, any length, host bits cleared."""
    base = st.one_of(
        st.sampled_from(addresses) if addresses else st.nothing(),
        st.integers(0, 200).map(v4),
        st.integers(0, 200).map(v6),
        st.sampled_from((ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("2001:db8::1"))),
    )

    @st.composite
    def build(draw: st.DrawFn) -> IPNetwork:
        addr = draw(base)
        width = 32 if addr.version == 4 else 128
        length = draw(st.one_of(st.integers(0, width), st.sampled_from((8, 16, 24, width))))
        length = min(length, width)
        return ipaddress.ip_network(f"{addr}/{length}", strict=False)

    return build()


@st.composite
def ip_blocks(draw: st.DrawFn, addresses: list[IPAddress]) -> IPBlock:
    cidr = draw(networks(addresses))
    width = cidr.max_prefixlen
    excepts: list[IPNetwork] = []
    if cidr.prefixlen < width:
        inside = [a for a in addresses if a.version == cidr.version and a in cidr]
        for _ in range(draw(st.integers(0, 2))):
            if inside and bool(draw(st.booleans())):
                addr = draw(st.sampled_from(inside))
            else:
                offset = draw(st.integers(0, min(cidr.num_addresses - 1, 1 << 20)))
                addr = cidr.network_address + offset
            length = draw(st.integers(cidr.prefixlen + 1, width))
            excepts.append(ipaddress.ip_network(f"{addr}/{length}", strict=False))
    return IPBlock(cidr, tuple(excepts))


@st.composite
def peers(draw: st.DrawFn, addresses: list[IPAddress]) -> Peer:
    kind = draw(st.sampled_from(("pod", "ns", "both", "block")))
    if kind == "pod":
        return Peer(pod_selector=draw(selectors()))
    if kind == "ns":
        return Peer(namespace_selector=draw(selectors(NS_KEYS)))
    if kind == "both":
        return Peer(pod_selector=draw(selectors()), namespace_selector=draw(selectors(NS_KEYS)))
    return Peer(ip_block=draw(ip_blocks(addresses)))


@st.composite
def port_specs(draw: st.DrawFn) -> PortSpec:
    proto = draw(st.sampled_from(PROTOCOLS))
    kind = draw(st.sampled_from(("all", "number", "named", "range")))
    if kind == "all":
        return PortSpec(proto)
    if kind == "named":
        return PortSpec(proto, draw(st.sampled_from(PORT_NAMES)))
    port = draw(st.sampled_from((*PORT_NUMBERS, 1, 79, 65535)))
    if kind == "number":
        return PortSpec(proto, port)
    return PortSpec(proto, port, draw(st.integers(port, min(65535, port + 1000))))


@st.composite
def rules(draw: st.DrawFn, addresses: list[IPAddress]) -> Rule:
    return Rule(
        tuple(draw(st.lists(peers(addresses), max_size=3))),
        tuple(draw(st.lists(port_specs(), max_size=2))),
    )


@st.composite
def policies(draw: st.DrawFn, state: ClusterState, name: str) -> NetworkPolicy:
    addresses = sorted({ip for p in state.pods.values() for ip in p.ips}, key=str)
    ns = draw(st.sampled_from(sorted(state.namespaces)))
    ingress = tuple(draw(st.lists(rules(addresses), max_size=2)))
    egress = tuple(draw(st.lists(rules(addresses), max_size=2)))
    if draw(st.booleans()):
        # policyTypes omitted: the API server defaults it.
        types = {Direction.INGRESS} | ({Direction.EGRESS} if egress else set())
    else:
        types = set(draw(st.lists(st.sampled_from(list(Direction)), min_size=1, unique=True)))
    return NetworkPolicy(ns, name, draw(selectors()), frozenset(types), ingress, egress)


@st.composite
def clusters_with_policies(
    draw: st.DrawFn, max_pods: int = 8, max_policies: int = 4
) -> ClusterState:
    state = draw(clusters(max_pods))
    count = draw(st.integers(0, max_policies))
    pols = [draw(policies(state, f"p{i}")) for i in range(count)]
    return ClusterState(state.namespaces, state.pods, state.nodes, {p.key: p for p in pols})


def world_addresses() -> st.SearchStrategy[IPAddress]:
    """Addresses no pod or node holds: inside and outside the pod ranges, both families."""
    return st.one_of(
        st.integers(1000, 1100).map(v4),
        st.integers(1000, 1100).map(v6),
        st.sampled_from(
            (
                ipaddress.ip_address("8.8.8.8"),
                ipaddress.ip_address("2001:db8::1"),
                ipaddress.ip_address("10.0.0.1"),
                ipaddress.ip_address("0.0.0.1"),
            )
        ),
    )
