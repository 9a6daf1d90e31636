"""A verdict event of the classifier + the compiled policy view -> a Flow with Hubble's names.

Pure (no I/O): the datapath's ring buffer reader turns its records into ``VerdictEvent``
values (labelwall/datapath/flowreader.py), the agent keeps the last N, and this module names
what they are about with the same compile result the agent wrote to the maps:

- ``source``/``destination``: the packet's addresses as endpoints: a pod (identity,
  namespace, pod_name, labels ``k8s:KEY=VALUE`` plus ``k8s:io.kubernetes.pod.namespace``),
  a node (``reserved:host`` for this node, ``reserved:remote-node`` for another), an ipBlock
  CIDR identity (``cidr:PREFIX``) or ``reserved:world``.
- ``verdict``: FORWARDED, DROPPED, or AUDIT (audit mode let a would-drop pass).
- ``drop_reason_desc``: ``POLICY_DENIED`` when isolated and no allow matched (Hubble's
  name); ``POLICY_DENY`` stays reserved for an explicit deny rule, so the two never merge.
- attribution (labelwall/policy/attribution.py, shared with ``explain``): ``*_allowed_by``
  the rule that allowed it (with its index), ``*_denied_by`` every policy that isolates the
  pod in that direction for a drop by isolation (and for an AUDIT pass).
- ``is_reply``: the first reply of a tracked TCP connection (SYN-ACK, passed by conntrack).
  As in Hubble, ``traffic_direction`` of a reply is the direction of the connection it
  answers, and a reply carries no policy (conntrack passed it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from labelwall.cluster import Direction, IPAddress, IPNetwork, Pod
from labelwall.identity.labels import LabelSet
from labelwall.identity.numbers import Reserved, is_local
from labelwall.policy.attribution import Attribution, Naming, attribution
from labelwall.policy.compile import Compiled
from labelwall.policy.cookies import RuleRef
from labelwall.policy.lookup import Reason

FORWARDED, DROPPED, AUDIT = "FORWARDED", "DROPPED", "AUDIT"
VERDICTS = (FORWARDED, DROPPED, AUDIT)

#: Our drop reasons as drop_reason_desc: Hubble's names where one means the same thing.
DROP_REASON_DESC: Mapping[Reason, str] = {
    Reason.POLICY_DENIED: "POLICY_DENIED",  # isolated, no allow matched
    Reason.UNKNOWN_ENDPOINT: "UNKNOWN_ENDPOINT",
    Reason.MALFORMED: "INVALID_PACKET_DROPPED",
    Reason.FRAGMENT: "FRAGMENT_NOT_TRACKED",
    Reason.UNSUPPORTED: "UNSUPPORTED_L3_PROTOCOL",
    Reason.SOURCE_INVALID: "INVALID_SOURCE_IP",
}
#: Reserved for an explicit deny rule (a future tier), never used for "no allow matched".
EXPLICIT_DENY_DESC = "POLICY_DENY"
DROP_REASON_DESCS = (*DROP_REASON_DESC.values(), EXPLICIT_DENY_DESC)

PROTOCOLS = {6: "TCP", 17: "UDP", 132: "SCTP"}
ICMP_PROTOCOLS = {1: "ICMPv4", 58: "ICMPv6"}
TCP_FLAG_NAMES = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")


@dataclass(frozen=True)
class VerdictEvent:
    """One classifier verdict as the kernel reported it (labelwall/datapath/abi.h lw_event).

    ``time_ns``: wall clock (the reader adds the boot offset to the kernel's monotonic ns).
    ``subject``/``peer``: 0 when the classifier did not look them up (conntrack passes).
    """

    time_ns: int
    direction: Direction  # of the hook: INGRESS = entering the pod, EGRESS = leaving it
    allowed: bool
    reason: Reason
    cookie: int
    subject: int
    peer: int
    cidr_identity: int
    proto: int
    sport: int
    dport: int
    saddr: IPAddress | None
    daddr: IPAddress | None
    tcp_flags: int = 0
    icmp_type: int | None = None  # ICMP/ICMPv6 type and code; None when none was read
    icmp_code: int | None = None


@dataclass(frozen=True)
class FlowEndpoint:
    identity: int
    namespace: str = ""
    pod_name: str = ""
    labels: tuple[str, ...] = ()
    workloads: tuple[tuple[str, str], ...] = ()  # (name, kind)
    node: str = ""  # a node address: the node's name

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pod_name}" if self.pod_name else ""

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"identity": self.identity}
        if self.namespace:
            out["namespace"] = self.namespace
        if self.pod_name:
            out["pod_name"] = self.pod_name
        out["labels"] = list(self.labels)
        if self.workloads:
            out["workloads"] = [{"name": n, "kind": k} for n, k in self.workloads]
        if self.node:
            out["node_name"] = self.node
        return out


@dataclass(frozen=True)
class PolicyRef:
    """A policy in an attribution list; ``rule_index`` only for the rule that allowed."""

    namespace: str
    name: str
    kind: str = "NetworkPolicy"
    rule_index: int | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "namespace": self.namespace, "kind": self.kind}
        if self.rule_index is not None:
            out["rule_index"] = self.rule_index
        return out

    @classmethod
    def of_rule(cls, ref: RuleRef) -> PolicyRef:
        ns, _, name = ref.policy.partition("/")
        return cls(ns, name, rule_index=ref.index)

    @classmethod
    def of_policy(cls, key: str) -> PolicyRef:
        ns, _, name = key.partition("/")
        return cls(ns, name)


@dataclass(frozen=True)
class Flow:
    time_ns: int
    verdict: str
    traffic_direction: str  # INGRESS | EGRESS
    is_reply: bool
    ip_source: str
    ip_destination: str
    ip_version: int  # 4, 6 (0: not IP)
    protocol: str  # TCP UDP SCTP ICMPv4 ICMPv6, or the protocol number
    source: FlowEndpoint
    destination: FlowEndpoint
    node_name: str
    reason: Reason
    drop_reason_desc: str = ""
    source_port: int = 0
    destination_port: int = 0
    tcp_flags: tuple[str, ...] = ()
    icmp_type: int | None = None
    icmp_code: int | None = None
    ingress_allowed_by: tuple[PolicyRef, ...] = ()
    egress_allowed_by: tuple[PolicyRef, ...] = ()
    ingress_denied_by: tuple[PolicyRef, ...] = ()
    egress_denied_by: tuple[PolicyRef, ...] = ()

    @property
    def policies(self) -> tuple[PolicyRef, ...]:
        return (
            self.ingress_allowed_by
            + self.egress_allowed_by
            + self.ingress_denied_by
            + self.egress_denied_by
        )

    @property
    def time(self) -> str:
        """RFC 3339 with nanoseconds, as Hubble prints it."""
        secs, ns = divmod(self.time_ns, 1_000_000_000)
        stamp = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{stamp}.{ns:09d}Z"

    def l4_json(self) -> dict[str, Any]:
        if self.protocol in ICMP_PROTOCOLS.values():
            return {self.protocol: {"type": self.icmp_type, "code": self.icmp_code}}
        if self.protocol in PROTOCOLS.values():
            body: dict[str, Any] = {
                "source_port": self.source_port,
                "destination_port": self.destination_port,
            }
            if self.protocol == "TCP":
                body["flags"] = {f: True for f in self.tcp_flags}
            return {self.protocol: body}
        return {}

    def as_json(self) -> dict[str, Any]:
        """Hubble's GetFlowsResponse shape: {"flow": {...}, "node_name", "time"}."""
        flow: dict[str, Any] = {
            "time": self.time,
            "verdict": self.verdict,
            "IP": {
                "source": self.ip_source,
                "destination": self.ip_destination,
                "ipVersion": f"IPv{self.ip_version}" if self.ip_version else "IP_NOT_USED",
            },
            "l4": self.l4_json(),
            "source": self.source.as_json(),
            "destination": self.destination.as_json(),
            "Type": "L3_L4",
            "node_name": self.node_name,
            "traffic_direction": self.traffic_direction,
            "is_reply": self.is_reply,
            "reason": self.reason.name,
        }
        if self.drop_reason_desc:
            flow["drop_reason_desc"] = self.drop_reason_desc
        for name in ("ingress_allowed_by", "egress_allowed_by", "ingress_denied_by",
                     "egress_denied_by"):  # fmt: skip
            refs: tuple[PolicyRef, ...] = getattr(self, name)
            if refs:
                flow[name] = [r.as_json() for r in refs]
        return {"flow": flow, "node_name": self.node_name, "time": self.time}


def _labels(ls: LabelSet) -> tuple[str, ...]:
    own = [f"k8s:{k}={v}" for k, v in sorted(ls.pod_labels.items())]
    return (*own, f"k8s:io.kubernetes.pod.namespace={ls.namespace}")


@dataclass(frozen=True)
class FlowView:
    """What names a flow: the policy naming of one moment and the node events come from.

    The address indexes are built on first use (a view is made per sync, read far less).
    """

    names: Naming
    node_name: str

    @classmethod
    def of(cls, names: Naming | Compiled, node_name: str) -> FlowView:
        if isinstance(names, Compiled):
            names = Naming.of_compiled(names)
        return cls(names, node_name)

    @cached_property
    def pods_by_ip(self) -> Mapping[IPAddress, Pod]:
        pods = self.names.state.pods.values()
        return {ip: p for p in pods if not p.host_network for ip in p.ips}

    @cached_property
    def nodes_by_ip(self) -> Mapping[IPAddress, str]:
        state = self.names.state
        nodes = {ip: n.name for n in state.nodes.values() for ip in n.addresses}
        for p in state.pods.values():
            if p.host_network and p.node:
                nodes.update({ip: p.node for ip in p.ips})
        return nodes

    def _cidr_identity(self, addr: IPAddress) -> tuple[int, IPNetwork | None]:
        best: tuple[int, IPNetwork | None] = (0, None)
        for net, ident in self.names.cidrs.items():
            wider = best[1] is not None and net.prefixlen <= best[1].prefixlen
            if addr.version == net.version and addr in net and not wider:
                best = (ident, net)
        return best

    def endpoint(self, addr: IPAddress | None, reported: int = 0) -> FlowEndpoint:
        """``addr`` named; ``reported``: the identity the classifier found for it, if any."""
        if addr is None:
            return FlowEndpoint(reported)
        pod = self.pods_by_ip.get(addr)
        c = self.names
        if pod is not None:
            ident = c.identity_of(pod)
            ls = c.identities.get(ident)
            labels = _labels(ls) if ls is not None else ()
            if ident == Reserved.INIT:
                labels = ("reserved:init",)
            work = ((pod.name, pod.workload),) if pod.workload else ()
            return FlowEndpoint(ident, pod.namespace, pod.name, labels, work)
        node = self.nodes_by_ip.get(addr)
        if node is not None:
            local = node == self.node_name or not self.node_name
            ident = Reserved.HOST if local else Reserved.REMOTE_NODE
            return FlowEndpoint(int(ident), labels=_reserved_label(ident), node=node)
        if is_local(reported):
            nets = sorted(str(n) for n, i in c.cidrs.items() if i == reported)
            return FlowEndpoint(reported, labels=tuple(f"cidr:{n}" for n in nets))
        if reported and reported != Reserved.WORLD:
            return FlowEndpoint(reported, labels=_reserved_label(reported))
        cidr, net = self._cidr_identity(addr)
        if net is not None:
            return FlowEndpoint(cidr, labels=(f"cidr:{net}", "reserved:world"))
        return FlowEndpoint(int(Reserved.WORLD), labels=("reserved:world",))


def _reserved_label(ident: int) -> tuple[str, ...]:
    try:
        return (f"reserved:{Reserved(ident).name.lower().replace('_', '-')}",)
    except ValueError:
        return ()


def _verdict(ev: VerdictEvent) -> str:
    if not ev.allowed:
        return DROPPED
    return AUDIT if ev.reason is Reason.AUDIT else FORWARDED


def _flags(bits: int) -> tuple[str, ...]:
    return tuple(name for i, name in enumerate(TCP_FLAG_NAMES) if bits & (1 << i))


def to_flow(ev: VerdictEvent, view: FlowView) -> Flow:
    """The flow for one verdict event (see the module doc for each field)."""
    src = view.endpoint(ev.saddr, ev.peer if ev.direction is Direction.INGRESS else 0)
    dst = view.endpoint(ev.daddr, ev.peer if ev.direction is Direction.EGRESS else 0)
    local = dst if ev.direction is Direction.INGRESS else src
    subject = ev.subject or local.identity
    reply = ev.reason is Reason.CT_REPLY
    att = (
        Attribution()
        if reply
        else attribution(view.names, subject, ev.direction, ev.reason, ev.cookie)
    )
    allowed = tuple(PolicyRef.of_rule(r) for r in att.allowed_by)
    denied = tuple(PolicyRef.of_policy(k) for k in att.denied_by)
    ingress = ev.direction is Direction.INGRESS
    direction = ev.direction
    if reply:
        direction = Direction.EGRESS if ingress else Direction.INGRESS
    addr = ev.saddr or ev.daddr
    icmp = ev.proto in ICMP_PROTOCOLS
    return Flow(
        time_ns=ev.time_ns,
        verdict=_verdict(ev),
        traffic_direction=direction.name,
        is_reply=reply,
        ip_source=str(ev.saddr) if ev.saddr else "",
        ip_destination=str(ev.daddr) if ev.daddr else "",
        ip_version=addr.version if addr else 0,
        protocol=PROTOCOLS.get(ev.proto) or ICMP_PROTOCOLS.get(ev.proto) or str(ev.proto),
        source=src,
        destination=dst,
        node_name=view.node_name,
        reason=ev.reason,
        drop_reason_desc="" if ev.allowed else DROP_REASON_DESC.get(ev.reason, ev.reason.name),
        source_port=0 if icmp else ev.sport,
        destination_port=0 if icmp else ev.dport,
        tcp_flags=_flags(ev.tcp_flags) if ev.proto == 6 else (),
        icmp_type=ev.icmp_type if icmp else None,
        icmp_code=ev.icmp_code if icmp else None,
        ingress_allowed_by=allowed if ingress else (),
        egress_allowed_by=() if ingress else allowed,
        ingress_denied_by=denied if ingress else (),
        egress_denied_by=() if ingress else denied,
    )


def _endpoint_from_json(d: Mapping[str, Any]) -> FlowEndpoint:
    return FlowEndpoint(
        identity=int(d.get("identity", 0)),
        namespace=str(d.get("namespace", "")),
        pod_name=str(d.get("pod_name", "")),
        labels=tuple(d.get("labels", ())),
        workloads=tuple((w["name"], w["kind"]) for w in d.get("workloads", ())),
        node=str(d.get("node_name", "")),
    )


def _refs(items: Any) -> tuple[PolicyRef, ...]:
    return tuple(
        PolicyRef(p["namespace"], p["name"], p.get("kind", "NetworkPolicy"), p.get("rule_index"))
        for p in items or ()
    )


def _time_ns(text: str) -> int:
    """Back from ``Flow.time`` (RFC 3339, nanoseconds, Z)."""
    stamp, _, frac = text.rstrip("Z").partition(".")
    secs = int(datetime.fromisoformat(stamp).replace(tzinfo=UTC).timestamp())
    return secs * 1_000_000_000 + int(frac.ljust(9, "0")[:9] or 0)


def flow_from_json(doc: Mapping[str, Any]) -> Flow:
    """The inverse of ``Flow.as_json`` (what a client reads back from an agent)."""
    f = doc["flow"]
    l4: Mapping[str, Any] = f.get("l4") or {}
    proto, body = next(iter(l4.items())) if l4 else (str(f.get("protocol", "")), {})
    ip = f.get("IP") or {}
    version = str(ip.get("ipVersion", ""))
    icmp = proto in ICMP_PROTOCOLS.values()
    return Flow(
        time_ns=_time_ns(f["time"]),
        verdict=f["verdict"],
        traffic_direction=f["traffic_direction"],
        is_reply=bool(f.get("is_reply", False)),
        ip_source=str(ip.get("source", "")),
        ip_destination=str(ip.get("destination", "")),
        ip_version=int(version[3:]) if version.startswith("IPv") else 0,
        protocol=proto,
        source=_endpoint_from_json(f.get("source") or {}),
        destination=_endpoint_from_json(f.get("destination") or {}),
        node_name=str(f.get("node_name", doc.get("node_name", ""))),
        reason=Reason[f.get("reason", "POLICY")],
        drop_reason_desc=str(f.get("drop_reason_desc", "")),
        source_port=0 if icmp else int(body.get("source_port", 0)),
        destination_port=0 if icmp else int(body.get("destination_port", 0)),
        tcp_flags=tuple(k for k in TCP_FLAG_NAMES if (body.get("flags") or {}).get(k)),
        icmp_type=body.get("type") if icmp else None,
        icmp_code=body.get("code") if icmp else None,
        ingress_allowed_by=_refs(f.get("ingress_allowed_by")),
        egress_allowed_by=_refs(f.get("egress_allowed_by")),
        ingress_denied_by=_refs(f.get("ingress_denied_by")),
        egress_denied_by=_refs(f.get("egress_denied_by")),
    )
