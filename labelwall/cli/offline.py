"""The offline subcommands (compile, matrix, explain, diff, exposure): YAML in, verdicts out,
no cluster."""

from __future__ import annotations

import argparse
import functools
import gc
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from labelwall.cli.exits import EXIT_FINDINGS, EXIT_OK
from labelwall.cli.render import dump, grid_rows, markdown_table, table
from labelwall.cli.sarif import sarif_log
from labelwall.cluster import Protocol
from labelwall.decode.fields import DEFAULT_NAMESPACE
from labelwall.errors import FieldError, InvalidInputError
from labelwall.manifest_files import read_sources
from labelwall.manifests import SourceDoc, expand_lists, load_cluster
from labelwall.policy.attribution import attribute
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.compile import Compiled, compile_cluster
from labelwall.policy.exposure import Reach, exposure
from labelwall.policy.findings import CompileWarning, namespace_findings
from labelwall.policy.matrix import explain, resolve_port
from labelwall.policy.reachgroups import ALLOWED, BLOCKED, NO_CELL, NO_PORT, GroupedMatrix
from labelwall.policy.services import Service, ServicePort, backing, describe

PortProto = tuple[int | str, Protocol]


Command = Callable[[argparse.Namespace], int]


def one_shot(cmd: Command) -> Command:
    """Run ``cmd`` with the cyclic garbage collector off (then as it was).

    A one-shot command builds large acyclic heaps (parsed YAML, compiled maps) and exits;
    the collector's full passes over them cost about a third of a 10,000-policy compile
    and free nothing. Reference counting still frees what dies.
    """

    @functools.wraps(cmd)
    def run(args: argparse.Namespace) -> int:
        was = gc.isenabled()
        gc.disable()
        try:
            return cmd(args)
        finally:
            if was:
                gc.enable()

    return run


@dataclass(frozen=True)
class CompiledInput:
    """The offline commands' input: the cluster read from files, its warnings, compiled."""

    state: ClusterState
    warnings: tuple[FieldError, ...]
    compiled: Compiled
    #: NetworkPolicy ``namespace/name`` -> (file, line its document starts on).
    policy_locations: Mapping[str, tuple[str, int | None]] = field(default_factory=dict)
    services: tuple[Service, ...] = ()
    #: The compile findings and the review's own (namespaces not in the inputs).
    findings: tuple[CompileWarning, ...] = ()

    @functools.cached_property
    def _services_by_namespace(self) -> dict[str, list[Service]]:
        out: dict[str, list[Service]] = {}
        for s in self.services:
            out.setdefault(s.namespace, []).append(s)
        return out

    def services_of(self, key: str, pp: PortProto) -> list[tuple[Service, ServicePort]]:
        """The Services whose port lands on workload (or pod) ``key``'s ``pp``."""
        pod = self.state.pods.get(key)
        if pod is None:
            return []
        here = self._services_by_namespace.get(pod.namespace, [])
        return backing(here, pod, resolve_port(pod, pp[0], pp[1]), pp[1])

    def service_text(self, key: str, pp: PortProto) -> str:
        """``key (Service checkout:5050)``, or ``key`` when no Service leads there."""
        found = describe(self.services_of(key, pp))
        return f"{key} ({found})" if found else key


def _with_lines(errors: Iterable[FieldError], docs: Sequence[SourceDoc]) -> list[FieldError]:
    """Each error with the line its document starts on, where the documents know it."""
    lines = {(d.source, d.index): d.line for d in docs}
    return [
        e
        if e.line is not None or e.index is None
        else replace(e, line=lines.get((e.source, e.index)))
        for e in errors
    ]


def _policy_locations(
    docs: Sequence[SourceDoc], namespace: str | None
) -> dict[str, tuple[str, int | None]]:
    out: dict[str, tuple[str, int | None]] = {}
    for d in docs:
        for entry in expand_lists(d):
            if isinstance(entry, FieldError) or entry.obj.get("kind") != "NetworkPolicy":
                continue
            meta = entry.obj.get("metadata")
            if isinstance(meta, Mapping):
                ns = meta.get("namespace") or namespace or DEFAULT_NAMESPACE
                out.setdefault(f"{ns}/{meta.get('name')}", (entry.source, entry.line))
    return out


