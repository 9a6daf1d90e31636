"""The syscall boundary of the map writer and reader: ``MapIO``, over the kernel or dicts.

``MapIO`` is exactly what the writer and reader do to a map, in bytes: look up, update and
delete one entry, update or delete a batch, list the entries. ``LibbpfMapIO`` does it with
bpf(2) through ``libbpf`` on the loaded maps' fds; ``DictMapIO`` does it on dicts, with the
kernel's answers where the writer depends on them (LPM tries have no batch operations;
a batch delete stops at the first absent key; a full map refuses a new key with the
kernel's errno, ``FULL_ERRNOS``), so the one writer (``writer.MapWriter``)
runs unchanged in unit tests without root (the idea of httpx's ``MockTransport``, at the
syscall boundary).
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping
from typing import Protocol

from labelwall.datapath import libbpf
from labelwall.datapath.mapspecs import MapSpec

#: errnos with which a map type says it has no batch operations (524 = ENOTSUPP).
NO_BATCH_ERRNOS = frozenset({errno.EINVAL, errno.EOPNOTSUPP, 524})

#: errnos with which a map refuses a NEW key because it holds max_entries already: hash
#: maps answer E2BIG (kernel/bpf/hashtab.c), LPM tries ENOSPC (kernel/bpf/lpm_trie.c).
#: Overwriting a key that is present never fails this way.
FULL_ERRNOS = frozenset({errno.E2BIG, errno.ENOSPC})


class MapIO(Protocol):
    """Byte-level operations on the maps named by their specs."""

    def lookup(self, spec: MapSpec, key: bytes) -> bytes | None: ...

    def update(self, spec: MapSpec, key: bytes, value: bytes) -> None: ...

    def delete(self, spec: MapSpec, key: bytes) -> bool:
        """False if ``key`` was absent."""
        ...

    def update_batch(self, spec: MapSpec, keys: bytes, values: bytes, count: int) -> None:
        """``count`` packed keys and values in one call; OSError(NO_BATCH_ERRNOS) if the
        map type has no batch operations."""
        ...

    def delete_batch(self, spec: MapSpec, keys: bytes, count: int) -> tuple[int, bool]:
        """(deleted, stopped at an absent key): the absent key is key number ``deleted``."""
        ...

    def items(self, spec: MapSpec) -> list[tuple[bytes, bytes]]: ...

    def max_entries(self, spec: MapSpec) -> int:
        """The map's capacity as created (a build with other size macros differs from
        ``spec.max_entries``)."""
        ...


class LibbpfMapIO:
    """MapIO on the kernel's maps, by fd (``map_fds``: map name -> fd of the loaded object)."""

    def __init__(self, map_fds: Mapping[str, int]) -> None:
        self.map_fds = map_fds

    def fd(self, spec: MapSpec) -> int:
        return self.map_fds[spec.name]

    def lookup(self, spec: MapSpec, key: bytes) -> bytes | None:
        return libbpf.lookup_elem(self.fd(spec), key, spec.value_size)

    def update(self, spec: MapSpec, key: bytes, value: bytes) -> None:
        libbpf.update_elem(self.fd(spec), key, value)

    def delete(self, spec: MapSpec, key: bytes) -> bool:
        return libbpf.delete_elem(self.fd(spec), key)

    def update_batch(self, spec: MapSpec, keys: bytes, values: bytes, count: int) -> None:
        libbpf.update_batch(self.fd(spec), keys, values, count)

    def delete_batch(self, spec: MapSpec, keys: bytes, count: int) -> tuple[int, bool]:
        return libbpf.delete_batch(self.fd(spec), keys, count)

    def max_entries(self, spec: MapSpec) -> int:
        return libbpf.map_info(self.fd(spec)).max_entries

    def items(self, spec: MapSpec) -> list[tuple[bytes, bytes]]:
        """BPF_MAP_LOOKUP_BATCH where the type has it, else a get_next_key walk (tries)."""
        fd = self.fd(spec)
        if not spec.is_trie:
            try:
                return libbpf.lookup_batch(fd, spec.key_size, spec.value_size)
            except OSError as e:
                if e.errno not in NO_BATCH_ERRNOS:
                    raise
        out = []
        for key in libbpf.iter_keys(fd, spec.key_size):
            value = libbpf.lookup_elem(fd, key, spec.value_size)
            if value is not None:  # deleted meanwhile
                out.append((key, value))
        return out


class DictMapIO:
    """MapIO on dicts (``maps``: map name -> key bytes -> value bytes), for unit tests.

    ``on_write`` is called after every single entry written or deleted, batches included
    (the kernel applies a batch one element at a time too), so a test can look at every
    intermediate state.

    ``capacity`` (map name -> max_entries) makes a map as small as a build with that size
    macro: a new key beyond it is refused with the kernel's errno (E2BIG for hash maps,
    ENOSPC for LPM tries), an overwrite still succeeds, and a batch stops at the refused
    element with the earlier ones written, as BPF_MAP_UPDATE_BATCH does. Maps not named
    there hold ``spec.max_entries``.
    """

    def __init__(
        self,
        on_write: Callable[[], None] | None = None,
        capacity: Mapping[str, int] | None = None,
    ) -> None:
        self.maps: dict[str, dict[bytes, bytes]] = {}
        self.on_write = on_write
        self.capacity: dict[str, int] = dict(capacity or {})

    def _map(self, spec: MapSpec) -> dict[bytes, bytes]:
        return self.maps.setdefault(spec.name, {})

    def _written(self) -> None:
        if self.on_write is not None:
            self.on_write()

    def lookup(self, spec: MapSpec, key: bytes) -> bytes | None:
        return self._map(spec).get(key)

    def update(self, spec: MapSpec, key: bytes, value: bytes) -> None:
        if len(key) != spec.key_size or len(value) != spec.value_size:
            raise OSError(errno.EINVAL, f"{spec.name}: wrong key or value size")
        entries = self._map(spec)
        if key not in entries and len(entries) >= self.max_entries(spec):
            code = errno.ENOSPC if spec.is_trie else errno.E2BIG
            raise OSError(code, f"{spec.name}: full ({len(entries)} entries)")
        entries[key] = value
        self._written()

    def delete(self, spec: MapSpec, key: bytes) -> bool:
        found = self._map(spec).pop(key, None) is not None
        if found:
            self._written()
        return found

    def update_batch(self, spec: MapSpec, keys: bytes, values: bytes, count: int) -> None:
        if spec.is_trie:
            raise OSError(errno.EINVAL, f"{spec.name}: no batch operations")
        ks, vs = spec.key_size, spec.value_size
        for i in range(count):
            self.update(spec, keys[i * ks : (i + 1) * ks], values[i * vs : (i + 1) * vs])

    def delete_batch(self, spec: MapSpec, keys: bytes, count: int) -> tuple[int, bool]:
        if spec.is_trie:
            raise OSError(errno.EINVAL, f"{spec.name}: no batch operations")
        ks = spec.key_size
        for i in range(count):
            if not self.delete(spec, keys[i * ks : (i + 1) * ks]):
                return i, True
        return count, False

    def items(self, spec: MapSpec) -> list[tuple[bytes, bytes]]:
        return list(self._map(spec).items())

    def max_entries(self, spec: MapSpec) -> int:
        return self.capacity.get(spec.name, spec.max_entries)
