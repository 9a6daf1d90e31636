"""Loader and facade: pinned maps survive reloads, foreign layouts are refused, tc attach."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
from collections.abc import Iterator

import pytest

from labelwall.cluster import Direction
from labelwall.datapath import libbpf, loader, mapspecs, tc
from labelwall.datapath.errors import LayoutMismatchError, ObjectMissingError
from labelwall.datapath.facade import FROM_POD, TO_POD, Datapath
from labelwall.policy.mapstate import IpcacheEntry, MapState, PolicyKey, SubjectFlags, diff

from .conftest import fresh_datapath, lw_pins, require_root_bpf, require_tool

pytestmark = [pytest.mark.root, pytest.mark.bpf]

STATE = MapState(
    subjects={300: SubjectFlags.INGRESS_ISOLATED},
    policy={PolicyKey(300, 400, Direction.INGRESS): 9},
    ipcache={ipaddress.ip_address("10.244.0.1"): IpcacheEntry(400)},
)


def test_the_object_is_found_through_the_installed_package() -> None:
    path = loader.object_path()
    assert path.name == "labelwall.bpf.o"
    assert path.read_bytes()[:4] == b"\x7fELF"


def test_a_missing_object_names_the_command_that_builds_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loader, "OBJECT_NAME", "absent.bpf.o")
    with pytest.raises(ObjectMissingError, match="make bpf"):
        loader.object_path()


def test_reloading_keeps_every_map_entry_and_endpoint() -> None:
    with fresh_datapath() as first:
        first.set_endpoint(1, 300)
        first.apply(diff(MapState(), STATE))
        first.close()
        with Datapath.open() as second:
            assert second.read_state() == STATE
            assert second.endpoints() == {1: 300}


def test_programs_are_pinned_under_versioned_names(dp: Datapath) -> None:
    for name, path in mapspecs.PROG_PINS.items():
        fd = libbpf.obj_get(path)
        try:
            info = libbpf.prog_info(fd)
        finally:
            os.close(fd)
        assert (info.name, info.type) == (name, libbpf.BPF_PROG_TYPE_SCHED_CLS)


def test_a_pinned_map_of_another_layout_is_refused_and_left_untouched() -> None:
    require_root_bpf()
    bpftool = require_tool("bpftool")
    path = mapspecs.POLICY_MAP.pin_path
    assert lw_pins() == []
    try:
        subprocess.run(
            [bpftool, "map", "create", path, "type", "hash", "key", "4", "value", "4",
             "entries", "8", "name", "lw_policy_v1"],
            check=True,
        )  # fmt: skip
        with pytest.raises(LayoutMismatchError, match="lw_policy_v1"):
            Datapath.open()
        fd = libbpf.obj_get(path)
        try:
            info = libbpf.map_info(fd)
        finally:
            os.close(fd)
        assert (info.type, info.key_size, info.max_entries) == (libbpf.BPF_MAP_TYPE_HASH, 4, 8)
        assert lw_pins() == ["lw_policy_v1"]  # nothing else was created
    finally:
        Datapath.unpin_all()
    assert lw_pins() == []


@contextlib.contextmanager
def veth_pair(name: str) -> Iterator[str]:
    """A veth pair created for the test and deleted by name afterwards."""
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"],
                   check=True)  # fmt: skip
    try:
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)


def _tc_filters(dev: str, hook: str) -> list[str]:
    out = subprocess.run(
        ["tc", "filter", "show", "dev", dev, hook], check=True, capture_output=True, text=True
    ).stdout
    return [line for line in out.splitlines() if "handle" in line]


def test_attach_and_detach_are_idempotent_on_both_hooks(dp: Datapath) -> None:
    require_tool("tc")
    with veth_pair("lwtest0") as dev:
        assert not dp.is_attached(dev)
        dp.attach(dev)
        dp.attach(dev)
        assert dp.is_attached(dev)
        ingress, egress = _tc_filters(dev, "ingress"), _tc_filters(dev, "egress")
        assert len(ingress) == 1
        assert "lw_from_pod_v1" in ingress[0]
        assert "direct-action" in ingress[0]
        assert len(egress) == 1
        assert "lw_to_pod_v1" in egress[0]
        dp.detach(dev)
        dp.detach(dev)
        assert not dp.is_attached(dev)
        assert _tc_filters(dev, "ingress") == []


def test_a_veth_running_an_older_loads_program_is_not_attached_until_reattached(
    dp: Datapath,
) -> None:
    with veth_pair("lwtest2") as dev:
        dp.attach(dev)
        assert dp.is_attached(dev)
        newer = Datapath.open()  # an agent restart: same pinned maps, new program ids
        try:
            assert newer.prog_id(FROM_POD) != dp.prog_id(FROM_POD)
            assert not newer.is_attached(dev)  # same filter names, older programs
            newer.attach(dev)  # tc replace: atomic swap
            assert newer.is_attached(dev)
            assert not dp.is_attached(dev)
            assert [p for _, p in tc.attached_programs(dev, tc.PARENT_EGRESS)] == [
                newer.prog_id(TO_POD)
            ]
        finally:
            newer.close()


def test_detaching_an_interface_without_clsact_is_a_no_op(dp: Datapath) -> None:
    with veth_pair("lwtest1") as dev:
        dp.detach(dev)
        assert not dp.is_attached(dev)