def load(
    paths: Sequence[str], extra: Iterable[SourceDoc] = (), namespace: str | None = None
) -> CompiledInput:
    """Read, validate and compile; raises InvalidInputError (nothing compiled) on any bad object.

    Input with no object at all (an empty file, a failed ``helm template`` piped in) is an
    error, as kubectl makes it: a review of nothing must not pass.
    """
    docs = list(extra) + read_sources(paths, sys.stdin)
    try:
        result = load_cluster(docs, namespace, workloads=True)
    except InvalidInputError as exc:
        raise InvalidInputError(_with_lines(exc.errors, docs)) from None
    if not result.objects:
        where = ", ".join(paths) or "the input"
        raise InvalidInputError([FieldError(where, None, "<input>", "", "no objects in input")])
    compiled = compile_cluster(result.state)
    declared = result.declared_namespaces
    return CompiledInput(
        result.state,
        tuple(_with_lines(result.warnings, docs)),
        compiled,
        _policy_locations(docs, namespace),
        result.services,
        (*compiled.warnings, *namespace_findings(result.state.policies.values(), declared)),
    )


def _usage_error(msg: str) -> InvalidInputError:
    return InvalidInputError([FieldError("<command line>", None, "labelwall", "", msg)])


def probe_ports(
    state: ClusterState, ports: Sequence[str], protocols: Sequence[str]
) -> list[PortProto]:
    """The (port, protocol) pairs to evaluate.

    Explicit ``--port``/``--protocol`` flags form a cross product (protocol default TCP).
    Otherwise: every numeric and named port the policies name (range bounds for endPort);
    if the policies name none, every declared container port; if there are none, TCP/80.
    """
    if ports or protocols:
        if not ports:
            raise _usage_error("--protocol needs at least one --port")
        protos = [Protocol[p] for p in (protocols or ["TCP"])]
        out: list[PortProto] = []
        for raw in ports:
            port: int | str = int(raw) if raw.isdigit() else raw
            if isinstance(port, int) and not 1 <= port <= 65535:
                raise _usage_error(f"--port {raw}: must be 1..65535 or a port name")
            out += [(port, pr) for pr in protos]
        return out
    found: set[PortProto] = set()
    for pol in state.policies.values():
        for rule in pol.ingress + pol.egress:
            for spec in rule.ports:
                if spec.port is not None:
                    found.add((spec.port, spec.protocol))
                if spec.end_port is not None:
                    found.add((spec.end_port, spec.protocol))
    if not found:
        found = {(cp.port, cp.protocol) for pod in state.pods.values() for cp in pod.ports}
    if not found:
        found = {(80, Protocol.TCP)}
    return sorted(found, key=lambda pp: (pp[1].name, isinstance(pp[0], str), str(pp[0]).zfill(5)))


def _label(pp: PortProto) -> str:
    return f"{pp[1].name}/{pp[0]}"


@one_shot
def cmd_compile(args: argparse.Namespace) -> int:
    loaded = load(args.filename, namespace=args.namespace)
    c = loaded.compiled
    ms = c.map_state
    warnings = [str(w) for w in loaded.warnings] + [str(w) for w in loaded.findings]
    entries = {
        "lw_subjects_v1": len(ms.subjects),
        "lw_policy_v1": len(ms.policy),
        "lw_ipcache_v1": len(ms.ipcache),
        "lw_cidrs_v1": len(ms.cidrs),
        "lw_ports_v1": len(ms.named_ports),
    }
    summary: dict[str, Any] = {
        "policies": len(loaded.state.policies),
        "namespaces": len(loaded.state.namespaces),
        "pods": len(loaded.state.pods),
        "identities": len(c.identities),
        "entries": entries,
        "warnings": warnings,
        # The same compile findings as objects, for tools: filter on the stable ``code``.
        "findings": [
            {"policy": w.policy, "field": w.field, "code": w.code, "message": w.message}
            for w in loaded.findings
        ],
    }
    if args.output == "sarif":
        log = sarif_log(loaded.findings, loaded.warnings, loaded.policy_locations)
        print(dump(log, "json"))
    elif args.output != "table":
        print(dump(summary, args.output), end="" if args.output == "yaml" else "\n")
    else:
        print(
            f"policies: {summary['policies']}   namespaces: {summary['namespaces']}   "
            f"pods: {summary['pods']}   identities: {summary['identities']}"
        )
        print(table(["map", "entries"], entries.items()))
        for w in warnings:
            print(f"warning: {w}")
    return EXIT_FINDINGS if (args.strict and warnings) else EXIT_OK


