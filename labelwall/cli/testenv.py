"""`testenv up|down|build`: run a real API server for humans, detached, in a directory."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from labelwall.cli.exits import EXIT_FINDINGS, EXIT_OK
from labelwall.testenv import cluster
from labelwall.testenv.binaries import BUILD_SCRIPT, BinariesMissingError, find_binaries
from labelwall.testenv.cluster import ClusterError
from labelwall.testenv.env import TestEnv, TestEnvError, describe
from labelwall.testenv.holder import CommandError
from labelwall.testenv.nodebins import find_node_binaries
from labelwall.testenv.processes import ProcessFailedError

EXIT_FAILED = EXIT_FINDINGS


def build_parser(prog: str = "labelwall testenv") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run etcd + kube-apiserver on loopback with generated certificates and "
        "RBAC (no kubelet, no controller manager); with --nodes, a real cluster: control "
        "plane and N kubelet nodes (containerd, ptp CNI, kube-proxy) in private namespaces, "
        "and labelwall installed by its chart.",
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = sub.add_parser(
        "up",
        help="start the servers detached; write DIR/kubeconfig; return once ready",
        description="Start etcd and kube-apiserver in the background, write DIR/kubeconfig "
        "(admin) and return once /readyz is ok. Pids are recorded in DIR for `down`.",
    )
    up.add_argument("--dir", required=True, type=Path, help="absent or empty directory")
    up.add_argument("--timeout", type=float, default=120.0, help="readiness timeout, seconds")
    up.add_argument(
        "--nodes",
        type=int,
        default=None,
        metavar="N",
        help="also run kube-controller-manager, kube-scheduler and N real nodes, each in "
        "its own network and mount namespace, then `helm install` labelwall (needs root; "
        "binaries from tools/node/build.sh and images from tools/images/build.sh); "
        "returns once every node and labelwall pod is Ready and DIR/testenv.json is written",
    )
    up.add_argument(
        "--no-labelwall",
        action="store_true",
        help="with --nodes: bring the cluster up without labelwall (a baseline)",
    )
    up.add_argument(
        "--proxy-mode",
        choices=("nftables", "iptables"),
        default="nftables",
        help="with --nodes: kube-proxy's mode (default nftables)",
    )
    down = sub.add_parser(
        "down",
        help="stop the servers recorded in DIR and remove DIR",
        description="Stop kube-apiserver and etcd by their recorded pids (SIGTERM, then "
        "SIGKILL) and remove DIR. Succeeds if nothing is running there. For a cluster "
        "(--nodes) it also stops every node daemon, kills whatever is left in the "
        "cluster's cgroup sub-tree (containers, shims, namespace holders: their network "
        "namespaces, links and mounts go with them), removes that sub-tree, and works "
        "after a crash or kill -9 of `up`.",
    )
    down.add_argument("--dir", required=True, type=Path)
    sub.add_parser(
        "build",
        help="build or reuse the server binaries (tools/k8s/build.sh)",
        description="Build kube-apiserver and etcd from source once per pinned version.",
    )
    return parser


def main(argv: Sequence[str]) -> int:
    try:
        args = build_parser().parse_args(list(argv))
    except SystemExit as e:  # argparse exits 0 for --help, 2 for usage errors
        return int(e.code or 0)
    try:
        if args.action == "up" and args.nodes is not None:
            return _up_cluster(args)
        if args.action == "up":
            return _up(args.dir, args.timeout)
        if args.action == "down":
            return _down(args.dir)
        return subprocess.run(["bash", str(BUILD_SCRIPT)], check=False).returncode
    except (
        BinariesMissingError,
        TestEnvError,
        ProcessFailedError,
        ClusterError,
        CommandError,
    ) as e:
        print(f"testenv {args.action}: {e}", file=sys.stderr)
        return EXIT_FAILED


def _up(directory: Path, timeout_s: float) -> int:
    env = TestEnv.start(directory, find_binaries(), timeout_s)
    print("\n".join(describe(env)))
    return EXIT_OK


def _up_cluster(args: argparse.Namespace) -> int:
    t0 = time.monotonic()

    def progress(line: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {line}", flush=True)

    options = cluster.Options(
        nodes=args.nodes,
        labelwall=not args.no_labelwall,
        proxy_mode=args.proxy_mode,
        timeout_s=max(args.timeout, 300.0),
    )
    cluster.up(
        args.dir,
        find_binaries(),
        find_node_binaries(with_labelwall=options.labelwall),
        options,
        progress,
    )
    progress(f"ready: export KUBECONFIG={args.dir.resolve() / 'kubeconfig'}")
    progress(f"down:  labelwall testenv down --dir {args.dir}")
    return EXIT_OK


def _down(directory: Path) -> int:
    if not directory.exists():
        print(f"testenv down: {directory} does not exist; nothing to stop")
        return EXIT_OK
    if cluster.is_cluster(directory):
        cluster.down(directory)
        return EXIT_OK
    env = TestEnv.attach(directory)
    pids = env.pids()
    env.stop()
    print(f"stopped pids {' '.join(map(str, pids)) or '(none)'}; removed {env.directory}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
