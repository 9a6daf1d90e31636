"""Shared helpers for lab tests: put the lab into a given state, probe, read agent metrics."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from labelwall.lab import topology
from labelwall.lab.control import Lab
from labelwall.lab.objects import object_key
from labelwall.manifests import SourceDoc

Doc = Mapping[str, Any]


def as_docs(objs: Iterable[Doc], source: str = "test") -> list[SourceDoc]:
    return [SourceDoc(source, i, o) for i, o in enumerate(objs)]


def sync_to(lab: Lab, objs: Sequence[Doc]) -> dict[str, Any]:
    """Make the lab hold exactly ``objs``: delete the others, apply these (enforced on return)."""
    want = {object_key(o) for o in objs}
    current = lab.status()["objects"]
    stale = [o for o in current if object_key(o) not in want]
    # Policies and pods before namespaces: deleting a namespace takes its objects along.
    stale.sort(key=lambda o: o.get("kind") == "Namespace")
    stale_ns = {o["metadata"]["name"] for o in stale if o.get("kind") == "Namespace"}
    stale = [o for o in stale if o.get("kind") == "Namespace" or
             (o.get("metadata") or {}).get("namespace") not in stale_ns]  # fmt: skip
    if stale:
        lab.delete(as_docs(stale))
    answer = lab.apply(as_docs(objs))
    assert answer.get("enforced", False) or not answer.get("changed"), answer
    return answer


def metric(lab: Lab, name: str, labels: Mapping[str, str] | None = None) -> float:
    """One sample from the lab agent's /metrics (served inside the lab's node netns)."""
    with topology.in_netns(lab.paths.node_netns):
        text = urllib.request.urlopen("http://127.0.0.1:9962/metrics", timeout=5).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted((labels or {}).items()))
    total = 0.0
    found = False
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:]+)(\{([^}]*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = ",".join(sorted((m.group(3) or "").split(","))) if m.group(3) else ""
        if not want or all(p in got.split(",") for p in want.split(",")):
            total += float(m.group(4))
            found = True
    if not found and labels:
        return 0.0
    assert found, f"metric {name} not exposed"
    return total


@dataclass
class Flow:
    src: str
    dst: str
    port: int
    protocol: str = "TCP"

    def request(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "port": self.port, "protocol": self.protocol}


@dataclass
class ContinuousProbes:
    """Probe ``flows`` in a loop on a thread (bounded in time and rounds); keep every outcome."""

    lab: Lab
    flows: list[Flow]
    timeout: float = 0.5
    max_seconds: float = 60.0
    max_rounds: int = 5000
    rounds: list[tuple[float, list[str]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ContinuousProbes:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        reqs = [f.request() for f in self.flows]
        while not self._stop.is_set() and time.monotonic() < deadline:
            if len(self.rounds) >= self.max_rounds:
                break
            t = time.monotonic()
            results = self.lab.probe(reqs, self.timeout)
            self.rounds.append((t, [r["outcome"] for r in results]))

    def wait_rounds(self, n: int, limit_s: float = 30.0) -> None:
        target = len(self.rounds) + n
        deadline = time.monotonic() + limit_s
        while len(self.rounds) < target and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.rounds) >= target, "probing stalled"

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.max_seconds)

    def outcomes(self, i: int) -> list[str]:
        return [r[1][i] for r in self.rounds]
