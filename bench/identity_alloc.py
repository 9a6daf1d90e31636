"""Identity allocation through a real kube-apiserver: burst rate and pod -> Identity latency.

1. Burst: ``--burst`` (1,000) new label sets allocated through KubeIdentityRegistry (one
   create per label set, ``--workers`` in flight), from an empty cache: allocations/s.
2. Latency: `labelwall operator` runs as a subprocess (as in production); the bench
   creates ``--pods`` pods, each with a new label set, one every ``--interval-ms``, and a
   watch on Identity objects records when each pod's Identity first appears. p50/p99 of
   (Identity seen by the watch) - (pod create call started).

Runs its own etcd + kube-apiserver (labelwall.testenv, binaries from tools/k8s/build.sh)
unless ``--kubeconfig`` points at a cluster (which must have the Identity CRD).

    .venv/bin/python bench/identity_alloc.py [--burst 1000] [--pods 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from _machine import facts
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi

from labelwall.cluster import Labels
from labelwall.identity.labels import LabelSet
from labelwall.kube.client import api_client
from labelwall.kube.objects import GROUP, PLURAL, VERSION
from labelwall.kube.reflector import Reflector
from labelwall.kube.registry import KubeIdentityRegistry, allocate_concurrently
from labelwall.testenv import TestEnv, find_binaries
from labelwall.testenv.processes import free_port

REPO = Path(__file__).resolve().parents[1]
CRDS = REPO / "charts" / "labelwall" / "crds"
TARGET_RATE = 200.0  # allocations/s
TARGET_P99_MS = 500.0
WARMUP = 50  # label sets allocated before the burst, not measured


def burst(client: ApiClient, n: int, workers: int) -> dict[str, float]:
    stamp = str(int(time.time()))
    ns = f"bench-burst-{stamp}"
    nslabels = Labels({"kubernetes.io/metadata.name": ns})
    sets = [LabelSet(ns, Labels({"app": f"b{i}"}), nslabels) for i in range(n)]
    # Warm-up outside the measurement: a just-started server compiles the CRD's CEL rules
    # and fills its caches on the first requests; the burst measures the steady state.
    warm = [LabelSet(ns, Labels({"warmup": str(i)}), nslabels) for i in range(WARMUP)]
    allocate_concurrently(warm, KubeIdentityRegistry(CustomObjectsApi(client)), workers=workers)
    registry = KubeIdentityRegistry(CustomObjectsApi(client))
    started = time.perf_counter()
    numbers = allocate_concurrently(sets, registry, workers=workers)
    elapsed = time.perf_counter() - started
    assert len(set(numbers.values())) == n, "duplicate numbers"
    return {
        "label_sets": n,
        "seconds": round(elapsed, 3),
        "allocations_per_s": round(n / elapsed, 1),
        "conflicts": registry.conflicts,
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def latency(
    client: ApiClient, kubeconfig: Path, workdir: Path, pods: int, interval_s: float
) -> dict[str, float]:
    ns = f"bench-lat-{int(time.time())}"
    core = CoreV1Api(client)
    custom = CustomObjectsApi(client)
    core.create_namespace({"metadata": {"name": ns}})
    created: dict[str, float] = {}
    seen: dict[str, float] = {}
    lock = threading.Lock()

    def parse(obj: Mapping[str, Any]) -> tuple[str, str] | None:
        # Runs in the watch thread as each event arrives: the arrival time is the sample.
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if labels.get("labelwall.io/namespace") != ns:
            return None
        app = str(labels.get("app"))
        with lock:
            seen.setdefault(app, time.perf_counter())
        return app, app

    def list_identities(**kwargs: Any) -> Any:
        return custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)

    watcher: Reflector[str, str] = Reflector(
        "bench-identities", list_identities, parse, lambda: None
    )
    watcher.start()
    operator = _start_operator(kubeconfig, workdir)
    try:
        watcher.synced.wait(30)
        _wait_operator_ready(operator, workdir)
        for i in range(pods):
            app = f"l{i}"
            body = {
                "metadata": {"name": f"p{i}", "namespace": ns, "labels": {"app": app}},
                "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "x"}]},
            }
            with lock:
                created[app] = time.perf_counter()
            core.create_namespaced_pod(ns, body)
            time.sleep(interval_s)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with lock:
                if len(set(seen) & set(created)) == len(created):
                    break
            time.sleep(0.05)
    finally:
        _stop(operator)
        watcher.stop()
    with lock:
        samples = [(seen[a] - created[a]) * 1000 for a in created if a in seen]
    missing = len(created) - len(samples)
    return {
        "pods": pods,
        "missing": missing,
        "pod_to_identity_p50_ms": round(statistics.median(samples), 1),
        "pod_to_identity_p99_ms": round(_percentile(samples, 0.99), 1),
        "pod_to_identity_max_ms": round(max(samples), 1),
    }


def _start_operator(kubeconfig: Path, workdir: Path) -> subprocess.Popen[bytes]:
    config = workdir / "operator.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "operator": {"metricsPort": free_port(), "healthPort": free_port()},
                "logLevel": "info",
            }
        )
    )
    (workdir / "metrics_port").write_text(
        str(yaml.safe_load(config.read_text())["operator"]["metricsPort"])
    )
    log = (workdir / "operator.log").open("ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "labelwall.cli.main",
            "operator",
            "--config",
            str(config),
            "--standalone",
        ],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def _wait_operator_ready(proc: subprocess.Popen[bytes], workdir: Path) -> None:
    import urllib.request

    port = (workdir / "metrics_port").read_text()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"operator exited: see {workdir / 'operator.log'}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
                for line in r.read().decode().splitlines():
                    if (
                        line.startswith("labelwall_operator_sync_seconds_count ")
                        and float(line.split()[1]) >= 1
                    ):
                        return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("operator did not complete its first sync in 60 s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lw-bench-") as tmp:
        workdir = Path(tmp)
        env: TestEnv | None = None
        kubeconfig = Path(args.kubeconfig) if args.kubeconfig else None
        try:
            if kubeconfig is None:
                env = TestEnv.start(workdir / "env", find_binaries())
                env.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
                env.kubectl("wait", "--for=condition=Established", "crd/identities.labelwall.io")
                kubeconfig = env.kubeconfig
            client = api_client(str(kubeconfig), pool_size=max(16, args.workers * 2))
            try:
                b = burst(client, args.burst, args.workers)
                lat = latency(client, kubeconfig, workdir, args.pods, args.interval_ms / 1000)
            finally:
                client.close()
        finally:
            if env is not None:
                env.stop()
    return {
        "machine": facts(),
        "burst": b,
        "latency": lat,
        "allocations_per_s": b["allocations_per_s"],
        "pod_to_identity_p50_ms": lat["pod_to_identity_p50_ms"],
        "pod_to_identity_p99_ms": lat["pod_to_identity_p99_ms"],
        "targets": {"allocations_per_s": TARGET_RATE, "pod_to_identity_p99_ms": TARGET_P99_MS},
        "meets_targets": b["allocations_per_s"] >= TARGET_RATE
        and lat["pod_to_identity_p99_ms"] <= TARGET_P99_MS
        and lat["missing"] == 0,
    }


def table(r: Mapping[str, Any]) -> str:
    m, b, lat = r["machine"], r["burst"], r["latency"]
    rows = [
        ("machine", f"{m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, load {m['loadavg_1m']}"),
        (
            "burst",
            f"{b['label_sets']} new label sets in {b['seconds']} s ({b['conflicts']} conflicts)",
        ),
        ("allocations/s", f"{b['allocations_per_s']}  (target >= {TARGET_RATE:g})"),
        ("pods measured", f"{lat['pods']} ({lat['missing']} without identity)"),
        ("pod -> Identity p50", f"{lat['pod_to_identity_p50_ms']} ms"),
        (
            "pod -> Identity p99",
            f"{lat['pod_to_identity_p99_ms']} ms  (target <= {TARGET_P99_MS:g})",
        ),
        ("pod -> Identity max", f"{lat['pod_to_identity_max_ms']} ms"),
        ("meets targets", "yes" if r["meets_targets"] else "NO"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=1000, help="new label sets in the burst")
    parser.add_argument("--workers", type=int, default=8, help="creates in flight")
    parser.add_argument("--pods", type=int, default=200, help="pods for the latency samples")
    parser.add_argument("--interval-ms", type=float, default=50.0, help="between pod creates")
    parser.add_argument("--kubeconfig", help="use this cluster instead of a throwaway server")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = run(args)
    print(json.dumps(result, sort_keys=True) if args.json else table(result))
    return 0 if result["meets_targets"] else 1


if __name__ == "__main__":
    sys.exit(main())
