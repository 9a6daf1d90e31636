"""Measured truth tables: real probes for every pod pair, next to what `labelwall matrix` predicts.

A cell is measured allowed when the connection reached the destination: an echo came
back, or the destination's stack refused it (a TCP RST or ICMP port unreachable means
the packet passed the classifier both ways). A timeout is a drop. Cells the matrix
cannot probe (a named port the destination lacks) are not sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from labelwall.cli.render import grid
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


def label(pp: PortProto) -> str:
    return f"{pp[1].name}/{pp[0]}"


def render(cells: Sequence[MeasuredCell], ports: Sequence[PortProto], expected: bool = True) -> str:
    """Per port: the measured grid, the predicted grid beside it, then every mismatch."""
    pods = sorted({m.cell.src for m in cells} | {m.cell.dst for m in cells})
    out: list[str] = []
    for pp in ports:
        sel = [m for m in cells if (m.cell.port, m.cell.protocol) == pp]
        measured = grid(
            f"{label(pp)} measured", pods, {(m.cell.src, m.cell.dst): m.measured for m in sel}
        )
        if expected:
            predicted = grid(
                f"{label(pp)} expected",
                pods,
                {(m.cell.src, m.cell.dst): m.cell.allowed for m in sel},
            )
            left, right = measured.splitlines(), predicted.splitlines()
            width = max(len(line) for line in left)
            out += [a.ljust(width) + "   " + b for a, b in zip(left, right, strict=True)]
        else:
            out += measured.splitlines()
        out.append("")
    bad = [m for m in cells if m.mismatch]
    if bad:
        out.append(f"{len(bad)} mismatch(es) between the packets and the prediction:")
        for m in bad:
            c = m.cell
            out.append(
                f"  {c.src} -> {c.dst} {c.protocol.name}/{c.port}: measured "
                f"{'allowed' if m.measured else 'blocked'} ({m.outcome}), expected "
                f"{'allowed' if c.allowed else 'blocked'}"
            )
    else:
        out.append("measured == expected for every probed cell")
    return "\n".join(out)
