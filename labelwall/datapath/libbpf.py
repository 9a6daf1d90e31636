"""A small ctypes adapter over the system libbpf.so.1 for the calls pylibbpf 0.0.6 lacks.

pylibbpf loads the object and hands out map fds, but it has no program fd, no pinning of
programs, no BPF_PROG_TEST_RUN, no batch map operations, no ring buffer consumer, no
netfilter links (and the system libbpf 1.1 predates them: BPF_LINK_CREATE is issued as a
raw bpf(2) syscall, ``link_create_netfilter``), and its
``lookup``/``items`` decode struct values lossily (only the first field survives). This
module is the documented fallback for exactly those: thin wrappers over the libbpf 1.x
low-level API (which returns ``-errno``), raising ``OSError`` with the errno. No policy,
no ABI knowledge: bytes in, bytes out.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache

from labelwall.datapath.errors import RingBufferClosedError

BPF_OBJ_NAME_LEN = 16

# bpf_map_type values we check (linux/bpf.h enum bpf_map_type).
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LPM_TRIE = 11
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_RINGBUF = 27
BPF_PROG_TYPE_SCHED_CLS = 3

BPF_ANY = 0


class _BatchOpts(ctypes.Structure):
    _fields_ = (
        ("sz", ctypes.c_size_t),
        ("elem_flags", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    )


class _TestRunOpts(ctypes.Structure):
    _fields_ = (
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    )


class _MapInfo(ctypes.Structure):
    # Prefix of struct bpf_map_info; the kernel fills at most info_len bytes.
    _fields_ = (
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
    )


class _ProgInfo(ctypes.Structure):
    # Prefix of struct bpf_prog_info up to name.
    _fields_ = (
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
    )


_SampleFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


@cache
def lib() -> ctypes.CDLL:
    """The system libbpf (Debian libbpf1 / libbpf-dev)."""
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        handle = ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError:
        handle = ctypes.CDLL(name, use_errno=True)
    vp, u32p, i, u32 = (
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_uint32),
        ctypes.c_int,
        ctypes.c_uint32,
    )
    sigs: dict[str, tuple[object, list[object]]] = {
        "bpf_map_update_elem": (i, [i, vp, vp, ctypes.c_uint64]),
        "bpf_map_lookup_elem": (i, [i, vp, vp]),
        "bpf_map_delete_elem": (i, [i, vp]),
        "bpf_map_get_next_key": (i, [i, vp, vp]),
        "bpf_map_update_batch": (i, [i, vp, vp, u32p, vp]),
        "bpf_map_delete_batch": (i, [i, vp, u32p, vp]),
        "bpf_map_lookup_batch": (i, [i, vp, vp, vp, vp, u32p, vp]),
        "bpf_obj_pin": (i, [i, ctypes.c_char_p]),
        "bpf_obj_get": (i, [ctypes.c_char_p]),
        "bpf_prog_get_next_id": (i, [u32, u32p]),
        "bpf_prog_get_fd_by_id": (i, [u32]),
        "bpf_obj_get_info_by_fd": (i, [i, vp, u32p]),
        "bpf_prog_test_run_opts": (i, [i, vp]),
        "ring_buffer__new": (vp, [i, _SampleFn, vp, vp]),
        "ring_buffer__poll": (i, [vp, i]),
        "ring_buffer__consume": (i, [vp]),
        "ring_buffer__free": (None, [vp]),
    }
    for fn, (restype, argtypes) in sigs.items():
        f = getattr(handle, fn)
        f.restype = restype
        f.argtypes = argtypes
    return handle


def _check(rc: int, what: str) -> int:
    if rc < 0:
        err = -rc if rc != -1 else (ctypes.get_errno() or errno.EIO)
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc


def _buf(data: bytes) -> ctypes.Array[ctypes.c_char]:
    return ctypes.create_string_buffer(data, len(data))


# ---- single elements ----


def update_elem(fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    _check(lib().bpf_map_update_elem(fd, key, value, flags), "bpf_map_update_elem")


def lookup_elem(fd: int, key: bytes, value_size: int) -> bytes | None:
    out = ctypes.create_string_buffer(value_size)
    rc = lib().bpf_map_lookup_elem(fd, key, out)
    if rc == -errno.ENOENT:
        return None
    _check(rc, "bpf_map_lookup_elem")
    return out.raw


def delete_elem(fd: int, key: bytes) -> bool:
    """False when the key was absent."""
    rc = lib().bpf_map_delete_elem(fd, key)
    if rc == -errno.ENOENT:
        return False
    _check(rc, "bpf_map_delete_elem")
    return True


def iter_keys(fd: int, key_size: int) -> Iterator[bytes]:
    """Every key (get_next_key walk; works for LPM tries, which have no batch lookup)."""
    cur = ctypes.create_string_buffer(key_size)
    nxt = ctypes.create_string_buffer(key_size)
    rc = lib().bpf_map_get_next_key(fd, None, nxt)
    while rc == 0:
        yield nxt.raw
        ctypes.memmove(cur, nxt, key_size)
        rc = lib().bpf_map_get_next_key(fd, cur, nxt)
    if rc != -errno.ENOENT:
        _check(rc, "bpf_map_get_next_key")


# ---- batches (BPF_MAP_*_BATCH; the kernel returns EINVAL/ENOTSUPP for maps without) ----


def _opts() -> _BatchOpts:
    return _BatchOpts(ctypes.sizeof(_BatchOpts), 0, 0)


def update_batch(fd: int, keys: bytes, values: bytes, count: int) -> None:
    """Insert/overwrite ``count`` packed keys and values in one syscall."""
    n = ctypes.c_uint32(count)
    opts = _opts()
    rc = lib().bpf_map_update_batch(fd, keys, values, ctypes.byref(n), ctypes.byref(opts))
    _check(rc, f"bpf_map_update_batch ({n.value}/{count} done)")


def delete_batch(fd: int, keys: bytes, count: int) -> tuple[int, bool]:
    """Delete up to ``count`` packed keys in one syscall.

    Returns (deleted, stopped_at_missing): the kernel stops at the first absent key
    (ENOENT), which is then key number ``deleted``; the caller skips it and goes on.
    """
    n = ctypes.c_uint32(count)
    opts = _opts()
    rc = lib().bpf_map_delete_batch(fd, keys, ctypes.byref(n), ctypes.byref(opts))
    if rc == -errno.ENOENT:
        return n.value, True
    _check(rc, f"bpf_map_delete_batch ({n.value}/{count} done)")
    return n.value, False


def lookup_batch(
    fd: int, key_size: int, value_size: int, chunk: int = 4096
) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a hash map, ``chunk`` entries per syscall."""
    out: list[tuple[bytes, bytes]] = []
    keys = ctypes.create_string_buffer(key_size * chunk)
    values = ctypes.create_string_buffer(value_size * chunk)
    # in/out batch tokens are opaque; for hash maps they are a u32 bucket index
    in_batch = ctypes.create_string_buffer(8)
    out_batch = ctypes.create_string_buffer(8)
    first = True
    opts = _opts()
    while True:
        n = ctypes.c_uint32(chunk)
        rc = lib().bpf_map_lookup_batch(
            fd,
            None if first else in_batch,
            out_batch,
            keys,
            values,
            ctypes.byref(n),
            ctypes.byref(opts),
        )
        if rc < 0 and rc != -errno.ENOENT:
            _check(rc, "bpf_map_lookup_batch")
        kr, vr = keys.raw, values.raw
        for i in range(n.value):
            out.append(
                (kr[i * key_size : (i + 1) * key_size], vr[i * value_size : (i + 1) * value_size])
            )
        if rc == -errno.ENOENT:
            return out
        ctypes.memmove(in_batch, out_batch, 8)
        first = False


