"""`testenv up|down|build`: run a real API server for humans, detached, in a directory."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from labelwall.cli.exits import EXIT_FINDINGS, EXIT_OK
from labelwall.testenv.binaries import BUILD_SCRIPT, BinariesMissingError, find_binaries
from labelwall.testenv.env import TestEnv, TestEnvError, describe
from labelwall.testenv.processes import ProcessFailedError

EXIT_FAILED = EXIT_FINDINGS


def build_parser(prog: str = "labelwall testenv") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run etcd + kube-apiserver on loopback with generated certificates and "
        "RBAC (no kubelet, no controller manager).",
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
    down = sub.add_parser(
        "down",
        help="stop the servers recorded in DIR and remove DIR",
        description="Stop kube-apiserver and etcd by their recorded pids (SIGTERM, then "
        "SIGKILL) and remove DIR. Succeeds if nothing is running there.",
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
        if args.action == "up":
            return _up(args.dir, args.timeout)
        if args.action == "down":
            return _down(args.dir)
        return subprocess.run(["bash", str(BUILD_SCRIPT)], check=False).returncode
    except (BinariesMissingError, TestEnvError, ProcessFailedError) as e:
        print(f"testenv {args.action}: {e}", file=sys.stderr)
        return EXIT_FAILED


def _up(directory: Path, timeout_s: float) -> int:
    env = TestEnv.start(directory, find_binaries(), timeout_s)
    print("\n".join(describe(env)))
    return EXIT_OK


def _down(directory: Path) -> int:
    if not directory.exists():
        print(f"testenv down: {directory} does not exist; nothing to stop")
        return EXIT_OK
    env = TestEnv.attach(directory)
    pids = env.pids()
    env.stop()
    print(f"stopped pids {' '.join(map(str, pids)) or '(none)'}; removed {env.directory}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
