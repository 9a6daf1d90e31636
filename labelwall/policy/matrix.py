"""Reachability between pods, computed only through the datapath lookup model over compiled maps.

A flow from pod A to pod B is allowed when the egress decision at A (subject A, peer B's
address) and the ingress decision at B (subject B, peer A's address) both allow it - the
two classifier runs a new connection meets on its way. Nothing here evaluates policies
itself: everything goes through ``labelwall.policy.lookup.decide``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from labelwall.cluster import Direction, IPAddress, Pod, Protocol
from labelwall.errors import FieldError, InvalidInputError
from labelwall.identity.numbers import Reserved
from labelwall.policy.attribution import allowing_rule, isolating_policies
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import Compiled, compile_cluster
from labelwall.policy.cookies import RuleRef
from labelwall.policy.lookup import Reason, Verdict, decide
from labelwall.policy.mapstate import SubjectFlags
from labelwall.policy.nodeview import NodeViews

PortProto = tuple[int | str, Protocol]

#: Verdict for a named port the destination pod does not declare: there is nothing to connect to.
NO_SUCH_PORT = Verdict(False, Reason.UNSUPPORTED)
#: Verdict for a pod talking to itself: loopback traffic stays inside the pod's network
#: namespace and never crosses the host-side veth, so no classifier (ours or any CNI's)
#: judges it; NetworkPolicy cannot block it. Upstream's e2e suite ignores these cells too.
LOOPBACK = Verdict(True, Reason.NOT_ISOLATED)


@dataclass(frozen=True)
class Cell:
    """One probe: ``src`` -> ``dst`` (``namespace/name``) on ``port``/``protocol``."""

    src: str
    dst: str
    port: int | str
    protocol: Protocol
    allowed: bool
    egress: Verdict
    ingress: Verdict


def as_compiled(compiled_or_state: Compiled | ClusterState) -> Compiled:
    if isinstance(compiled_or_state, Compiled):
        return compiled_or_state
    return compile_cluster(compiled_or_state)


def address_pair(src: Pod, dst: Pod) -> tuple[IPAddress, IPAddress] | None:
    """Each pod's first address of one family: IPv4 when both have one, else IPv6, else None."""
    for version in (4, 6):
        a = next((ip for ip in src.ips if ip.version == version), None)
        b = next((ip for ip in dst.ips if ip.version == version), None)
        if a is not None and b is not None:
            return a, b
    return None


def resolve_port(dst: Pod, port: int | str, protocol: Protocol) -> int | None:
    """A named port resolves against the destination pod's container ports (name + protocol)."""
    if isinstance(port, int):
        return port
    for cp in dst.ports:
        if cp.name == port and cp.protocol == protocol:
            return cp.port
    return None


def _probe(
    at_src: Compiled,
    at_dst: Compiled,
    src: Pod,
    dst: Pod,
    addrs: tuple[IPAddress, IPAddress],
    port: int | None,
    protocol: Protocol,
) -> tuple[Verdict, Verdict]:
    """Egress judged with the source node's maps, ingress with the destination node's."""
    if port is None:
        return NO_SUCH_PORT, NO_SUCH_PORT
    if src.key == dst.key:
        return LOOPBACK, LOOPBACK
    src_ip, dst_ip = addrs
    egress = decide(
        at_src.map_state,
        at_src.pod_identity[src.key],
        Direction.EGRESS,
        dst_ip,
        dst_ip,
        protocol,
        port,
    )
    ingress = decide(
        at_dst.map_state,
        at_dst.pod_identity[dst.key],
        Direction.INGRESS,
        src_ip,
        dst_ip,
        protocol,
        port,
    )
    return egress, ingress


def _views(c: Compiled, per_node: bool) -> NodeViews | None:
    return NodeViews(c) if per_node else None


def _view(views: NodeViews | None, c: Compiled, pod: Pod) -> Compiled:
    return views.of(pod.node) if views is not None else c


