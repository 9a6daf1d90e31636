"""Measured truth tables: real probes for every pod pair, beside what `labelwall matrix` predicts.

``measure`` returns the cells (data only); ``labelwall.cli.lab`` renders them.

A cell is measured allowed when the connection reached the destination: an echo came
back, or the destination's stack refused it (a TCP RST or ICMP port unreachable means
the packet passed the classifier both ways). A timeout is a drop. Cells the matrix
cannot probe (a named port the destination lacks) are not sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from labelwall.cluster import Protocol
from labelwall.lab.control import Lab
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import compile_cluster
from labelwall.policy.matrix import Cell, reachability, resolve_port

PortProto = tuple[int | str, Protocol]
REACHED = frozenset({"ok", "refused"})


@dataclass(frozen=True)
class MeasuredCell:
    cell: Cell  # the prediction
    measured: bool | None  # None: not probed
    outcome: str

    @property
    def mismatch(self) -> bool:
        return self.measured is not None and self.measured != self.cell.allowed

    def as_json(self) -> dict[str, Any]:
        c = self.cell
        return {
            "from": c.src,
            "to": c.dst,
            "port": c.port,
            "protocol": c.protocol.name,
            "allowed": self.measured,
            "measured": self.measured,
            "expected": c.allowed,
            "outcome": self.outcome,
        }


def measure(
    lab: Lab, state: ClusterState, ports: Sequence[PortProto], timeout: float = 0.3
) -> list[MeasuredCell]:
    """Probe every cell of ``reachability(state, ports)`` through the lab's pods."""
    cells = reachability(compile_cluster(state), ports)
    requests: list[dict[str, Any]] = []
    sent: list[int] = []
    for i, c in enumerate(cells):
        dst = state.pods[c.dst]
        number = resolve_port(dst, c.port, c.protocol)
        if number is None:
            continue
        requests.append({"src": c.src, "dst": c.dst, "port": number, "protocol": c.protocol.name})
        sent.append(i)
    results = lab.probe(requests, timeout) if requests else []
    outcome: dict[int, str] = {i: r["outcome"] for i, r in zip(sent, results, strict=True)}
    return [
        MeasuredCell(c, (outcome[i] in REACHED) if i in outcome else None, outcome.get(i, "-"))
        for i, c in enumerate(cells)
    ]