def _label_filter(values: Sequence[str], flag: str) -> list[dict[str, str]]:
    """``K=V[,K=V]`` per value: all pairs of one value must match; any value may."""
    out: list[dict[str, str]] = []
    for value in values:
        pairs: dict[str, str] = {}
        for part in value.split(","):
            k, eq, v = part.partition("=")
            if not eq or not k:
                raise _usage_error(f"{flag} {value!r}: want KEY=VALUE[,KEY=VALUE]")
            pairs[k] = v
        out.append(pairs)
    return out


def _pod_filter(
    state: ClusterState, namespaces: Sequence[str], labels: list[dict[str, str]]
) -> Callable[[str], bool]:
    """A predicate on pod keys: in one of ``namespaces`` (if any) and matching one ``labels``."""

    def keep(key: str) -> bool:
        pod = state.pods[key]
        if namespaces and pod.namespace not in namespaces:
            return False
        return not labels or any(
            all(pod.labels.get(k) == v for k, v in want.items()) for want in labels
        )

    return keep


def _verdict_filter(rows: list[str], only_denied: bool, only_allowed: bool) -> list[str]:
    """Cells the filter leaves out become ``-`` (not shown), as cells with no probe."""
    if only_denied:
        return [r.replace(ALLOWED, NO_CELL) for r in rows]
    if only_allowed:
        return [r.replace(BLOCKED, NO_CELL).replace(NO_PORT, NO_CELL) for r in rows]
    return rows


def _shown(text: str) -> str:
    """A row as the grid shows it: a missing named port is blocked (``X``)."""
    return text.replace(NO_PORT, BLOCKED)


def matrix_grids(
    m: GroupedMatrix,
    sources: Sequence[str],
    columns: Sequence[str],
    only_denied: bool = False,
    only_allowed: bool = False,
) -> tuple[list[str], list[tuple[list[PortProto], list[str], list[str]]]]:
    """(columns, [(ports, row names, rows)]): ports whose grids agree share one grid.

    Rows are strings over ``columns``, one character per cell (``.`` allowed, ``X``
    blocked, ``-`` no cell or filtered out). Rows and columns with nothing to show are
    dropped when a verdict filter is on.
    """
    grids: dict[tuple[str, ...], list[PortProto]] = {}
    for pp in m.ports:
        rows = _verdict_filter(
            [_shown(r) for r in m.rows(sources, columns, pp)], only_denied, only_allowed
        )
        grids.setdefault(tuple(rows), []).append(pp)
    out: list[tuple[list[PortProto], list[str], list[str]]] = []
    cols = list(columns)
    if only_denied or only_allowed:
        used = [False] * len(cols)
        for rows_t in grids:
            for r in rows_t:
                if r.strip(NO_CELL):
                    for j, ch in enumerate(r):
                        if ch != NO_CELL:
                            used[j] = True
        keep = [j for j, u in enumerate(used) if u]
        cols = [cols[j] for j in keep]
    else:
        keep = list(range(len(cols)))
    for rows_t, pps in grids.items():
        names, kept = [], []
        for src, r in zip(sources, rows_t, strict=True):
            if (only_denied or only_allowed) and not r.strip(NO_CELL):
                continue
            names.append(src)
            kept.append(r if len(keep) == len(r) else "".join(r[j] for j in keep))
        if names or not (only_denied or only_allowed):
            out.append((pps, names, kept))
    return cols, out


