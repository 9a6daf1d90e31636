"""A cgroup sub-tree of the environment's own, in every cgroup hierarchy, and its removal.

The kubelet's ``cgroupRoot`` must exist in every v1 hierarchy, so ``/<name>`` is created
in each mounted hierarchy (cpuset.cpus/mems copied from the parent, or nothing can join
it). Every process the environment starts (holders, daemons, and through them shims and
containers) is moved into this tree first, so after a crash or ``kill -9`` of ``up``
`down` finds every one of them by the ``cgroup.procs`` files of the tree, and nothing
else. Removal kills what is left in the tree, then rmdirs it depth-first.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")
#: The hierarchy in which processes are tracked (every process is in exactly one pids
#: cgroup, and containers land in the kubelet's pids cgroups under our tree).
TRACK = "pids"


def hierarchies(mountinfo: str | None = None) -> list[Path]:
    """Mount points of every cgroup (v1) and cgroup2 hierarchy under /sys/fs/cgroup."""
    text = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
    out: list[Path] = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fstype = right.split(" ", 1)[0]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        point = Path(left.split(" ")[4])
        if point.parent == CGROUP_FS or point == CGROUP_FS:
            out.append(point)
    return sorted(set(out))


def _copy_cpuset(directory: Path) -> None:
    for name in ("cpuset.cpus", "cpuset.mems"):
        src, dst = directory.parent / name, directory / name
        if src.exists() and dst.exists() and not dst.read_text().strip():
            dst.write_text(src.read_text())


def create(relative: str) -> list[Path]:
    """Create ``/relative`` (and its parents) in every hierarchy; return the leaves."""
    made: list[Path] = []
    for root in hierarchies():
        current = root
        for part in Path(relative.strip("/")).parts:
            current = current / part
            if not current.is_dir():
                current.mkdir()
            _copy_cpuset(current)
        made.append(current)
    return made


def procs_files(relative: str) -> list[str]:
    """The cgroup.procs files a process writes its pid to, to join ``/relative``.

    Only the tracking hierarchy and cpuset: the memory hierarchy is left alone so that the
    daemons stay accounted where the caller is.
    """
    out = []
    for root in hierarchies():
        if root.name in (TRACK, "cpuset"):
            out.append(str(root / relative.strip("/") / "cgroup.procs"))
    return out


def join_prefix(relative: str) -> list[str]:
    """An argv prefix that moves the process into ``/relative`` and then execs the rest."""
    files = " ".join(procs_files(relative))
    script = 'for f in $0; do echo $$ > "$f"; done; exec "$@"'
    return ["sh", "-c", script, files]


def tree_pids(relative: str) -> list[int]:
    """Every pid in ``/relative`` and below in the tracking hierarchy."""
    top = CGROUP_FS / TRACK / relative.strip("/")
    pids: set[int] = set()
    if not top.is_dir():
        return []
    for dirpath, _dirs, _files in os.walk(top):
        try:
            text = (Path(dirpath) / "cgroup.procs").read_text()
        except (FileNotFoundError, OSError):
            continue
        pids.update(int(p) for p in text.split())
    return sorted(pids)


def kill_tree(relative: str, timeout_s: float = 30.0) -> list[int]:
    """SIGKILL every process in the tree until it is empty; return the pids killed."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = tree_pids(relative)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    return sorted(killed)


def remove(relative: str, timeout_s: float = 30.0) -> list[Path]:
    """rmdir ``/relative`` depth-first in every hierarchy; return what is still there."""
    left: list[Path] = []
    deadline = time.monotonic() + timeout_s
    for root in hierarchies():
        top = root / relative.strip("/")
        if not top.is_dir():
            continue
        dirs = sorted((Path(d) for d, _s, _f in os.walk(top)), key=lambda p: -len(p.parts))
        for d in dirs:
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    # EBUSY while a killed process is still exiting.
                    if time.monotonic() > deadline:
                        left.append(d)
                        break
                    time.sleep(0.1)
    return left


def existing(relative: str) -> list[Path]:
    """The hierarchies in which ``/relative`` still exists (for tests and `down`)."""
    return [r / relative.strip("/") for r in hierarchies() if (r / relative.strip("/")).exists()]
