"""Apply a MapDelta to the maps: no flow allowed before and after is dropped, and when a
map is full no subject the new state isolates is left open.

Why this order (``plan``). A flow's verdict grows with the policy entries and with relaxed
subject flags (isolation bits cleared, audit set), so the writer moves through states that
are at least as permissive as both the old and the new one:

 1. policy upserts          the union old+new: a newly isolated pod gets its allows first
 2. subjects, relaxing      each changed subject gets old & new isolation, old | new audit;
                            deleted subjects (no longer selected = not isolated) go here
 3. cidrs, ipcache, ports   upserts (an address moving identity is one atomic overwrite,
                            judged against the union policy and the relaxed flags)
 4. ipcache, ports, cidrs   deletes (ipcache first, so an address falling back to the cidr
                            trie finds the new prefixes already there)
 5. subjects, final         the new flags (isolation added, audit cleared) now that the
                            allows are complete
 6. policy deletes          last: nothing depends on them any more

With only policy/subject changes this holds after every single entry write (a property
test checks it). When an address changes identity *and* its named port *and* policy moves
with it in one delta, a flow may see the new identity with the old name id for the
duration of step 3 (documented limitation: such a flow is a different pod anyway).

When a write fails (``_fail_closed``). A map that holds max_entries refuses a new key
(E2BIG for hash maps, ENOSPC for tries; mapio.FULL_ERRNOS). Stopping there would leave
step 5 unwritten, so a subject the new state isolates would stay open: the flags are what
close a pod, and they come last. So on a full map the writer turns toward the *closed*
side of the new state instead of stopping:

 a. subjects, final         the new flags at once (isolation added, audit cleared); an
                            identity a full lw_subjects_v1 refuses gets them in its
                            endpoints' mirror anyway (the classifier reads the mirror),
                            and so do its pods set later (``_unwritten``)
 b. the rest of the plan    from the failed step on, entry by entry, skipping what a full
                            map refuses (overwrites always fit), but never the relaxed
                            flags of step 2 again; so the old allows the new state drops
                            are deleted (space is freed) and the CIDR prefixes and
                            address moves are written
 c. the plan once more      with nothing relaxed (step 2 deletes only, step 5 the final
                            flags): what the deletes of b made room for is written now
 d. policy index            re-derived from the trie, which may hold part of step 1

Afterwards each isolated subject is judged by a subset of the new allows: the policy
trie holds old & new plus what fitted of new; an address the ipcache refused is looked up
as world + its longest CIDR prefix, which the new state allows no more than the address's
own entry (an ipBlock's prefix identity is in that entry too); a refused named port
matches no named rule. So a full map drops traffic the new state allows (the closed
failure) and never passes traffic it denies, for every subject the new state isolates.
If c still met a full map, ``MapFullError`` names each one, its size and what it needed;
the agent reports it and retries (agent/loop.py), and a retry completes once space
returns (a policy removed: often within the same delta, through c).
A full lw_cidrs_v1 is the one map where a refused entry would open something: an address
in a refused prefix would match a shorter prefix around it (e.g. the ipBlock around an
``except`` hole), whose identity the new state may allow. So after every cidrs write made
while failing closed (``_close_cidr_gaps``), each prefix that contains a refused one is
deleted too: the addresses of both are then world with no CIDR identity (the peer that
only an any-peer rule admits, as it admits everyone) until the refused prefix fits.

Batching: hash maps take BPF_MAP_UPDATE_BATCH / DELETE_BATCH (one syscall per chunk); LPM
tries do not implement batch ops, so they fall back to one syscall per entry.

The writer does all of this through a ``MapIO`` (mapio.py): the kernel's maps in the
agent, dicts in unit tests, so every path here (groups, overflow, mirror, batch fallback)
runs without root too.

The policy group index (lw_polgrp_v1, abi.h) is derived from lw_policy_v1 here, from a
shadow of the policy table that MapWriter loads from the trie once (sync_policy_index,
at open) and keeps up to date; it must therefore be the only writer of the policy maps.
Each policy step keeps the index in the same order as the trie: upserts go into the trie
first, then into the groups; deletes leave the groups first, then the trie. A group whose
entries overflow its slots says so and the classifier matches it in lw_polovf_v1, which
holds exactly the overflowing groups' entries: they are written there before the group
value points at them and removed only after it no longer does, so every intermediate
state is still between old and new.

Endpoints carry a mirror of their subject's flags (lw_endpoint.flags, abi.h), which the
classifier reads instead of lw_subjects_v1. Every subjects step is followed at once by
the mirror writes for the endpoints of the identities it touched, so the classifier sees
the subject changes in the plan's order; set_endpoint writes the mirror from
lw_subjects_v1 and sync_endpoints (at open) re-derives all of them. Like the policy
shadow, this assumes one writer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from labelwall.cluster import IPAddress
from labelwall.datapath import abi, codecs, groups, mapspecs
from labelwall.datapath.errors import MapFullError
from labelwall.datapath.mapio import FULL_ERRNOS, NO_BATCH_ERRNOS, MapIO
from labelwall.policy import mapstate
from labelwall.policy.mapstate import MapChanges, MapDelta, MapTable, PolicyKey, SubjectFlags

# One group's policy entries in the writer's shadow: encoded trie key -> (key, cookie).
_Entries = dict[bytes, tuple[PolicyKey, int]]

ISOLATION = SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED
BATCH_CHUNK = 65536  # entries per batch syscall (bounds the kernel's temporary buffers)


@dataclass(frozen=True)
class Step:
    """Part of a delta for one MapState table, written as one unit (upserts then deletes)."""

    table: MapTable[Any, Any]
    upserts: Mapping[Any, Any] = field(default_factory=dict)
    deletes: frozenset[Any] = frozenset()


def relaxed(old: SubjectFlags, new: SubjectFlags) -> SubjectFlags:
    """Flags at least as permissive as both: isolated only if both are, audited if either."""
    return SubjectFlags((old & new & ISOLATION) | ((old | new) & SubjectFlags.AUDIT))


def plan(delta: MapDelta, current_subjects: Mapping[int, SubjectFlags]) -> list[Step]:
    """The write order for ``delta`` given the subject flags in force now (pure)."""
    subj = delta.subjects
    relax = {}
    for ident, new in subj.upserts.items():
        old = current_subjects.get(ident)
        if old is not None and relaxed(old, new) != old:
            relax[ident] = relaxed(old, new)
    steps = [
        Step(mapstate.POLICY, upserts=delta.policy.upserts),
        Step(mapstate.SUBJECTS, upserts=relax, deletes=subj.deletes),
        Step(mapstate.CIDRS, upserts=delta.cidrs.upserts),
        Step(mapstate.IPCACHE, upserts=delta.ipcache.upserts),
        Step(mapstate.NAMED_PORTS, upserts=delta.named_ports.upserts),
        Step(mapstate.IPCACHE, deletes=delta.ipcache.deletes),
        Step(mapstate.NAMED_PORTS, deletes=delta.named_ports.deletes),
        Step(mapstate.CIDRS, deletes=delta.cidrs.deletes),
        Step(mapstate.SUBJECTS, upserts=subj.upserts),
        Step(mapstate.POLICY, deletes=delta.policy.deletes),
    ]
    return [s for s in steps if s.upserts or s.deletes]


class MapWriter:
    """Writes the maps through a MapIO (batched where the map type allows)."""

    def __init__(self, io: MapIO) -> None:
        self.io = io
        self._no_batch: set[str] = set()  # maps whose type has no batch ops
        # shadow of lw_policy_v1 by group, loaded on first use (sync_policy_index)
        self._groups: dict[groups.GroupKey, _Entries] | None = None
        # flags of identities a full lw_subjects_v1 refused: their endpoints mirror these
        self._unwritten: dict[int, SubjectFlags] = {}
        # while failing closed: the full maps met so far (upserts skip refused entries)
        self._closing: list[MapFullError] | None = None
        # while failing closed: prefixes deleted around a refused one (written again later)
        self._cidr_evicted: dict[Any, Any] = {}
        # shadow of lw_epaddr_v1 (ifindex -> addresses), loaded on first use
        self._addrs: dict[int, frozenset[IPAddress]] | None = None

    def _current_subjects(self, idents: list[int]) -> dict[int, SubjectFlags]:
        table = codecs.SUBJECTS
        out = {}
        for ident in idents:
            raw = self.io.lookup(table.spec, table.encode_key(ident))
            if raw is not None:
                out[ident] = table.decode_value(raw)
            elif ident in self._unwritten:
                out[ident] = self._unwritten[ident]
        return out

    def apply(self, delta: MapDelta) -> None:
        """Write ``delta`` in ``plan`` order; on a full map fail closed, and raise
        ``MapFullError`` if what the delta needs still does not fit."""
        current = self._current_subjects(list(delta.subjects.upserts))
        steps = plan(delta, current)
        for i, step in enumerate(steps):
            try:
                self._write_table(step.table, step.upserts, step.deletes)
            except MapFullError:
                full = self._fail_closed(delta, steps[i:])
                if full is not None:
                    raise full from None
                return

    def _fail_closed(self, delta: MapDelta, rest: list[Step]) -> MapFullError | None:
        """Steps a-d of the module docstring; the error to raise (one per full map), or
        None if the second pass found room (the first pass's deletes made it).

        ``rest``: the plan from the step that failed on, without subject upserts (the
        relaxed flags of step 2 would open what step a closed). The second pass is the
        whole plan without relaxing (``plan(delta, {})``: step 2 holds deletes only); it
        writes what the first pass's deletes made room for. Both go on entry by entry past
        refused entries (``_closing``)."""
        subj = delta.subjects
        self._closing = []
        self._cidr_evicted = {}
        try:
            self._write_table(mapstate.SUBJECTS, subj.upserts, frozenset())
            for step in rest:
                upserts = {} if step.table is mapstate.SUBJECTS else step.upserts
                self._write_table(step.table, upserts, step.deletes)
            self._closing = []
            for step in plan(delta, {}):
                self._write_table(step.table, step.upserts, step.deletes)
            refused = set(subj.upserts) - set(self._current_subjects(list(subj.upserts)))
            self._unwritten.update({i: subj.upserts[i] for i in refused})
            self._groups = None  # the trie may hold entries the shadow lacks
            self.sync_policy_index()
            found = self._closing
        finally:
            self._closing = None
            self._cidr_evicted = {}
        if not found:
            return None
        by_map = {e.map_name: e for e in reversed(found)}  # the first error of each map
        errors = sorted(by_map.values(), key=found.index)
        return MapFullError(
            errors[0].map_name, errors[0].max_entries, errors[0].needed, tuple(errors[1:])
        )

    def apply_changes(self, table: MapTable[Any, Any], changes: MapChanges[Any, Any]) -> None:
        """One table, no ordering (initial fills, benchmarks)."""
        self._write_table(table, changes.upserts, changes.deletes)

    def _write_table(
        self, table: MapTable[Any, Any], upserts: Mapping[Any, Any], deletes: frozenset[Any]
    ) -> None:
        """Upserts then deletes of one table; the policy index and the endpoints' mirror
        follow their table at once."""
        if table is mapstate.POLICY:
            self._write_policy(upserts, deletes)
            return
        codec = codecs.CODEC_OF[table]
        if table is mapstate.CIDRS and upserts:
            self._write_cidrs(upserts)
            upserts = {}
        if upserts:
            self.upsert_raw(
                codec.spec,
                [codec.encode_key(k) for k in upserts],
                [codec.encode_value(v) for v in upserts.values()],
            )
        if deletes:
            self.delete_raw(codec.spec, [codec.encode_key(k) for k in deletes])
        if table is mapstate.SUBJECTS:
            for k in (*upserts, *deletes):
                self._unwritten.pop(k, None)
            self._mirror_subjects({**upserts, **{k: SubjectFlags.NONE for k in deletes}})

    def _write_cidrs(self, upserts: Mapping[Any, Any]) -> None:
        """lw_cidrs_v1 upserts, longest prefix first, so a full trie refuses a prefix
        before any shorter new one around it is written. While failing closed, a prefix
        around a refused one is not written, and those already there are deleted
        (module docstring): no address falls back to a shorter prefix than it should."""
        codec = codecs.CODEC_OF[mapstate.CIDRS]
        if self._closing is not None:  # what an earlier pass took out is wanted back
            upserts = {**self._cidr_evicted, **upserts}
        nets = sorted(upserts, key=lambda n: (-n.prefixlen, n.version, str(n)))
        if self._closing is None:
            self.upsert_raw(
                codec.spec,
                [codec.encode_key(n) for n in nets],
                [codec.encode_value(upserts[n]) for n in nets],
            )
            return
        refused: list[Any] = []
        skipped: list[Any] = []
        for n in nets:
            if any(self._contains(n, r) for r in refused):
                skipped.append(n)
                continue
            try:
                self.io.update(codec.spec, codec.encode_key(n), codec.encode_value(upserts[n]))
            except OSError as e:
                if e.errno not in FULL_ERRNOS:
                    raise
                refused.append(n)
            else:
                self._cidr_evicted.pop(n, None)
        if not refused:
            return
        self._closing.append(self._full(codec.spec, [codec.encode_key(n) for n in nets]))
        present = {codec.decode_key(k): v for k, v in self.io.items(codec.spec)}
        around = [p for p in present if any(self._contains(p, r) for r in refused)]
        self.delete_raw(codec.spec, [codec.encode_key(p) for p in around])
        self._cidr_evicted.update({p: codec.decode_value(present[p]) for p in around})

    @staticmethod
    def _contains(outer: Any, inner: Any) -> bool:
        """``outer`` is a strictly shorter prefix around ``inner`` (same family)."""
        return bool(
            outer.version == inner.version
            and outer.prefixlen < inner.prefixlen
            and inner.subnet_of(outer)
        )

    # ---- endpoints: the subject-flags mirror ----

    def _endpoints(self) -> dict[int, codecs.Endpoint]:
        raw = self.io.items(mapspecs.ENDPOINTS_MAP)
        return {codecs.decode_u32(k): codecs.decode_endpoint(v) for k, v in raw}

    def _write_endpoints(self, endpoints: Mapping[int, codecs.Endpoint]) -> None:
        self.upsert_raw(
            mapspecs.ENDPOINTS_MAP,
            [codecs.encode_u32(i) for i in endpoints],
            [codecs.encode_endpoint(e) for e in endpoints.values()],
        )

    def _mirror_subjects(self, flags: Mapping[int, SubjectFlags]) -> None:
        """Rewrite the endpoints of these identities with their new subject flags."""
        if not flags:
            return
        self._write_endpoints(
            {
                ifindex: codecs.Endpoint.mirroring(ep.identity, flags[ep.identity])
                for ifindex, ep in self._endpoints().items()
                if ep.identity in flags
                and ep != codecs.Endpoint.mirroring(ep.identity, flags[ep.identity])
            }
        )

    def sync_endpoints(self) -> None:
        """Re-derive every endpoint's mirror from lw_subjects_v1 (at open)."""
        current = self._endpoints()
        subjects = self._current_subjects(sorted({e.identity for e in current.values()}))
        want = {
            i: codecs.Endpoint.mirroring(e.identity, subjects.get(e.identity, SubjectFlags.NONE))
            for i, e in current.items()
        }
        self._write_endpoints({i: e for i, e in want.items() if current[i] != e})

    # ---- policy: the trie and its group index ----

    def _shadow(self) -> dict[groups.GroupKey, _Entries]:
        if self._groups is None:
            self.sync_policy_index()
        assert self._groups is not None
        return self._groups

    def sync_policy_index(self) -> None:
        """Rebuild the shadow from lw_policy_v1; make lw_polgrp_v1 and lw_polovf_v1 agree.

        Run at open: repairs an index left stale by a crash between a trie write and its
        group write, and builds it for a trie pinned by a version without the index.
        """
        table = codecs.POLICY
        shadow: dict[groups.GroupKey, _Entries] = {}
        for raw, value in self.io.items(table.spec):
            key = table.decode_key(raw)
            shadow.setdefault(groups.group_of(key), {})[raw] = (key, table.decode_value(value))
        self._sync_raw(
            mapspecs.POLOVF_MAP,
            {
                raw: table.encode_value(cookie)
                for e in shadow.values()
                if groups.overflows(e)
                for raw, (_, cookie) in e.items()
            },
        )
        self._sync_raw(
            mapspecs.POLGRP_MAP,
            {
                groups.encode_group_key(g): groups.encode_group(e.values())
                for g, e in shadow.items()
            },
        )
        self._groups = shadow

    def _sync_raw(self, spec: mapspecs.MapSpec, want: Mapping[bytes, bytes]) -> None:
        have = dict(self.io.items(spec))
        changed = [k for k, v in want.items() if have.get(k) != v]
        self.upsert_raw(spec, changed, [want[k] for k in changed])
        self.delete_raw(spec, [k for k in have if k not in want])

    def _write_policy(
        self, upserts: Mapping[PolicyKey, int], deletes: frozenset[PolicyKey]
    ) -> None:
        """lw_policy_v1 upserts; lw_polovf_v1 upserts of overflowing groups; the touched
        groups' values; lw_polovf_v1 deletes; lw_policy_v1 deletes. At every moment a
        group's value points at slots or at overflow entries that are all present.

        Entries are keyed by their encoded trie key: bytes hash once and cache it, where
        PolicyKey (a dataclass) hashes in Python on every dict operation."""
        shadow = self._shadow()
        table = codecs.POLICY
        encode_key, encode_value = table.encode_key, table.encode_value
        up_raw = [(encode_key(k), k, v) for k, v in upserts.items()]
        del_raw = [(encode_key(k), k) for k in deletes]
        touched: dict[groups.GroupKey, _Entries] = {}
        for raw, key, cookie in up_raw:
            g = groups.GroupKey(key.subject, key.peer, key.direction)
            entries = touched.get(g)
            if entries is None:
                entries = touched[g] = dict(shadow[g]) if g in shadow else {}
            entries[raw] = (key, cookie)
        for raw, key in del_raw:
            g = groups.GroupKey(key.subject, key.peer, key.direction)
            entries = touched.get(g)
            if entries is None:
                entries = touched[g] = dict(shadow[g]) if g in shadow else {}
            entries.pop(raw, None)
        if up_raw:
            self.upsert_raw(
                table.spec, [r for r, _, _ in up_raw], [encode_value(v) for _, _, v in up_raw]
            )
        ovf_upserts: dict[bytes, int] = {}
        ovf_deletes: list[bytes] = []
        for g, new in touched.items():
            old = shadow.get(g, {})
            if len(new) <= abi.GROUP_SLOTS and len(old) <= abi.GROUP_SLOTS:
                continue  # neither side in the overflow trie (the common case)
            old_ovf, new_ovf = groups.overflows(old), groups.overflows(new)
            if new_ovf:
                ovf_upserts.update(
                    {r: kv[1] for r, kv in new.items() if not old_ovf or old.get(r) != kv}
                )
            if old_ovf:
                ovf_deletes.extend(r for r in old if not new_ovf or r not in new)
        self.upsert_raw(
            mapspecs.POLOVF_MAP, list(ovf_upserts), [encode_value(v) for v in ovf_upserts.values()]
        )
        live = [g for g, e in touched.items() if e]
        self.upsert_raw(
            mapspecs.POLGRP_MAP,
            [groups.encode_group_key(g) for g in live],
            [groups.encode_group(touched[g].values()) for g in live],
        )
        self.delete_raw(
            mapspecs.POLGRP_MAP, [groups.encode_group_key(g) for g, e in touched.items() if not e]
        )
        self.delete_raw(mapspecs.POLOVF_MAP, ovf_deletes)
        for g, entries in touched.items():
            if entries:
                shadow[g] = entries
            else:
                shadow.pop(g, None)
        if del_raw:
            self.delete_raw(table.spec, [r for r, _ in del_raw])

    def upsert_raw(self, spec: mapspecs.MapSpec, keys: list[bytes], values: list[bytes]) -> None:
        """Write ``keys``/``values``; a full map raises ``MapFullError`` (the earlier
        entries of the call are written)."""
        try:
            self._upsert_raw(spec, keys, values)
        except OSError as e:
            if e.errno not in FULL_ERRNOS:
                raise
            full = self._full(spec, keys)
            if self._closing is None:
                raise full from e
            self._closing.append(full)
            for k, v in zip(keys, values, strict=True):  # overwrites and what still fits
                try:
                    self.io.update(spec, k, v)
                except OSError as again:
                    if again.errno not in FULL_ERRNOS:
                        raise

    def _full(self, spec: mapspecs.MapSpec, keys: list[bytes]) -> MapFullError:
        """What a refused write needed: the entries present plus the new keys refused."""
        present = {k for k, _ in self.io.items(spec)}
        needed = len(present) + len(set(keys) - present)
        return MapFullError(spec.name, self.io.max_entries(spec), needed)

    def _upsert_raw(self, spec: mapspecs.MapSpec, keys: list[bytes], values: list[bytes]) -> None:
        start = 0
        if spec.name not in self._no_batch:
            while start < len(keys):
                end = min(start + BATCH_CHUNK, len(keys))
                try:
                    self.io.update_batch(
                        spec, b"".join(keys[start:end]), b"".join(values[start:end]), end - start
                    )
                except OSError as e:
                    if e.errno not in NO_BATCH_ERRNOS or start > 0:
                        raise
                    self._no_batch.add(spec.name)
                    break
                start = end
        for k, v in zip(keys[start:], values[start:], strict=True):
            self.io.update(spec, k, v)

    def delete_raw(self, spec: mapspecs.MapSpec, keys: list[bytes]) -> None:
        """Delete ``keys``; absent keys are skipped (deleting is idempotent)."""
        start = 0
        if spec.name not in self._no_batch:
            while start < len(keys):
                end = min(start + BATCH_CHUNK, len(keys))
                try:
                    done, missing = self.io.delete_batch(
                        spec, b"".join(keys[start:end]), end - start
                    )
                except OSError as e:
                    if e.errno not in NO_BATCH_ERRNOS or start > 0:
                        raise
                    self._no_batch.add(spec.name)
                    break
                start += done + (1 if missing else 0)
        for k in keys[start:]:
            self.io.delete(spec, k)

    def set_endpoint(
        self, ifindex: int, identity: int, addresses: Iterable[IPAddress] = ()
    ) -> None:
        """The pod behind ``ifindex``: identity and the addresses it may send from.

        Order: new addresses (lw_epaddr_v1), the endpoint entry, then addresses it no
        longer has; so the classifier never judges this veth's packets against an address
        set older than its entry's pod (a pod without addresses sends nothing).
        ``MapFullError`` if lw_endpoints_v1 (or lw_epaddr_v1) is full.
        """
        want = frozenset(addresses)
        have = self.endpoint_addresses(refresh=False).get(ifindex, frozenset())
        self._write_addrs(ifindex, want - have, frozenset())
        flags = self._current_subjects([identity]).get(identity, SubjectFlags.NONE)
        self.upsert_raw(
            mapspecs.ENDPOINTS_MAP,
            [codecs.encode_u32(ifindex)],
            [codecs.encode_endpoint(codecs.Endpoint.mirroring(identity, flags))],
        )
        self._write_addrs(ifindex, frozenset(), have - want)

    def delete_endpoint(self, ifindex: int) -> None:
        """The entry first (the veth then drops everything), then its addresses."""
        self.io.delete(mapspecs.ENDPOINTS_MAP, codecs.encode_u32(ifindex))
        have = self.endpoint_addresses(refresh=False).get(ifindex, frozenset())
        self._write_addrs(ifindex, frozenset(), have)

    def endpoint_addresses(self, refresh: bool = True) -> dict[int, frozenset[IPAddress]]:
        """ifindex -> the addresses lw_epaddr_v1 lets it send from (re-read unless
        ``refresh`` is False and the shadow is loaded)."""
        if refresh or self._addrs is None:
            out: dict[int, set[IPAddress]] = {}
            for raw, _ in self.io.items(mapspecs.EPADDR_MAP):
                ifindex, addr = codecs.decode_epaddr_key(raw)
                out.setdefault(ifindex, set()).add(addr)
            self._addrs = {i: frozenset(a) for i, a in out.items()}
        return dict(self._addrs)

    def _write_addrs(
        self, ifindex: int, add: frozenset[IPAddress], remove: frozenset[IPAddress]
    ) -> None:
        assert self._addrs is not None
        spec = mapspecs.EPADDR_MAP
        if add:
            keys = [codecs.encode_epaddr_key(ifindex, a) for a in sorted(add, key=str)]
            self.upsert_raw(spec, keys, [codecs.encode_epaddr_value()] * len(keys))
        if remove:
            self.delete_raw(spec, [codecs.encode_epaddr_key(ifindex, a) for a in remove])
        now = (self._addrs.get(ifindex, frozenset()) | add) - remove
        if now:
            self._addrs[ifindex] = now
        else:
            self._addrs.pop(ifindex, None)

    def set_config(self, config: codecs.DatapathConfig) -> None:
        self.io.update(mapspecs.CONFIG_MAP, codecs.encode_u32(0), codecs.encode_config(config))
        self.io.update(
            mapspecs.CT_CONFIG_MAP, codecs.encode_u32(0), codecs.encode_ct_config(config)
        )
