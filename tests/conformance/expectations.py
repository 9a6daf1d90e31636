"""Turns a case step's expectation ops into a truth table, the way upstream reachability.go does.

Upstream (test/e2e/network/netpol/reachability.go, truthtable.go) starts from
``NewReachability(pods, default)`` and applies calls in order, each overwriting cells:

- ``Expect(from, to, v)``         sets one cell;
- ``ExpectAllIngress(pod, v)``    = ``SetAllTo(pod)``: every source -> pod, loopback included;
- ``ExpectAllEgress(pod, v)``     = ``SetAllFrom(pod)``: pod -> every destination, loopback
  included;
- ``ExpectPeer(from, to, v)``     sets every cell whose source matches ``from`` and destination
  matches ``to``; a Peer matches a pod when its namespace is empty or equal and its pod name is
  empty or equal (so ``{}`` matches every pod).

Comparison ignores loopback cells (pod -> itself), as upstream does (``ignoreLoopback = true``,
kubernetes/kubernetes#95879: CNIs disagree on whether policy applies to a pod talking to itself).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Table = dict[tuple[str, str], bool]


@dataclass(frozen=True)
class Peer:
    """reachability.go Peer: empty fields match anything."""

    namespace: str = ""
    pod: str = ""

    def matches(self, pod_key: str) -> bool:
        ns, _, name = pod_key.partition("/")
        return (not self.namespace or self.namespace == ns) and (not self.pod or self.pod == name)


def evaluate(pods: Sequence[str], expect: Mapping[str, Any]) -> Table:
    """The expected table over ``pods`` x ``pods`` for ``{default: bool, ops: [...]}``."""
    unknown = set(expect) - {"default", "ops"}
    if unknown:
        raise ValueError(f"unknown expect keys: {sorted(unknown)}")
    default = expect["default"]
    if not isinstance(default, bool):
        raise ValueError(f"expect.default must be true or false, got {default!r}")
    known = set(pods)
    table: Table = {(src, dst): default for src in pods for dst in pods}
    for i, op in enumerate(expect.get("ops") or []):
        if not isinstance(op, Mapping) or len(op) != 1:
            raise ValueError(f"ops[{i}]: each op is a mapping with exactly one key, got {op!r}")
        ((kind, args),) = op.items()
        allowed = _allowed(args, i)
        if kind == "expect":
            _require(args, {"from", "to", "allowed"}, i)
            src, dst = _pod(args["from"], known, i), _pod(args["to"], known, i)
            table[(src, dst)] = allowed
        elif kind == "expect_all_ingress":
            _require(args, {"pod", "allowed"}, i)
            dst = _pod(args["pod"], known, i)
            for src in pods:
                table[(src, dst)] = allowed
        elif kind == "expect_all_egress":
            _require(args, {"pod", "allowed"}, i)
            src = _pod(args["pod"], known, i)
            for dst in pods:
                table[(src, dst)] = allowed
        elif kind == "expect_peer":
            _require(args, {"from", "to", "allowed"}, i)
            src_peer, dst_peer = _peer(args["from"], i), _peer(args["to"], i)
            for src in pods:
                if src_peer.matches(src):
                    for dst in pods:
                        if dst_peer.matches(dst):
                            table[(src, dst)] = allowed
        else:
            raise ValueError(f"ops[{i}]: unknown op {kind!r}")
    return table


def _allowed(args: Any, i: int) -> bool:
    if not isinstance(args, Mapping) or not isinstance(args.get("allowed"), bool):
        raise ValueError(f"ops[{i}]: needs allowed: true|false, got {args!r}")
    return bool(args["allowed"])


def _require(args: Mapping[str, Any], keys: set[str], i: int) -> None:
    if set(args) != keys:
        raise ValueError(f"ops[{i}]: expected keys {sorted(keys)}, got {sorted(args)}")


def _pod(value: Any, known: set[str], i: int) -> str:
    # upstream TruthTable.Set fails the test on an unknown key; so do we.
    if not isinstance(value, str) or value not in known:
        raise ValueError(f"ops[{i}]: unknown pod {value!r}")
    return value


def _peer(value: Any, i: int) -> Peer:
    if not isinstance(value, Mapping) or set(value) - {"namespace", "pod"}:
        raise ValueError(f"ops[{i}]: a peer is {{namespace?, pod?}}, got {value!r}")
    return Peer(str(value.get("namespace", "")), str(value.get("pod", "")))


@dataclass(frozen=True)
class Mismatch:
    src: str
    dst: str
    expected: bool
    observed: bool | None  # None: the engine produced no cell for this pair


def compare(
    pods: Sequence[str], expected: Table, observed: Mapping[tuple[str, str], bool]
) -> list[Mismatch]:
    """Cells where observed differs from expected, loopback cells ignored (as upstream)."""
    out = []
    for src in pods:
        for dst in pods:
            if src == dst:
                continue
            want, got = expected[(src, dst)], observed.get((src, dst))
            if got is not want:
                out.append(Mismatch(src, dst, want, got))
    return out


def grid(
    title: str,
    pods: Sequence[str],
    table: Mapping[tuple[str, str], bool | None],
    missing: str = "?",
) -> str:
    """A cyclonus-style grid: rows are sources, columns destinations; ``.`` allowed, ``X`` blocked,
    ``missing`` for a pair with no value."""
    width = max([len(p) for p in pods] + [1])
    lines = [title, " ".join(["-".ljust(width)] + [p.ljust(width) for p in pods])]
    for src in pods:
        cells = []
        for dst in pods:
            v = table.get((src, dst))
            cells.append((missing if v is None else "." if v else "X").ljust(width))
        lines.append(" ".join([src.ljust(width), *cells]))
    return "\n".join(lines)


def diff_report(
    title: str, pods: Sequence[str], expected: Table, observed: Mapping[tuple[str, str], bool]
) -> str:
    """Expected, observed and comparison grids (comparison: ``.`` agree, ``X`` differ, ``~``
    loopback difference that is ignored), followed by the differing cells spelled out."""
    mismatches = compare(pods, expected, observed)
    comparison: dict[tuple[str, str], bool | None] = {}
    for src in pods:
        for dst in pods:
            agree = observed.get((src, dst)) is expected[(src, dst)]
            comparison[(src, dst)] = True if agree else (None if src == dst else False)
    cmp_text = grid("comparison:", pods, comparison, missing="~")
    words = {True: "allowed", False: "blocked", None: "missing"}
    detail = [
        f"  {m.src} -> {m.dst}: expected {words[m.expected]}, got {words[m.observed]}"
        for m in mismatches
    ]
    return "\n\n".join(
        [
            f"{title}: {len(mismatches)} wrong cell(s)",
            grid("expected:", pods, dict(expected)),
            grid("observed:", pods, dict(observed)),
            cmp_text,
            "\n".join(detail),
        ]
    )