# ---- objects: pins, ids, info ----


def obj_pin(fd: int, path: str) -> None:
    _check(lib().bpf_obj_pin(fd, path.encode()), f"bpf_obj_pin {path}")


def obj_get(path: str) -> int:
    """An fd for the pinned object at ``path`` (caller closes it)."""
    return _check(lib().bpf_obj_get(path.encode()), f"bpf_obj_get {path}")


@dataclass(frozen=True)
class MapInfo:
    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int
    name: str


def map_info(fd: int) -> MapInfo:
    info = _MapInfo()
    n = ctypes.c_uint32(ctypes.sizeof(info))
    _check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(n)), "map info")
    return MapInfo(
        info.type,
        info.id,
        info.key_size,
        info.value_size,
        info.max_entries,
        info.map_flags,
        info.name.decode(),
    )


@dataclass(frozen=True)
class ProgInfo:
    type: int
    id: int
    name: str
    map_ids: tuple[int, ...]
    tag: bytes = b""  # the kernel's hash of the instructions (map fds zeroed)


def prog_info(fd: int) -> ProgInfo:
    info = _ProgInfo()
    n = ctypes.c_uint32(ctypes.sizeof(info))
    _check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(n)), "prog info")
    nr = info.nr_map_ids
    ids = (ctypes.c_uint32 * max(nr, 1))()
    info2 = _ProgInfo(nr_map_ids=nr, map_ids=ctypes.addressof(ids))
    n = ctypes.c_uint32(ctypes.sizeof(info2))
    _check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info2), ctypes.byref(n)), "prog info")
    return ProgInfo(info.type, info.id, info.name.decode(), tuple(ids[:nr]), bytes(info.tag))


def prog_ids() -> Iterator[int]:
    cur = ctypes.c_uint32(0)
    while lib().bpf_prog_get_next_id(cur.value, ctypes.byref(cur)) == 0:
        yield cur.value


def prog_fd_by_id(prog_id: int) -> int | None:
    """An fd for program ``prog_id`` (caller closes it), None if it went away meanwhile."""
    rc = lib().bpf_prog_get_fd_by_id(prog_id)
    if rc == -errno.ENOENT:
        return None
    return _check(rc, f"bpf_prog_get_fd_by_id {prog_id}")


