"""Where a lab keeps its state, and the names it gives to what it creates.

Everything lives under one directory (default ``/run/labelwall-lab``, or
``$LABELWALL_LAB_DIR``): the manifests the agent watches (``state/``), the record of
processes and names (``lab.json``, so ``lab down`` works from a fresh process after a
crash), the supervisor's socket and the logs. Every network namespace and link carries
the lab prefix (``lwl-`` or ``$LABELWALL_LAB_PREFIX``) so cleanup by prefix is exact.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelwall.lab.node import LabNode

DEFAULT_ROOT = "/run/labelwall-lab"
DEFAULT_PREFIX = "lwl-"


@dataclass(frozen=True)
class LabPaths:
    root: Path
    prefix: str

    @classmethod
    def from_env(cls, root: str | None = None, prefix: str | None = None) -> LabPaths:
        return cls(
            Path(root or os.environ.get("LABELWALL_LAB_DIR") or DEFAULT_ROOT),
            prefix or os.environ.get("LABELWALL_LAB_PREFIX") or DEFAULT_PREFIX,
        )

    @property
    def state(self) -> Path:
        """Manifests the agent reads (one file per object)."""
        return self.root / "state"

    @property
    def record(self) -> Path:
        return self.root / "lab.json"

    @property
    def socket(self) -> Path:
        return self.root / "lab.sock"

    @property
    def agent_log(self) -> Path:
        return self.root / "agent.log"

    @property
    def daemon_log(self) -> Path:
        return self.root / "supervisor.log"

    @property
    def node_netns(self) -> str:
        """The lab's node: pods' host-side veths and routes live here, not in the host."""
        return f"{self.prefix}node"

    @property
    def host_link(self) -> str:
        return f"{self.prefix}host0"

    @property
    def node(self) -> LabNode:
        """The lab's one node: netns ``node_netns``, link ``host_link``, default addresses."""
        return LabNode("lab", self.node_netns, self.host_link)

    def pod_netns(self, key: str) -> str:
        """netns and host-side veth name of pod ``namespace/name`` (15 characters at most)."""
        return self.prefix + hashlib.sha256(key.encode()).hexdigest()[: 15 - len(self.prefix)]

    def object_file(self, kind: str, namespace: str | None, name: str) -> Path:
        stem = f"{namespace}.{name}" if namespace else name
        return self.state / kind.lower() / f"{stem}.yaml"


def read_record(paths: LabPaths) -> dict[str, Any]:
    try:
        data = json.loads(paths.record.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def write_record(paths: LabPaths, record: dict[str, Any]) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    tmp = paths.record.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(tmp, paths.record)


def update_record(paths: LabPaths, **changes: Any) -> dict[str, Any]:
    record = read_record(paths)
    record.update(changes)
    write_record(paths, record)
    return record
