#!/usr/bin/env python3
"""Run the upstream Kubernetes NetworkPolicy e2e suite on a real 2-node testenv.

    upstream.py [--subset] [--procs 2] [--workdir DIR] [--no-labelwall] [--testenv-json PATH]

Brings up `labelwall testenv up --dir WORKDIR/env --nodes 2` (labelwall installed by its
chart unless --no-labelwall), runs the e2e.test binary the testenv names with ginkgo, as
upstream CI runs it:

    ginkgo --procs=2 --focus=Netpol --skip=SCTPConnectivity e2e.test -- --provider=local ...

and always ends with `labelwall testenv down` (also on Ctrl-C or SIGTERM). --subset runs the
fixed CI selection in tools/e2e/subset.txt instead of every Netpol spec. --testenv-json uses
an environment that is already up (and leaves it up). Prints ginkgo's own output, then a
summary: selected/passed/failed, the failed specs, and the wall time; writes the same as
WORKDIR/report/summary.json (ginkgo's JSON and JUnit reports are next to it). Exit status:
0 when every selected spec passed, 1 when a spec failed, 2 when the environment failed.

SCTPConnectivity is skipped because this kernel has no SCTP stack (no CONFIG_IP_SCTP);
everything else under Netpol runs.

Standard library only. LABELWALL is the CLI used (default: the project venv's `labelwall`),
run with this checkout first on PYTHONPATH (LABELWALL_SRC=DIR: another checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SUBSET_FILE = HERE / "subset.txt"
FULL_FOCUS = "Netpol"
# No kernel SCTP stack here: the SCTP connectivity specs cannot run (say so, skip only them).
SKIP = "SCTPConnectivity"
GO_REGEX_SPECIAL = set("\\.+*?()|[]{}^$")


def subset_specs(path: Path = SUBSET_FILE) -> list[str]:
    """The CI subset: one literal part of a spec's full text per line (# comments)."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def go_regex_escape(text: str) -> str:
    """Escape text for Go's RE2 syntax (only punctuation may be escaped there)."""
    return "".join("\\" + c if c in GO_REGEX_SPECIAL else c for c in text)


def focus_args(subset: bool) -> list[str]:
    if not subset:
        return [f"--focus={FULL_FOCUS}"]
    return [f"--focus={go_regex_escape(s)}" for s in subset_specs()]


def ginkgo_command(
    ginkgo: str, e2e_test: str, kubeconfig: str, report: Path, procs: int, subset: bool
) -> list[str]:
    return [
        ginkgo,
        f"--procs={procs}",
        *focus_args(subset),
        f"--skip={SKIP}",
        "--no-color",
        "--timeout=3h",
        f"--output-dir={report}",
        "--json-report=ginkgo.json",
        "--junit-report=junit.xml",
        e2e_test,
        "--",
        f"--kubeconfig={kubeconfig}",
        "--provider=local",
        # The nodes run Debian's userland (the host's); there are no VMs to ssh into.
        "--node-os-distro=debian",
        "--dump-logs-on-failure=false",
        "--disable-log-dump=true",
        f"--report-dir={report}",
        # Only our own nodes; none may be NotReady.
        "--allowed-not-ready-nodes=0",
    ]


def summarize(report_json: Path) -> dict[str, object]:
    """Counts from ginkgo's JSON report (a list of suite reports)."""
    suites = json.loads(report_json.read_text())
    passed: list[str] = []
    failed: list[str] = []
    skipped = 0
    for suite in suites:
        for spec in suite.get("SpecReports") or []:
            if spec.get("LeafNodeType") != "It":
                continue
            name = " ".join(
                [*spec.get("ContainerHierarchyTexts", []), spec.get("LeafNodeText", "")]
            )
            state = spec.get("State")
            if state == "passed":
                passed.append(name)
            elif state in ("skipped", "pending"):
                skipped += 1
            else:
                failed.append(f"{name} [{state}]")
    return {
        "selected": len(passed) + len(failed),
        "passed": len(passed),
        "failed": len(failed),
        "failed_specs": failed,
        "passed_specs": passed,
    }


