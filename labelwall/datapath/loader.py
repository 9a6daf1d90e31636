"""Load the classifier object with pylibbpf, check and reuse pinned maps, pin the programs.

Maps are declared LIBBPF_PIN_BY_NAME, so loading reuses every pinned map (entries kept:
enforcement survives a control-plane restart) and pins new ones under /sys/fs/bpf. Before
loading, every existing pin is checked against mapspecs.MAPS (type, key size, value size,
max entries): a mismatch raises LayoutMismatchError instead of letting libbpf fail with a
bare EINVAL, and nothing is written. pylibbpf 0.0.6 exposes no program fd, so the loaded
programs are found by id (libbpf.py fallback): the newest program with the expected name
that uses our endpoints map. They are pinned as lw_from_pod_v1 / lw_to_pod_v1 so tc
filters and other processes can refer to them.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pylibbpf

from labelwall.datapath import libbpf, mapspecs
from labelwall.datapath.errors import (
    LayoutMismatchError,
    ObjectMissingError,
    ProgramNotFoundError,
)

OBJECT_NAME = "labelwall.bpf.o"


def object_path() -> Path:
    """The compiled classifier shipped in the package (built by setup.py or `make bpf`)."""
    ref = resources.files("labelwall.datapath").joinpath("bpf").joinpath(OBJECT_NAME)
    path = Path(str(ref))
    if not path.is_file():
        raise ObjectMissingError(
            f"{path} is missing: build it with `make bpf` (needs clang and libbpf-dev) or "
            "reinstall labelwall with `pip install .`, which compiles it"
        )
    return path


def _layout(info: libbpf.MapInfo) -> tuple[int, int, int, int]:
    return (info.type, info.key_size, info.value_size, info.max_entries)


def _expected(spec: mapspecs.MapSpec) -> tuple[int, int, int, int]:
    return (spec.type, spec.key_size, spec.value_size, spec.max_entries)


def check_map(spec: mapspecs.MapSpec, info: libbpf.MapInfo, where: str) -> None:
    if _layout(info) != _expected(spec):
        raise LayoutMismatchError(
            f"{where}: map {spec.name} has (type, key, value, max_entries) = "
            f"{_layout(info)}, this build expects {_expected(spec)}; refusing to use it "
            "(a layout change must bump the map version; remove the stale pin to reset)"
        )


def check_pinned_maps(maps: tuple[mapspecs.MapSpec, ...] = mapspecs.MAPS) -> list[str]:
    """Verify every existing pin of ours; returns the names already pinned."""
    pinned = []
    for spec in maps:
        if not os.path.exists(spec.pin_path):
            continue
        fd = libbpf.obj_get(spec.pin_path)
        try:
            check_map(spec, libbpf.map_info(fd), spec.pin_path)
        finally:
            os.close(fd)
        pinned.append(spec.name)
    return pinned


def find_program(name: str, endpoints_map_id: int) -> int:
    """fd of the newest loaded program ``name`` that uses our endpoints map."""
    best_id, best_fd = -1, -1
    for prog_id in libbpf.prog_ids():
        fd = libbpf.prog_fd_by_id(prog_id)
        if fd is None:
            continue
        info = libbpf.prog_info(fd)
        if info.name == name and endpoints_map_id in info.map_ids and prog_id > best_id:
            if best_fd >= 0:
                os.close(best_fd)
            best_id, best_fd = prog_id, fd
        else:
            os.close(fd)
    if best_fd < 0:
        raise ProgramNotFoundError(f"loaded program {name} not found in the kernel")
    return best_fd


def pin(fd: int, path: str) -> None:
    """Pin ``fd`` at ``path``, replacing an older pin (tc filters keep their own refs)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    libbpf.obj_pin(fd, path)


@dataclass
class LoadedObject:
    """A loaded object: map fds (owned by the pylibbpf object) and program fds (ours)."""

    obj: Any  # pylibbpf.BpfObject; keeps map fds open
    map_fds: dict[str, int]
    prog_fds: dict[str, int] = field(default_factory=dict)

    def close(self) -> None:
        for fd in self.prog_fds.values():
            os.close(fd)
        self.prog_fds.clear()
        self.obj = None
        self.map_fds.clear()


def load(
    path: Path | None = None,
    pin_programs: bool = True,
    maps: tuple[mapspecs.MapSpec, ...] = mapspecs.MAPS,
) -> LoadedObject:
    """Load (or re-load onto the existing pinned maps) and pin the programs.

    ``maps`` are the layouts the object at ``path`` was built with (``mapspecs.resized`` for an
    object built with other sizes); pins and the loaded object must match them exactly.
    """
    obj_path = path or object_path()
    check_pinned_maps(maps)
    obj = pylibbpf.BpfObject(str(obj_path))
    obj.load()
    map_fds: dict[str, int] = {}
    for spec in maps:
        fd = int(obj[spec.name].get_fd())
        check_map(spec, libbpf.map_info(fd), str(obj_path))
        map_fds[spec.name] = fd
    endpoints_id = libbpf.map_info(map_fds[mapspecs.ENDPOINTS_MAP.name]).id
    loaded = LoadedObject(obj, map_fds)
    try:
        for prog, pin_path in mapspecs.PROG_PINS.items():
            fd = find_program(prog, endpoints_id)
            loaded.prog_fds[prog] = fd
            if pin_programs:
                pin(fd, pin_path)
    except BaseException:
        loaded.close()
        raise
    return loaded


def unpin_all() -> list[str]:
    """Remove every labelwall pin (netfilter links, maps, programs); returns the paths removed.

    Attached tc filters keep running the program they hold, with the maps it references,
    until detached; only the names disappear.
    """
    removed = []
    clear_service_cidrs()  # before the netfilter links go: tc then defers nothing
    pins = list(mapspecs.NF_LINK_PINS.values())  # links first: they detach with their pin
    pins += [s.pin_path for s in mapspecs.MAPS] + list(mapspecs.PROG_PINS.values())
    for p in pins:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)
            removed.append(p)
    return removed


def clear_service_cidrs() -> int:
    """Empty the pinned lw_svcnet_v1 (if any), so that tc judges Service destinations itself.

    Always before the netfilter links are detached: a tc program still attached defers new
    flows to Service addresses only while this map has entries (service.h).
    """
    spec = mapspecs.SVCNET_MAP
    try:
        fd = libbpf.obj_get(spec.pin_path)
    except FileNotFoundError:
        return 0
    except OSError as e:
        if e.errno == errno.ENOENT:
            return 0
        raise
    try:
        keys = list(libbpf.iter_keys(fd, spec.key_size))
        for k in keys:
            libbpf.delete_elem(fd, k)
        return len(keys)
    finally:
        os.close(fd)
