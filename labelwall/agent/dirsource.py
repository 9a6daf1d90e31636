"""A Source over a directory of Kubernetes YAML (lab mode): polled, level-triggered.

Writers replace files atomically (write a dot-file, rename), so a snapshot never sees half a
file. Polling the directory's file stats every ``poll_s`` seconds costs a few stat calls
and bounds the notice delay; a snapshot with any invalid object carries the errors and no
state, and the agent keeps enforcing the previous good one.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from labelwall.agent.source import Snapshot
from labelwall.cli.inputs import read_sources
from labelwall.cluster import ClusterState
from labelwall.errors import InvalidInput
from labelwall.manifests import load_cluster

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
Fingerprint = tuple[tuple[str, int, int, int], ...]


def fingerprint(root: Path) -> Fingerprint:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or not name.endswith(MANIFEST_SUFFIXES):
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            out.append((path, st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(sorted(out))


def pods_without_ip(state: ClusterState) -> list[str]:
    return [
        f"Pod {key}: status.podIP: Required value: the lab needs every pod's address"
        for key, pod in sorted(state.pods.items())
        if not pod.ips and not pod.host_network
    ]


def read_snapshot(root: Path, require_ips: bool = True, revision: int = 0) -> Snapshot:
    """Everything under ``root`` as one Snapshot; errors instead of state if anything is bad."""
    try:
        docs = read_sources([str(root)]) if any(True for _ in fingerprint(root)) else []
        state = load_cluster(docs).state
    except InvalidInput as exc:
        return Snapshot(ClusterState(), None, revision, tuple(str(e) for e in exc.errors))
    errors = pods_without_ip(state) if require_ips else []
    if errors:
        return Snapshot(ClusterState(), None, revision, tuple(errors))
    return Snapshot(state, None, revision)


class DirSource:
    def __init__(self, root: str | Path, require_ips: bool = True, poll_s: float = 0.02) -> None:
        self.root = Path(root)
        self.require_ips = require_ips
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._seen: Fingerprint | None = None
        self._revision = 0

    def start(self, changed: threading.Event) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(
            target=self._run, args=(changed,), name="dirsource", daemon=True
        )
        self._thread.start()

    def _run(self, changed: threading.Event) -> None:
        while not self._stop.is_set():
            fp = fingerprint(self.root)
            with self._lock:
                if fp != self._seen:
                    self._seen = fp
                    self._revision += 1
                    changed.set()
            self._stop.wait(self.poll_s)

    def snapshot(self) -> Snapshot:
        with self._lock:
            revision = self._revision
        return read_snapshot(self.root, self.require_ips, revision)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