def reachability(
    compiled_or_state: Compiled | ClusterState,
    ports: Sequence[PortProto],
    per_node: bool = False,
) -> list[Cell]:
    """Every ordered pod pair per (port, protocol), sorted by pod key.

    Self pairs are included and always allowed (see ``LOOPBACK``). ``per_node``: judge each
    side with the maps of the node it runs on (``spec.nodeName``), as the agents do, instead
    of the one view where every node is local (see ``policy/nodeview.py``).
    """
    c = as_compiled(compiled_or_state)
    views = _views(c, per_node)
    pods = [c.state.pods[k] for k in sorted(c.state.pods) if c.state.pods[k].ips]
    cells: list[Cell] = []
    for port, protocol in ports:
        for src in pods:
            for dst in pods:
                addrs = address_pair(src, dst)
                if addrs is None:
                    continue
                egress, ingress = _probe(
                    _view(views, c, src),
                    _view(views, c, dst),
                    src,
                    dst,
                    addrs,
                    resolve_port(dst, port, protocol),
                    protocol,
                )
                cells.append(
                    Cell(
                        src.key,
                        dst.key,
                        port,
                        protocol,
                        egress.allowed and ingress.allowed,
                        egress,
                        ingress,
                    )
                )
    return cells


@dataclass(frozen=True)
class Side:
    """One classifier run: at ``pod`` for ``direction``."""

    direction: Direction
    pod: str
    identity: int
    isolated: bool
    policies: tuple[str, ...]  # policies selecting the pod with this direction in policyTypes
    verdict: Verdict
    rule: RuleRef | None
    entry_text: str = ""  # the matched entry in words, e.g. "peer 4242, TCP port name 'http'"
    #: An address outside the cluster's pods: no classifier of ours runs on this side.
    outside: bool = False

    def as_dict(self) -> dict[str, Any]:
        v = self.verdict
        entry = None
        if v.entry is not None:
            e = v.entry
            entry = {
                "subject": e.subject,
                "peer": e.peer,
                "direction": e.direction.name,
                "protocol": e.protocol.name,
                "port": e.port,
                "portBits": e.port_bits,
                "named": e.named,
                "cookie": v.cookie,
            }
        return {
            "direction": self.direction.name,
            "pod": None if self.outside else self.pod,
            "address": self.pod if self.outside else None,
            "identity": self.identity,
            "isolated": self.isolated,
            "policies": list(self.policies),
            "allowed": v.allowed,
            "reason": v.reason.name,
            "peerIdentity": v.peer_identity,
            "cidrIdentity": v.cidr_identity,
            "entry": entry,
            "rule": None
            if self.rule is None
            else {
                "policy": self.rule.policy,
                "direction": self.rule.direction.name,
                "index": self.rule.index,
                "field": self.rule.field,
            },
        }

    def text(self) -> str:
        where = "egress at" if self.direction is Direction.EGRESS else "ingress at"
        if self.outside:
            return f"{where} {self.pod}: not a pod; no classifier judges this side"
        head = f"{where} {self.pod} (identity {self.identity}): "
        if not self.isolated:
            return head + "not isolated -> allowed"
        lines = [head + "isolated by " + ", ".join(self.policies)]
        v = self.verdict
        if v.reason is Reason.POLICY and v.entry is not None:
            lines.append(
                f"  matched entry [{self.entry_text}] cookie {v.cookie:#010x} from {self.rule}"
            )
        elif v.reason is Reason.HOST:
            lines.append("  peer is the host -> allowed")
        elif v.reason is Reason.AUDIT:
            lines.append("  no entry matched; audit mode -> allowed (would drop)")
        else:
            lines.append(f"  no entry matched -> {v.reason.name}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Explanation:
    src: str
    dst: str
    port: int | str
    protocol: Protocol
    resolved_port: int | None
    src_identity: int
    dst_identity: int
    src_labels: str
    dst_labels: str
    egress: Side
    ingress: Side

    @property
    def allowed(self) -> bool:
        return self.egress.verdict.allowed and self.ingress.verdict.allowed

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.src,
            "to": self.dst,
            "port": self.port,
            "protocol": self.protocol.name,
            "resolvedPort": self.resolved_port,
            "allowed": self.allowed,
            "identities": {
                "from": {"number": self.src_identity, "labels": self.src_labels},
                "to": {"number": self.dst_identity, "labels": self.dst_labels},
            },
            "egress": self.egress.as_dict(),
            "ingress": self.ingress.as_dict(),
        }

    def text(self) -> str:
        verdict = "ALLOWED" if self.allowed else "BLOCKED"
        lines = [
            f"{self.src} -> {self.dst} {self.protocol.name}/{self.port}: {verdict}",
            f"  from identity {self.src_identity} {self.src_labels}",
            f"  to   identity {self.dst_identity} {self.dst_labels}",
        ]
        if self.resolved_port is None:
            lines.append(f"  {self.dst} declares no {self.protocol.name} port named {self.port!r}")
        lines += [self.egress.text(), self.ingress.text()]
        return "\n".join(lines)


