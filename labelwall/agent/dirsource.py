"""A Source over a directory of Kubernetes YAML (lab mode): polled, level-triggered.

Writers replace files atomically (write a dot-file, rename), so a snapshot never sees half a
file. Polling the directory's file stats every ``poll_s`` seconds costs a few stat calls
and bounds the notice delay; a snapshot with any invalid object carries the errors and no
state, and the agent keeps enforcing the previous good one.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from labelwall.errors import InvalidInputError
from labelwall.manifest_files import MANIFEST_SUFFIXES, read_sources
from labelwall.manifests import load_cluster
from labelwall.policy.clusterstate import ClusterState
from labelwall.source import SourceSnapshot

STATUS_FILE = ".status.json"
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


def state_digest(root: Path) -> int:
    """A digest of every manifest's relative path and bytes: what a snapshot was made of.

    Writers compute it for the files they wrote and wait until the agent's status file
    reports it (``synced``): then the change is enforced.
    """
    h = hashlib.sha256()
    for path, *_ in fingerprint(root):
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            continue
        h.update(os.path.relpath(path, root).encode() + b"\0" + data + b"\0")
    return int.from_bytes(h.digest()[:8], "big")


def pods_without_ip(state: ClusterState) -> list[str]:
    return [
        f"Pod {key}: status.podIP: Required value: the lab needs every pod's address"
        for key, pod in sorted(state.pods.items())
        if not pod.ips and not pod.host_network
    ]


def read_snapshot(
    root: Path, require_ips: bool = True, revision: int | None = None
) -> SourceSnapshot:
    """Everything under ``root`` as one SourceSnapshot; errors instead of state if anything is bad.

    ``revision`` defaults to the digest of the files, taken before they are parsed (a file
    replaced in between then shows up as a newer snapshot, never as a false match).
    """
    if revision is None:
        revision = state_digest(root)
    try:
        # Only the files the fingerprint lists: dot-files (temporaries, our status) never.
        docs = read_sources([path for path, *_ in fingerprint(root)])
        state = load_cluster(docs).state
    except InvalidInputError as exc:
        return SourceSnapshot(ClusterState(), None, revision, tuple(str(e) for e in exc.errors))
    errors = pods_without_ip(state) if require_ips else []
    if errors:
        return SourceSnapshot(ClusterState(), None, revision, tuple(errors))
    return SourceSnapshot(state, None, revision)


class DirSource:
    def __init__(self, root: str | Path, require_ips: bool = True, poll_s: float = 0.01) -> None:
        self.root = Path(root)
        self.require_ips = require_ips
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._seen: Fingerprint | None = None

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
                    changed.set()
            self._stop.wait(self.poll_s)

    def snapshot(self) -> SourceSnapshot:
        return read_snapshot(self.root, self.require_ips)

    def synced(
        self,
        snap: SourceSnapshot,
        ok: bool,
        errors: tuple[str, ...],
        pending: int,
        degraded: tuple[str, ...] = (),
    ) -> None:
        """Report what is enforced in ``.status.json`` (atomically; ignored by the source).

        ``degraded``: one line per full map (the snapshot is enforced, failing closed)."""
        status = {
            "revision": snap.revision,
            "ok": ok,
            "errors": list(errors),
            "pending": pending,
            "degraded": list(degraded),
            "pid": os.getpid(),
        }
        tmp = self.root / ".status.json.tmp"
        tmp.write_text(json.dumps(status))
        os.replace(tmp, self.root / STATUS_FILE)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
