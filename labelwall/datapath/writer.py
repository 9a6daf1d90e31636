"""Apply a MapDelta to the maps, ordered so no flow allowed before and after is dropped.

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

Batching: hash maps take BPF_MAP_UPDATE_BATCH / DELETE_BATCH (one syscall per chunk); LPM
tries do not implement batch ops, so they fall back to one syscall per entry.

The policy group index (lw_polgrp_v1, abi.h) is derived from lw_policy_v1 here, from a
shadow of the policy table that BpfMapWriter loads from the trie once (sync_policy_index,
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

import errno
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from labelwall.datapath import abi, libbpf, reader
from labelwall.policy.mapstate import MapChanges, MapDelta, MapState, PolicyKey, SubjectFlags

# One group's policy entries in the writer's shadow: encoded trie key -> (key, cookie).
_Entries = dict[bytes, tuple[PolicyKey, int]]

ISOLATION = SubjectFlags.INGRESS_ISOLATED | SubjectFlags.EGRESS_ISOLATED
BATCH_CHUNK = 65536  # entries per batch syscall (bounds the kernel's temporary buffers)
_NO_BATCH_ERRNOS = frozenset({errno.EINVAL, errno.EOPNOTSUPP, 524})  # 524 = ENOTSUPP


@dataclass(frozen=True)
class Step:
    """Part of a delta for one MapState field, written as one unit (upserts then deletes)."""

    table: str  # MapState field name, a key of abi.TABLES
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
        Step("policy", upserts=delta.policy.upserts),
        Step("subjects", upserts=relax, deletes=subj.deletes),
        Step("cidrs", upserts=delta.cidrs.upserts),
        Step("ipcache", upserts=delta.ipcache.upserts),
        Step("named_ports", upserts=delta.named_ports.upserts),
        Step("ipcache", deletes=delta.ipcache.deletes),
        Step("named_ports", deletes=delta.named_ports.deletes),
        Step("cidrs", deletes=delta.cidrs.deletes),
        Step("subjects", upserts=subj.upserts),
        Step("policy", deletes=delta.policy.deletes),
    ]
    return [s for s in steps if s.upserts or s.deletes]


class MapWriter(Protocol):
    """What the agent needs to change the datapath; BpfMapWriter and MemoryMapWriter."""

    def apply(self, delta: MapDelta) -> None: ...

    def set_endpoint(self, ifindex: int, identity: int) -> None: ...

    def delete_endpoint(self, ifindex: int) -> None: ...


def _state_dicts(state: MapState) -> dict[str, dict[Any, Any]]:
    return {name: dict(getattr(state, name)) for name in abi.TABLES}


class MemoryMapWriter:
    """In-memory twin of BpfMapWriter for unit tests; can record every intermediate state."""

    def __init__(self, initial: MapState | None = None, record: bool = False) -> None:
        self._maps = _state_dicts(initial or MapState())
        self.endpoints: dict[int, int] = {}
        self.record = record
        self.history: list[MapState] = []  # state after each single-entry write

    @property
    def state(self) -> MapState:
        return MapState(**{k: dict(v) for k, v in self._maps.items()})

    def _after_write(self) -> None:
        if self.record:
            self.history.append(self.state)

    def apply(self, delta: MapDelta) -> None:
        for step in plan(delta, self._maps["subjects"]):
            table = self._maps[step.table]
            for k, v in step.upserts.items():
                table[k] = v
                self._after_write()
            for k in step.deletes:
                table.pop(k, None)
                self._after_write()

    def set_endpoint(self, ifindex: int, identity: int) -> None:
        self.endpoints[ifindex] = identity

    def delete_endpoint(self, ifindex: int) -> None:
        self.endpoints.pop(ifindex, None)


class BpfMapWriter:
    """Writes the pinned maps through their fds (batched where the map type allows)."""

    def __init__(self, map_fds: Mapping[str, int]) -> None:
        self._fds = dict(map_fds)
        self._no_batch: set[str] = set()  # maps whose type has no batch ops
        # shadow of lw_policy_v1 by group, loaded on first use (sync_policy_index)
        self._groups: dict[abi.GroupKey, _Entries] | None = None

    def _fd(self, spec: abi.MapSpec) -> int:
        return self._fds[spec.name]

    def _current_subjects(self, idents: list[int]) -> dict[int, SubjectFlags]:
        fd, table = self._fd(abi.SUBJECTS_MAP), abi.TABLES["subjects"]
        out = {}
        for ident in idents:
            raw = libbpf.lookup_elem(fd, table.encode_key(ident), abi.SUBJECTS_MAP.value_size)
            if raw is not None:
                out[ident] = table.decode_value(raw)
        return out

    def apply(self, delta: MapDelta) -> None:
        current = self._current_subjects(list(delta.subjects.upserts))
        for step in plan(delta, current):
            if step.table == "policy":
                self._write_policy(step.upserts, step.deletes)
                continue
            table = abi.TABLES[step.table]
            if step.upserts:
                self.upsert_raw(
                    table.spec,
                    [table.encode_key(k) for k in step.upserts],
                    [table.encode_value(v) for v in step.upserts.values()],
                )
            if step.deletes:
                self.delete_raw(table.spec, [table.encode_key(k) for k in step.deletes])
            if step.table == "subjects":
                self._mirror_subjects(
                    {**step.upserts, **{k: SubjectFlags.NONE for k in step.deletes}}
                )

    def apply_changes(self, table_name: str, changes: MapChanges[Any, Any]) -> None:
        """One table, no ordering (initial fills, benchmarks)."""
        if table_name == "policy":
            self._write_policy(changes.upserts, changes.deletes)
            return
        table = abi.TABLES[table_name]
        self.upsert_raw(
            table.spec,
            [table.encode_key(k) for k in changes.upserts],
            [table.encode_value(v) for v in changes.upserts.values()],
        )
        self.delete_raw(table.spec, [table.encode_key(k) for k in changes.deletes])
        if table_name == "subjects":
            self._mirror_subjects(
                {**changes.upserts, **{k: SubjectFlags.NONE for k in changes.deletes}}
            )

    # ---- endpoints: the subject-flags mirror ----

    def _endpoints(self) -> dict[int, abi.Endpoint]:
        raw = reader.read_raw(self._fd(abi.ENDPOINTS_MAP), abi.ENDPOINTS_MAP)
        return {abi.decode_u32(k): abi.decode_endpoint(v) for k, v in raw}

    def _write_endpoints(self, endpoints: Mapping[int, abi.Endpoint]) -> None:
        self.upsert_raw(
            abi.ENDPOINTS_MAP,
            [abi.encode_u32(i) for i in endpoints],
            [abi.encode_endpoint(e) for e in endpoints.values()],
        )

    def _mirror_subjects(self, flags: Mapping[int, SubjectFlags]) -> None:
        """Rewrite the endpoints of these identities with their new subject flags."""
        if not flags:
            return
        self._write_endpoints(
            {
                ifindex: abi.Endpoint.mirroring(ep.identity, flags[ep.identity])
                for ifindex, ep in self._endpoints().items()
                if ep.identity in flags
                and ep != abi.Endpoint.mirroring(ep.identity, flags[ep.identity])
            }
        )

    def sync_endpoints(self) -> None:
        """Re-derive every endpoint's mirror from lw_subjects_v1 (at open)."""
        current = self._endpoints()
        subjects = self._current_subjects(sorted({e.identity for e in current.values()}))
        want = {
            i: abi.Endpoint.mirroring(e.identity, subjects.get(e.identity, SubjectFlags.NONE))
            for i, e in current.items()
        }
        self._write_endpoints({i: e for i, e in want.items() if current[i] != e})

    # ---- policy: the trie and its group index ----

    def _shadow(self) -> dict[abi.GroupKey, _Entries]:
        if self._groups is None:
            self.sync_policy_index()
        assert self._groups is not None
        return self._groups

    def sync_policy_index(self) -> None:
        """Rebuild the shadow from lw_policy_v1; make lw_polgrp_v1 and lw_polovf_v1 agree.

        Run at open: repairs an index left stale by a crash between a trie write and its
        group write, and builds it for a trie pinned by a version without the index.
        """
        table = abi.TABLES["policy"]
        groups: dict[abi.GroupKey, _Entries] = {}
        for raw, value in reader.read_raw(self._fd(table.spec), table.spec):
            key = table.decode_key(raw)
            groups.setdefault(abi.group_of(key), {})[raw] = (key, table.decode_value(value))
        self._sync_raw(
            abi.POLOVF_MAP,
            {
                raw: table.encode_value(cookie)
                for e in groups.values()
                if abi.overflows(e)
                for raw, (_, cookie) in e.items()
            },
        )
        self._sync_raw(
            abi.POLGRP_MAP,
            {abi.encode_group_key(g): abi.encode_group(e.values()) for g, e in groups.items()},
        )
        self._groups = groups

    def _sync_raw(self, spec: abi.MapSpec, want: Mapping[bytes, bytes]) -> None:
        have = dict(reader.read_raw(self._fd(spec), spec))
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
        groups = self._shadow()
        table = abi.TABLES["policy"]
        encode_key, encode_value = table.encode_key, table.encode_value
        up_raw = [(encode_key(k), k, v) for k, v in upserts.items()]
        del_raw = [(encode_key(k), k) for k in deletes]
        touched: dict[abi.GroupKey, _Entries] = {}
        for raw, key, cookie in up_raw:
            g = abi.GroupKey(key.subject, key.peer, key.direction)
            entries = touched.get(g)
            if entries is None:
                entries = touched[g] = dict(groups[g]) if g in groups else {}
            entries[raw] = (key, cookie)
        for raw, key in del_raw:
            g = abi.GroupKey(key.subject, key.peer, key.direction)
            entries = touched.get(g)
            if entries is None:
                entries = touched[g] = dict(groups[g]) if g in groups else {}
            entries.pop(raw, None)
        if up_raw:
            self.upsert_raw(
                table.spec, [r for r, _, _ in up_raw], [encode_value(v) for _, _, v in up_raw]
            )
        ovf_upserts: dict[bytes, int] = {}
        ovf_deletes: list[bytes] = []
        for g, new in touched.items():
            old = groups.get(g, {})
            if len(new) <= abi.GROUP_SLOTS and len(old) <= abi.GROUP_SLOTS:
                continue  # neither side in the overflow trie (the common case)
            old_ovf, new_ovf = abi.overflows(old), abi.overflows(new)
            if new_ovf:
                ovf_upserts.update(
                    {r: kv[1] for r, kv in new.items() if not old_ovf or old.get(r) != kv}
                )
            if old_ovf:
                ovf_deletes.extend(r for r in old if not new_ovf or r not in new)
        self.upsert_raw(
            abi.POLOVF_MAP, list(ovf_upserts), [encode_value(v) for v in ovf_upserts.values()]
        )
        live = [g for g, e in touched.items() if e]
        self.upsert_raw(
            abi.POLGRP_MAP,
            [abi.encode_group_key(g) for g in live],
            [abi.encode_group(touched[g].values()) for g in live],
        )
        self.delete_raw(
            abi.POLGRP_MAP, [abi.encode_group_key(g) for g, e in touched.items() if not e]
        )
        self.delete_raw(abi.POLOVF_MAP, ovf_deletes)
        for g, entries in touched.items():
            if entries:
                groups[g] = entries
            else:
                groups.pop(g, None)
        if del_raw:
            self.delete_raw(table.spec, [r for r, _ in del_raw])

    def upsert_raw(self, spec: abi.MapSpec, keys: list[bytes], values: list[bytes]) -> None:
        fd = self._fd(spec)
        start = 0
        if spec.name not in self._no_batch:
            while start < len(keys):
                end = min(start + BATCH_CHUNK, len(keys))
                try:
                    libbpf.update_batch(
                        fd, b"".join(keys[start:end]), b"".join(values[start:end]), end - start
                    )
                except OSError as e:
                    if e.errno not in _NO_BATCH_ERRNOS or start > 0:
                        raise
                    self._no_batch.add(spec.name)
                    break
                start = end
        for k, v in zip(keys[start:], values[start:], strict=True):
            libbpf.update_elem(fd, k, v)

    def delete_raw(self, spec: abi.MapSpec, keys: list[bytes]) -> None:
        """Delete ``keys``; absent keys are skipped (deleting is idempotent)."""
        fd = self._fd(spec)
        start = 0
        if spec.name not in self._no_batch:
            while start < len(keys):
                end = min(start + BATCH_CHUNK, len(keys))
                try:
                    done, missing = libbpf.delete_batch(fd, b"".join(keys[start:end]), end - start)
                except OSError as e:
                    if e.errno not in _NO_BATCH_ERRNOS or start > 0:
                        raise
                    self._no_batch.add(spec.name)
                    break
                start += done + (1 if missing else 0)
        for k in keys[start:]:
            libbpf.delete_elem(fd, k)

    def set_endpoint(self, ifindex: int, identity: int) -> None:
        flags = self._current_subjects([identity]).get(identity, SubjectFlags.NONE)
        libbpf.update_elem(
            self._fd(abi.ENDPOINTS_MAP),
            abi.encode_u32(ifindex),
            abi.encode_endpoint(abi.Endpoint.mirroring(identity, flags)),
        )

    def delete_endpoint(self, ifindex: int) -> None:
        libbpf.delete_elem(self._fd(abi.ENDPOINTS_MAP), abi.encode_u32(ifindex))

    def set_config(self, config: abi.Config) -> None:
        libbpf.update_elem(self._fd(abi.CONFIG_MAP), abi.encode_u32(0), abi.encode_config(config))
