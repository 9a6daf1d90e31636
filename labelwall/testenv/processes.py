"""Start detached server processes, probe their readiness, and stop them by pid."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

#: Seconds between readiness probes.
_POLL_S = 0.1


class ProcessFailedError(Exception):
    """A server process exited or never became ready; the message quotes its log tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def spawn(argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session with output appended to ``log``.

    Its own session so a Ctrl-C aimed at pytest or the CLI does not reach it before we
    stop it in order (apiserver before etcd); stdin and stdout are detached so a caller
    capturing our output never waits for the server to exit.
    """
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def log_tail(log: Path, lines: int = 30) -> str:
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an exited, unreaped process)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    # Field 3 follows the parenthesised command name, which may itself contain spaces.
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except FileNotFoundError:
        return []


def stop_pid(
    pid: int,
    owner_marker: str,
    popen: subprocess.Popen[bytes] | None = None,
    grace_s: float = 10.0,
) -> None:
    """SIGTERM ``pid``, then SIGKILL after ``grace_s`` seconds; wait until it is gone.

    Without ``popen`` (a pid read from a state file), ``owner_marker`` must appear in the
    process's command line: a recorded pid may have been reused by an unrelated process
    since, and that one must never be signalled. With ``popen`` the pid is our unreaped
    child, which the kernel cannot have given to anyone else.
    """
    if not is_running(pid):
        _reap(popen)
        return
    if popen is None and not any(owner_marker in arg for arg in cmdline(pid)):
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not is_running(pid):
                # Gone or a zombie: reap our own child so no zombie outlives the stop.
                _reap(popen)
                return
            time.sleep(_POLL_S)
    _reap(popen)


def _reap(popen: subprocess.Popen[bytes] | None) -> None:
    if popen is not None:
        popen.wait(timeout=5)


def wait_until(
    probe: Callable[[], bool],
    proc: subprocess.Popen[bytes],
    what: str,
    log: Path,
    timeout_s: float,
) -> None:
    """Poll ``probe`` until it returns True; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ProcessFailedError(
                f"{what} exited with code {proc.returncode}; log {log}:\n{log_tail(log)}"
            )
        if probe():
            return
        time.sleep(_POLL_S)
    raise ProcessFailedError(
        f"{what} not ready after {timeout_s:.0f}s; log {log}:\n{log_tail(log)}"
    )


def http_ok(url: str, context: ssl.SSLContext | None = None, expect: bytes = b"") -> bool:
    """True when GET ``url`` answers 200 (and the body contains ``expect``)."""
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:
            body: bytes = resp.read()
            return resp.status == 200 and expect in body
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False