# ---- netfilter links (raw bpf(2): BPF_LINK_CREATE with attach type BPF_NETFILTER) ----

SYS_BPF = 321  # x86_64
BPF_LINK_CREATE = 28
BPF_NETFILTER = 45  # enum bpf_attach_type
BPF_LINK_TYPE_NETFILTER = 10  # enum bpf_link_type
BPF_PROG_TYPE_NETFILTER = 32
BPF_F_NETFILTER_IP_DEFRAG = 1  # the hook sees reassembled datagrams (kernel >= 6.6)
_ATTR_SIZE = 64  # a prefix of union bpf_attr; the kernel requires the rest to be zero


@cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def link_create_netfilter(prog_fd: int, pf: int, hooknum: int, priority: int, flags: int) -> int:
    """An fd for a new netfilter link of ``prog_fd`` (the hook runs while the link lives).

    attr.link_create: prog_fd, target_fd (0), attach_type, flags (0), then the
    ``netfilter`` member at offset 16: pf, hooknum, priority (signed), flags.
    """
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    fields = (prog_fd, 0, BPF_NETFILTER, 0, pf, hooknum, priority, flags)
    struct.pack_into("=IIIIIIiI", attr, 0, *fields)
    rc = _libc().syscall(SYS_BPF, BPF_LINK_CREATE, attr, _ATTR_SIZE)
    if rc < 0:
        err = ctypes.get_errno() or errno.EIO
        raise OSError(err, f"BPF_LINK_CREATE netfilter pf={pf} hook={hooknum}: {os.strerror(err)}")
    return int(rc)


@dataclass(frozen=True)
class NetfilterLinkInfo:
    type: int
    id: int
    prog_id: int
    pf: int
    hooknum: int
    priority: int
    flags: int


def netfilter_link_info(fd: int) -> NetfilterLinkInfo:
    """struct bpf_link_info of a link fd: type, id, prog_id, then (offset 16) netfilter."""
    buf = ctypes.create_string_buffer(64)
    n = ctypes.c_uint32(64)
    _check(lib().bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(n)), "link info")
    t, i, p = struct.unpack_from("=III", buf.raw, 0)
    pf, hook, prio, fl = struct.unpack_from("=IIiI", buf.raw, 16)
    return NetfilterLinkInfo(t, i, p, pf, hook, prio, fl)


# ---- BPF_PROG_TEST_RUN ----


@dataclass(frozen=True)
class RunResult:
    retval: int
    duration_ns: int  # average per repetition
    data_out: bytes


def prog_test_run(
    prog_fd: int, data: bytes, ctx: bytes | None = None, repeat: int = 1
) -> RunResult:
    data_in = _buf(data)
    out = ctypes.create_string_buffer(len(data) + 256)
    ctx_in = _buf(ctx) if ctx is not None else None
    opts = _TestRunOpts(
        sz=ctypes.sizeof(_TestRunOpts),
        data_in=ctypes.cast(data_in, ctypes.c_void_p),
        data_out=ctypes.cast(out, ctypes.c_void_p),
        data_size_in=len(data),
        data_size_out=len(out),
        ctx_in=ctypes.cast(ctx_in, ctypes.c_void_p) if ctx_in is not None else None,
        ctx_size_in=len(ctx) if ctx is not None else 0,
        repeat=repeat,
    )
    _check(lib().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), "bpf_prog_test_run_opts")
    return RunResult(opts.retval, opts.duration, out.raw[: opts.data_size_out])


# ---- ring buffer ----


class RingBuffer:
    """libbpf ring_buffer over one map fd; ``poll`` calls ``on_record(bytes)`` per record."""

    def __init__(self, map_fd: int, on_record: Callable[[bytes], None]) -> None:
        def sample(_ctx: int | None, data: int | None, size: int) -> int:
            on_record(ctypes.string_at(data, size) if data else b"")
            return 0

        self._cb = _SampleFn(sample)  # keep a reference: libbpf calls it later
        ptr = lib().ring_buffer__new(map_fd, self._cb, None, None)
        if not ptr:
            err = ctypes.get_errno() or errno.EINVAL
            raise OSError(err, f"ring_buffer__new: {os.strerror(err)}")
        self._rb: int | None = ptr

    def poll(self, timeout_ms: int = 0) -> int:
        """Records consumed (waits up to ``timeout_ms`` for the first)."""
        if self._rb is None:
            raise RingBufferClosedError("ring buffer closed")
        return _check(lib().ring_buffer__poll(self._rb, timeout_ms), "ring_buffer__poll")

    def consume(self) -> int:
        """Records consumed now, without waiting (records submitted without a wakeup)."""
        if self._rb is None:
            raise RingBufferClosedError("ring buffer closed")
        return _check(lib().ring_buffer__consume(self._rb), "ring_buffer__consume")

    def close(self) -> None:
        if self._rb is not None:
            lib().ring_buffer__free(self._rb)
            self._rb = None
