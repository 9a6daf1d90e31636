"""Structured log lines (``ts=... level=... event=... key=value``) for the agent and the lab."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

_RESERVED = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def _quote(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class KeyValueFormatter(logging.Formatter):
    """``logfmt``: one line per record; extra fields passed with ``extra=`` become pairs."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        pairs = [
            f"ts={ts}.{int(record.msecs):03d}Z",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"event={_quote(record.getMessage())}",
        ]
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                pairs.append(f"{key}={_quote(value)}")
        if record.exc_info:
            pairs.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return " ".join(pairs)


def setup(level: str = "info", stream: Any = None) -> None:
    """Route the ``labelwall`` loggers to ``stream`` (stderr) in logfmt at ``level``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger("labelwall")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
