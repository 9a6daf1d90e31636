"""`labelwall operator`'s command line; the operator itself is ``labelwall/operator/app.py``.

Building the `labelwall` parser must not import kopf and the Kubernetes client (about
900 modules): every other subcommand would pay for them, in start-up time and, for the
long-running agent, in a heap that each full garbage collection walks.
"""

from __future__ import annotations

import argparse

DEFAULT_PEERING = "labelwall"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help="the config file (the chart mounts /etc/labelwall/config.yaml); default: defaults",
    )
    parser.add_argument(
        "--standalone",
        action="store_true",
        help="no kopf peering: act even if other replicas run (writes stay conflict-safe)",
    )
    parser.add_argument(
        "--peering",
        default=DEFAULT_PEERING,
        metavar="NAME",
        help="ClusterKopfPeering object the replicas coordinate through "
        f"(default {DEFAULT_PEERING})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=8,
        metavar="N",
        help="concurrent API requests for allocation and status writes (default 8)",
    )


def main(args: argparse.Namespace) -> int:
    """Run the operator (imported here, when `labelwall operator` is what runs)."""
    from labelwall.operator import app

    return app.main(args.config, args.standalone, args.peering, args.workers)