def _grid_services(
    loaded: CompiledInput, columns: Sequence[str], pps: Sequence[PortProto]
) -> dict[str, list[str]]:
    """Destination -> the Services (``Service checkout:5050 -> TCP/http``) that lead there."""
    out: dict[str, list[str]] = {}
    if not loaded.services:
        return out
    for col in columns:
        for pp in pps:
            for s, sp in loaded.services_of(col, pp):
                out.setdefault(col, []).append(f"Service {s.name}:{sp.port} -> {_label(pp)}")
    return out


@one_shot
def cmd_matrix(args: argparse.Namespace) -> int:
    loaded = load(args.filename, namespace=args.namespace)
    ports = probe_ports(loaded.state, args.port, args.protocol)
    src_ok = _pod_filter(
        loaded.state, args.from_namespace, _label_filter(args.from_label, "--from-label")
    )
    dst_ok = _pod_filter(
        loaded.state, args.to_namespace, _label_filter(args.to_label, "--to-label")
    )
    m = GroupedMatrix(loaded.compiled, ports, per_node=True)
    sources = [k for k in m.pods if src_ok(k)]
    columns = [k for k in m.pods if dst_ok(k)]
    cols, grids = matrix_grids(m, sources, columns, args.only_denied, args.only_allowed)
    if args.output != "grid":
        doc = {
            "columns": cols,
            "grids": [
                {
                    "ports": [{"port": p, "protocol": pr.name} for p, pr in pps],
                    "rows": [{"from": n, "to": r} for n, r in zip(names, rows, strict=True)],
                    "services": _grid_services(loaded, cols, pps),
                }
                for pps, names, rows in grids
            ],
            "groups": len(m.groups),
        }
        print(dump(doc, args.output))
        return EXIT_OK
    for pps, names, rows in grids:
        print(grid_rows(", ".join(_label(pp) for pp in pps), names, rows, cols))
        for col, found in _grid_services(loaded, cols, pps).items():
            print(f"  {col}: {', '.join(found)}")
        print()
    return EXIT_OK


@one_shot
def cmd_explain(args: argparse.Namespace) -> int:
    loaded = load(args.filename, namespace=args.namespace)
    port: int | str = int(args.port) if str(args.port).isdigit() else args.port
    report = explain(
        loaded.compiled, args.src, args.dst, port, Protocol[args.protocol], per_node=True
    )
    found = (
        []
        if report.resolved_port is None
        else loaded.services_of(args.dst, (port, report.protocol))
    )
    if args.output == "text":
        print(report.text())
        if found:
            print(f"  {args.dst} backs {describe(found)}")
    else:
        doc = report.as_dict()
        doc["services"] = [
            {
                "name": s.name,
                "namespace": s.namespace,
                "port": sp.port,
                "protocol": sp.protocol.name,
            }
            for s, sp in found
        ]
        print(dump(doc, args.output))
    return EXIT_OK


def _policy_docs(paths: Sequence[str]) -> list[SourceDoc]:
    return read_sources(paths, sys.stdin)


def _cell_value(ch: str) -> bool | None:
    """A row character as the cell's verdict; None: no such cell on that side."""
    if ch == ALLOWED:
        return True
    if ch in (BLOCKED, NO_PORT):
        return False
    return None


