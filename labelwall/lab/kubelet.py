"""A stand-in for the kubelet: runs the Pods bound to one lab node as network namespaces.

The real API server has no kubelet in the lab, so nothing would ever give a Pod a network
or an address. This does the part of the kubelet (and a routed CNI) that NetworkPolicy
enforcement depends on, with the lab's own code (``labelwall.lab.sandbox``):

- registers a ``Node`` object for its ``LabNode``, with the node link's addresses
  (``LabNode.addresses``: what the agent maps to the ``host`` identity);
- watches Pods with ``spec.nodeName=NODE`` (the operator's ``Reflector``); for each new pod
  starts a sandbox: its network namespace wired to the node netns, with echo listeners on
  every declared container port (TCP, UDP, SCTP) plus a prober in it, then writes
  ``status.podIP``/``podIPs``/``hostIP`` and phase ``Running`` through the status
  subresource;
- on deletion (``deletionTimestamp`` set, or the object gone) removes the namespace and,
  like the kubelet, finishes the graceful delete with ``gracePeriodSeconds=0`` and a UID
  precondition.

Addresses: the annotation ``lab.labelwall.io/pod-ip`` fixes a pod's IPv4 address (the
upstream e2e model's ipBlock cases need known addresses); otherwise a small IPAM hands out
the next free address of the node's /24 after the last one given (as CNI host-local does,
so a re-created pod gets a new address). IPv4 only.

``probe()`` answers the same requests as ``labelwall.lab.control.Lab.probe`` (``{src, dst,
port, protocol}`` with pod keys ``ns/name``), so ``labelwall.lab.truth.measure`` works on it.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import ipaddress
import logging
import signal
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.client import (
    ApiClient,
    CoreV1Api,
    V1DeleteOptions,
    V1Node,
    V1NodeSpec,
    V1ObjectMeta,
    V1Preconditions,
)
from kubernetes.client.exceptions import ApiException

from labelwall.kube.client import api_client
from labelwall.kube.reflector import Reflector
from labelwall.lab import topology
from labelwall.lab.fanout import fan_out
from labelwall.lab.node import LabError, LabNode
from labelwall.lab.objects import PodPorts
from labelwall.lab.sandbox import PodSandbox

log = logging.getLogger("labelwall.lab.kubelet")

#: A fixed IPv4 address for the pod (else the IPAM picks one).
POD_IP_ANNOTATION = "lab.labelwall.io/pod-ip"
#: Default pod subnet of the lab node (inside the pod CIDR 10.244.0.0/16, away from the
#: e2e model's 10.244.1-3.x and the node's 10.244.0.1).
DEFAULT_SUBNET = "10.244.100.0/24"
#: How often the kubelet re-checks every pod even without a watch event (seconds).
RESYNC_S = 1.0
_MERGE_PATCH = "application/merge-patch+json"


class KubeletError(RuntimeError):
    """A pod could not be started as its spec asks (bad address, name clash)."""


# ---------------------------------------------------------------- addresses


class Ipam:
    """Addresses of one IPv4 subnet: the next free one after the last handed out.

    The network and broadcast addresses and ``.1`` (a gateway by convention) are never
    handed out; addresses fixed by annotation are reserved so the IPAM skips them.
    """

    def __init__(self, subnet: str) -> None:
        self.subnet = ipaddress.IPv4Network(subnet)
        if self.subnet.num_addresses < 4:
            raise LabError(f"subnet {subnet} is too small for pods")
        self._used: set[ipaddress.IPv4Address] = set()
        self._last = self.subnet.network_address + 1

    def _usable(self, ip: ipaddress.IPv4Address) -> bool:
        return ip not in (
            self.subnet.network_address,
            self.subnet.broadcast_address,
            self.subnet.network_address + 1,
        )

    def allocate(self) -> str:
        size = self.subnet.num_addresses
        base = int(self.subnet.network_address)
        start = int(self._last) - base
        for step in range(1, size + 1):
            ip = ipaddress.IPv4Address(base + (start + step) % size)
            if self._usable(ip) and ip not in self._used:
                self._used.add(ip)
                self._last = ip
                return str(ip)
        raise KubeletError(f"no free address left in {self.subnet}")

    def reserve(self, address: str) -> None:
        self._used.add(ipaddress.IPv4Address(address))

    def release(self, address: str) -> None:
        self._used.discard(ipaddress.IPv4Address(address))


# ---------------------------------------------------------------- pods


def declared_ports(obj: Mapping[str, Any]) -> PodPorts:
    """Every containerPort of the pod's containers, by protocol (TCP when unset)."""
    found: dict[str, set[int]] = {"TCP": set(), "UDP": set(), "SCTP": set()}
    for container in (obj.get("spec") or {}).get("containers") or ():
        for port in container.get("ports") or ():
            proto = str(port.get("protocol") or "TCP")
            if proto in found and isinstance(port.get("containerPort"), int):
                found[proto].add(int(port["containerPort"]))
    return PodPorts(*(tuple(sorted(found[p])) for p in ("TCP", "UDP", "SCTP")))


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def _uid(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def _deleting(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


@dataclass(frozen=True)
class RunningPod:
    """One started pod: the Pod object it runs (key, UID), its address and its sandbox."""

    key: str
    uid: str
    ip: str
    sandbox: PodSandbox


class Kubelet:
    """Runs the Pods bound to ``node.name`` in network namespaces wired to ``node.netns``.

    Names of namespaces and host-side veths are ``prefix`` + a hash of the pod's UID, so
    ``topology.cleanup(prefix, [node.netns])`` removes exactly what it made.
    """

    def __init__(
        self,
        node: LabNode,
        *,
        prefix: str,
        subnet: str = DEFAULT_SUBNET,
        client: ApiClient | None = None,
        kubeconfig: str | None = None,
        resync_s: float = RESYNC_S,
    ) -> None:
        if not prefix:
            raise LabError("the kubelet needs a non-empty name prefix")
        self.node = node
        self.prefix = prefix
        self.ipam = Ipam(subnet)
        self.client = client if client is not None else api_client(kubeconfig)
        self.core = CoreV1Api(self.client)
        self.resync_s = resync_s
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards self._running
        self._running: dict[str, RunningPod] = {}
        self._thread: threading.Thread | None = None
        self._failed: dict[str, str] = {}  # pod key -> last start error (logged once)
        self.pods: Reflector[str, Mapping[str, Any]] = Reflector(
            "kubelet-pods",
            self.core.list_pod_for_all_namespaces,
            lambda obj: (_key(obj), obj),
            self._changed.set,
            field_selector=f"spec.nodeName={node.name}",
            resync_s=60.0,
            # Reflector.stop() joins the watch thread, which returns only when the server
            # ends the watch: a short watch keeps stop() (and test teardown) short.
            watch_timeout_s=2,
        )

    # ---- lifecycle ----

    def register_node(self) -> None:
        """Create (or update) the Node object with the node link's addresses, Ready."""
        name, addresses = self.node.name, self.node.addresses
        subnet = str(self.ipam.subnet)
        body = V1Node(
            api_version="v1",
            kind="Node",
            metadata=V1ObjectMeta(name=name, labels={"kubernetes.io/hostname": name}),
            spec=V1NodeSpec(pod_cidr=subnet, pod_cidrs=[subnet]),
        )
        try:
            self.core.create_node(body)
        except ApiException as e:
            if e.status != 409:
                raise
        now = _now()
        status = {
            "status": {
                "addresses": [{"type": "InternalIP", "address": a} for a in addresses]
                + [{"type": "Hostname", "address": name}],
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "labelwall lab kubelet stand-in",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
            }
        }
        self.core.patch_node_status(name, status, _content_type=_MERGE_PATCH)

    def start(self) -> None:
        self.pods.start()
        self._thread = threading.Thread(target=self._loop, name="kubelet", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and remove every pod netns it created (API objects are left)."""
        self._stop.set()
        self._changed.set()
        self.pods.stop()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for key in list(self._running):
            self._teardown(key)

    def __enter__(self) -> Kubelet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the loop ----

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._changed.wait(self.resync_s)
            self._changed.clear()
            if self._stop.is_set() or not self.pods.synced.is_set():
                continue
            try:
                self.sync()
            except Exception:  # an API hiccup must not end the kubelet: retry next turn
                log.exception("kubelet sync failed; retrying")

    def sync(self) -> None:
        """Make the running pods match the watched Pod objects (one pass)."""
        want = self.pods.items()
        for key, have in list(self._running.items()):
            obj = want.get(key)
            if obj is None or _uid(obj) != have.uid or _deleting(obj):
                self._teardown(key)
        for key, obj in sorted(want.items()):
            if _deleting(obj):
                self._finish_delete(obj)
                continue
            running = self._running.get(key)
            if running is None:
                try:
                    self._start_pod(obj)
                    self._failed.pop(key, None)
                except (KubeletError, LabError, ValueError) as e:
                    if self._failed.get(key) != str(e):
                        log.error("pod not started: %s: %s", key, e)
                    self._failed[key] = str(e)
                continue
            ports = declared_ports(obj)
            if ports != running.sandbox.ports:
                running.sandbox.serve(ports)

    def _address(self, obj: Mapping[str, Any]) -> tuple[str, bool]:
        """(IPv4 address, from the annotation?)"""
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        fixed = annotations.get(POD_IP_ANNOTATION)
        if not fixed:
            return self.ipam.allocate(), False
        ip = ipaddress.IPv4Address(fixed)
        if ip not in self.node.pod_cidr_v4 or str(ip) == self.node.host_v4:
            raise KubeletError(f"{POD_IP_ANNOTATION}={fixed}: not a pod address of the lab")
        with self._lock:
            taken = {p.ip for p in self._running.values()}
        if str(ip) in taken:
            raise KubeletError(f"{POD_IP_ANNOTATION}={fixed}: another pod has this address")
        self.ipam.reserve(str(ip))
        return str(ip), True

    def netns_name(self, uid: str) -> str:
        return (
            self.prefix
            + hashlib.sha256(uid.encode()).hexdigest()[: topology.IFNAMSIZ - len(self.prefix)]
        )

    def _start_pod(self, obj: Mapping[str, Any]) -> None:
        key, uid = _key(obj), _uid(obj)
        spec = obj.get("spec") or {}
        if spec.get("hostNetwork"):
            raise KubeletError("hostNetwork pods are not supported by the lab kubelet")
        ip, _ = self._address(obj)
        name = self.netns_name(uid)
        try:
            sandbox = PodSandbox.start(self.node, name, ip, None, declared_ports(obj))
        except BaseException:
            self.ipam.release(ip)
            raise
        running = RunningPod(key, uid, ip, sandbox)
        with self._lock:
            self._running[key] = running
        meta = obj.get("metadata") or {}
        status = {
            "status": {
                "phase": "Running",
                "hostIP": self.node.host_v4,
                "hostIPs": [{"ip": self.node.host_v4}],
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "startTime": _now(),
                "conditions": [
                    {"type": t, "status": "True", "lastTransitionTime": _now()}
                    for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                ],
            }
        }
        try:
            self.core.patch_namespaced_pod_status(
                meta["name"], meta["namespace"], status, _content_type=_MERGE_PATCH
            )
        except ApiException as e:
            if e.status != 404:  # deleted meanwhile: the next pass tears it down
                raise
        log.info("pod running: %s ip=%s netns=%s", key, ip, name)

    def _teardown(self, key: str) -> None:
        with self._lock:
            running = self._running.pop(key, None)
        if running is None:
            return
        running.sandbox.stop()
        self.ipam.release(running.ip)
        log.info("pod stopped: %s netns=%s", key, running.sandbox.name)

    def _finish_delete(self, obj: Mapping[str, Any]) -> None:
        """What the kubelet does once the pod's containers are gone: delete it for good."""
        meta = obj.get("metadata") or {}
        try:
            self.core.delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                grace_period_seconds=0,
                body=V1DeleteOptions(
                    grace_period_seconds=0, preconditions=V1Preconditions(uid=_uid(obj))
                ),
            )
        except ApiException as e:
            if e.status not in (404, 409):  # gone already, or a new pod took the name
                raise

    # ---- what tests and benches use ----

    def running(self) -> dict[str, str]:
        """Pod key -> IPv4 address of every pod running now."""
        with self._lock:
            return {k: p.ip for k, p in self._running.items()}

    def wait_running(
        self, want: Mapping[str, str | None] | Iterable[str], timeout_s: float = 30.0
    ) -> dict[str, str]:
        """Until every pod in ``want`` runs (with the given address, where one is given)
        and no other pod does; returns ``running()``. Raises TimeoutError with the diff."""
        wanted = dict(want) if isinstance(want, Mapping) else dict.fromkeys(want)
        deadline = time.monotonic() + timeout_s
        while True:
            now = self.running()
            ok = now.keys() == wanted.keys() and all(
                ip is None or now[k] == ip for k, ip in wanted.items()
            )
            if ok:
                return now
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"pods not running as wanted after {timeout_s}s: want {wanted}, have {now}"
                    + (f"; errors {self._failed}" if self._failed else "")
                )
            self._changed.set()
            time.sleep(0.02)

    def probe(
        self, requests: Sequence[Mapping[str, Any]], timeout: float = 0.3
    ) -> list[dict[str, Any]]:
        """One outcome per request ``{src, dst, port, protocol}`` (pod keys; ``ip`` overrides
        the destination address); the probes of one source run as one batch inside it."""
        with self._lock:
            running = dict(self._running)
        sandboxes = {k: pod.sandbox for k, pod in running.items()}
        addresses: dict[str, str | None] = {k: pod.ip for k, pod in running.items()}
        return fan_out(requests, timeout, sandboxes, addresses, self.node)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m labelwall.lab.kubelet --node NAME --node-netns NETNS``: run until SIGTERM.

    Creates the node netns (``topology.setup_node``) if it is missing and removes what it made
    on exit. The kubeconfig is $KUBECONFIG (or --kubeconfig).
    """
    parser = argparse.ArgumentParser(prog="python -m labelwall.lab.kubelet")
    parser.add_argument("--node", required=True, help="the Node name pods are bound to")
    parser.add_argument("--node-netns", required=True, help="the lab node's network namespace")
    parser.add_argument("--prefix", default="lwk-", help="name prefix of pod netns and links")
    parser.add_argument("--subnet", default=DEFAULT_SUBNET, help="IPv4 /24 for the IPAM")
    parser.add_argument("--kubeconfig", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    node = LabNode(args.node, args.node_netns, f"{args.prefix}host0")
    node_net = topology.setup_node(node)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    kubelet = Kubelet(node, prefix=args.prefix, subnet=args.subnet, kubeconfig=args.kubeconfig)
    try:
        kubelet.register_node()
        with kubelet:
            stop.wait()
    finally:
        topology.cleanup(args.prefix, [node.netns])
        topology.teardown_node(node_net)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
