"""The real-cluster mode of bench/e2e_latency.py: latencies on 2 real nodes with labelwall.

The cluster is ``labelwall testenv up --nodes 2`` (kubelet, containerd, ptp CNI,
kube-proxy in nftables mode, labelwall installed by its chart from its local image), or
one already up (``--testenv DIR``). A server pod on node-1 sits behind a default-deny
ingress policy and a Service; two prober pods, one on node-1 and one on node-2, open a new
TCP connection every 10 ms to the server's pod IP and to its ClusterIP (so every sample is
judged by the real datapath: the remote probes cross the underlay, the Service probes go
through kube-proxy's DNAT first).

* **apply -> enforced**: ``kubectl apply`` of the gate policy opening the server to the
  probers, then of the one closing it again. A sample, per prober and path, is the send
  time of the first probe whose verdict shows the change minus the moment kubectl was
  started (so kubectl's start-up is included).
* **new remote pod admitted**: a new pod on node-2 that a policy on node-1's server admits;
  its own prober starts with its container and probes the server's pod IP. A sample is its
  first admitted probe's send time minus its first probe's send time: how long node-1 sees
  the new pod as unknown (Cilium: up to 8-10 s as ``world``). Every other new pod carries a
  label value of its own, so half of them need a new identity allocated and published
  first, half reuse a known identity (a Deployment scale-up).

The probers are Python in the labelwall image (one process, many probes in flight): a
probe per ``kubectl exec agnhost connect`` would cost a process start each and measure
that. Pods and the bench share one kernel, hence one clock (``time.time()``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NS = "lw-latency"
SERVER_PORT, SERVICE_PORT = 8080, 80
GIVE_UP_S = 20.0
TARGETS_MS = {"real_apply_to_enforced_p99_ms": 300.0, "remote_pod_admitted_p99_ms": 1000.0}

SERVER = """
import socket
s = socket.create_server(("0.0.0.0", @PORT@), backlog=512)
while True:
    c, _ = s.accept()
    c.close()
""".replace("@PORT@", str(SERVER_PORT))

# argv: [--until-ok] name=host:port ...  Prints {"start": t} then one line per change of a
# target's verdict, in the order the probes were sent: {"t": send time, "target", "ok"}.
# A probe is a non-blocking connect; no answer within TIMEOUT_S counts as dropped.
PROBER = """
import collections, errno, json, os, selectors, socket, sys, time
INTERVAL_S, TIMEOUT_S, MAX_S = 0.01, 0.3, @MAX_S@
until_ok = sys.argv[1] == "--until-ok"
targets = {}
for arg in sys.argv[2 if until_ok else 1:]:
    name, addr = arg.split("=", 1)
    host, port = addr.rsplit(":", 1)
    targets[name] = (host, int(port))
sel = selectors.DefaultSelector()
inflight = {n: collections.deque() for n in targets}
last, seen_ok = {}, set()
print(json.dumps({"start": time.time()}), flush=True)
end = time.monotonic() + MAX_S
next_at = time.monotonic()
while time.monotonic() < end and not os.path.exists("/tmp/stop"):
    if until_ok and seen_ok == set(targets):
        break
    now = time.monotonic()
    if now >= next_at:
        for name, addr in targets.items():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            probe = [time.time(), now, s, None]
            err = s.connect_ex(addr)
            if err == errno.EINPROGRESS:
                sel.register(s, selectors.EVENT_WRITE, probe)
            else:
                probe[3] = err == 0
                s.close()
            inflight[name].append(probe)
        next_at = now + INTERVAL_S
    for key, _ in sel.select(max(0.0, next_at - time.monotonic())):
        probe = key.data
        probe[3] = key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        sel.unregister(key.fileobj)
        key.fileobj.close()
    now = time.monotonic()
    for name, queue in inflight.items():
        for probe in queue:
            if probe[3] is None and now - probe[1] > TIMEOUT_S:
                sel.unregister(probe[2])
                probe[2].close()
                probe[3] = False
        while queue and queue[0][3] is not None:
            probe = queue.popleft()
            if probe[3]:
                seen_ok.add(name)
            if last.get(name) != probe[3]:
                last[name] = probe[3]
                print(json.dumps({"t": probe[0], "target": name, "ok": probe[3]}), flush=True)
