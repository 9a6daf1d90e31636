"""`labelwall` command line: argument parsing and dispatch to the subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from labelwall.cli.exits import EXIT_INVALID, EXIT_OK
from labelwall.cli.flags import add_filename
from labelwall.cli.render import dump, error_object
from labelwall.cluster import PORT_PROTOCOLS_BY_NAME
from labelwall.errors import InvalidInputError

Handler = Callable[[argparse.Namespace], int]


INPUTS_HELP = (
    "YAML/JSON file, directory (recursive) or - for stdin; repeatable. Holds "
    "Namespaces, Pods, Nodes and NetworkPolicies (kubectl get -o yaml output works); the "
    "offline commands also read workloads (Deployment, StatefulSet, DaemonSet, Job, ...) "
    "and Services."
)


def _add_inputs(p: argparse.ArgumentParser, required: bool = True) -> None:
    add_filename(p, INPUTS_HELP, required)
    p.add_argument(
        "-n",
        "--namespace",
        metavar="NS",
        help="namespace of namespaced objects that name none, as `kubectl apply -n` "
        "(default: default); an object naming another namespace is an error",
    )


def _add_ports(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--port",
        action="append",
        default=[],
        metavar="PORT",
        help="port number or name to probe (repeatable; default: ports the policies name)",
    )
    p.add_argument(
        "--protocol",
        action="append",
        default=[],
        metavar="PROTO",
        choices=list(PORT_PROTOCOLS_BY_NAME),
        help="protocol for the ports (repeatable; default TCP)",
    )


def build_parser() -> argparse.ArgumentParser:
    from labelwall.cli import offline

    parser = argparse.ArgumentParser(
        prog="labelwall",
        description="Identity-based Kubernetes NetworkPolicy engine with an eBPF datapath.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "compile",
        help="validate and compile NetworkPolicies; print a summary",
        description="Validate every NetworkPolicy and compile the cluster state into map "
        "entries. Exit 0 clean, 1 findings (warnings with --strict), 2 invalid input.",
    )
    _add_inputs(p)
    p.add_argument("--strict", action="store_true", help="treat warnings as findings")
    p.add_argument(
        "-o",
        "--output",
        choices=["table", "json", "yaml", "sarif"],
        default="table",
        help="sarif: the findings as a SARIF 2.1.0 log (GitHub code scanning)",
    )
    p.set_defaults(handler=offline.cmd_compile)

    p = sub.add_parser(
        "matrix",
        help="reachability truth table for every pod pair",
        description="Compute, from the compiled maps and through the same lookup order as "
        "the kernel classifier, whether each pod can reach each other pod per port/protocol. "
        "Grid: '.' allowed, 'X' blocked (also when the destination lacks a named port).",
    )
    _add_inputs(p)
    _add_ports(p)
    for end in ("from", "to"):
        p.add_argument(
            f"--{end}-namespace",
            action="append",
            default=[],
            metavar="NS",
            help=f"only {'sources' if end == 'from' else 'destinations'} in NS (repeatable: any)",
        )
        p.add_argument(
            f"--{end}-label",
            action="append",
            default=[],
            metavar="K=V[,K=V]",
            help=f"only {'sources' if end == 'from' else 'destinations'} with all these labels "
            "(repeatable: any)",
        )
    verdict = p.add_mutually_exclusive_group()
    verdict.add_argument("--only-denied", action="store_true", help="only blocked cells")
    verdict.add_argument("--only-allowed", action="store_true", help="only allowed cells")
    p.add_argument("-o", "--output", choices=["grid", "json", "yaml"], default="grid")
    p.set_defaults(handler=offline.cmd_matrix)

    p = sub.add_parser(
        "explain",
        help="why one flow is allowed or blocked",
        description="Show both identities, isolation per side and the policies that isolate "
        "it, and the map entry (with its policy rule) that allowed the flow, or that none did.",
    )
    _add_inputs(p)
    p.add_argument(
        "--from", dest="src", required=True, metavar="NS/POD|IP",
        help="the source pod, or an address (outside the cluster, a node, any IP)",
    )  # fmt: skip
    p.add_argument(
        "--to", dest="dst", required=True, metavar="NS/POD|IP",
        help="the destination pod, or an address; one end must be a pod",
    )  # fmt: skip
    p.add_argument("--port", required=True, help="port number or name")
    p.add_argument("--protocol", default="TCP", choices=list(PORT_PROTOCOLS_BY_NAME))
    p.add_argument("-o", "--output", choices=["text", "json", "yaml"], default="text")
    p.set_defaults(handler=offline.cmd_explain)

    p = sub.add_parser(
        "diff",
        help="pod pairs whose reachability changes between two policy sets",
        description="Compare reachability under the policies in --before and --after (the "
        "cluster state comes from -f and from both sides). Exit 1 when anything changes.",
    )
    p.add_argument("--before", action="append", required=True, metavar="PATH")
    p.add_argument("--after", action="append", required=True, metavar="PATH")
    _add_inputs(p, required=False)
    _add_ports(p)
    p.add_argument(
        "-o",
        "--output",
        choices=["table", "markdown", "json", "yaml"],
        default="table",
        help="markdown: a summary line and a table for a pull-request comment",
    )
    p.set_defaults(handler=offline.cmd_diff)

    p = sub.add_parser(
        "exposure",
        help="per workload: who reaches it from outside, every namespace, every pod",
        description="For each workload (or pod): the rules that admit addresses outside the "
        "cluster (no peers, ipBlock), every namespace (namespaceSelector {}), the ports on "
        "which every other workload of the input reaches it, and the rules that let it reach "
        "outside the cluster. A direction no policy isolates is open to everything.",
    )
    _add_inputs(p)
    _add_ports(p)
    p.add_argument("-o", "--output", choices=["table", "markdown", "json", "yaml"], default="table")
    p.set_defaults(handler=offline.cmd_exposure)

    from labelwall.cli.agent import add_parser as add_agent_parser

    add_agent_parser(sub)

    from labelwall.cli.lab import add_parser as add_lab_parser

    add_lab_parser(sub)

    from labelwall.cli.observe import add_cluster_parser as add_observe_parser

    add_observe_parser(sub)

    from labelwall.cli import operator as operator_cli

    p = sub.add_parser(
        "operator",
        help="run the Kubernetes operator (identities, garbage collection, policy status)",
        description="Run the kopf operator against the cluster found the standard way "
        "(in-cluster, else KUBECONFIG / ~/.kube/config) until SIGTERM.",
    )
    operator_cli.add_arguments(p)
    p.set_defaults(handler=operator_cli.main)

    p = sub.add_parser(
        "testenv",
        help="run a real etcd + kube-apiserver for experiments: up|down|build",
        add_help=False,
        # Everything after `testenv`, options included, goes to labelwall.cli.testenv.
        prefix_chars="\0",
    )
    p.add_argument("testenv_args", nargs="*")
    p.set_defaults(handler=_testenv)
    return parser


def _testenv(args: argparse.Namespace) -> int:
    from labelwall.cli.testenv import main as testenv_main

    return testenv_main(args.testenv_args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except InvalidInputError as exc:
        fmt = getattr(args, "output", None)
        if fmt in ("json", "yaml"):
            # A pipeline that asked for JSON gets its errors as JSON too (on stdout, exit 2).
            print(dump({"errors": [error_object(e) for e in exc.errors]}, fmt))
        for err in exc.errors:
            print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
