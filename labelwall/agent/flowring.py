"""The agent's flow ring: the last N verdict events of this node, and the endpoint serving them.

- ``FlowRing``: a bounded ring (``--flows-buffer``, chart ``agent.flows.buffer``) of
  (sequence number, event, view). Memory is bounded by N whatever the event rate; the
  oldest flow is overwritten; one overwritten before a following client (one that read in
  the last 10 s) read it is counted (``labelwall_flow_events_lost_total{source=
  "agent_ring"}``): with nobody following, overwriting is simply what a ring does.
- ``FlowCollector``: one thread draining the kernel ring buffer into the FlowRing. It only
  reads; the classifier never waits for it (a full kernel ring drops the record and counts
  it, see telemetry.h). The kernel's token bucket bounds how many records arrive, so the
  thread's CPU is bounded too.
- ``serve_flows``: ``GET /flows?since=SEQ&limit=N`` on 127.0.0.1 only (inside the agent's
  network namespace: the host's for a hostNetwork agent pod). Not reachable from the node
  network; a user reaches it through the API server with their own RBAC (the agent pod's
  ``pods/portforward`` subresource, which connects to localhost inside the pod), and the
  lab through its node netns. Answer: ``{"node_name", "first", "next", "flows": [...]}``,
  flows in Hubble's JSON (policy/flows.py), named when served with the policy view that
  was current when the event was read (the rule names of that moment).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse

from labelwall.policy.flows import FlowView, VerdictEvent, to_flow

log = logging.getLogger("labelwall.agent")

DEFAULT_BUFFER = 4096
MAX_PAGE = 65536


#: A client that read within this many seconds is following: flows it has not read yet
#: and that are overwritten count as lost (with nobody following, overwriting is the ring).
FOLLOWING_S = 10.0


class FlowRing:
    def __init__(
        self, capacity: int = DEFAULT_BUFFER, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if capacity < 1:
            raise ValueError(f"flow buffer must hold at least 1 flow, got {capacity}")
        self.capacity = capacity
        self._items: deque[tuple[int, VerdictEvent, FlowView | None]] = deque(maxlen=capacity)
        self._seq = 0
        self._served = 0  # highest sequence number a client has been given
        self._read_at = -FOLLOWING_S  # when a client last read (clock())
        self.lost = 0  # overwritten while a client followed, before it read them
        self.clock = clock
        self._lock = threading.Lock()

    def add(self, events: list[VerdictEvent], view: FlowView | None) -> None:
        with self._lock:
            following = self.clock() - self._read_at < FOLLOWING_S
            for ev in events:
                full = len(self._items) == self.capacity
                if full and following and self._items[0][0] > self._served:
                    self.lost += 1
                self._seq += 1
                self._items.append((self._seq, ev, view))

    def since(
        self, seq: int, limit: int = MAX_PAGE
    ) -> tuple[list[tuple[int, VerdictEvent, FlowView | None]], int, int]:
        """(entries after ``seq``, at most ``limit``; the oldest seq held; the next seq)."""
        with self._lock:
            first = self._items[0][0] if self._items else self._seq + 1
            out = [e for e in self._items if e[0] > seq][:limit]
            self._read_at = self.clock()
            if out:
                self._served = max(self._served, out[-1][0])
            return out, first, (out[-1][0] if out else max(seq, self._seq))

    def __len__(self) -> int:
        return len(self._items)


class EventSource(Protocol):
    """What the collector drains (datapath.flowreader.VerdictReader)."""

    def poll(self, timeout_ms: int) -> list[VerdictEvent]: ...


class FlowCollector:
    """Drains ``reader`` into ``ring`` with the view ``current_view()`` of each moment."""

    def __init__(
        self,
        reader: EventSource,
        ring: FlowRing,
        current_view: Callable[[], FlowView | None],
    ) -> None:
        self.reader = reader
        self.ring = ring
        self.current_view = current_view
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flows", daemon=True)

    def start(self) -> FlowCollector:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                events = self.reader.poll(100)
            except OSError as exc:  # keep enforcing; observation is best effort
                log.warning("reading verdict events failed", extra={"error": str(exc)})
                self._stop.wait(1.0)
                continue
            if events:
                self.ring.add(events, self.current_view())

    def stop(self) -> None:
        """Stop and close the reader (after this the datapath may close its maps)."""
        self._stop.set()
        self._thread.join(timeout=2.0)
        close = getattr(self.reader, "close", None)
        if close is not None and not self._thread.is_alive():
            close()


def flows_page(ring: FlowRing, node_name: str, since: int, limit: int) -> dict[str, Any]:
    entries, first, nxt = ring.since(since, limit)
    flows = [to_flow(ev, view).as_json() for _, ev, view in entries if view is not None]
    return {"node_name": node_name, "first": first, "next": nxt, "flows": flows}


def serve_flows(ring: FlowRing, node_name: str, port: int) -> ThreadingHTTPServer:
    """The flow endpoint on 127.0.0.1:``port`` (see the module doc); port 0 picks one."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path != "/flows":
                self.send_error(404, "only /flows")
                return
            q = parse_qs(url.query)
            try:
                since = int(q.get("since", ["0"])[0])
                limit = min(MAX_PAGE, int(q.get("limit", [str(MAX_PAGE)])[0]))
            except ValueError:
                self.send_error(400, "since and limit are integers")
                return
            body = json.dumps(flows_page(ring, node_name, since, limit)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name="flows-http", daemon=True).start()
    return server
