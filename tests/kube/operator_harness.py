"""Run `labelwall operator` as a subprocess against the test API server, and read its results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from labelwall.testenv import TestEnv
from labelwall.testenv.processes import free_port, log_tail

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "charts" / "labelwall" / "crds"
T = TypeVar("T")


def wait_for(
    check: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.1
) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


class OperatorProcess:
    """One `labelwall operator` subprocess with its own config, ports and log."""

    def __init__(
        self,
        env: TestEnv,
        workdir: Path,
        *,
        grace_s: int = 300,
        standalone: bool = True,
        kubeconfig: Path | None = None,
        name: str = "op",
    ) -> None:
        self.env = env
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.log = workdir / f"{name}.log"
        self.config = workdir / f"{name}.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "logLevel": "info",
                    "identity": {"gcGracePeriodSeconds": grace_s},
                    "operator": {
                        "metricsPort": self.metrics_port,
                        "healthPort": self.health_port,
                    },
                }
            )
        )
        self.kubeconfig = kubeconfig or env.kubeconfig
        self.standalone = standalone
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        argv = [
            sys.executable, "-m", "labelwall.cli.main", "operator",
            "--config", str(self.config),
        ]  # fmt: skip
        if self.standalone:
            argv.append("--standalone")
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
            )
        return self

    def stop(self) -> None:
        """SIGTERM (kopf stops gracefully and leaves the peering), SIGKILL after 15 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def tail(self) -> str:
        return log_tail(self.log, 40)

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """One sample from /metrics, or None when unreachable or absent."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2
            ) as r:
                text = r.read().decode()
        except OSError:
            return None
        want = name
        if labels:
            want += "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        for line in text.splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        return None

    def syncs(self) -> int:
        return int(self.metric("labelwall_operator_sync_seconds_count") or 0)

    def wait_synced(self, after: int = 0, timeout_s: float = 30) -> int:
        """Wait until the operator completed more than ``after`` syncs; return the count."""
        assert self.proc is not None

        def synced() -> int | None:
            count = self.syncs()
            if count > after:
                return count
            self._alive_or_fail()
            return None

        return wait_for(
            synced,
            timeout_s,
            f"a sync (log:\n{self.tail()})",
        )

    def wait_quiet(self, quiet_s: float = 1.5, timeout_s: float = 30) -> int:
        """Wait until at least one sync ran and none ran for ``quiet_s`` (nothing left to do)."""
        self.wait_synced()
        deadline = time.monotonic() + timeout_s
        count, since = self.syncs(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.syncs()
            if now != count:
                count, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return count
        raise AssertionError(f"operator kept syncing for {timeout_s}s:\n{self.tail()}")

    def _alive_or_fail(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"operator exited {self.proc.returncode}:\n{self.tail()}")

    def healthz(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
            status: int = r.status
            return status


def apply(env: TestEnv, *objs: Mapping[str, Any]) -> None:
    env.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(list(objs)))


def namespace(name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = dict(labels)
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def pod(ns: str, name: str, labels: Mapping[str, str], node: str = "node-a") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": "c",
                    "image": "example.invalid/app:1",
                    "ports": [{"containerPort": 8080, "name": "http"}],
                }
            ],
        },
    }


def set_pod_ip(env: TestEnv, ns: str, name: str, ip: str) -> None:
    """Play the kubelet: write phase and IP into the status subresource."""
    status = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}
    env.kubectl(
        "patch", "pod", name, "-n", ns, "--subresource=status", "--type=merge",
        "-p", json.dumps(status),
    )  # fmt: skip


def identities(env: TestEnv, ns: str) -> list[dict[str, Any]]:
    """Identity objects of the pods in namespace ``ns`` (selected by the namespace label)."""
    out = env.kubectl(
        "get", "identities", "-l", f"labelwall.io/namespace={ns}", "-o", "json"
    ).stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def by_summary(items: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Identity objects keyed by spec.summary (the pod labels as k=v,k=v)."""
    out: dict[str, Mapping[str, Any]] = {}
    for item in items:
        key = item["spec"].get("summary", "")
        assert key not in out, f"two identities for one label set {key!r}"
        out[key] = item
    return out


def pods_of(items: Iterable[Mapping[str, Any]]) -> dict[str, int | None]:
    """spec.summary -> status.pods."""
    return {i["spec"].get("summary", ""): (i.get("status") or {}).get("pods") for i in items}
