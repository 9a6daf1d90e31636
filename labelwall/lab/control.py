"""Start, talk to and stop the lab's background processes (supervisor and agent).

Processes are recorded in ``lab.json`` with their pid and start time, and a pid is only
signalled when ``/proc/PID`` still shows the same start time (a reused pid is left
alone). ``down`` works from a fresh process after a crash: recorded pids first, then
every namespace and link with the lab's prefix.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from labelwall.errors import FieldError, InvalidInputError
from labelwall.lab import topology
from labelwall.lab.layout import LabPaths, read_record, update_record
from labelwall.lab.node import LabError
from labelwall.manifests import SourceDoc


class LabDown(RuntimeError):  # noqa: N818 - reads as the state it reports
    """No lab is running (or its supervisor does not answer)."""


# ---- processes ----


def _start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime (clock ticks)


def alive(entry: dict[str, Any] | None) -> bool:
    if not entry:
        return False
    st = _start_time(int(entry["pid"]))
    return st is not None and st == entry.get("start")


def _spawn(argv: list[str], log_path: Path, pass_fds: tuple[int, ...] = ()) -> dict[str, Any]:
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            pass_fds=pass_fds,
        )  # fmt: skip
    return {"pid": proc.pid, "start": _start_time(proc.pid), "argv": argv}


def stop_process(
    entry: dict[str, Any] | None, sig: int = signal.SIGTERM, wait_s: float = 5.0
) -> bool:
    """Signal a recorded process (if it is still the same one); SIGKILL after ``wait_s``."""
    if not alive(entry):
        return False
    assert entry is not None
    pid = int(entry["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + wait_s
    while alive(entry) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.02)
    if alive(entry):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while alive(entry) and time.monotonic() < deadline + 5:
            _reap(pid)
            time.sleep(0.02)
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def start_supervisor(paths: LabPaths) -> dict[str, Any]:
    read_fd, write_fd = os.pipe()
    argv = [sys.executable, "-m", "labelwall.lab.supervisor", "--root", str(paths.root),
            "--prefix", paths.prefix, "--ready-fd", str(write_fd)]  # fmt: skip
    entry = _spawn(argv, paths.daemon_log, pass_fds=(write_fd,))
    os.close(write_fd)
    try:
        import select

        ready, _, _ = select.select([read_fd], [], [], 30)
        ok = bool(ready) and os.read(read_fd, 16).startswith(b"ok")
    finally:
        os.close(read_fd)
    if not ok:
        stop_process(entry, signal.SIGKILL)
        raise LabError(f"lab supervisor did not start; see {paths.daemon_log}")
    update_record(paths, supervisor=entry)
    return entry


#: The lab agent's flow endpoint: 127.0.0.1 of the lab's node netns (`labelwall lab observe`).
LAB_FLOWS_PORT = 9966
LAB_FLOWS_BUFFER = 16384


def start_agent(
    paths: LabPaths,
    metrics_port: int = 0,
    drift_interval: float = 1.0,
    config: Path | None = None,
) -> dict[str, Any]:
    """Start `labelwall agent` for the lab (in the lab's node netns, watching state/).

    ``config``: the agent's config file (chart format: map sizes, conntrack budget).
    """
    argv = [
        sys.executable, "-m", "labelwall.cli.main", "agent",
        "--source", f"dir:{paths.state}", "--netns", paths.node_netns, "--node", "",
        "--metrics-port", str(metrics_port), "--health-port", "0",
        "--drift-interval", str(drift_interval),
        "--flows-port", str(LAB_FLOWS_PORT), "--flows-buffer", str(LAB_FLOWS_BUFFER),
    ]  # fmt: skip
    if config is not None:
        argv += ["--config", str(config)]
    entry = _spawn(argv, paths.agent_log)
    update_record(paths, agent=entry)
    return entry


def agent_entry(paths: LabPaths) -> dict[str, Any] | None:
    entry = read_record(paths).get("agent")
    return entry if isinstance(entry, dict) else None


# ---- the supervisor's socket ----


def call(paths: LabPaths, request: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(str(paths.socket))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise LabDown(
                f"no lab is running under {paths.root} (`labelwall lab up` first)"
            ) from exc
        s.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    answer: dict[str, Any] = json.loads(buf) if buf else {"error": "no answer"}
    if "invalid" in answer:
        raise InvalidInputError([FieldError(**e) for e in answer["invalid"]])
    if "error" in answer:
        raise LabError(f"lab: {answer['error']}")
    return answer


def docs_payload(docs: list[SourceDoc]) -> list[dict[str, Any]]:
    return [{"source": d.source, "index": d.index, "obj": d.obj, "path": d.path} for d in docs]


class Lab:
    """A client for one lab (what the CLI, the tests and the benchmark use)."""

    def __init__(self, paths: LabPaths | None = None) -> None:
        self.paths = paths or LabPaths.from_env()

    def apply(self, docs: list[SourceDoc], wait: bool = True) -> dict[str, Any]:
        return call(self.paths, {"op": "apply", "docs": docs_payload(docs), "wait": wait})

    def delete(self, docs: list[SourceDoc], wait: bool = True) -> dict[str, Any]:
        return call(self.paths, {"op": "delete", "docs": docs_payload(docs), "wait": wait})

    def probe(self, probes: list[dict[str, Any]], timeout: float = 0.3) -> list[dict[str, Any]]:
        answer = call(self.paths, {"op": "probe", "probes": probes, "timeout": timeout})
        return list(answer["results"])

    def status(self) -> dict[str, Any]:
        return call(self.paths, {"op": "status"})

    def wait_enforced(self, timeout: float = 10.0) -> dict[str, Any]:
        return call(self.paths, {"op": "wait", "timeout": timeout})

    # lifecycle

    def up(
        self, docs: list[SourceDoc], metrics_port: int = 0, config: Path | None = None
    ) -> dict[str, Any]:
        """Start the lab; ``config``: the agent's config file (default: all defaults)."""
        paths = self.paths
        if alive(read_record(paths).get("supervisor")):
            raise LabError(f"a lab is already up under {paths.root}: `labelwall lab down` first")
        leftovers = topology.list_netns(paths.prefix)
        if leftovers:
            raise LabError(
                f"namespaces of an earlier lab are left ({', '.join(leftovers)}): "
                "`labelwall lab down` first"
            )
        from labelwall.datapath import mapspecs

        pins_existed = any(os.path.exists(spec.pin_path) for spec in mapspecs.MAPS)
        shutil.rmtree(paths.state, ignore_errors=True)
        paths.root.mkdir(parents=True, exist_ok=True)
        update_record(paths, pins_existed=pins_existed, prefix=paths.prefix)
        start_supervisor(paths)
        start_agent(paths, metrics_port, config=config)
        return self.apply(docs) if docs else self.wait_enforced()


def down(paths: LabPaths) -> list[str]:
    """Remove everything the lab made; safe from a fresh process and after a crash."""
    done: list[str] = []
    record = read_record(paths)
    sup = record.get("supervisor")
    if sup and alive(sup):
        with contextlib.suppress(LabDown, OSError, RuntimeError, ValueError):
            call(paths, {"op": "shutdown"}, timeout=5)
        stop_process(sup, signal.SIGTERM, wait_s=20)
        done.append(f"supervisor pid {sup['pid']}")
    agent = record.get("agent")
    if stop_process(agent, signal.SIGTERM) and agent:
        done.append(f"agent pid {agent['pid']}")
    node = record.get("node_netns") or paths.node_netns
    done += topology.cleanup(paths.prefix, [node])
    if record and not record.get("pins_existed", True):
        from labelwall.datapath.facade import Datapath

        done += [f"pin {p}" for p in Datapath.unpin_all()]
    if paths.root.exists():
        shutil.rmtree(paths.root, ignore_errors=True)
        done.append(f"dir {paths.root}")
    return done
