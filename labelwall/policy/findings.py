"""Compile findings: policy problems that do not stop compilation, with stable codes.

``findings`` looks at the lowered policies, the pods and the port-name ids and reports
selectors that select nothing, selectors on label keys identities exclude, and port
names no pod declares or that another name shadows. It does no I/O and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from labelwall.cluster import Direction, Pod, Protocol
from labelwall.identity.labels import NAMESPACE_NAME_LABEL
from labelwall.identity.numbers import ANY
from labelwall.policy.cookies import RuleRef
from labelwall.policy.mapstate import MapState, PolicyKey, SubjectFlags
from labelwall.policy.model import NetworkPolicy, Operator
from labelwall.policy.ports import PortTemplate
from labelwall.policy.rules import LoweredPolicy
from labelwall.policy.selectorcache import PeerScope, peer_scope
from labelwall.policy.selectors import matches, selector_keys

SELECTS_NOTHING = "selects-nothing"
EXCLUDED_LABEL_KEY = "excluded-label-key"
UNKNOWN_PORT_NAME = "unknown-port-name"
SHADOWED_PORT_NAME = "shadowed-port-name"
EGRESS_BLOCKS_DNS = "egress-blocks-dns"
HOST_NETWORK_SELECTED = "host-network-selected"
REDUNDANT_RULE = "redundant-rule"
UNKNOWN_NAMESPACE = "unknown-namespace"

DNS_PORT = 53


@dataclass(frozen=True)
class CompileWarning:
    """A finding that does not stop compilation. ``code`` is stable for tools to filter on."""

    policy: str
    field: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"NetworkPolicy {self.policy}: {self.field}: {self.message}"


def _shadowed_names(
    pods: Mapping[str, Pod], name_ids: Mapping[str, int]
) -> dict[tuple[str, Protocol], list[str]]:
    """(name, protocol) -> the pods where another name of the same port hides it.

    One (address, protocol, port) carries one name id in lw_ports_v1: a port a pod
    declares under two names policies use matches only the smaller id's name.
    """
    shadowed: dict[tuple[str, Protocol], list[str]] = {}
    for pk in sorted(pods):
        p = pods[pk]
        if p.host_network:
            continue
        by_port: dict[tuple[Protocol, int], set[str]] = {}
        for cp in p.ports:
            if cp.name is not None and cp.name in name_ids:
                by_port.setdefault((cp.protocol, cp.port), set()).add(cp.name)
        for (proto, number), names in by_port.items():
            kept = min(names, key=lambda n: name_ids[n])
            for n in names - {kept}:
                shadowed.setdefault((n, proto), []).append(
                    f"{pk} ({proto.name}/{number} is also named {kept!r})"
                )
    return shadowed


def _excluded(
    key: str, where: str, keys: frozenset[str], exclude: frozenset[str]
) -> CompileWarning:
    bad = ", ".join(sorted(keys & exclude))
    return CompileWarning(
        key,
        where,
        EXCLUDED_LABEL_KEY,
        f"uses label key(s) {bad} that identities exclude: every pod looks as if it lacked "
        "them, so matchLabels/In/Exists on them select no pod and NotIn/DoesNotExist "
        "select every pod; remove the key from identity.excludeLabels to select on it",
    )


def findings(
    policies: Iterable[tuple[LoweredPolicy, bool]],
    pods: Mapping[str, Pod],
    name_ids: Mapping[str, int],
    exclude: frozenset[str],
    selects_any: Callable[[PeerScope], bool],
) -> list[CompileWarning]:
    """Warnings for ``policies`` (each with whether it selects any subject), in order.

    ``selects_any`` answers whether a peer scope selects any identity (the selector
    cache's answer, so warnings and compiled entries agree).
    """
    out: list[CompileWarning] = []
    declared = {
        (cp.name, cp.protocol)
        for p in pods.values()
        if not p.host_network
        for cp in p.ports
        if cp.name is not None
    }
    shadowed = _shadowed_names(pods, name_ids)
    host_network = [p for k, p in sorted(pods.items()) if p.host_network]
    for pol, has_subjects in policies:
        key = pol.key
        unenforced = [
            p.key
            for p in host_network
            if p.namespace == pol.namespace
            and matches(
                pol.subject_selector, {k: v for k, v in p.labels.items() if k not in exclude}
            )
        ]
        if unenforced:
            out.append(
                CompileWarning(
                    key,
                    "spec.podSelector",
                    HOST_NETWORK_SELECTED,
                    f"selects hostNetwork pod(s) {', '.join(unenforced[:3])}"
                    f"{' …' if len(unenforced) > 3 else ''}: their traffic never crosses a pod "
                    "veth, so this policy is not enforced on them (no CNI can)",
                )
            )
        if not has_subjects:
            out.append(
                CompileWarning(
                    key, "spec.podSelector", SELECTS_NOTHING, "selects no pod in the namespace"
                )
            )
        if selector_keys(pol.subject_selector) & exclude:
            out.append(
                _excluded(key, "spec.podSelector", selector_keys(pol.subject_selector), exclude)
            )
        for rule in pol.rules:
            field = rule.ref.field
            side = "from" if rule.ref.direction is Direction.INGRESS else "to"
            for j, peer in enumerate(rule.peers):
                where = f"{field}.{side}[{j}]"
                if peer.ip_block is not None:
                    continue
                scope = peer_scope(peer, pol.namespace)
                if scope is None or not selects_any(scope):
                    out.append(CompileWarning(key, where, SELECTS_NOTHING, "selects no pod"))
                if peer.pod_selector is not None and selector_keys(peer.pod_selector) & exclude:
                    out.append(
                        _excluded(
                            key, f"{where}.podSelector", selector_keys(peer.pod_selector), exclude
                        )
                    )
            for j, spec in enumerate(rule.ports):
                if isinstance(spec.port, str) and (spec.port, spec.protocol) in shadowed:
                    pods_hit = shadowed[(spec.port, spec.protocol)]
                    out.append(
                        CompileWarning(
                            key,
                            f"{field}.ports[{j}].port",
                            SHADOWED_PORT_NAME,
                            f"port name {spec.port!r} is not matched on {', '.join(pods_hit[:3])}"
                            f"{' …' if len(pods_hit) > 3 else ''}: a port keeps one name",
                        )
                    )
                if isinstance(spec.port, str) and (spec.port, spec.protocol) not in declared:
                    out.append(
                        CompileWarning(
                            key,
                            f"{field}.ports[{j}].port",
                            UNKNOWN_PORT_NAME,
                            f"no pod declares a {spec.protocol.name} port named {spec.port!r}",
                        )
                    )
    return out


def _may_reach_dns(key: PolicyKey) -> bool:
    """An egress entry that can admit a DNS query (UDP or any protocol, a port range with 53).

    A named-port entry counts: kube-dns names its ports (``dns``, ``dns-tcp``), and the
    lint must not cry wolf over a rule it cannot resolve without the destination pod.
    """
    if key.direction is not Direction.EGRESS or key.protocol not in (Protocol.ANY, Protocol.UDP):
        return False
    if key.named or key.port_bits == 0:
        return True
    shift = 16 - key.port_bits
    return key.port >> shift == DNS_PORT >> shift


def _plural_y(n: int) -> str:
    return "y" if n == 1 else "ies"


def egress_dns_findings(
    maps: MapState,
    policy_subjects: Mapping[str, frozenset[int]],
    isolates_egress: Mapping[str, bool],
) -> list[CompileWarning]:
    """cyclonus's check: a policy isolates egress for pods that no egress rule lets reach DNS.

    Judged on the compiled maps (the union of every policy selecting the pod), so a second
    policy that allows DNS silences it. One warning per policy, naming how many identities.
    """
    egress_isolated = {
        s for s, flags in maps.subjects.items() if flags & SubjectFlags.EGRESS_ISOLATED
    }
    with_dns = {k.subject for k in maps.policy if _may_reach_dns(k)}
    out: list[CompileWarning] = []
    for key in sorted(policy_subjects):
        if not isolates_egress.get(key):
            continue
        blind = (policy_subjects[key] & egress_isolated) - with_dns
        if blind:
            out.append(
                CompileWarning(
                    key,
                    "spec.policyTypes",
                    EGRESS_BLOCKS_DNS,
                    f"isolates egress for {len(blind)} pod identit{_plural_y(len(blind))} "
                    "that no egress rule lets reach DNS (UDP port 53): name lookups fail there; "
                    "allow egress to the cluster DNS pods on port 53",
                )
            )
    return out


@dataclass(frozen=True)
class RuleEntries:
    """What one rule adds to the maps: its policy's subjects and (peer, port) entries."""

    ref: RuleRef
    subjects: frozenset[int]
    entries: frozenset[tuple[int, PortTemplate]]

    @property
    def direction(self) -> Direction:
        return self.ref.direction


def _port_covers(wide: PortTemplate, narrow: PortTemplate) -> bool:
    """Does every packet ``narrow`` admits also match ``wide`` (one map entry each)?"""
    if wide.protocol == Protocol.ANY:
        return True
    if narrow.protocol != wide.protocol or narrow.named != wide.named:
        return False
    if wide.port_bits > narrow.port_bits:
        return False
    shift = 16 - wide.port_bits
    return narrow.port >> shift == wide.port >> shift


class _Coverage:
    """A rule's entries indexed by peer, for "does it allow all of another rule"."""

    def __init__(self, r: RuleEntries) -> None:
        self.rule = r
        by_peer: dict[int, list[PortTemplate]] = {}
        for peer, t in r.entries:
            by_peer.setdefault(peer, []).append(t)
        self.anyone = tuple(by_peer.get(int(ANY), ()))
        self.by_peer = {p: tuple(ts) + self.anyone for p, ts in by_peer.items()}

    def covers(self, narrow: RuleEntries) -> bool:
        if narrow.entries <= self.rule.entries:
            return True
        return all(
            any(_port_covers(w, t) for w in self.by_peer.get(peer, self.anyone))
            for peer, t in narrow.entries
        )


def redundant_rule_findings(rules: Iterable[RuleEntries]) -> list[CompileWarning]:
    """A rule whose every (peer, port) entry another rule of the same direction already
    makes for the same subjects (or more): removing it changes no verdict.

    Judged on the inputs' pods (selectors resolved to identities); of two equal rules the
    later one (policy key, then index) is named. Rules that select nothing are left to
    ``selects-nothing``.
    """
    live = sorted((r for r in rules if r.entries and r.subjects), key=lambda r: r.ref)
    cover = {id(r): _Coverage(r) for r in live}
    by_subject: dict[tuple[Direction, int], list[RuleEntries]] = {}
    for r in live:  # in order, so each pool is sorted too
        for s in r.subjects:
            by_subject.setdefault((r.direction, s), []).append(r)
    out: list[CompileWarning] = []
    for r in live:
        pool = min((by_subject[(r.direction, s)] for s in r.subjects), key=len)
        for other in pool:
            if other is r or not r.subjects <= other.subjects:
                continue
            if not cover[id(other)].covers(r):
                continue
            if other.subjects == r.subjects and r.ref < other.ref and cover[id(r)].covers(other):
                continue  # equal rules: the later one is named
            out.append(
                CompileWarning(
                    r.ref.policy,
                    r.ref.field,
                    REDUNDANT_RULE,
                    f"every peer and port it allows is also allowed by {other.ref} "
                    "for the same pods: removing it changes nothing",
                )
            )
            break
    return out


def _named_namespaces(policy: NetworkPolicy) -> list[tuple[str, str]]:
    """(field, namespace) for each namespace a namespaceSelector names by its name label."""
    out: list[tuple[str, str]] = []
    for direction, rules in (
        (Direction.INGRESS, policy.ingress),
        (Direction.EGRESS, policy.egress),
    ):
        word, side = ("ingress", "from") if direction is Direction.INGRESS else ("egress", "to")
        for i, rule in enumerate(rules):
            for j, peer in enumerate(rule.peers):
                sel = peer.namespace_selector
                if sel is None:
                    continue
                where = f"spec.{word}[{i}].{side}[{j}].namespaceSelector"
                name = sel.match_labels.get(NAMESPACE_NAME_LABEL)
                if name is not None:
                    out.append((f"{where}.matchLabels", name))
                for k, req in enumerate(sel.match_expressions):
                    if req.key == NAMESPACE_NAME_LABEL and req.operator is Operator.IN:
                        out += [(f"{where}.matchExpressions[{k}]", v) for v in sorted(req.values)]
    return out


def namespace_findings(
    policies: Iterable[NetworkPolicy], declared: frozenset[str]
) -> list[CompileWarning]:
    """A policy in, or a namespaceSelector naming, a namespace the inputs do not declare.

    For a review of manifests: the namespace may exist on the cluster, but nothing here
    says with which labels, so selectors on its labels are judged on a guess.
    """
    out: list[CompileWarning] = []
    for pol in policies:
        if pol.namespace not in declared:
            out.append(
                CompileWarning(
                    pol.key,
                    "metadata.namespace",
                    UNKNOWN_NAMESPACE,
                    f"namespace {pol.namespace!r} is not in the inputs: assumed to exist with "
                    f"only its {NAMESPACE_NAME_LABEL} label",
                )
            )
        for where, name in _named_namespaces(pol):
            if name not in declared:
                out.append(
                    CompileWarning(
                        pol.key,
                        where,
                        UNKNOWN_NAMESPACE,
                        f"names namespace {name!r}, which is not in the inputs",
                    )
                )
    return out