""".replace("@MAX_S@", "1800")


def _policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"podSelector": {"matchLabels": {"app": "server"}}, **spec},
    }


def _from(labels: dict[str, str]) -> dict[str, Any]:
    return {"ingress": [{"from": [{"podSelector": {"matchLabels": labels}}]}]}


DENY = _policy("deny", {"policyTypes": ["Ingress"], "ingress": []})
OPEN, CLOSED = _policy("gate", _from({"role": "prober"})), _policy("gate", _from({"role": "x"}))
NEWCOMERS = _policy("newcomers", _from({"role": "newcomer"}))


def _pod(name: str, node: str, labels: dict[str, str], image: str, args: list[str]) -> Any:
    script = SERVER if labels.get("app") == "server" else PROBER
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-u", "-c", script, *args],
                }
            ],
        },
    }


@dataclass
class Kube:
    kubectl: str
    kubeconfig: str

    def argv(self, *args: str) -> list[str]:
        return [self.kubectl, f"--kubeconfig={self.kubeconfig}", *args]

    def run(self, *args: str, stdin: str | None = None, timeout_s: float = 120) -> str:
        res = subprocess.run(
            self.argv(*args), input=stdin, capture_output=True, text=True,
            timeout=timeout_s, check=False,
        )  # fmt: skip
        if res.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {res.stderr.strip()}")
        return res.stdout

    def apply(self, *objs: Any) -> None:
        self.run("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                         "items": list(objs)}))  # fmt: skip

    def pod(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.run("get", "pod", "-n", NS, name, "-o", "json"))
        return out


@dataclass
class Stream:
    """``kubectl logs -f`` of one prober pod, parsed as it arrives."""

    proc: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def follow(cls, kube: Kube, pod: str) -> Stream:
        proc = subprocess.Popen(
            kube.argv("logs", "-f", "-n", NS, pod), stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        stream = cls(proc)
        threading.Thread(target=stream._read, daemon=True).start()
        return stream

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                with self.lock:
                    self.events.append(event)

    def first(self, target: str, ok: bool, since: float) -> float | None:
        """Send time of the first probe of ``target`` since ``since`` with verdict ``ok``."""
        with self.lock:
            for e in self.events:
                if e.get("target") == target and e["ok"] == ok and e["t"] >= since:
                    return float(e["t"])
        return None

    def state(self, target: str) -> bool | None:
        with self.lock:
            for e in reversed(self.events):
                if e.get("target") == target:
                    return bool(e["ok"])
        return None

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def _wait(what: str, check: Any, timeout_s: float = GIVE_UP_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.005)
    raise RuntimeError(f"{what}: not within {timeout_s:.0f} s")


def measure(kube: Kube, image: str, iterations: int, newcomers: int) -> dict[str, Any]:
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "server", "namespace": NS},
        "spec": {"selector": {"app": "server"},
                 "ports": [{"port": SERVICE_PORT, "targetPort": SERVER_PORT}]},
    }  # fmt: skip
    kube.apply(DENY, CLOSED, NEWCOMERS, service,
               _pod("server", "node-1", {"app": "server"}, image, []))  # fmt: skip
    kube.run("wait", "-n", NS, "--for=condition=Ready", "pod/server", "--timeout=120s")
    server_ip = kube.pod("server")["status"]["podIP"]
    svc = json.loads(kube.run("get", "svc", "-n", NS, "server", "-o", "json"))
    targets = {"pod": f"{server_ip}:{SERVER_PORT}",
               "service": f"{svc['spec']['clusterIP']}:{SERVICE_PORT}"}  # fmt: skip
    args = [f"{k}={v}" for k, v in targets.items()]
    probers = {"same-node": "node-1", "other-node": "node-2"}
    kube.apply(*[_pod(p, n, {"role": "prober"}, image, args) for p, n in probers.items()])
    kube.run("wait", "-n", NS, "--for=condition=Ready", *[f"pod/{p}" for p in probers],
             "--timeout=120s")  # fmt: skip
    streams = {p: Stream.follow(kube, p) for p in probers}
    series = [(p, t) for p in probers for t in targets]
    try:
        _wait("the probers closed out",
              lambda: all(streams[p].state(t) is False for p, t in series), 60)  # fmt: skip
        samples: dict[str, list[float]] = {f"{p} {t}": [] for p, t in series}
        kinds: dict[str, list[float]] = {"open": [], "close": [], "kubectl_returned": []}
        api: list[float] = []
        patch = _patcher(kube)
        for i in range(iterations + 1):  # the first pair warms up, not counted
            for obj, want, kind in ((OPEN, True, "open"), (CLOSED, False, "close")):
                t0 = time.time()
                res = subprocess.run(
                    kube.argv("apply", "-f", "-"),
                    input=json.dumps(obj),
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                returned = (time.time() - t0) * 1e3
                if res.returncode != 0:
                    raise RuntimeError(f"kubectl apply: {res.stderr.strip()}")
                seen = _seen(streams, series, want, t0, kind)
                if i == 0:
                    continue
                kinds["kubectl_returned"].append(returned)
                for key, ms in seen.items():
                    samples[key].append(ms)
                    kinds[kind].append(ms)
        for _ in range(iterations):  # the same changes with no kubectl start-up
            for obj, want, kind in ((OPEN, True, "open"), (CLOSED, False, "close")):
                t0 = time.time()
                patch(obj)
                api += _seen(streams, series, want, t0, kind).values()
        kinds["API PATCH (no kubectl)"] = api
    finally:
        for s in streams.values():
            s.close()
    admitted = measure_newcomers(kube, image, targets["pod"], newcomers)
    kube.run("delete", "namespace", NS, "--wait=false")
    return {"series": samples, "kinds": kinds, "newcomers": admitted}


def _seen(
    streams: dict[str, Stream], series: list[tuple[str, str]], want: bool, t0: float, kind: str
) -> dict[str, float]:
    """ms from ``t0`` to the first probe of each series whose verdict is ``want``."""
    first: dict[str, float] = {}

    def all_seen() -> bool:
        for p, t in series:
            at = streams[p].first(t, want, t0)
            if at is not None:
                first[f"{p} {t}"] = (at - t0) * 1e3
        return len(first) == len(series)

    _wait(f"{kind} seen by every prober", all_seen)
    return first


def _patcher(kube: Kube) -> Any:
    """A merge patch of the gate's spec through the Python client (the operator annotates
    the object after every change, so a read-modify-PUT would race it)."""
    from kubernetes.client import NetworkingV1Api

    from labelwall.kube.client import api_client

    api = NetworkingV1Api(api_client(kube.kubeconfig))

    def patch(obj: dict[str, Any]) -> None:
        api.patch_namespaced_network_policy(
            "gate", NS, {"spec": obj["spec"]}, _content_type="application/merge-patch+json"
        )

    return patch


def measure_newcomers(kube: Kube, image: str, target: str, count: int) -> dict[str, Any]:
    """New pods on node-2 admitted by node-1's server: first probe -> first admitted probe."""
    out: dict[str, list[float]] = {"known identity": [], "new identity": [],
                                   "created -> admitted": []}  # fmt: skip
    for i in range(count):
        name = f"newcomer-{i}"
        labels = {"role": "newcomer", "seq": str(i) if i % 2 else "same"}
        t_create = time.time()
        kube.apply(_pod(name, "node-2", labels, image, ["--until-ok", f"pod={target}"]))
        kube.run("wait", "-n", NS, "--for=jsonpath={.status.phase}=Succeeded", f"pod/{name}",
                 "--timeout=60s")  # fmt: skip
        events = [json.loads(line) for line in kube.run("logs", "-n", NS, name).splitlines()
                  if line.startswith("{")]  # fmt: skip
        start = next(e["start"] for e in events if "start" in e)
        ok = next(e["t"] for e in events if e.get("ok"))
        out["new identity" if i % 2 else "known identity"].append((ok - start) * 1e3)
        out["created -> admitted"].append((ok - t_create) * 1e3)
        kube.run("delete", "pod", "-n", NS, name, "--wait=false")
    return out


