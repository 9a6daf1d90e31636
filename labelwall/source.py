"""Where the agent's cluster state comes from: the interface every source implements.

Two sources exist: a watched directory of YAML (lab mode, ``labelwall/agent/dirsource.py``)
and the Kubernetes API (``labelwall/kube/source.py``). The interface sits below both and
below the agent, so neither source package imports the other. A source is level-triggered: it
hands the agent the complete current object set, and the agent diffs it against what it
compiled last, so a missed or repeated notification can never leave stale state.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from labelwall.identity.labels import LabelSet
from labelwall.policy.clusterstate import ClusterState


@dataclass(frozen=True)
class SourceSnapshot:
    """The cluster as a source sees it now.

    ``published`` is ``None`` when the source allocates identities itself (lab mode);
    otherwise it maps each label set whose Identity object exists to its number, and the
    agent gives pods of any other label set the reserved ``init`` identity.
    """

    state: ClusterState
    published: Mapping[LabelSet, int] | None = None
    revision: int = 0
    #: Fatal: the snapshot is rejected and the previous good state stays enforced.
    errors: tuple[str, ...] = field(default_factory=tuple)
    #: Reported (logged) but the snapshot is applied, e.g. a policy kept at its last good
    #: version because its newest version failed validation.
    warnings: tuple[str, ...] = field(default_factory=tuple)


class ClusterSource(Protocol):
    def start(self, changed: threading.Event) -> None:
        """Begin watching; set ``changed`` whenever a new snapshot may be available."""

    def snapshot(self) -> SourceSnapshot:
        """The current state (cheap; called after ``changed`` fires)."""

    def stop(self) -> None:
        """Stop watching and release resources (idempotent)."""
