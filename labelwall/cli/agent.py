"""`labelwall agent`'s command line: its arguments, turned into ``AgentOptions``.

The wiring and the loop are ``labelwall/agent/app.py``, imported when the agent runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from labelwall.agent.loop import DRIFT_INTERVAL_S


def add_parser(sub: Any) -> None:
    """Add ``labelwall agent`` to the subcommands ``sub``."""
    p = sub.add_parser(
        "agent",
        help="the node agent: enforce the cluster's NetworkPolicies on this node (root)",
        description="Take the cluster state from a source, compile it incrementally, write "
        "only the changes into the pinned BPF maps and attach the classifier to each local "
        "pod's host-side veth (found through the pod's /32 host route). Needs root "
        "(CAP_BPF, CAP_NET_ADMIN). Restarting it never flushes the maps.",
    )
    p.add_argument("--config", default=None, metavar="PATH", help="config YAML (chart format)")
    p.add_argument(
        "--cleanup",
        action="store_true",
        help="remove labelwall from this node instead: detach the classifier from every link "
        "and remove the /sys/fs/bpf/lw_* pins (after helm uninstall); enforcement stops",
    )
    p.add_argument(
        "--source",
        metavar="dir:PATH|kubernetes",
        help="dir:PATH = a directory of Kubernetes YAML (lab mode); kubernetes = the API",
    )
    p.add_argument("--node", default=None, help="this node's name (default: config/NODE_NAME; "
                   "empty = every pod is local)")  # fmt: skip
    p.add_argument(
        "--netns",
        default=None,
        help="run in this network namespace (the lab's node); bpffs is not per-netns",
    )
    p.add_argument("--drift-interval", type=float, default=DRIFT_INTERVAL_S, metavar="SECONDS")
    p.add_argument(
        "--metrics-port", type=int, default=None, help="override agent.metricsPort (0: off)"
    )
    p.add_argument(
        "--health-port", type=int, default=None, help="override agent.healthPort (0: off)"
    )
    p.add_argument(
        "--flows-port", type=int, default=0, metavar="PORT",
        help="serve the last flows of this node on 127.0.0.1:PORT (/flows, read by "
        "`labelwall observe` through the API server; 0: off)",
    )  # fmt: skip
    p.add_argument(
        "--flows-buffer", type=_positive, default=4096, metavar="N",
        help="flows kept for observers (a ring: the oldest is overwritten; default 4096)",
    )  # fmt: skip
    p.set_defaults(handler=cmd_agent)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number")
    return int(text)


def cmd_agent(args: argparse.Namespace) -> int:
    from labelwall.agent.app import AgentOptions, run

    return run(
        AgentOptions(
            config=args.config,
            cleanup=args.cleanup,
            source=args.source,
            node=args.node,
            netns=args.netns,
            drift_interval=args.drift_interval,
            metrics_port=args.metrics_port,
            health_port=args.health_port,
            flows_port=args.flows_port,
            flows_buffer=args.flows_buffer,
        )
    )
