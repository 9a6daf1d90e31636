"""`labelwall lab`: a cluster on one machine (up, apply, delete, probe, status, down, demo).

The argument parsing and the rendering of the lab's answers; the lab itself (processes,
namespaces, probes) is ``labelwall.lab``, which imports nothing from the CLI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labelwall.cli import observe as observe_cli
from labelwall.cli.flags import add_filename
from labelwall.cli.offline import probe_ports
from labelwall.cli.render import grid
from labelwall.config import load_config
from labelwall.errors import FieldError, InvalidInputError
from labelwall.lab import topology
from labelwall.lab.control import LAB_FLOWS_PORT, Lab, LabDown, down
from labelwall.lab.layout import LabPaths
from labelwall.lab.objects import ObjectStore, object_key
from labelwall.lab.truth import MeasuredCell, PortProto, measure
from labelwall.manifest_files import read_sources
from labelwall.manifests import SourceDoc, load_cluster
from labelwall.policy.clusterstate import ClusterState

EXIT_OK, EXIT_FINDINGS, EXIT_INVALID = 0, 1, 2
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


LAB_FILES_HELP = "YAML/JSON file or directory (repeatable), - for stdin"


def _files(p: argparse.ArgumentParser, required: bool = True) -> None:
    add_filename(p, LAB_FILES_HELP, required)


def add_parser(sub: Any) -> None:
    lab = sub.add_parser(
        "lab",
        help="a cluster on one machine: pods as network namespaces, real packets (root)",
        description="Turn Namespaces, Pods (status.podIP) and NetworkPolicies of ordinary "
        "Kubernetes YAML into network namespaces wired like a routed CNI, with listeners "
        "on every declared container port, enforced by `labelwall agent`. Needs root.",
    )
    lab.add_argument("--dir", default=None, help="lab directory (default /run/labelwall-lab "
                     "or $LABELWALL_LAB_DIR)")  # fmt: skip
    lsub = lab.add_subparsers(dest="lab_command", required=True, metavar="COMMAND")

    p = lsub.add_parser("up", help="create the lab from YAML and start the agent")
    _files(p, required=False)
    p.add_argument("--metrics-port", type=int, default=9962, help="agent metrics port "
                   "(inside the lab's node netns; 0: off)")  # fmt: skip
    p.add_argument("--config", default=None, metavar="PATH", help="the agent's config "
                   "file (chart format: mapSizes, conntrack budget)")  # fmt: skip
    p.set_defaults(handler=cmd_up)

    p = lsub.add_parser("apply", help="create or update Namespaces, Pods, NetworkPolicies")
    _files(p)
    p.add_argument("--no-wait", action="store_true", help="do not wait for enforcement")
    p.set_defaults(handler=cmd_apply)

    p = lsub.add_parser("delete", help="delete the objects in the files")
    _files(p)
    p.set_defaults(handler=cmd_delete)

    p = lsub.add_parser("probe", help="measured truth table vs `labelwall matrix`")
    p.add_argument("--port", action="append", default=[], metavar="PORT")
    p.add_argument("--protocol", action="append", default=[], choices=["TCP", "UDP", "SCTP"])
    p.add_argument("--timeout", type=float, default=0.3, help="seconds per probe")
    p.add_argument("-o", "--output", choices=["grid", "json"], default="grid")
    p.set_defaults(handler=cmd_probe)

    p = lsub.add_parser(
        "observe",
        help="the lab agent's flows: verdicts with the policies behind them (Hubble's flags)",
        description="Flows the lab's agent saw (its ring of the last flows), filtered with "
        "Hubble's flags: OR within a flag, AND across flags, --not negates the next one.",
    )
    observe_cli.add_arguments(p)
    p.set_defaults(handler=cmd_observe)

    p = lsub.add_parser("status", help="pods, netns names, processes")
    p.set_defaults(handler=cmd_status)

    p = lsub.add_parser("down", help="remove everything the lab created (also after a crash)")
    p.set_defaults(handler=cmd_down)

    p = lsub.add_parser("demo", help="three-tier shop: no policy, default deny, the right paths")
    p.add_argument("--examples", default=str(EXAMPLES), help="directory with cluster.yaml "
                   "and policies/")  # fmt: skip
    p.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    p.set_defaults(handler=cmd_demo)


def _need_root() -> None:
    if os.geteuid() != 0:
        msg = "the lab needs root (network namespaces, BPF): run it with sudo"
        raise InvalidInputError([FieldError("<command line>", None, "labelwall lab", "", msg)])


def _lab(args: argparse.Namespace) -> Lab:
    _need_root()
    return Lab(LabPaths.from_env(args.dir))


def _read(paths: list[str]) -> list[SourceDoc]:
    return read_sources(paths, sys.stdin)


def _report(answer: dict[str, Any]) -> int:
    if answer.get("warning"):
        print(f"warning: {answer['warning']}", file=sys.stderr)
    agent = answer.get("agent") or {}
    for e in agent.get("errors", []):
        print(f"error: agent: {e}", file=sys.stderr)
    return EXIT_OK if answer.get("enforced", True) else EXIT_FINDINGS


def cmd_up(args: argparse.Namespace) -> int:
    lab = _lab(args)
    docs = _read(args.filename) if args.filename else []
    config = Path(args.config).resolve() if args.config else None
    if config is not None:
        load_config(str(config))  # a bad file fails here, naming the field, before any change
    answer = lab.up(docs, args.metrics_port, config=config)
    st = lab.status()
    print(f"lab up: {len(st['pods'])} pods in netns {st['node_netns']}, dir {lab.paths.root}")
    return _report(answer)


def cmd_apply(args: argparse.Namespace) -> int:
    lab = _lab(args)
    t0 = time.perf_counter()
    answer = lab.apply(_read(args.filename), wait=not args.no_wait)
    ms = (time.perf_counter() - t0) * 1e3
    state = "enforced" if answer.get("enforced") else "applied"
    print(f"{state} in {ms:.1f} ms" if answer.get("changed") else "unchanged")
    return _report(answer)


def cmd_delete(args: argparse.Namespace) -> int:
    lab = _lab(args)
    answer = lab.delete(_read(args.filename))
    print(f"deleted; pods removed: {', '.join(answer.get('deleted_pods', [])) or 'none'}")
    return _report(answer)


def lab_state(lab: Lab) -> ClusterState:
    objects = lab.status()["objects"]
    keyed = {object_key(o): o for o in objects}
    return ObjectStore(lab.paths.node, {k: v for k, v in keyed.items() if k is not None}).state()


def label(pp: PortProto) -> str:
    return f"{pp[1].name}/{pp[0]}"


def render_truth(
    cells: Sequence[MeasuredCell], ports: Sequence[PortProto], expected: bool = True
) -> str:
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


def probe_table(lab: Lab, ports_flag: list[str], protocols: list[str], timeout: float,
                output: str, ports_state: ClusterState | None = None) -> int:  # fmt: skip
    state = lab_state(lab)
    ports = probe_ports(ports_state or state, ports_flag, protocols)
    cells = measure(lab, state, ports, timeout)
    if output == "json":
        print(json.dumps({"cells": [m.as_json() for m in cells]}, indent=2))
    else:
        print(render_truth(cells, ports))
    return EXIT_FINDINGS if any(m.mismatch for m in cells) else EXIT_OK


def cmd_probe(args: argparse.Namespace) -> int:
    return probe_table(_lab(args), args.port, args.protocol, args.timeout, args.output)


def lab_flow_source(lab: Lab) -> observe_cli.HttpFlowSource:
    """The lab agent's flow endpoint, reached inside the lab's node netns."""
    node = lab.paths.node_netns
    return observe_cli.HttpFlowSource(
        "lab", f"http://127.0.0.1:{LAB_FLOWS_PORT}", lambda: topology.in_netns(node)
    )


def cmd_observe(args: argparse.Namespace) -> int:
    q = observe_cli.query_of(args)  # bad flags fail before the lab is touched (exit 2)
    lab = _lab(args)
    try:
        return observe_cli.observe([lab_flow_source(lab)], q, args.output, args.follow)
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    lab = _lab(args)
    try:
        st = lab.status()
    except LabDown as exc:
        print(str(exc))
        return EXIT_FINDINGS
    print(f"lab dir {lab.paths.root}, node netns {st['node_netns']}, supervisor pid {st['pid']}")
    for key, pod in st["pods"].items():
        print(f"  {key:30} {pod['ipv4']:15} netns {pod['netns']} veth {pod['ifname']}")
    return EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    _need_root()
    removed = down(LabPaths.from_env(args.dir))
    for item in removed:
        print(f"removed {item}")
    print("lab down" if removed else "nothing to remove")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    lab = _lab(args)
    examples = Path(args.examples)
    cluster_docs = _read([str(examples / "cluster.yaml")])
    policy_docs = _read([str(examples / "policies")])
    deny = [d for d in policy_docs if d.obj.get("kind") == "NetworkPolicy"
            and (d.obj.get("metadata") or {}).get("name") == "default-deny"]  # fmt: skip
    final = load_cluster(cluster_docs + policy_docs).state
    steps = [
        ("1. no NetworkPolicy: every pod reaches every pod", cluster_docs, None),
        (
            "2. default deny in namespace shop: nothing reaches shop, shop reaches nothing",
            deny,
            None,
        ),
        ("3. the shop's policies: only the paths the app needs", policy_docs, None),
    ]
    worst = EXIT_OK
    try:
        for i, (title, docs, _) in enumerate(steps):
            print(f"\n=== {title}\n")
            t0 = time.perf_counter()
            answer = lab.up(docs) if i == 0 else lab.apply(docs)
            print(f"(applied and enforced in {(time.perf_counter() - t0) * 1e3:.0f} ms)\n")
            worst = max(worst, _report(answer))
            worst = max(worst, probe_table(lab, [], [], 0.3, "grid", final))
    finally:
        if not args.keep:
            down(lab.paths)
            print("\nlab removed (use --keep to leave it up)")
    return worst