class _TerminatedError(Exception):
    pass


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise _TerminatedError(f"signal {signum}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="tools/e2e/upstream.py", description=__doc__.splitlines()[0])
    p.add_argument("--subset", action="store_true", help="the CI subset (tools/e2e/subset.txt)")
    p.add_argument("--procs", type=int, default=2, help="ginkgo parallel processes (default 2)")
    p.add_argument("--workdir", type=Path, help="default: a new directory under $TMPDIR")
    p.add_argument("--no-labelwall", action="store_true", help="baseline: no labelwall installed")
    p.add_argument("--testenv-json", type=Path, help="use this running testenv; leave it up")
    p.add_argument("--nodes", type=int, default=2, help="testenv nodes (default 2)")
    args = p.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="labelwall-e2e-"))
    report = workdir / "report"
    report.mkdir(parents=True, exist_ok=True)
    envdir = workdir / "env"
    labelwall = os.environ.get("LABELWALL") or str(REPO / ".venv" / "bin" / "labelwall")
    env = dict(os.environ)
    # This checkout's labelwall wins over the venv's editable install (LABELWALL_SRC: another).
    src = os.environ.get("LABELWALL_SRC") or str(REPO)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)

    t_start = time.monotonic()
    brought_up = False
    try:
        if args.testenv_json:
            testenv_json = args.testenv_json
        else:
            up = [labelwall, "testenv", "up", "--dir", str(envdir), "--nodes", str(args.nodes)]
            if args.no_labelwall:
                up.append("--no-labelwall")
            print("+ " + " ".join(up), flush=True)
            brought_up = True
            if subprocess.run(up, env=env, check=False).returncode != 0:
                print("e2e: testenv up failed", file=sys.stderr)
                return 2
            testenv_json = envdir / "testenv.json"
        te = json.loads(testenv_json.read_text())
        t_ready = time.monotonic()
        cmd = ginkgo_command(
            te["ginkgo"], te["e2e_test"], te["kubeconfig"], report, args.procs, args.subset
        )
        print("+ " + " ".join(cmd), flush=True)
        rc = subprocess.run(cmd, env=env, check=False).returncode
        t_done = time.monotonic()
        if not (report / "ginkgo.json").exists():
            print(f"e2e: ginkgo wrote no report (exit {rc})", file=sys.stderr)
            return 2
        summary = summarize(report / "ginkgo.json")
        summary.update(
            {
                "ginkgo_exit": rc,
                "labelwall": bool(te.get("labelwall")),
                "nodes": len(te.get("nodes", [])),
                "subset": args.subset,
                "testenv_up_s": round(t_ready - t_start, 1),
                "suite_s": round(t_done - t_ready, 1),
            }
        )
        (report / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print()
        print(
            f"e2e summary: {summary['passed']} of {summary['selected']} specs passed, "
            f"{summary['failed']} failed ({'subset' if args.subset else 'focus ' + FULL_FOCUS}, "
            f"skip {SKIP}, {args.procs} procs, labelwall "
            f"{'installed' if summary['labelwall'] else 'NOT installed'}, "
            f"{summary['nodes']} nodes)"
        )
        for name in summary["failed_specs"]:  # type: ignore[attr-defined]
            print(f"  FAILED {name}")
        print(
            f"time: testenv up {summary['testenv_up_s']} s, suite {summary['suite_s']} s; "
            f"reports in {report}"
        )
        return 0 if rc == 0 and summary["failed"] == 0 and summary["selected"] else 1
    except (_TerminatedError, KeyboardInterrupt) as e:
        print(f"e2e: interrupted ({e or 'Ctrl-C'}); tearing down", file=sys.stderr)
        return 2
    finally:
        if brought_up:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            down = [labelwall, "testenv", "down", "--dir", str(envdir)]
            print("+ " + " ".join(down), flush=True)
            subprocess.run(down, env=env, check=False)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