def diff_changes(was: GroupedMatrix, now: GroupedMatrix) -> list[dict[str, Any]]:
    """Every cell whose verdict differs, attributed to the rules behind it on each side.

    Rows are compared as strings (one per source and port); only the cells of rows that
    differ are looked at, and only changed cells are judged in full for the attribution.
    """
    pods = sorted(set(was.pods) | set(now.pods))
    found: list[tuple[str, str, PortProto, bool | None, bool | None]] = []
    for pp in was.ports:
        for src, x, y in zip(pods, was.rows(pods, pods, pp), now.rows(pods, pods, pp), strict=True):
            if x == y:
                continue
            for dst, cx, cy in zip(pods, x, y, strict=True):
                b, a = _cell_value(cx), _cell_value(cy)
                if b != a:
                    found.append((src, dst, pp, b, a))
    found.sort(key=lambda f: (f[0], f[1], f[2][1].name, str(f[2][0])))
    changes: list[dict[str, Any]] = []
    for src, dst, pp, b, a in found:
        cb, ca = was.cell(src, dst, pp), now.cell(src, dst, pp)
        changes.append(
            {
                "from": src,
                "to": dst,
                "port": pp[0],
                "protocol": pp[1].name,
                "before": b,
                "after": a,
                "because": attribute(cb, ca, was.compiled, now.compiled),
            }
        )
    return changes


@one_shot
def cmd_diff(args: argparse.Namespace) -> int:
    before = load(args.filename, _policy_docs(args.before), args.namespace)
    after = load(args.filename, _policy_docs(args.after), args.namespace)
    ports = sorted(
        set(probe_ports(before.state, args.port, args.protocol))
        | set(probe_ports(after.state, args.port, args.protocol)),
        key=lambda pp: (pp[1].name, isinstance(pp[0], str), str(pp[0]).zfill(5)),
    )
    changes = diff_changes(
        GroupedMatrix(before.compiled, ports, per_node=True),
        GroupedMatrix(after.compiled, ports, per_node=True),
    )
    for c in changes:
        pp = (c["port"], Protocol[c["protocol"]])
        found = after.services_of(c["to"], pp) or before.services_of(c["to"], pp)
        c["services"] = [f"{s.namespace}/{s.name}:{sp.port}" for s, sp in found]
        c["toText"] = f"{c['to']} ({describe(found)})" if found else c["to"]
    opened = sum(1 for c in changes if c["after"])
    pairs = len({(c["from"], c["to"]) for c in changes})
    summary = (
        f"{len(changes)} reachability change{'' if len(changes) == 1 else 's'}: "
        f"{opened} newly allowed, {len(changes) - opened} newly blocked, "
        f"across {pairs} pod pair{'' if pairs == 1 else 's'}"
        if changes
        else "no reachability changes"
    )

    def word(v: bool | None) -> str:
        return "-" if v is None else ("allowed" if v else "blocked")

    rows = [
        (
            c["from"],
            c.pop("toText"),
            f"{c['protocol']}/{c['port']}",
            word(c["before"]),
            word(c["after"]),
            "; ".join(c["because"]),
        )
        for c in changes
    ]
    headers = ["from", "to", "port", "before", "after", "because"]
    if args.output == "markdown":
        print(f"**labelwall diff**: {summary}")
        if rows:
            print()
            print(markdown_table(headers, rows))
    elif args.output != "table":
        print(dump({"summary": summary, "changes": changes}, args.output))
    else:
        print(summary)
        if rows:
            print(table(headers, rows))
    return EXIT_FINDINGS if changes else EXIT_OK


@one_shot
def cmd_exposure(args: argparse.Namespace) -> int:
    loaded = load(args.filename, namespace=args.namespace)
    ports = probe_ports(loaded.state, args.port, args.protocol)
    m = GroupedMatrix(loaded.compiled, ports, per_node=True)
    found = exposure(m)
    if args.output in ("json", "yaml"):
        print(dump({"workloads": [e.as_dict() for e in found]}, args.output))
        return EXIT_OK

    def cell(reaches: Sequence[Reach]) -> str:
        return "; ".join(r.text() for r in reaches) or "-"

    headers = ["workload", "from outside", "from every namespace", "from every pod", "to outside"]
    rows = [
        (
            e.workload,
            cell(e.from_outside),
            cell(e.from_every_namespace),
            ", ".join(e.from_every_pod) or "-",
            cell(e.to_outside),
        )
        for e in found
    ]
    if args.output == "markdown":
        print(markdown_table(headers, rows))
    else:
        print(table(headers, rows))
    return EXIT_OK
