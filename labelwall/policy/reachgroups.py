"""Reachability per group of interchangeable pods, as bit sets: the fast, exact ``matrix``.

``policy/matrix.py``'s ``reachability`` asks the lookup model once per ordered pod pair and
port; at a few thousand workloads that is millions of calls. Here pods are grouped first:
two pods are interchangeable when every input of ``lookup.decide`` that depends on the pod
is equal in every node view the matrix uses (their node, identity, ipcache entry and
named-port entries per address family, declared ports, hostNetwork). One group then
stands for all its members as a source and as a destination.

Per source group and probe port the allowed destination groups are a bit set (a Python
int), built from the policy-map entries of the subject instead of by probing each peer:
an entry admits the destination groups whose peer identity (or CIDR identity) it names and
whose resolved port or name id it covers, in the order-free form of ``decide`` (a verdict
is ALLOW when any of the candidate lookups hits, so only the union matters). Ingress is
the same from the destination's side, inverted into "which sources does each destination
admit". Rows are expanded to pods only for rendering. The property tests compare every
cell with ``reachability``; verdicts (rule, cookie) for single cells come from ``cell``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from labelwall.cluster import Direction, IPAddress, Pod, Protocol
from labelwall.identity.numbers import ANY, Reserved
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import Compiled
from labelwall.policy.lookup import PORT_PROTOCOLS, lpm_cidr
from labelwall.policy.mapstate import NamedPortKey, PolicyKey, SubjectFlags
from labelwall.policy.matrix import (
    Cell,
    PortProto,
    _probe,
    address_pair,
    as_compiled,
    resolve_port,
)
from labelwall.policy.nodeview import NodeViews

#: Characters of a rendered row: allowed, blocked, the destination lacks the named port,
#: no cell (the pods share no address family), the pod is not in this matrix.
ALLOWED, BLOCKED, NO_PORT, NO_CELL, ABSENT = ".", "X", "n", "-", " "

_FAMILIES = (4, 6)


def _first(pod: Pod, family: int) -> IPAddress | None:
    return next((ip for ip in pod.ips if ip.version == family), None)


@dataclass
class _View:
    """One node's compile with the indexes the mask building reads."""

    c: Compiled
    entries: dict[tuple[int, Direction], list[PolicyKey]] = field(default_factory=dict)
    ports_at: dict[IPAddress, tuple[tuple[Protocol, int, int], ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, c: Compiled) -> _View:
        v = cls(c)
        for key in c.map_state.policy:
            v.entries.setdefault((key.subject, key.direction), []).append(key)
        ports: dict[IPAddress, list[tuple[Protocol, int, int]]] = {}
        for nk, ident in c.map_state.named_ports.items():
            ports.setdefault(nk.address, []).append((nk.protocol, nk.port, ident))
        v.ports_at = {a: tuple(sorted(p)) for a, p in ports.items()}
        return v

    def peer_entry(self, addr: IPAddress) -> tuple[int, int]:
        """(identity, cidr identity) of ``addr`` as ``decide`` finds them."""
        e = self.c.map_state.ipcache.get(addr)
        if e is not None:
            return e.identity, e.cidr_identity
        return int(Reserved.WORLD), lpm_cidr(self.c.map_state, addr)

    def name_id(self, addr: IPAddress, protocol: Protocol, port: int) -> int:
        if protocol not in PORT_PROTOCOLS:
            return 0
        return self.c.map_state.named_ports.get(NamedPortKey(addr, protocol, port), 0)


def _port_mask(bits: int) -> int:
    return ((0xFFFF << (16 - bits)) & 0xFFFF) if bits else 0


def _entry_covers(e: PolicyKey, protocol: Protocol, value: int, named: bool) -> bool:
    """Does ``lpm_policy`` find ``e`` for a lookup of (protocol, value, named)?"""
    if e.named != named:
        return False
    if e.protocol == Protocol.ANY:
        return e.port == 0 and e.port_bits == 0
    return (
        protocol != Protocol.ANY
        and e.protocol == protocol
        and 0 <= e.port_bits <= 16
        and e.port == value & _port_mask(e.port_bits)
    )


@dataclass(frozen=True)
class Group:
    """Interchangeable pods (sorted keys); ``pod`` is the first, standing for all."""

    index: int
    pod: Pod
    members: tuple[str, ...]


class GroupedMatrix:
    """Allowed (source group -> destination groups) per probe port, and its expansion."""

    def __init__(
        self,
        compiled_or_state: Compiled | ClusterState,
        ports: Sequence[PortProto],
        per_node: bool = False,
    ) -> None:
        self.compiled = as_compiled(compiled_or_state)
        self.ports = list(ports)
        c = self.compiled
        self._nodeviews = NodeViews(c) if per_node else None
        pods = [c.state.pods[k] for k in sorted(c.state.pods) if c.state.pods[k].ips]
        self.pods: list[str] = [p.key for p in pods]
        self._views: dict[str | None, _View] = {}
        nodes = sorted({p.node for p in pods}, key=lambda n: (n is not None, n or ""))
        for n in nodes if per_node else [None]:
            self._view_for(n)
        self.groups: list[Group] = []
        self.group_of: dict[str, int] = {}
        by_key: dict[tuple[object, ...], list[Pod]] = {}
        for p in pods:
            by_key.setdefault(self._signature(p), []).append(p)
        for members in by_key.values():
            g = Group(len(self.groups), members[0], tuple(m.key for m in members))
            self.groups.append(g)
            for m in g.members:
                self.group_of[m] = g.index
        self._all = (1 << len(self.groups)) - 1
        self._has = {
            f: sum(1 << g.index for g in self.groups if _first(g.pod, f) is not None)
            for f in _FAMILIES
        }
        #: per probe port: per source group, the bit set of destination groups allowed
        self.allowed: dict[PortProto, list[int]] = {}
        #: per probe port: the groups where the port resolves (named ports: declared)
        self.resolved: dict[PortProto, int] = {}
        for pp in self.ports:
            self._build(pp)

    # ------------------------------------------------------------------ grouping

    def _view_for(self, node: str | None) -> _View:
        v = self._views.get(node)
        if v is None:
            c = self._nodeviews.of(node) if self._nodeviews is not None else self.compiled
            v = _View.of(c)
            self._views[node] = v
        return v

    def _view(self, pod: Pod) -> _View:
        return self._view_for(pod.node if self._nodeviews is not None else None)

    def _signature(self, p: Pod) -> tuple[object, ...]:
        """Everything ``decide`` reads about ``p`` in any view, as subject or as peer."""
        sig: list[object] = [p.node if self._nodeviews is not None else None, p.host_network]
        sig.append(tuple((cp.name, cp.protocol, cp.port) for cp in p.ports))
        for v in self._views.values():
            sig.append(v.c.pod_identity.get(p.key))
            for f in _FAMILIES:
                a = _first(p, f)
                sig.append(None if a is None else (v.peer_entry(a), v.ports_at.get(a, ())))
        return tuple(sig)

    # ------------------------------------------------------------------ the bit sets

    def _build(self, pp: PortProto) -> None:
        port, protocol = pp
        resolved_port = {g.index: resolve_port(g.pod, port, protocol) for g in self.groups}
        resolved = sum(1 << i for i, r in resolved_port.items() if r is not None)
        self.resolved[pp] = resolved
        # Per (view, family): the destination groups by peer value, by looked-up port value
        # and by name id, each as a bit set over groups.
        tables: dict[tuple[str | None, int], _Tables] = {}
        for node, v in self._views.items():
            for f in _FAMILIES:
                tables[(node, f)] = _Tables.of(v, self.groups, f, resolved_port, protocol)
        ingress_admit = {
            (node, f): self._ingress_admit(node, f, t, protocol) for (node, f), t in tables.items()
        }
        rows: list[int] = []
        for g in self.groups:
            row = 0
            v_src = self._view(g.pod)
            node_src = g.pod.node if self._nodeviews is not None else None
            taken = 0  # families already used (IPv4 first, as address_pair picks)
            for f in _FAMILIES:
                addr = _first(g.pod, f)
                if addr is None:
                    continue
                cand = self._has[f] & ~taken
                taken |= self._has[f]
                egress = self._egress(v_src, tables[(node_src, f)], g, protocol)
                ingress = 0
                for node, v in self._views.items():
                    open_, admit, host_all = ingress_admit[(node, f)]
                    ident, cidr = v.peer_entry(addr)
                    if ident == Reserved.HOST:
                        ingress |= host_all
                        continue
                    ingress |= open_ | admit.get(ident, 0)
                    if cidr:
                        ingress |= admit.get(cidr, 0)
                row |= egress & ingress & cand
            rows.append(row & resolved)
        self.allowed[pp] = rows

    def _egress(self, v: _View, t: _Tables, g: Group, protocol: Protocol) -> int:
        subject = v.c.pod_identity[g.pod.key]
        flags = v.c.map_state.subjects.get(subject, SubjectFlags.NONE)
        if not flags & SubjectFlags.EGRESS_ISOLATED or flags & SubjectFlags.AUDIT:
            return t.members
        out = t.host  # the peer is this node: always passes (decide step 3)
        for e in v.entries.get((subject, Direction.EGRESS), ()):
            peers = t.members if e.peer == ANY else t.by_peer.get(e.peer, 0)
            if peers & ~out:
                out |= peers & t.covered(e, protocol)
        return out

    def _ingress_admit(
        self, node: str | None, f: int, t: _Tables, protocol: Protocol
    ) -> tuple[int, dict[int, int], int]:
        """For destinations judged in ``node``'s view: (admit any source, by source peer
        value, admit a HOST source), each a bit set of destination groups."""
        v = self._views[node]
        open_ = host_all = 0
        admit: dict[int, int] = {}
        for g in self.groups:
            if (g.pod.node if self._nodeviews is not None else None) != node:
                continue
            bit = 1 << g.index
            if not t.members & bit:
                continue
            host_all |= bit
            subject = v.c.pod_identity[g.pod.key]
            flags = v.c.map_state.subjects.get(subject, SubjectFlags.NONE)
            if not flags & SubjectFlags.INGRESS_ISOLATED or flags & SubjectFlags.AUDIT:
                open_ |= bit
                continue
            for e in v.entries.get((subject, Direction.INGRESS), ()):
                if not t.covered(e, protocol) & bit:
                    continue
                if e.peer == ANY:
                    open_ |= bit
                else:
                    admit[e.peer] = admit.get(e.peer, 0) | bit
        return open_, admit, host_all

    # ------------------------------------------------------------------ answers

    def allows(self, src: str, dst: str, pp: PortProto) -> bool | None:
        """The cell's verdict (None: no cell, as ``reachability`` gives none)."""
        a, b = self.group_of.get(src), self.group_of.get(dst)
        if a is None or b is None:
            return None
        ch = self._char(a, b, src == dst, pp)
        return None if ch == NO_CELL else ch == ALLOWED

    def _char(self, a: int, b: int, same_pod: bool, pp: PortProto) -> str:
        ga, gb = self.groups[a].pod, self.groups[b].pod
        if address_pair(ga, gb) is None:
            return NO_CELL
        if not self.resolved[pp] >> b & 1:
            return NO_PORT
        if same_pod:
            return ALLOWED
        return ALLOWED if self.allowed[pp][a] >> b & 1 else BLOCKED

    def row(self, src: str, columns: Sequence[str], pp: PortProto) -> str:
        """One character per column (see ``ALLOWED`` ...) for ``src``'s row."""
        a = self.group_of.get(src)
        if a is None:
            return ABSENT * len(columns)
        return _RowRenderer(self, columns).render(a, src, pp)

    def rows(self, sources: Iterable[str], columns: Sequence[str], pp: PortProto) -> list[str]:
        r = _RowRenderer(self, columns)
        return [
            ABSENT * len(columns) if (a := self.group_of.get(s)) is None else r.render(a, s, pp)
            for s in sources
        ]

    def cell(self, src: str, dst: str, pp: PortProto) -> Cell | None:
        """The full cell (both verdicts, rule cookies) for one pair, as ``reachability``."""
        c = self.compiled
        a, b = c.state.pods.get(src), c.state.pods.get(dst)
        if a is None or b is None or not a.ips or not b.ips:
            return None
        addrs = address_pair(a, b)
        if addrs is None:
            return None
        port, protocol = pp
        egress, ingress = _probe(
            self._view(a).c,
            self._view(b).c,
            a,
            b,
            addrs,
            resolve_port(b, port, protocol),
            protocol,
        )
        return Cell(src, dst, port, protocol, egress.allowed and ingress.allowed, egress, ingress)


@dataclass
class _Tables:
    """Destination groups (one view, one family) indexed for the entry matching."""

    members: int
    host: int
    by_peer: dict[int, int]
    by_value: dict[int, int]  # looked-up unnamed port value -> groups
    by_name: dict[int, int]  # name id (non-zero) -> groups
    _covered: dict[tuple[Protocol, int, int, bool], int] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        v: _View,
        groups: Sequence[Group],
        f: int,
        resolved_port: Mapping[int, int | None],
        protocol: Protocol,
    ) -> _Tables:
        members = host = 0
        by_peer: dict[int, int] = {}
        by_value: dict[int, int] = {}
        by_name: dict[int, int] = {}
        for g in groups:
            addr = _first(g.pod, f)
            if addr is None:
                continue
            bit = 1 << g.index
            members |= bit
            ident, cidr = v.peer_entry(addr)
            if ident == Reserved.HOST:
                host |= bit
            by_peer[ident] = by_peer.get(ident, 0) | bit
            if cidr:
                by_peer[cidr] = by_peer.get(cidr, 0) | bit
            r = resolved_port[g.index]
            if r is None:
                continue
            value = r if protocol in PORT_PROTOCOLS else 0
            by_value[value] = by_value.get(value, 0) | bit
            n = v.name_id(addr, protocol, value)
            if n:
                by_name[n] = by_name.get(n, 0) | bit
        return cls(members, host, by_peer, by_value, by_name)

    def covered(self, e: PolicyKey, protocol: Protocol) -> int:
        """The groups whose port (or name id) lookup finds entry ``e``."""
        key = (e.protocol, e.port, e.port_bits, e.named)
        got = self._covered.get(key)
        if got is None:
            table = self.by_name if e.named else self.by_value
            got = 0
            for value, groups in table.items():
                if _entry_covers(e, protocol, value, e.named):
                    got |= groups
            self._covered[key] = got
        return got