@contextlib.contextmanager
def cluster(testenv: Path | None) -> Iterator[tuple[Kube, dict[str, Any]]]:
    """An existing cluster (``testenv``), else one brought up for the run and removed."""
    from labelwall.testenv.binaries import find_binaries
    from labelwall.testenv.cluster import CONTRACT
    from labelwall.testenv.nodebins import LABELWALL_IMAGE

    kubectl = str(find_binaries().kubectl)
    if testenv is not None:
        contract = json.loads((testenv / CONTRACT).read_text())
        yield Kube(kubectl, contract["kubeconfig"]), {"image": LABELWALL_IMAGE, "up_s": None}
        return
    with tempfile.TemporaryDirectory(prefix="lwlat-") as tmp:  # short: kubelet socket paths
        directory = Path(tmp) / "env"
        cmd = [sys.executable, "-m", "labelwall.cli.testenv"]
        t0 = time.monotonic()
        res = subprocess.run(
            [*cmd, "up", "--dir", str(directory), "--nodes", "2"],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        up_s = time.monotonic() - t0
        try:
            if res.returncode != 0:
                raise RuntimeError(f"testenv up failed:\n{res.stdout}\n{res.stderr}")
            contract = json.loads((directory / CONTRACT).read_text())
            yield Kube(kubectl, contract["kubeconfig"]), {"image": LABELWALL_IMAGE,
                                                         "up_s": round(up_s, 1)}  # fmt: skip
        finally:
            down = subprocess.run([*cmd, "down", "--dir", str(directory)], capture_output=True,
                                  text=True, timeout=300, check=False)  # fmt: skip
            if down.returncode != 0:
                print(f"testenv down failed: {down.stderr}", file=sys.stderr)


def run(testenv: Path | None, iterations: int, newcomers: int) -> dict[str, Any]:
    import _machine
    from e2e_latency import summary  # the bench's own percentile helpers

    if os.geteuid() != 0:
        raise SystemExit("error: real nodes need root (namespaces, mounts, cgroups)")
    with cluster(testenv) as (kube, info):
        raw = measure(kube, info["image"], iterations, newcomers)
    applies = raw["kinds"]["open"] + raw["kinds"]["close"]
    admitted = raw["newcomers"]["known identity"] + raw["newcomers"]["new identity"]
    result = {
        "real_apply_to_enforced_p50_ms": summary(applies)["p50_ms"],
        "real_apply_to_enforced_p99_ms": summary(applies)["p99_ms"],
        "remote_pod_admitted_p50_ms": summary(admitted)["p50_ms"],
        "remote_pod_admitted_p99_ms": summary(admitted)["p99_ms"],
        "targets_ms": TARGETS_MS,
        "apply": {k: summary(v) for k, v in {**raw["kinds"], **raw["series"]}.items()},
        "newcomers": {k: summary(v) for k, v in raw["newcomers"].items()},
        "cluster_up_s": info["up_s"],
        "machine": _machine.facts(),
    }
    return result


def _all(parts: list[dict[str, Any]], p50: float, p99: float) -> dict[str, Any]:
    n = sum(int(x["n"]) for x in parts)
    return {"n": n, "p50_ms": p50, "p99_ms": p99, "max_ms": max(x["max_ms"] for x in parts)}


def print_table(r: dict[str, Any]) -> None:
    import _machine

    print(f"machine: {_machine.describe()}")
    up = r["cluster_up_s"]
    where = f"testenv up took {up} s" if up else "the given testenv"
    print(f"cluster: 2 real nodes, labelwall installed by its chart ({where})")
    print()
    print(f"{'path':<42}{'n':>5}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    a, nc = r["apply"], r["newcomers"]
    rows = [
        (
            "kubectl apply -> enforced (all)",
            _all(
                [a["open"], a["close"]],
                r["real_apply_to_enforced_p50_ms"],
                r["real_apply_to_enforced_p99_ms"],
            ),
        )
    ]
    rows += [(f"  {k}", v) for k, v in a.items() if k != "kubectl_returned"]
    rows += [("  baseline: kubectl apply returned", a["kubectl_returned"])]
    rows += [
        (
            "new pod on node-2 admitted on node-1",
            _all(
                [nc["known identity"], nc["new identity"]],
                r["remote_pod_admitted_p50_ms"],
                r["remote_pod_admitted_p99_ms"],
            ),
        )
    ]
    rows += [(f"  {k}", v) for k, v in nc.items()]  # fmt: skip
    for name, s in rows:
        print(f"{name:<42}{s['n']:>5}{s['p50_ms']:>10}{s['p99_ms']:>10}{s['max_ms']:>10}")
    print()
    for key, target in r["targets_ms"].items():
        verdict = "meets" if r[key] <= target else "MISSES"
        print(f"{key} {r[key]} {verdict} the target of {target:.0f} ms")
