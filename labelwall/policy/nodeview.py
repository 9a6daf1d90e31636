"""The maps each node's agent enforces, compiled on demand from one cluster state (pure).

Only the node a classifier runs on decides which addresses are ``host``: its own addresses
and the hostNetwork pods on it pass; other nodes and their hostNetwork pods are
``remote-node`` and go through policy (ARCHITECTURE §5). A flow meets two classifier runs:
egress at the source pod's node and ingress at the destination pod's node, so an exact
offline answer judges each side with the view of the node that side runs on. Pods without
``spec.nodeName`` are judged in the single view where every node is local (what a
one-node cluster or the lab enforces).
"""

from __future__ import annotations

from dataclasses import replace

from labelwall.policy.compile import Compiled, compile_cluster


class NodeViews:
    """Per-node compiles of ``base.state``, made the first time a node is asked for."""

    def __init__(self, base: Compiled) -> None:
        self.base = base
        self._views: dict[str, Compiled] = {}

    def of(self, node: str | None) -> Compiled:
        """The maps the agent on ``node`` writes (``base`` for None or a node-pinned base)."""
        if node is None or self.base.options.node is not None:
            return self.base
        view = self._views.get(node)
        if view is None:
            view = compile_cluster(self.base.state, replace(self.base.options, node=node))
            self._views[node] = view
        return view
