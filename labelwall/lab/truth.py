"""Measured truth tables: real probes for every pod pair, beside what `labelwall matrix` predicts.

``measure`` returns the cells (data only); ``labelwall.cli.lab`` renders them.

A cell is measured allowed when the connection reached the destination: an echo came
back, or the destination's stack refused it (a TCP RST or ICMP port unreachable means
the packet passed the classifier both ways). A timeout is a drop. Cells the matrix
cannot probe (a named port the destination lacks) are not sent.

Besides every pod pair, the node itself probes every pod (``node/<name>`` rows: the
kubelet's probe path, from the node's IPv4 address), predicted by the pod's ingress
lookup with the node's address as the peer: ``host`` when the node is registered (the
lab registers its own, objects.py), so always allowed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from labelwall.cluster import Direction, Protocol
from labelwall.lab.control import Lab
from labelwall.lab.fanout import node_source
from labelwall.lab.node import LabNode
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import Compiled, compile_cluster
from labelwall.policy.lookup import Reason, Verdict, decide
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


NODE_EGRESS = Verdict(True, Reason.HOST)  # the node is no pod: only the pod's side judges


def node_cells(compiled: Compiled, node: LabNode, ports: Sequence[PortProto]) -> list[Cell]:
    """node -> pod cells: the pod's ingress lookup with the node's IPv4 address as peer."""
    state = compiled.state
    src = ipaddress.ip_address(node.host_v4)
    cells = []
    for port, protocol in ports:
        for key in sorted(state.pods):
            dst = state.pods[key]
            dst_ip = next((ip for ip in dst.ips if ip.version == 4), None)
            number = resolve_port(dst, port, protocol)
            if dst_ip is None or number is None:
                continue
            ingress = decide(
                compiled.map_state, compiled.pod_identity[key], Direction.INGRESS, src, dst_ip,
                protocol, number,
            )  # fmt: skip
            cells.append(
                Cell(node_source(node), key, port, protocol, ingress.allowed, NODE_EGRESS, ingress)
            )
    return cells


def measure(
    lab: Lab,
    state: ClusterState,
    ports: Sequence[PortProto],
    timeout: float = 0.3,
    with_node: bool = True,
) -> list[MeasuredCell]:
    """Probe every cell of ``reachability(state, ports)`` through the lab's pods, and
    every pod from the lab's node (``with_node``: a prober without a lab node, such as
    the kubelet stand-in, has pod cells only)."""
    compiled = compile_cluster(state)
    cells = reachability(compiled, ports)
    if with_node:
        cells += node_cells(compiled, lab.paths.node, ports)
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