def side(c: Compiled, direction: Direction, pod: str, verdict: Verdict) -> Side:
    """The classifier run at ``pod`` for ``direction`` as explain shows it (isolation, rule)."""
    ident = c.pod_identity[pod]
    flag = (
        SubjectFlags.INGRESS_ISOLATED
        if direction is Direction.INGRESS
        else SubjectFlags.EGRESS_ISOLATED
    )
    isolated = bool(c.map_state.subjects.get(ident, SubjectFlags.NONE) & flag)
    policies = isolating_policies(c, ident, direction)  # shared with observe (attribution.py)
    rule = allowing_rule(c, verdict)
    return Side(direction, pod, ident, isolated, policies, verdict, rule, _entry_text(c, verdict))


def _entry_text(c: Compiled, verdict: Verdict) -> str:
    e = verdict.entry
    if e is None:
        return ""
    peer = "any peer" if e.peer == 0 else f"peer {e.peer}"
    if e.peer in c.identities:
        peer += f" {c.identities[e.peer]}"
    elif e.peer:
        nets = [str(n) for n, i in c.map_state.cidrs.items() if i == e.peer]
        peer += f" (cidr {', '.join(nets)})" if nets else ""
    if e.protocol == Protocol.ANY:
        ports = "any protocol and port"
    elif e.named:
        names = [n for n, i in c.name_ids.items() if i == e.port]
        ports = f"{e.protocol.name} port name {names[0] if names else e.port!r}"
    elif e.port_bits == 0:
        ports = f"{e.protocol.name} any port"
    elif e.port_bits == 16:
        ports = f"{e.protocol.name} port {e.port}"
    else:
        last = e.port + (1 << (16 - e.port_bits)) - 1
        ports = f"{e.protocol.name} ports {e.port}-{last}"
    return f"subject {e.subject}, {peer}, {e.direction.name.lower()}, {ports}"


def _pod(c: Compiled, key: str, flag: str) -> Pod:
    pod = c.state.pods.get(key)
    if pod is None:
        raise InvalidInputError(
            [FieldError("<command line>", None, "labelwall", flag, f"no pod {key}")]
        )
    if not pod.ips:
        raise InvalidInputError(
            [FieldError("<command line>", None, "labelwall", flag, f"pod {key} has no IP address")]
        )
    return pod


def _labels(c: Compiled, ident: int) -> str:
    ls = c.identities.get(ident)
    if ls is not None:
        return str(ls)
    return "(host network)" if ident == Reserved.HOST else "(unknown)"


