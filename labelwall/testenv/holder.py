"""Holder processes: one process owning a private mount + network namespace per node.

``unshare --mount --net --propagation private`` starts a sleeping Python process in new
namespaces; everything that belongs to that node is started later with
``nsenter -t HOLDER -m -n`` (not ``ip netns exec``, which remounts /sys and so hides
/sys/fs/cgroup from runc). The namespaces live as long as any process is inside them:
when the holder and everything entered through it are gone, the netns with its links and
routes, and the mount namespace with its bpffs, tmpfs and overlay mounts, go with them.
Nothing is created in the host's /run/netns.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from labelwall.testenv.processes import spawn

#: argv[1] of every holder: how `down` recognises one from its command line.
HOLDER_TAG = "labelwall-testenv-holder"


def holder_argv(marker: str) -> list[str]:
    """The command line of a holder; ``marker`` (the env directory) names its owner."""
    return [
        "unshare",
        "--mount",
        "--net",
        "--propagation",
        "private",
        "--",
        sys.executable,
        "-c",
        "import signal\nwhile True: signal.pause()",
        HOLDER_TAG,
        marker,
    ]


def start_holder(marker: str, log: Path, prefix: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """Start a holder (``prefix`` e.g. moves it into a cgroup first); returns its Popen.

    ``unshare`` execs the Python process, so the Popen's pid is the process inside the
    new namespaces, which is what ``nsenter -t`` needs.
    """
    return spawn([*prefix, *holder_argv(marker)], log)


def enter(pid: int, argv: Sequence[str]) -> list[str]:
    """``argv`` run in holder ``pid``'s mount and network namespaces."""
    return ["nsenter", "-t", str(pid), "-m", "-n", "--", *argv]


class CommandError(Exception):
    """A setup command inside a node failed; the message quotes it and its stderr."""


def run_in(pid: int, argv: Sequence[str], stdin: str | None = None, timeout_s: float = 60) -> str:
    """Run ``argv`` inside holder ``pid`` and return its stdout; raise on failure."""
    full = enter(pid, argv)
    res = subprocess.run(
        full, input=stdin, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if res.returncode != 0:
        raise CommandError(f"{' '.join(full)} exited {res.returncode}: {res.stderr.strip()}")
    return res.stdout


def sh_in(pid: int, script: str, timeout_s: float = 60) -> str:
    """Run a ``sh -ec`` script inside holder ``pid``."""
    return run_in(pid, ["sh", "-ec", script], timeout_s=timeout_s)


def netns_inode(pid: int) -> int | None:
    """The inode of ``pid``'s network namespace (None once the process is gone)."""
    try:
        return Path(f"/proc/{pid}/ns/net").stat().st_ino
    except (FileNotFoundError, ProcessLookupError):
        return None
