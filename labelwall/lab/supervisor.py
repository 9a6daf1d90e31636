"""The lab supervisor: one background process that owns the lab's pods and answers the CLI.

It holds, per pod, a sandbox (``labelwall.lab.sandbox``: the network namespace and one
long-lived helper process inside it, echo servers on every declared port and the prober), writes
the manifests the agent watches, and waits until the agent reports them enforced before
answering, so ``lab apply`` returning means the change is in force. Requests are JSON
lines on a Unix socket (``lab.sock``); state changes are serialised, probes run in
parallel with them (per-pod locks), which is what the continuous-probe tests need.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socketserver
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from labelwall.agent import logs
from labelwall.agent.dirsource import STATUS_FILE, state_digest
from labelwall.errors import FieldError, InvalidInputError
from labelwall.lab import topology
from labelwall.lab.fanout import fan_out, node_source
from labelwall.lab.layout import LabPaths, update_record
from labelwall.lab.objects import LabPod, ObjectStore, ObjKey, lab_pods, with_lab_node
from labelwall.lab.prober import ProbeHelper
from labelwall.lab.sandbox import PodSandbox
from labelwall.manifests import SourceDoc

log = logging.getLogger("labelwall.lab")

#: How long a change may take to be enforced before `lab apply` gives up waiting (seconds).
SYNC_TIMEOUT_S = 10.0


class PodHandle:
    """A lab pod: what was asked for (``spec``) and the sandbox running it."""

    def __init__(self, spec: LabPod, sandbox: PodSandbox) -> None:
        self.spec = spec
        self.sandbox = sandbox


class Supervisor:
    def __init__(self, paths: LabPaths) -> None:
        self.paths = paths
        self.lab_node = paths.node
        self.store = ObjectStore(self.lab_node)
        self.pods: dict[str, PodHandle] = {}
        self.lock = threading.Lock()  # serialises apply/delete
        self.node: topology.NodeNet | None = None
        self._written = False  # the agent's files exist (the lab's Node at least)
        self.node_prober: ProbeHelper | None = None  # probes from the node (node -> pod)

    # ---- lifecycle ----

    def setup(self) -> None:
        self.paths.state.mkdir(parents=True, exist_ok=True)
        self.node = topology.setup_node(self.lab_node)
        update_record(
            self.paths,
            node_netns=self.paths.node_netns,
            node_created=self.node.created_netns,
            prefix=self.paths.prefix,
            supervisor_pid=os.getpid(),
        )
        self._write_objects({})  # the lab's own Node, before any pod

    def teardown(self) -> None:
        if self.node_prober is not None:
            self.node_prober.close()
        for key in list(self.pods):
            self._remove_pod(key)
        if self.node is not None:
            topology.teardown_node(self.node)

    # ---- pods ----

    def _create_pod(self, spec: LabPod) -> None:
        name = self.paths.pod_netns(spec.key)
        sandbox = PodSandbox.start(self.lab_node, name, spec.ipv4, spec.ipv6, spec.ports)
        self.pods[spec.key] = PodHandle(spec, sandbox)
        log.info("pod created", extra={"pod": spec.key, "netns": name, "ip": spec.ipv4})

    def _remove_pod(self, key: str) -> None:
        handle = self.pods.pop(key, None)
        if handle is None:
            return
        handle.sandbox.stop()
        log.info("pod removed", extra={"pod": key, "netns": handle.sandbox.name})

    def _realise(self, want: Mapping[str, LabPod]) -> None:
        """Create new pods, re-create pods whose addresses changed, add new listeners."""
        for key, spec in sorted(want.items()):
            have = self.pods.get(key)
            if have is None:
                self._create_pod(spec)
            elif (have.spec.ipv4, have.spec.ipv6) != (spec.ipv4, spec.ipv6):
                self._remove_pod(key)
                self._create_pod(spec)
            elif have.spec != spec:
                have.sandbox.serve(spec.ports)
                have.spec = spec

    # ---- manifests ----

    def _write_objects(self, new: Mapping[ObjKey, Mapping[str, Any]]) -> bool:
        """The agent's files: ``new`` and, when it has no Node, the lab's own (objects.py)."""
        changed = False
        old_files = with_lab_node(self.store.objects, self.lab_node) if self._written else {}
        files = with_lab_node(new, self.lab_node)
        for key, obj in files.items():
            if old_files.get(key) == obj:
                continue
            path = self.paths.object_file(key[0], key[1] or None, key[2])
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f".{path.name}.tmp"
            tmp.write_text(yaml.safe_dump(dict(obj), sort_keys=False))
            os.replace(tmp, path)
            changed = True
        for key in old_files.keys() - files.keys():
            with contextlib.suppress(FileNotFoundError):
                self.paths.object_file(key[0], key[1] or None, key[2]).unlink()
            changed = True
        self.store.objects = dict(new)
        self._written = True
        return changed

    def wait_enforced(self, timeout: float = SYNC_TIMEOUT_S) -> dict[str, Any]:
        """Until the agent's status names the current files' digest with nothing pending."""
        want = state_digest(self.paths.state)
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                status = json.loads((self.paths.state / STATUS_FILE).read_text())
                if status.get("revision") == want and (
                    not status.get("ok") or status.get("pending") == 0
                ):
                    return {"enforced": bool(status.get("ok")), "agent": status}
            time.sleep(0.002)
        return {"enforced": False, "agent": status, "warning": "the agent did not confirm in time"}

    # ---- requests ----

    def apply(self, docs: list[SourceDoc], wait: bool) -> dict[str, Any]:
        with self.lock:
            new, state = self.store.merged(docs)
            self._realise(lab_pods(state))
            changed = self._write_objects(new)
            result: dict[str, Any] = {"ok": True, "changed": changed}
            if wait:
                result.update(self.wait_enforced())
            return result

    def delete(self, docs: list[SourceDoc], wait: bool) -> dict[str, Any]:
        with self.lock:
            new, state = self.store.without(docs)
            gone = self.pods.keys() - state.pods.keys()
            self._write_objects(new)
            result: dict[str, Any] = {"ok": True, "deleted_pods": sorted(gone)}
            if wait:
                result.update(self.wait_enforced())
            for key in gone:
                self._remove_pod(key)
            return result

    def probe(self, requests: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        """One outcome per request {src, dst, port, protocol}; probes of one source batch."""
        pods = dict(self.pods)
        sandboxes = {k: h.sandbox for k, h in pods.items()}
        addresses: dict[str, str | None] = {k: h.spec.ipv4 for k, h in pods.items()}
        if any(r.get("src") == node_source(self.lab_node) for r in requests):
            with self.lock:
                if self.node_prober is None:
                    self.node_prober = ProbeHelper.start(self.paths.node_netns)
        return fan_out(requests, timeout, sandboxes, addresses, self.lab_node, self.node_prober)

    def status(self) -> dict[str, Any]:
        return {
            "objects": [dict(o) for _, o in sorted(self.store.objects.items())],
            "pods": {
                k: {
                    "netns": h.sandbox.net.name,
                    "ifname": h.sandbox.net.host_ifname,
                    "ifindex": h.sandbox.net.host_ifindex,
                    "ipv4": h.spec.ipv4,
                    "helper_pid": h.sandbox.helper.pid,
                }
                for k, h in sorted(self.pods.items())
            },
            "node_netns": self.paths.node_netns,
            "pid": os.getpid(),
        }

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        try:
            if op == "apply":
                return self.apply(_docs(request), bool(request.get("wait", True)))
            if op == "delete":
                return self.delete(_docs(request), bool(request.get("wait", True)))
            if op == "probe":
                return {
                    "results": self.probe(request["probes"], float(request.get("timeout", 0.3)))
                }
            if op == "status":
                return self.status()
            if op == "wait":
                return self.wait_enforced(float(request.get("timeout", SYNC_TIMEOUT_S)))
            if op == "ping":
                return {"ok": True, "pid": os.getpid()}
            return {"error": f"unknown op {op!r}"}
        except InvalidInputError as exc:
            return {"invalid": [_field_error(e) for e in exc.errors]}
        except Exception as exc:
            log.exception("request failed", extra={"op": op})
            return {"error": f"{type(exc).__name__}: {exc}"}


def _docs(request: Mapping[str, Any]) -> list[SourceDoc]:
    return [
        SourceDoc(d["source"], int(d["index"]), d["obj"], d.get("path", ""))
        for d in request["docs"]
    ]


def _field_error(e: FieldError) -> dict[str, Any]:
    return {
        "source": e.source,
        "index": e.index,
        "obj": e.obj,
        "field": e.field,
        "message": e.message,
    }


def serve(paths: LabPaths, ready_fd: int | None = None) -> int:
    sup = Supervisor(paths)
    sup.setup()
    stop = threading.Event()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            line = self.rfile.readline()
            if not line:
                return
            request = json.loads(line)
            if request.get("op") == "shutdown":
                self.wfile.write(b'{"ok": true}\n')
                stop.set()
                return
            answer = sup.handle(request)
            self.wfile.write(json.dumps(answer).encode() + b"\n")

    with contextlib.suppress(FileNotFoundError):
        paths.socket.unlink()
    server = socketserver.ThreadingUnixStreamServer(str(paths.socket), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="lab-socket", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("lab supervisor ready", extra={"socket": str(paths.socket), "pid": os.getpid()})
    if ready_fd is not None:
        os.write(ready_fd, b"ok\n")
        os.close(ready_fd)
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        with contextlib.suppress(FileNotFoundError):
            paths.socket.unlink()
        sup.teardown()
        log.info("lab supervisor stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labelwall.lab.supervisor")
    parser.add_argument("--root", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--ready-fd", type=int, default=None)
    args = parser.parse_args(argv)
    logs.setup("info")
    return serve(LabPaths(Path(args.root), args.prefix), args.ready_fd)


if __name__ == "__main__":
    sys.exit(main())