def explain(
    compiled_or_state: Compiled | ClusterState,
    src: str,
    dst: str,
    port: int | str,
    protocol: Protocol,
    per_node: bool = False,
) -> Explanation:
    """Why ``src`` -> ``dst`` on ``port``/``protocol`` is allowed or blocked, side by side.

    ``per_node`` as for ``reachability``: each side with the maps of its own node.
    """
    c = as_compiled(compiled_or_state)
    views = _views(c, per_node)
    src_addr, dst_addr = _address(src), _address(dst)
    if src_addr is not None or dst_addr is not None:
        return _explain_outside(c, views, src, dst, src_addr, dst_addr, port, protocol)
    a, b = _pod(c, src, "--from"), _pod(c, dst, "--to")
    addrs = address_pair(a, b)
    if addrs is None:
        raise InvalidInputError(
            [
                FieldError(
                    "<command line>",
                    None,
                    "labelwall",
                    "--to",
                    f"{src} and {dst} share no address family",
                )
            ]
        )
    resolved = resolve_port(b, port, protocol)
    at_src, at_dst = _view(views, c, a), _view(views, c, b)
    egress, ingress = _probe(at_src, at_dst, a, b, addrs, resolved, protocol)
    return Explanation(
        src=src,
        dst=dst,
        port=port,
        protocol=protocol,
        resolved_port=resolved,
        src_identity=c.pod_identity[src],
        dst_identity=c.pod_identity[dst],
        src_labels=_labels(c, c.pod_identity[src]),
        dst_labels=_labels(c, c.pod_identity[dst]),
        egress=side(at_src, Direction.EGRESS, src, egress),
        ingress=side(at_dst, Direction.INGRESS, dst, ingress),
    )


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _usage(flag: str, message: str) -> InvalidInputError:
    return InvalidInputError([FieldError("<command line>", None, "labelwall", flag, message)])


def _outside_side(direction: Direction, addr: IPAddress) -> Side:
    return Side(direction, str(addr), 0, False, (), LOOPBACK, None, outside=True)


def _explain_outside(
    c: Compiled,
    views: NodeViews | None,
    src: str,
    dst: str,
    src_addr: IPAddress | None,
    dst_addr: IPAddress | None,
    port: int | str,
    protocol: Protocol,
) -> Explanation:
    """A flow with an address at one end: only the pod's end has a classifier to ask."""
    if src_addr is not None and dst_addr is not None:
        raise _usage("--to", "one end of the flow must be a pod (NS/POD)")
    if src_addr is not None:
        b = _pod(c, dst, "--to")
        at = _view(views, c, b)
        mine = next((ip for ip in b.ips if ip.version == src_addr.version), None)
        if mine is None:
            raise _usage("--from", f"{dst} has no IPv{src_addr.version} address")
        resolved = resolve_port(b, port, protocol)
        v = NO_SUCH_PORT if resolved is None else decide(
            at.map_state, at.pod_identity[b.key], Direction.INGRESS, src_addr, mine,
            protocol, resolved,
        )  # fmt: skip
        egress = _outside_side(Direction.EGRESS, src_addr)
        ingress = side(at, Direction.INGRESS, dst, v)
        src_id, dst_id = v.peer_identity, at.pod_identity[dst]
    else:
        assert dst_addr is not None
        a = _pod(c, src, "--from")
        at = _view(views, c, a)
        if not isinstance(port, int):
            raise _usage("--port", "a named port needs a pod at the destination to resolve it")
        resolved = port
        v = decide(
            at.map_state, at.pod_identity[a.key], Direction.EGRESS, dst_addr, dst_addr,
            protocol, port,
        )  # fmt: skip
        egress = side(at, Direction.EGRESS, src, v)
        ingress = _outside_side(Direction.INGRESS, dst_addr)
        src_id, dst_id = at.pod_identity[src], v.peer_identity
    return Explanation(
        src=src,
        dst=dst,
        port=port,
        protocol=protocol,
        resolved_port=resolved,
        src_identity=src_id,
        dst_identity=dst_id,
        src_labels=_labels(at, src_id) if src_addr is None else _address_labels(at, src_id),
        dst_labels=_labels(at, dst_id) if dst_addr is None else _address_labels(at, dst_id),
        egress=egress,
        ingress=ingress,
    )


def _address_labels(c: Compiled, ident: int) -> str:
    if ident in c.identities:
        return f"{c.identities[ident]} (a pod's address)"
    if ident == Reserved.WORLD:
        return "(outside the cluster)"
    if ident == Reserved.HOST:
        return "(this node)"
    if ident == Reserved.REMOTE_NODE:
        return "(another node)"
    return "(outside the cluster)"
