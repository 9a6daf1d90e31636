"""Config map sizes reach the kernel: -D macros, a cached object built with them, the loader."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from labelwall.config import Config
from labelwall.datapath import loader, mapspecs, sizing
from labelwall.datapath.errors import DatapathError


def test_default_sizes_need_no_rebuild() -> None:
    from labelwall.agent.app import map_sizes

    assert sizing.defines_for(map_sizes(Config())) == {}
    assert sizing.object_for({}) == loader.object_path()


def test_a_changed_size_becomes_its_macro_and_both_policy_tries_follow_it() -> None:
    defines = sizing.defines_for({mapspecs.CT_MAP.name: 1024, mapspecs.POLICY_MAP.name: 4096,
                                  mapspecs.POLOVF_MAP.name: 4096})  # fmt: skip
    assert defines == {"LW_CT_MAX": 1024, "LW_POLICY_MAX": 4096}
    maps = {m.name: m.max_entries for m in mapspecs.resized(defines)}
    assert maps[mapspecs.CT_MAP.name] == 1024
    assert maps[mapspecs.POLICY_MAP.name] == maps[mapspecs.POLOVF_MAP.name] == 4096
    assert maps[mapspecs.IPCACHE_MAP.name] == mapspecs.IPCACHE_MAX


def test_a_map_without_a_size_macro_is_refused() -> None:
    with pytest.raises(DatapathError, match="lw_counters_v1"):
        sizing.defines_for({mapspecs.COUNTERS_MAP.name: 8})


SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from labelwall.datapath import libbpf, mapspecs, sizing
    from labelwall.datapath.errors import LayoutMismatchError
    from labelwall.datapath.facade import Datapath

    defines = {"LW_CT_MAX": 1024, "LW_IPCACHE_MAX": 2048}
    obj = sizing.object_for(defines, cache=Path(sys.argv[1]))
    again = sizing.object_for(defines, cache=Path(sys.argv[1]))
    dp = Datapath.open(obj, maps=mapspecs.resized(defines))
    ct = libbpf.map_info(dp.map_fds[mapspecs.CT_MAP.name]).max_entries
    ipc = libbpf.map_info(dp.map_fds[mapspecs.IPCACHE_MAP.name]).max_entries
    dp.close()
    try:
        Datapath.open()  # the shipped object expects the default sizes: refused
        refused = False
    except LayoutMismatchError:
        refused = True
    Datapath.unpin_all()
    print(json.dumps({"ct": ct, "ipcache": ipc, "cached": obj == again, "refused": refused}))
    """
)


@pytest.mark.root
@pytest.mark.bpf
def test_config_sizes_reach_the_kernel_maps_and_a_default_build_refuses_them(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("needs root and unshare (util-linux)")
    script = tmp_path / "sizes.py"
    script.write_text(SCRIPT)
    shell = (
        "mount --make-rprivate / && mount -t bpf bpf /sys/fs/bpf && "
        f"{sys.executable} {script} {tmp_path / 'cache'}"
    )
    r = subprocess.run(
        ["unshare", "-m", "sh", "-c", shell], capture_output=True, text=True, timeout=180
    )
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result == {"ct": 1024, "ipcache": 2048, "cached": True, "refused": True}
