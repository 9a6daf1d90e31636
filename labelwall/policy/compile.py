"""Compile cluster state and NetworkPolicies into the desired map state (ARCHITECTURE §2-§4).

One ``Engine`` holds the compiled state together with the indexes that let it change by
one object at a time; ``compile_cluster`` builds an engine from scratch and snapshots it,
and ``policy/incremental.py`` drives the same engine with single updates. Sharing the code
is what makes "incremental delta == diff of two full compiles" hold by construction; the
property tests check it.

The engine orchestrates; each concern has its module: policies arrive lowered into the
kind-neutral rule form (``policy/rules.py``, NetworkPolicy via ``policy/netpol.py``);
``policy/selectorcache.py`` answers which identities a peer selects;
``policy/addresses.py`` decides who owns an address; ``policy/numbering.py`` numbers
prefixes and port names; ``policy/findings.py`` reports warnings. Kept here: identities,
the rule indexes and the reference-counted map entries.

With a ``PublishedRegistry`` (Kubernetes mode: only the Identity objects that exist
count), a pod whose label set is not published yet is an *init* pod: its addresses map to
the reserved ``init`` identity and ``init`` as a subject is isolated both ways, so until
its identity exists such a pod only talks to its own node. The compiler decides this, so
the agent, ``matrix`` and ``explain`` read the same maps.

Policy-map entries are reference-counted by the rule cookies that produce them: a key's
value is the smallest cookie among the (policy, rule) pairs that currently produce it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from labelwall.cluster import (
    Direction,
    IPAddress,
    IPNetwork,
    Labels,
    Namespace,
    Node,
    Pod,
)
from labelwall.identity.allocator import (
    IdentityRegistry,
    InMemoryRegistry,
    PublishedRegistry,
    allocate,
    allocate_all,
)
from labelwall.identity.labels import DEFAULT_EXCLUDE, LabelSet, namespace_labels
from labelwall.identity.numbers import ANY, Reserved
from labelwall.policy.addresses import AddressClaims, Claim, ClaimKind, NamedPortClaims
from labelwall.policy.cidr import PrefixTable, block_selects
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.cookies import RuleRef, cookie
from labelwall.policy.findings import (
    EXCLUDED_LABEL_KEY,
    SELECTS_NOTHING,
    SHADOWED_PORT_NAME,
    UNKNOWN_PORT_NAME,
    CompileWarning,
    RuleEntries,
    egress_dns_findings,
    findings,
    redundant_rule_findings,
)
from labelwall.policy.mapstate import (
    IpcacheEntry,
    MapDelta,
    MapState,
    NamedPortKey,
    PolicyKey,
    SubjectFlags,
)
from labelwall.policy.model import NetworkPolicy
from labelwall.policy.netpol import lower_network_policy
from labelwall.policy.numbering import NeedsRebuild, PolicyNumbering
from labelwall.policy.ports import PortTemplate, templates
from labelwall.policy.rules import Action, LoweredPolicy, PolicyRule, Tier
from labelwall.policy.selectorcache import PeerScope, SelectorCache, peer_matches, peer_scope
from labelwall.policy.selectors import matches
from labelwall.policy.tracked import TrackedMap


@dataclass(frozen=True)
class CompileOptions:
    """``exclude``: pod label keys left out of identities. ``audit``/``audit_namespaces``:
    isolated subjects (all, or those in the namespaces) get the AUDIT flag (log, don't drop).
    ``local_identities``: compile only these subjects (the node agent's local pods); None = all.
    ``node``: the node these maps are for. Only its addresses (and hostNetwork pods on it)
    are the reserved ``host`` identity, whose traffic always passes ("a pod and its own
    node"); other nodes' addresses and hostNetwork pods are ``remote-node`` and go through
    policy like any peer (an ipBlock can admit them). None: one view where every node is
    local (the lab's single node, and offline compiles).
    """

    exclude: frozenset[str] = DEFAULT_EXCLUDE
    audit: bool = False
    audit_namespaces: frozenset[str] = frozenset()
    local_identities: frozenset[int] | None = None
    node: str | None = None


@dataclass(frozen=True)
class PolicyStats:
    """For the operator's status: how many identities a policy isolates and admits."""

    subject_identities: int
    peer_identities: int
    isolated: frozenset[Direction]


@dataclass(frozen=True)
class Compiled:
    """One compile result.

    ``name_ids``: named-port name -> id (crc32 + probing over the set of names policies use,
    see ``policy/ports.py``). ``policy_subjects``: policy -> identities it selects (cluster
    wide, before the ``local_identities`` filter).
    """

    map_state: MapState
    identities: Mapping[int, LabelSet]
    pod_identity: Mapping[str, int]
    cookies: Mapping[int, RuleRef]
    name_ids: Mapping[str, int]
    warnings: tuple[CompileWarning, ...]
    stats: Mapping[str, PolicyStats]
    policy_subjects: Mapping[str, frozenset[int]]
    state: ClusterState
    options: CompileOptions = field(default_factory=lambda: CompileOptions())


#: ``init`` pods wait for their Identity object isolated both ways: only their node passes.
INIT_FLAGS = SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED


class UnsupportedRule(Exception):  # noqa: N818 - the name says what happened
    """A lowered rule whose tier or action the map encoding cannot express (yet)."""


RuleId = tuple[str, Direction, int]


@dataclass
class _RuleState:
    policy: LoweredPolicy
    ref: RuleRef
    cookie: int
    rule: PolicyRule
    ports: tuple[PortTemplate, ...]
    any_peer: bool
    scopes: tuple[PeerScope, ...]  # the selector peers' scopes (ipBlock peers have none)
    peers: set[int] = field(default_factory=set)  # cluster identities selected
    cidr_peers: set[int] = field(default_factory=set)  # local (CIDR) identities selected
    namespaces: set[str] = field(default_factory=set)  # where registered in ns_rules

    def all_peers(self) -> Iterable[int]:
        if self.any_peer:
            yield int(ANY)
        yield from self.peers
        yield from self.cidr_peers

    def matches(self, ls: LabelSet) -> bool:
        return any(s.admits(ls) for s in self.scopes)


@dataclass
class _PolicyState:
    policy: LoweredPolicy
    subjects: set[int] = field(default_factory=set)
    rules: list[_RuleState] = field(default_factory=list)


class Engine:
    """Compiled state plus the indexes that keep it exact under single-object updates."""

    def __init__(self, options: CompileOptions, registry: IdentityRegistry) -> None:
        self.options = options
        self.registry = registry
        #: Kubernetes mode: label sets the registry does not know are init pods.
        self.published: PublishedRegistry | None = (
            registry if isinstance(registry, PublishedRegistry) else None
        )
        self.init_pods: set[str] = set()  # pods waiting for their Identity object
        self.namespaces: dict[str, Namespace] = {}
        self.pods: dict[str, Pod] = {}
        self.nodes: dict[str, Node] = {}
        self.policies: dict[str, NetworkPolicy] = {}
        # identities
        self.pod_ls: dict[str, LabelSet] = {}
        self.ls_pods: dict[LabelSet, set[str]] = {}
        self.ls_num: dict[LabelSet, int] = {}
        self.num_ls: dict[int, LabelSet] = {}
        self.selectors = SelectorCache()
        # policies
        self.ns_policies: dict[str, set[str]] = {}
        self.pol: dict[str, _PolicyState] = {}
        self.rules: dict[RuleId, _RuleState] = {}
        self.ns_rules: dict[str, set[RuleId]] = {}
        self.nssel_rules: set[RuleId] = set()
        self.block_rules: set[RuleId] = set()
        self.subject_of: dict[int, set[str]] = {}
        self.peer_of: dict[int, set[RuleId]] = {}
        self.iso: dict[int, list[int]] = {}
        self.key_cookies: dict[PolicyKey, dict[int, int]] = {}
        # prefixes and port names
        self.numbering = PolicyNumbering()
        self.table = PrefixTable({})  # the prefix ids installed
        self.name_ids: dict[str, int] = {}  # the name ids installed
        # addresses: who claims each IP, and each (IP, protocol, port)'s name id
        self.addresses = AddressClaims()
        self.port_claims = NamedPortClaims()
        # the maps
        self.subjects: TrackedMap[int, SubjectFlags] = TrackedMap()
        self.policy: TrackedMap[PolicyKey, int] = TrackedMap()
        self.ipcache: TrackedMap[IPAddress, IpcacheEntry] = TrackedMap()
        self.cidrs: TrackedMap[IPNetwork, int] = TrackedMap()
        self.named_ports: TrackedMap[NamedPortKey, int] = TrackedMap()

    # ------------------------------------------------------------------ full build

    @classmethod
    def build(
        cls, state: ClusterState, options: CompileOptions, registry: IdentityRegistry
    ) -> Engine:
        """An engine holding the compile of ``state`` (identities numbered in canonical
        order, so the result does not depend on input order), tracking changes from here."""
        eng = cls(options, registry)
        eng.namespaces = dict(state.namespaces)
        eng.nodes = dict(state.nodes)
        known = set(state.namespaces) | {p.namespace for p in state.pods.values()}
        for ns in sorted(known | {p.namespace for p in state.policies.values()}):
            eng.selectors.set_namespace(ns, eng._ns_labels(ns))
            eng.ns_rules[ns] = set()
        # Identities first, in canonical order, so numbering ignores input order.
        if eng.published is not None:
            eng.subjects.set(int(Reserved.INIT), INIT_FLAGS)
        for key, pod in state.pods.items():
            eng.pods[key] = pod
            ls = eng._identity_labels(pod)
            if ls is not None:
                eng.pod_ls[key] = ls
                eng.ls_pods.setdefault(ls, set()).add(key)
        for ls, n in allocate_all(eng.ls_pods, registry).items():
            eng._register_identity(ls, n)
        # Prefixes and names are functions of the whole policy set.
        lowered = {k: lower_network_policy(p) for k, p in state.policies.items()}
        for lp in lowered.values():
            eng.numbering.add(lp)
        eng.name_ids = eng.numbering.name_ids()
        eng._set_prefix_ids(eng.numbering.prefix_ids())
        for key in sorted(state.policies):
            eng.policies[key] = state.policies[key]
            eng._add_policy(lowered[key])
        for key in sorted(state.pods):
            eng._claim_pod(state.pods[key])
        for name in sorted(state.nodes):
            eng._claim_node(state.nodes[name])
        for addr in eng.addresses.addresses():
            eng._refresh_addr(addr)
        eng.start_tracking()
        return eng

    def start_tracking(self) -> None:
        """Record map changes from now on, for ``take_delta``."""
        for m in self._maps():
            m.tracking = True

    def _maps(self) -> tuple[TrackedMap[object, object], ...]:
        return (self.subjects, self.policy, self.ipcache, self.cidrs, self.named_ports)  # type: ignore[return-value]

    def take_delta(self) -> MapDelta:
        """The map changes since the last ``take_delta`` (or ``start_tracking``)."""
        return MapDelta(
            subjects=self.subjects.take(),
            policy=self.policy.take(),
            ipcache=self.ipcache.take(),
            cidrs=self.cidrs.take(),
            named_ports=self.named_ports.take(),
        )

    def state(self) -> ClusterState:
        """The objects compiled now."""
        return ClusterState(
            namespaces=dict(self.namespaces),
            pods=dict(self.pods),
            nodes=dict(self.nodes),
            policies=dict(self.policies),
        )

    def map_state(self) -> MapState:
        """A copy of the compiled maps."""
        return MapState(
            subjects=dict(self.subjects.data),
            policy=dict(self.policy.data),
            ipcache=dict(self.ipcache.data),
            cidrs=dict(self.cidrs.data),
            named_ports=dict(self.named_ports.data),
        )

    # ------------------------------------------------------------------ helpers

    def _ns_labels(self, ns: str) -> Labels:
        return namespace_labels(self.namespaces.get(ns) or Namespace(ns))

    def _labelset(self, pod: Pod) -> LabelSet:
        return LabelSet.from_pod(pod, self.namespaces.get(pod.namespace), self.options.exclude)

    def _identity_labels(self, pod: Pod) -> LabelSet | None:
        """The label set ``pod`` gets an identity for; None for hostNetwork and init pods.

        Records whether the pod is an init pod (its label set not published), so claims
        made now are dropped the same way later.
        """
        self.init_pods.discard(pod.key)
        if pod.host_network:
            return None
        ls = self._labelset(pod)
        if self.published is not None and self.published.find(ls) is None:
            self.init_pods.add(pod.key)
            return None
        return ls

    def _is_init(self, pod: Pod) -> bool:
        """Whether ``pod`` would be an init pod now (without recording it)."""
        if self.published is None or pod.host_network:
            return False
        return self.published.find(self._labelset(pod)) is None

    def identity_of(self, key: str) -> int | None:
        """The identity the maps give pod ``key`` (its endpoint's subject), None if unknown."""
        if key in self.init_pods:
            return int(Reserved.INIT)
        ls = self.pod_ls.get(key)
        if ls is not None:
            return self.ls_num[ls]
        pod = self.pods.get(key)
        if pod is None or not pod.host_network:
            return None
        return self._node_identity(self._node_claim(pod.node)[0])

    def _local(self, n: int) -> bool:
        return self.options.local_identities is None or n in self.options.local_identities

    def _inc(self, key: PolicyKey, ck: int) -> None:
        counts = self.key_cookies.setdefault(key, {})
        counts[ck] = counts.get(ck, 0) + 1
        current = self.policy.data.get(key)
        if current is None or ck < current:
            self.policy.set(key, ck)

    def _dec(self, key: PolicyKey, ck: int) -> None:
        counts = self.key_cookies[key]
        left = counts[ck] - 1
        if left:
            counts[ck] = left
            return
        del counts[ck]
        if not counts:
            del self.key_cookies[key]
            self.policy.delete(key)
        elif self.policy.data.get(key) == ck:
            self.policy.set(key, min(counts))

    def _emit(self, subject: int, rs: _RuleState, peers: Iterable[int], sign: int) -> None:
        d = rs.ref.direction
        op = self._inc if sign > 0 else self._dec
        for p in peers:
            for t in rs.ports:
                op(PolicyKey(subject, p, d, t.protocol, t.port, t.port_bits, t.named), rs.cookie)

    def _subject_rules(self, subject: int, ps: _PolicyState, sign: int) -> None:
        """Add or remove everything ``ps`` contributes for one (local) subject."""
        counts = self.iso.setdefault(subject, [0, 0])
        for d in ps.policy.isolates:
            counts[0 if d is Direction.INGRESS else 1] += sign
        for rs in ps.rules:
            self._emit(subject, rs, rs.all_peers(), sign)
        self._refresh_subject(subject)

    def _refresh_subject(self, subject: int) -> None:
        counts = self.iso.get(subject, [0, 0])
        flags = SubjectFlags.NONE
        if counts[0]:
            flags |= SubjectFlags.INGRESS_ISOLATED
        if counts[1]:
            flags |= SubjectFlags.EGRESS_ISOLATED
        if flags == SubjectFlags.NONE:
            self.iso.pop(subject, None)
            self.subjects.delete(subject)
            return
        ls = self.num_ls.get(subject)
        if self.options.audit or (ls is not None and ls.namespace in self.options.audit_namespaces):
            flags |= SubjectFlags.AUDIT
        self.subjects.set(subject, flags)

    # ------------------------------------------------------------------ identities

    def _register_identity(self, ls: LabelSet, n: int) -> None:
        self.ls_num[ls] = n
        self.num_ls[n] = ls
        self.selectors.add_identity(n, ls)

    def _ensure_namespace(self, ns: str) -> None:
        if self.selectors.has_namespace(ns):
            return
        self.selectors.set_namespace(ns, self._ns_labels(ns))
        self._reindex_namespace_rules(ns)

    def _reindex_namespace_rules(self, ns: str) -> None:
        """Recompute which rules' peers can match identities in ``ns``."""
        for rid in self.ns_rules.get(ns, set()):
            self.rules[rid].namespaces.discard(ns)
        # Candidates: rules of policies in ``ns`` (peers scoped to their own namespace)
        # and rules with a namespaceSelector peer; the scopes decide.
        labels = self.selectors.namespace_labels(ns)
        candidates = set(self.nssel_rules)
        for pkey in self.ns_policies.get(ns, set()):
            candidates.update((pkey, rs.ref.direction, rs.ref.index) for rs in self.pol[pkey].rules)
        wanted = {
            rid
            for rid in candidates
            if any(s.admits_namespace(ns, labels) for s in self.rules[rid].scopes)
        }
        for rid in wanted:
            self.rules[rid].namespaces.add(ns)
        self.ns_rules[ns] = wanted

    def _new_identity(self, ls: LabelSet) -> None:
        n = allocate(ls, self.registry)
        self._register_identity(ls, n)
        self._ensure_namespace(ls.namespace)
        for pkey in sorted(self.ns_policies.get(ls.namespace, set())):
            ps = self.pol[pkey]
            if matches(ps.policy.subject_selector, ls.pod_labels):
                ps.subjects.add(n)
                self.subject_of.setdefault(n, set()).add(pkey)
                if self._local(n):
                    self._subject_rules(n, ps, +1)
        for rid in sorted(self.ns_rules.get(ls.namespace, set())):
            rs = self.rules[rid]
            if rs.matches(ls):
                rs.peers.add(n)
                self.peer_of.setdefault(n, set()).add(rid)
                for s in self.pol[rid[0]].subjects:
                    if self._local(s):
                        self._emit(s, rs, (n,), +1)

    def _drop_identity(self, ls: LabelSet) -> None:
        n = self.ls_num.pop(ls)
        peer_rules = self.peer_of.pop(n, set())
        for rid in peer_rules:
            rs = self.rules[rid]
            for s in self.pol[rid[0]].subjects:
                if self._local(s) and s != n:
                    self._emit(s, rs, (n,), -1)
        for pkey in self.subject_of.pop(n, set()):
            ps = self.pol[pkey]
            if self._local(n):
                self._subject_rules(n, ps, -1)
            ps.subjects.discard(n)
        # Entries with subject n and peer n were removed by the subject pass; drop n from
        # peer sets only now so that pass saw it.
        for rid in peer_rules:
            self.rules[rid].peers.discard(n)
        del self.num_ls[n]
        self.selectors.remove_identity(n, ls)

    def _set_pod_identity(self, key: str, ls: LabelSet | None) -> None:
        old = self.pod_ls.pop(key, None)
        if old == ls:
            if ls is not None:
                self.pod_ls[key] = ls
            return
        if ls is not None:
            self.pod_ls[key] = ls
            holders = self.ls_pods.setdefault(ls, set())
            holders.add(key)
            if len(holders) == 1:
                self._new_identity(ls)
        if old is not None:
            holders = self.ls_pods[old]
            holders.discard(key)
            if not holders:
                del self.ls_pods[old]
                self._drop_identity(old)

    # ------------------------------------------------------------------ policies

    def _select_peers(self, rs: _RuleState) -> None:
        for peer in rs.rule.peers:
            if peer.ip_block is not None:
                rs.cidr_peers |= self.table.selected(peer.ip_block)
        for scope in rs.scopes:
            namespaces, selected = self.selectors.select(scope)
            rs.namespaces.update(namespaces)
            rs.peers |= selected

    def _add_policy(self, pol: LoweredPolicy) -> None:
        ps = _PolicyState(pol)
        self.pol[pol.key] = ps
        self.ns_policies.setdefault(pol.namespace, set()).add(pol.key)
        for rule in pol.rules:
            if rule.tier is not Tier.NETWORK_POLICY or rule.action is not Action.ALLOW:
                raise UnsupportedRule(f"{rule.ref}: {rule.tier.name} {rule.action.value}")
            ref = rule.ref
            scopes = (peer_scope(p, pol.namespace) for p in rule.peers)
            rs = _RuleState(
                policy=pol,
                ref=ref,
                cookie=cookie(ref),
                rule=rule,
                ports=templates(rule.ports, self.name_ids),
                any_peer=not rule.peers,
                scopes=tuple(s for s in scopes if s is not None),
            )
            rid: RuleId = (pol.key, ref.direction, ref.index)
            self.rules[rid] = rs
            ps.rules.append(rs)
            self._select_peers(rs)
            for other in rs.namespaces:
                self.ns_rules.setdefault(other, set()).add(rid)
            if any(p.namespace_selector is not None for p in rule.peers):
                self.nssel_rules.add(rid)
            if any(p.ip_block is not None for p in rule.peers):
                self.block_rules.add(rid)
            for n in rs.peers:
                self.peer_of.setdefault(n, set()).add(rid)
        ps.subjects = self.selectors.subjects(pol.namespace, pol.subject_selector)
        for s in sorted(ps.subjects):
            self.subject_of.setdefault(s, set()).add(pol.key)
            if self._local(s):
                self._subject_rules(s, ps, +1)

    def _remove_policy(self, key: str) -> None:
        ps = self.pol.pop(key)
        pol = ps.policy
        for s in ps.subjects:
            self.subject_of[s].discard(pol.key)
            if not self.subject_of[s]:
                del self.subject_of[s]
            if self._local(s):
                self._subject_rules(s, ps, -1)
        for rs in ps.rules:
            rid: RuleId = (pol.key, rs.ref.direction, rs.ref.index)
            del self.rules[rid]
            self.nssel_rules.discard(rid)
            self.block_rules.discard(rid)
            for other in rs.namespaces:
                self.ns_rules.get(other, set()).discard(rid)
            for n in rs.peers:
                holders = self.peer_of.get(n)
                if holders is not None:
                    holders.discard(rid)
                    if not holders:
                        del self.peer_of[n]
        self.ns_policies[pol.namespace].discard(pol.key)

    def _set_prefix_ids(self, ids: dict[IPNetwork, int]) -> None:
        """Install a new prefix set; reselect ipBlock rules and re-resolve affected addresses.

        Existing prefixes keep their identities (``PolicyNumbering.check_change`` guarantees
        it), and whether an ipBlock selects a prefix depends only on the two, so only the
        prefixes that come or go need looking at.
        """
        old = self.table.ids
        added = {p: n for p, n in ids.items() if old.get(p) != n}
        removed = {p: n for p, n in old.items() if ids.get(p) != n}
        if not added and not removed:
            return
        self.table = PrefixTable(ids)
        for p in removed:
            self.cidrs.delete(p)
        for p, n in added.items():
            self.cidrs.set(p, n)
        gone_ids = set(removed.values())
        for rid in sorted(self.block_rules):
            rs = self.rules[rid]
            gone = rs.cidr_peers & gone_ids
            new = {
                n
                for p, n in added.items()
                if any(
                    peer.ip_block is not None and block_selects(peer.ip_block, p)
                    for peer in rs.rule.peers
                )
            }
            if not gone and not new:
                continue
            rs.cidr_peers = (rs.cidr_peers - gone) | new
            for s in self.pol[rid[0]].subjects:
                if self._local(s):
                    self._emit(s, rs, gone, -1)
                    self._emit(s, rs, new, +1)
        touched: set[IPAddress] = set()
        for p in [*added, *removed]:
            touched.update(self.addresses.within(p))
        for addr in touched:
            self._refresh_addr(addr)

    # ------------------------------------------------------------------ addresses

    def _has_named_ports(self, pod: Pod) -> bool:
        """Whether the pod's port names count (hostNetwork and init pods' do not)."""
        return not pod.host_network and pod.key not in self.init_pods

    def _pod_named_ports(self, pod: Pod) -> list[tuple[NamedPortKey, int]]:
        if not self._has_named_ports(pod):
            return []
        out = []
        for cp in pod.ports:
            if cp.name is not None and cp.name in self.name_ids:
                for ip in pod.ips:
                    out.append((NamedPortKey(ip, cp.protocol, cp.port), self.name_ids[cp.name]))
        return out

    def _set_named(self, key: NamedPortKey, ident: int, sign: int) -> None:
        winner = self.port_claims.claim(key, ident, sign)
        if winner is None:
            self.named_ports.delete(key)
        else:
            self.named_ports.set(key, winner)

    def _is_local(self, node: str | None) -> bool:
        return self.options.node is None or node == self.options.node

    @staticmethod
    def _node_identity(kind: ClaimKind) -> int:
        """The reserved identity of a node claim: ``host`` here, ``remote-node`` elsewhere."""
        return int(Reserved.HOST if kind is ClaimKind.HOST else Reserved.REMOTE_NODE)

    def _node_claim(self, node: str | None) -> Claim:
        return (ClaimKind.HOST if self._is_local(node) else ClaimKind.REMOTE_NODE), ""

    def _claim_pod(self, pod: Pod, sign: int = +1) -> None:
        if pod.host_network:
            claim = self._node_claim(pod.node)
        elif pod.key in self.init_pods:
            claim = (ClaimKind.INIT, pod.key)
        else:
            claim = (ClaimKind.POD, pod.key)
        for ip in pod.ips:
            self.addresses.claim(ip, claim, sign)
        for key, ident in self._pod_named_ports(pod):
            self._set_named(key, ident, sign)

    def _claim_node(self, node: Node, sign: int = +1) -> None:
        claim = self._node_claim(node.name)
        for ip in node.addresses:
            self.addresses.claim(ip, claim, sign)

    def _refresh_addr(self, addr: IPAddress) -> None:
        winner = self.addresses.winner(addr)
        if winner is None:
            self.ipcache.delete(addr)
            return
        # A pod address wins over a host claim, host over remote node, all of them over an
        # init pod (smallest pod key if two pods claim one IP).
        kind, pod_key = winner
        if kind is ClaimKind.INIT:
            # No prefix either: an ipBlock must not admit a pod before its identity exists.
            self.ipcache.set(addr, IpcacheEntry(int(Reserved.INIT)))
            return
        if kind is ClaimKind.POD:
            ident = self.ls_num[self.pod_ls[pod_key]]
            if self.pods[pod_key].workload is not None:
                # A workload's stand-in address: no ipBlock may select it (or exclude it).
                self.ipcache.set(addr, IpcacheEntry(ident))
                return
        else:
            ident = self._node_identity(kind)
        self.ipcache.set(addr, IpcacheEntry(ident, self.table.longest(addr)))

    # ------------------------------------------------------------------ updates

    def set_pod(self, key: str, pod: Pod | None) -> None:
        """Add, replace or (``pod`` None) delete pod ``key``."""
        old = self.pods.pop(key, None)
        touched: set[IPAddress] = set()
        if old is not None:
            self._claim_pod(old, -1)
            touched.update(old.ips)
        if pod is not None:
            self.pods[key] = pod
            ls = self._identity_labels(pod)
        else:
            self.init_pods.discard(key)
            ls = None
        self._set_pod_identity(key, ls)
        if pod is not None:
            self._claim_pod(pod, +1)
            touched.update(pod.ips)
        for addr in touched:
            self._refresh_addr(addr)

    def set_node(self, name: str, node: Node | None) -> None:
        """Add, replace or (``node`` None) delete node ``name``."""
        old = self.nodes.pop(name, None)
        touched: set[IPAddress] = set()
        if old is not None:
            self._claim_node(old, -1)
            touched.update(old.addresses)
        if node is not None:
            self.nodes[name] = node
            self._claim_node(node, +1)
            touched.update(node.addresses)
        for addr in touched:
            self._refresh_addr(addr)

    def set_namespace(self, name: str, ns: Namespace | None) -> None:
        """Add, relabel or (``ns`` None) delete namespace ``name``; its pods follow."""
        before = self._ns_labels(name)
        if ns is None:
            self.namespaces.pop(name, None)
        else:
            self.namespaces[name] = ns
        after = self._ns_labels(name)
        if before == after and self.selectors.has_namespace(name):
            return
        self.selectors.set_namespace(name, after)
        self._reindex_namespace_rules(name)
        pods = sorted(k for k, p in self.pods.items() if p.namespace == name)
        for key in pods:
            pod = self.pods[key]
            if self._is_init(pod) != (key in self.init_pods):
                self.set_pod(key, pod)  # its claims change kind (init <-> identity)
            elif not pod.host_network:
                self._set_pod_identity(key, self._identity_labels(pod))
        for key in pods:
            for addr in self.pods[key].ips:
                self._refresh_addr(addr)

    def set_published(self, published: Mapping[LabelSet, int]) -> None:
        """Kubernetes mode: the Identity objects that exist now (label set -> number).

        Pods whose label set got published leave ``init`` for their identity; pods whose
        label set is no longer published become init pods.
        """
        if self.published is None:
            raise TypeError("set_published needs an engine built on a PublishedRegistry")
        if dict(published) == self.published.by_labels:
            return
        self.published.set(published)
        for key in sorted(self.pods):
            pod = self.pods[key]
            if self._is_init(pod) != (key in self.init_pods):
                self.set_pod(key, pod)

    def set_policy(self, key: str, policy: NetworkPolicy | None) -> None:
        """Add, replace (``policy`` with this key) or delete (None) one NetworkPolicy."""
        old_ps = self.pol.get(key)
        old = old_ps.policy if old_ps is not None else None
        pol = lower_network_policy(policy) if policy is not None else None
        self.numbering.check_change(old, pol, self.table.ids, self.name_ids)
        if old is not None:
            del self.policies[key]
            self._remove_policy(key)
            self.numbering.add(old, -1)
        if policy is not None and pol is not None:
            self.policies[key] = policy
            self.numbering.add(pol)
        self._set_prefix_ids(self.numbering.prefix_ids())
        self._set_name_ids(self.numbering.name_ids())
        if pol is not None:
            self._ensure_namespace(pol.namespace)
            self._add_policy(pol)

    def _set_name_ids(self, ids: dict[str, int]) -> None:
        if ids == self.name_ids:
            return
        # PolicyNumbering.check_change guarantees existing names keep their ids: names only come
        # and go, and with them the named-port entries of the pods declaring them.
        old = self.name_ids
        changed = set(old) ^ set(ids)
        for pod in self.pods.values():
            if not self._has_named_ports(pod):
                continue
            for cp in pod.ports:
                if cp.name in changed:
                    for ip in pod.ips:
                        key = NamedPortKey(ip, cp.protocol, cp.port)
                        if cp.name in old:
                            self._set_named(key, old[cp.name], -1)
                        else:
                            self._set_named(key, ids[cp.name], +1)
        self.name_ids = ids

    # ------------------------------------------------------------------ snapshot

    def compiled(self) -> Compiled:
        """A snapshot of everything compiled now (maps, identities, cookies, warnings)."""
        state = self.state()
        pod_identity = {k: self.ls_num[ls] for k, ls in self.pod_ls.items()}
        for k in self.pods:
            n = None if k in pod_identity else self.identity_of(k)  # hostNetwork, init pods
            if n is not None:
                pod_identity[k] = n
        cookies: dict[int, RuleRef] = {}
        for rs in self.rules.values():
            prev = cookies.get(rs.cookie)
            if prev is None or rs.ref < prev:
                cookies[rs.cookie] = rs.ref
        stats = {}
        for key, ps in self.pol.items():
            peers: set[int] = set()
            for rs in ps.rules:
                peers |= rs.peers | rs.cidr_peers
            stats[key] = PolicyStats(len(ps.subjects), len(peers), ps.policy.isolates)
        maps = self.map_state()
        policy_subjects = {k: frozenset(ps.subjects) for k, ps in self.pol.items()}
        isolates_egress = {k: Direction.EGRESS in ps.policy.isolates for k, ps in self.pol.items()}
        return Compiled(
            map_state=maps,
            identities=dict(self.num_ls),
            pod_identity=pod_identity,
            cookies=cookies,
            name_ids=dict(self.name_ids),
            warnings=tuple(
                self._warnings() + egress_dns_findings(maps, policy_subjects, isolates_egress)
            ),
            stats=stats,
            policy_subjects=policy_subjects,
            state=state,
            options=self.options,
        )

    def _warnings(self) -> list[CompileWarning]:
        return findings(
            ((self.pol[k].policy, bool(self.pol[k].subjects)) for k in sorted(self.pol)),
            {k: p for k, p in self.pods.items() if k not in self.init_pods},
            self.name_ids,
            self.options.exclude,
            self.selectors.selects_any,
        ) + redundant_rule_findings(self._rule_entries())

    def _rule_entries(self) -> list[RuleEntries]:
        """Rules that could be redundant: another rule of their direction shares a subject."""
        pools: dict[int, int] = {}  # subject * 4 + direction -> rules
        for ps in self.pol.values():
            for rs in ps.rules:
                d = int(rs.ref.direction)
                for s in ps.subjects:
                    pools[s * 4 + d] = pools.get(s * 4 + d, 0) + 1
        out: list[RuleEntries] = []
        for ps in self.pol.values():
            subjects = frozenset(ps.subjects)
            for rs in ps.rules:
                d = int(rs.ref.direction)
                if all(pools[s * 4 + d] == 1 for s in subjects):
                    continue
                peers = [int(ANY)] if rs.any_peer else []
                peers += [*rs.peers, *rs.cidr_peers]
                entries = frozenset((p, t) for p in peers for t in rs.ports)
                out.append(RuleEntries(rs.ref, subjects, entries))
        return out


def compile_cluster(
    state: ClusterState,
    options: CompileOptions = CompileOptions(),
    registry: IdentityRegistry | None = None,
    published: Mapping[LabelSet, int] | None = None,
) -> Compiled:
    """The desired map state for ``state`` (pure apart from claims in ``registry``).

    ``published`` (Kubernetes mode, instead of ``registry``): the Identity objects that
    exist, label set -> number; pods of other label sets get the ``init`` identity.
    """
    if published is not None:
        if registry is not None:
            raise TypeError("pass registry or published, not both")
        reg: IdentityRegistry = PublishedRegistry(published)
    else:
        reg = registry if registry is not None else InMemoryRegistry()
    return Engine.build(state, options, reg).compiled()


__all__ = [
    "EXCLUDED_LABEL_KEY",
    "INIT_FLAGS",
    "SELECTS_NOTHING",
    "SHADOWED_PORT_NAME",
    "UNKNOWN_PORT_NAME",
    "CompileOptions",
    "CompileWarning",
    "Compiled",
    "Engine",
    "NeedsRebuild",
    "PolicyStats",
    "RuleRef",
    "UnsupportedRule",
    "compile_cluster",
    "peer_matches",
]
