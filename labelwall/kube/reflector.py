"""List+watch one resource into an in-memory dict, in a thread, with timeouts and backoff.

The kubernetes client's own ``Watch`` helper cannot both skip model deserialisation and
report watch errors, so this reads the watch stream's JSON lines itself. Each watch
request asks the server to end it after ``watch_timeout_s``; the read timeout is a little
longer, so a silently dead connection is noticed. A 410 Gone (history compacted) or any
error ends in a fresh LIST (after backoff on errors); the store is also re-listed every
``resync_s`` seconds, a bounded resync that heals anything a watch could have missed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Generic, TypeVar

from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger("labelwall.kube.reflector")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
#: Turns an API object (decoded JSON) into (key, value); None skips the object.
Parse = Callable[[Mapping[str, Any]], "tuple[K, V] | None"]

_GONE = 410


class _Expired(Exception):  # noqa: N818 - a signal to relist, not a failure
    """Signal, not a failure: the watch's resourceVersion is gone (410); list again."""


class WatchError(Exception):
    """The API server ended a watch with an ERROR event other than 410 Gone."""


class Reflector(Generic[K, V]):
    """One resource kind (optionally field-selected), kept current in ``items()``."""

    def __init__(
        self,
        name: str,
        list_fn: Callable[..., Any],
        parse: Callable[[Mapping[str, Any]], tuple[K, V] | None],
        on_change: Callable[[], None],
        *,
        field_selector: str | None = None,
        watch_timeout_s: int = 30,
        connect_timeout_s: float = 5.0,
        resync_s: float = 300.0,
        backoff_first_s: float = 0.2,
        backoff_max_s: float = 10.0,
    ) -> None:
        self.name = name
        self._list_fn = list_fn
        self._parse = parse
        self._on_change = on_change
        self._selector = {"field_selector": field_selector} if field_selector else {}
        self._watch_timeout_s = watch_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._resync_s = resync_s
        self._backoff = (backoff_first_s, backoff_max_s)
        self._lock = threading.Lock()
        self._items: dict[K, V] = {}
        # uid-less objects are keyed by what parse returns; remember each raw name's key
        # so a DELETED event (whose object may no longer parse) removes the right entry.
        self._keys: dict[tuple[str, str], K] = {}
        self._stop = threading.Event()
        self._resp: Any = None
        self._thread: threading.Thread | None = None
        #: Set once the first LIST has been stored.
        self.synced = threading.Event()
        #: Completed LISTs and failed requests, for tests and metrics.
        self.lists = 0
        self.failures = 0

    def items(self) -> dict[K, V]:
        with self._lock:
            return dict(self._items)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"reflector-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.request_stop()
        self.join(timeout_s=5)

    def request_stop(self) -> None:
        """Ask the thread to stop without waiting (stop many reflectors in parallel)."""
        self._stop.set()
        resp = self._resp
        if resp is not None:
            # Unblocks the read of a long watch; the thread then sees the stop flag.
            # Closing a dying connection may fail in any way; it is being dropped anyway.
            with contextlib.suppress(Exception):
                resp.close()

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    # --- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                rv = self._list()
                failures = 0
                listed_at = time.monotonic()
                while not self._stop.is_set() and time.monotonic() - listed_at < self._resync_s:
                    rv = self._watch(rv)
            except _Expired:
                continue
            except Exception as e:
                if self._stop.is_set():
                    return
                failures += 1
                self.failures += 1
                first, cap = self._backoff
                delay = min(cap, first * 2 ** (failures - 1)) * (0.5 + random.random() / 2)
                log.warning("%s: %s: %s; relisting in %.1fs", self.name, type(e).__name__, e, delay)
                self._stop.wait(delay)

    def _list(self) -> str:
        resp = self._list_fn(
            **self._selector,
            _preload_content=False,
            _request_timeout=(self._connect_timeout_s, 60.0),
        )
        data = json.loads(resp.data)
        items: dict[K, V] = {}
        keys: dict[tuple[str, str], K] = {}
        for obj in data.get("items") or ():
            parsed = self._parse(obj)
            if parsed is not None:
                items[parsed[0]] = parsed[1]
                keys[_raw_key(obj)] = parsed[0]
        with self._lock:
            changed = items != self._items
            self._items, self._keys = items, keys
        self.lists += 1
        self.synced.set()
        if changed or self.lists == 1:
            self._on_change()
        return str((data.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, rv: str) -> str:
        resp = self._list_fn(
            **self._selector,
            watch=True,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=self._watch_timeout_s,
            _preload_content=False,
            _request_timeout=(self._connect_timeout_s, self._watch_timeout_s + 15.0),
        )
        self._resp = resp
        try:
            for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                if self._stop.is_set():
                    break
                if not line:
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == _GONE:
                        raise _Expired()
                    raise WatchError(f"watch error {obj.get('code')}: {obj.get('message')}")
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                if kind == "BOOKMARK":
                    continue
                self._apply(kind, obj)
        finally:
            self._resp = None
            resp.close()
            resp.release_conn()
        return rv

    def _apply(self, kind: str, obj: Mapping[str, Any]) -> None:
        raw = _raw_key(obj)
        with self._lock:
            old_key = self._keys.pop(raw, None)
            old = self._items.pop(old_key, None) if old_key is not None else None
            parsed = None if kind == "DELETED" else self._parse(obj)
            if parsed is not None:
                self._items[parsed[0]] = parsed[1]
                self._keys[raw] = parsed[0]
            changed = (parsed is None and old is not None) or (
                parsed is not None and (old_key != parsed[0] or old != parsed[1])
            )
        if changed:
            self._on_change()


def _raw_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
