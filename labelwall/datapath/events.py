"""Consume verdict events from the lw_events_v1 ring buffer as codecs.Event values."""

from __future__ import annotations

from labelwall.datapath import codecs, libbpf


class EventStream:
    """Decoded events; ``poll`` drains what is queued (waiting up to ``timeout_ms``)."""

    def __init__(self, events_map_fd: int) -> None:
        self._pending: list[codecs.Event] = []
        self._rb = libbpf.RingBuffer(events_map_fd, self._on_record)

    def _on_record(self, raw: bytes) -> None:
        self._pending.append(codecs.decode_event(raw))

    def poll(self, timeout_ms: int = 0) -> list[codecs.Event]:
        """Waits up to ``timeout_ms`` for a wakeup, then takes everything queued: the
        classifier wakes readers only once the ring is a quarter full (telemetry.h), so
        a reader polls on a timer and latency is at most ``timeout_ms``."""
        self._rb.poll(timeout_ms)
        self._rb.consume()
        out, self._pending = self._pending, []
        return out

    def close(self) -> None:
        self._rb.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
