"""A naive NetworkPolicy evaluator written from the API documentation, for property tests.

It works on ClusterState directly - no identities, no maps, no indexes - and quotes the
networking.k8s.io/v1 API reference beside each branch. Two labelwall rules from
ARCHITECTURE §3 are added on purpose: traffic to or from a node address (or a hostNetwork
pod, which uses its node's addresses) always passes, and a hostNetwork pod is never
isolated. Namespaces carry the ``kubernetes.io/metadata.name`` label as the API server
guarantees.
"""

from __future__ import annotations

from collections.abc import Mapping

from labelwall.cluster import Direction, IPAddress, Pod, Protocol
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.model import LabelSelector, NetworkPolicy, Operator, Peer, PortSpec, Rule


def label_selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    # "matchLabels ... is equivalent to an element of matchExpressions, whose key field is
    # key, the operator is In, and the values array contains only value. The requirements
    # are ANDed." "An empty label selector matches all objects."
    for key, value in selector.match_labels.items():
        if key not in labels or labels[key] != value:
            return False
    for r in selector.match_expressions:
        present = r.key in labels
        if r.operator is Operator.IN and not (present and labels[r.key] in r.values):
            return False
        if r.operator is Operator.NOT_IN and present and labels[r.key] in r.values:
            return False
        if r.operator is Operator.EXISTS and not present:
            return False
        if r.operator is Operator.DOES_NOT_EXIST and present:
            return False
    return True


def namespace_labels(state: ClusterState, name: str) -> dict[str, str]:
    ns = state.namespaces.get(name)
    labels = dict(ns.labels) if ns is not None else {}
    labels["kubernetes.io/metadata.name"] = name
    return labels


def pod_by_address(state: ClusterState, addr: IPAddress) -> Pod | None:
    for p in state.pods.values():
        if addr in p.ips:
            return p
    return None


def is_host_address(state: ClusterState, addr: IPAddress) -> bool:
    if any(addr in n.addresses for n in state.nodes.values()):
        return True
    return any(p.host_network and addr in p.ips for p in state.pods.values())


def policy_selects(policy: NetworkPolicy, pod: Pod) -> bool:
    # "podSelector selects the pods to which this NetworkPolicy object applies ... in the
    # policy's namespace."
    return pod.namespace == policy.namespace and label_selector_matches(
        policy.pod_selector, pod.labels
    )


def peer_matches(state: ClusterState, policy: NetworkPolicy, peer: Peer, addr: IPAddress) -> bool:
    if peer.ip_block is not None:
        # "IPBlock describes a particular CIDR ... that is allowed ... except: ... CIDRs that
        # should not be included within an IPBlock". Matched by IP, pod IPs included.
        b = peer.ip_block
        if addr.version != b.cidr.version or addr not in b.cidr:
            return False
        return not any(addr in e for e in b.except_)
    pod = pod_by_address(state, addr)
    if pod is None or pod.host_network:
        return False
    if peer.namespace_selector is None:
        # "If namespaceSelector is not set ... selects the Pods matching podSelector in the
        # policy's own namespace."
        if peer.pod_selector is None:
            return False
        return pod.namespace == policy.namespace and label_selector_matches(
            peer.pod_selector, pod.labels
        )
    # "If namespaceSelector is also set, then the NetworkPolicyPeer as a whole selects the
    # pods matching podSelector in the Namespaces selected by NamespaceSelector. Otherwise it
    # selects all pods in the namespaces selected by namespaceSelector."
    if not label_selector_matches(peer.namespace_selector, namespace_labels(state, pod.namespace)):
        return False
    return peer.pod_selector is None or label_selector_matches(peer.pod_selector, pod.labels)


def port_matches(spec: PortSpec, dst: Pod | None, protocol: Protocol, port: int) -> bool:
    # "protocol ... If not specified, this field defaults to TCP." (the model holds it set)
    if protocol != spec.protocol:
        return False
    if spec.port is None:
        # "If this field is not provided, this matches all port names and numbers."
        return True
    if isinstance(spec.port, str):
        # A named port "matches" the destination pod's container port of that name.
        if dst is None or dst.host_network:
            return False
        return any(
            cp.name == spec.port and cp.protocol == protocol and cp.port == port for cp in dst.ports
        )
    # "endPort indicates that the range of ports from port to endPort if set, inclusive".
    end = spec.end_port if spec.end_port is not None else spec.port
    return spec.port <= port <= end


def rule_allows(
    state: ClusterState,
    policy: NetworkPolicy,
    rule: Rule,
    peer_addr: IPAddress,
    dst: Pod | None,
    protocol: Protocol,
    port: int,
) -> bool:
    # "If this field is empty or missing, this rule matches all sources/destinations" and
    # "If this field is empty or missing, this rule matches all ports".
    peers_ok = not rule.peers or any(peer_matches(state, policy, p, peer_addr) for p in rule.peers)
    ports_ok = not rule.ports or any(port_matches(s, dst, protocol, port) for s in rule.ports)
    return peers_ok and ports_ok


def direction_allowed(
    state: ClusterState,
    subject: Pod,
    direction: Direction,
    peer_addr: IPAddress,
    dst: Pod | None,
    protocol: Protocol,
    port: int,
) -> bool:
    """Whether ``subject`` admits the flow in ``direction`` (the peer is ``peer_addr``)."""
    if subject.host_network or is_host_address(state, peer_addr):
        return True
    # A pod is isolated for a direction when any policy selecting it has that direction in
    # policyTypes; then traffic is allowed only if some rule of some such policy allows it.
    policies = [
        p
        for p in state.policies.values()
        if direction in p.policy_types and policy_selects(p, subject)
    ]
    if not policies:
        return True
    return any(
        rule_allows(state, p, r, peer_addr, dst, protocol, port)
        for p in policies
        for r in p.rules(direction)
    )


def egress_allowed(
    state: ClusterState, src: Pod, dst_addr: IPAddress, protocol: Protocol, port: int
) -> bool:
    dst = pod_by_address(state, dst_addr)
    return direction_allowed(state, src, Direction.EGRESS, dst_addr, dst, protocol, port)


def ingress_allowed(
    state: ClusterState,
    dst: Pod,
    src_addr: IPAddress,
    dst_addr: IPAddress,
    protocol: Protocol,
    port: int,
) -> bool:
    del dst_addr  # the destination pod is known; named ports resolve against it
    return direction_allowed(state, dst, Direction.INGRESS, src_addr, dst, protocol, port)