class _RowRenderer:
    """Rows over fixed columns; the group -> column mapping is computed once.

    A row is rendered without a Python loop per cell: the allowed bit set is formatted
    as ASCII ``0``/``1`` (group n-1 first), a per-(port, source family) template adds 2
    (unresolved port) or 4 (no shared family) per byte, and one ``translate`` maps the
    sums to the row's characters; ``itemgetter`` picks the columns' groups.
    """

    _TRANS = str.maketrans(
        {"0": BLOCKED, "1": ALLOWED, "2": NO_PORT, "3": NO_PORT, "4": NO_CELL, "5": NO_CELL}
    )

    def __init__(self, m: GroupedMatrix, columns: Sequence[str]) -> None:
        self.m = m
        self.width = len(columns)
        self.col_group = [m.group_of.get(k) for k in columns]
        self.present = [i for i, g in enumerate(self.col_group) if g is not None]
        n = len(m.groups)
        idx = [n - 1 - g for g in self.col_group if g is not None]
        self._pick: Callable[[str], str] | None = None
        if len(idx) == 1:
            only = idx[0]
            self._pick = lambda s: s[only]
        elif idx:
            getter = operator.itemgetter(*idx)
            self._pick = lambda s: "".join(getter(s))
        self.col_pos = {k: i for i, k in enumerate(columns)}
        self._templates: dict[tuple[PortProto, tuple[int, ...]], int] = {}

    def _template(self, pp: PortProto, families: tuple[int, ...]) -> int:
        t = self._templates.get((pp, families))
        if t is None:
            m = self.m
            n = len(m.groups)
            raw = bytearray(n)
            resolved = m.resolved[pp]
            for g in m.groups:
                fams = {ip.version for ip in g.pod.ips}
                if not fams.intersection(families):
                    raw[n - 1 - g.index] = 4
                elif not resolved >> g.index & 1:
                    raw[n - 1 - g.index] = 2
            t = int.from_bytes(bytes(raw), "big")
            self._templates[(pp, families)] = t
        return t

    def render(self, a: int, src: str, pp: PortProto) -> str:
        m = self.m
        n = len(m.groups)
        if self._pick is None:
            return ABSENT * self.width
        families = tuple(sorted({ip.version for ip in m.groups[a].pod.ips}))
        code = int.from_bytes(format(m.allowed[pp][a], f"0{n}b").encode(), "big")
        code += self._template(pp, families)
        picked = self._pick(code.to_bytes(n, "big").decode("ascii")).translate(self._TRANS)
        if len(self.present) != self.width:
            out = [ABSENT] * self.width
            for pos, ch in zip(self.present, picked, strict=True):
                out[pos] = ch
            picked = "".join(out)
        me = self.col_pos.get(src)
        if me is not None and picked[me] == BLOCKED:
            # a pod talking to itself: loopback (matrix.LOOPBACK)
            picked = picked[:me] + ALLOWED + picked[me + 1 :]
        return picked
