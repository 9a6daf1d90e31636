"""TestEnv: run etcd and kube-apiserver on loopback in one directory, and tear them down."""

from __future__ import annotations

import functools
import json
import os
import shutil
import ssl
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from labelwall.testenv.binaries import Binaries
from labelwall.testenv.certs import Pki, write_pki
from labelwall.testenv.kubeconfig import write_cert_kubeconfig
from labelwall.testenv.processes import (
    ProcessFailedError,
    free_port,
    http_ok,
    is_running,
    log_tail,
    spawn,
    stop_pid,
    wait_until,
)

#: A directory holding this file was created by TestEnv and may be removed by it.
MARKER = ".labelwall-testenv"
#: Pids, ports and binaries of a running environment, so another process can stop it.
STATE_FILE = "testenv.json"
#: Service ClusterIPs come from here; pods (10.244.0.0/16) never overlap it.
SERVICE_CIDR = "10.96.0.0/16"
#: The issuer baked into service-account tokens (also their default audience).
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
#: Attempts to start a server when a just-picked free port was taken meanwhile.
_PORT_ATTEMPTS = 3


class TestEnvError(Exception):
    """The environment could not be started, attached to, or used."""

    __test__ = False  # not a pytest test class, despite the name


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int


#: etcd's and the API server's ports inside a private network namespace (nothing clashes).
NETNS_ETCD_PORTS = (2379, 2380)
NETNS_APISERVER_PORT = 6443


@dataclass(frozen=True)
class Placement:
    """Run etcd and kube-apiserver inside a control-plane network namespace.

    ``argv_prefix`` enters it (e.g. a cgroup wrapper plus ``nsenter -t HOLDER -m -n``);
    the API server listens on ``advertise_ip``:6443 there, which nodes reach over their
    underlay and whose address the `kubernetes` Service's endpoints carry. The host
    reaches it through a relay on 127.0.0.1:``host_port`` (labelwall.testenv.relay).
    With a placement the API server also authorises kubelets (Node authorizer,
    NodeRestriction) and calls them with its kubelet client certificate.
    """

    argv_prefix: tuple[str, ...]
    advertise_ip: str
    host_port: int
    extra_sans: tuple[str, ...] = ()


class TestEnv:
    """A running etcd + kube-apiserver pair rooted in ``directory``.

    Everything lives in the directory: PKI, etcd data, logs, kubeconfig and the pid
    state file. ``stop()`` stops both processes (SIGTERM, then SIGKILL) and removes it.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        directory: Path,
        binaries: Binaries,
        pki: Pki,
        ports: Ports,
        etcd_pid: int | None,
        apiserver_pid: int | None,
        placement: Placement | None = None,
    ) -> None:
        self.placement = placement
        self.directory = directory
        self.binaries = binaries
        self.pki = pki
        self.ports = ports
        self.etcd_pid = etcd_pid
        self.apiserver_pid = apiserver_pid
        self._popens: dict[int, subprocess.Popen[bytes]] = {}

    # --- where things are -------------------------------------------------------------

    @property
    def server(self) -> str:
        """The API server URL, e.g. ``https://127.0.0.1:40123``."""
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (client certificate in group system:masters)."""
        return self.directory / "kubeconfig"

    @property
    def logs(self) -> Path:
        return self.directory / "logs"

    # --- lifecycle --------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        directory: Path,
        binaries: Binaries,
        timeout_s: float = 120.0,
        placement: Placement | None = None,
    ) -> TestEnv:
        """Create the PKI, start etcd then kube-apiserver, wait for /readyz, write kubeconfig.

        ``directory`` must be absent or empty; on failure everything started is stopped
        and the directory is removed before the error propagates. ``placement`` runs
        both inside a network namespace (see :class:`Placement`); default: host loopback.
        """
        directory = directory.resolve()
        if directory.exists() and any(directory.iterdir()):
            raise TestEnvError(
                f"{directory} is not empty"
                + (
                    " (an environment may be running: use `testenv down`)"
                    if (directory / MARKER).exists()
                    else ""
                )
            )
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        (directory / MARKER).write_text("created by labelwall.testenv; removed by stop()\n")
        (directory / "logs").mkdir()
        sans = () if placement is None else (placement.advertise_ip, *placement.extra_sans)
        pki = write_pki(directory / "pki", sans)
        env = cls(directory, binaries, pki, Ports(0, 0, 0), None, None, placement)
        try:
            env._start_etcd(timeout_s)
            env.start_apiserver(timeout_s)
            write_cert_kubeconfig(
                env.kubeconfig, env.server, pki.ca_cert, pki.admin_cert, pki.admin_key
            )
        except BaseException:
            env.stop()
            raise
        return env

    @classmethod
    def attach(cls, directory: Path) -> TestEnv:
        """The environment another process started in ``directory`` (from its state file)."""
        directory = directory.resolve()
        try:
            state = json.loads((directory / STATE_FILE).read_text())
        except FileNotFoundError as e:
            raise TestEnvError(f"no environment in {directory} ({STATE_FILE} missing)") from e
        return cls(
            directory,
            Binaries(**{k: Path(v) for k, v in state["binaries"].items()}),
            Pki(**{k: Path(v) for k, v in state["pki"].items()}),
            Ports(**state["ports"]),
            state["etcd_pid"],
            state["apiserver_pid"],
            _placement(state.get("placement")),
        )

    def stop(self, remove: bool = True) -> None:
        """Stop kube-apiserver, then etcd; remove the directory (only if TestEnv made it)."""
        try:
            self.stop_apiserver()
        finally:
            if self.etcd_pid is not None:
                stop_pid(self.etcd_pid, str(self.directory), self._popens.pop(self.etcd_pid, None))
                self.etcd_pid = None
                self._save()
            if remove and (self.directory / MARKER).exists():
                shutil.rmtree(self.directory, ignore_errors=True)

    def stop_apiserver(self) -> None:
        """Stop only kube-apiserver; etcd keeps running and keeps the data."""
        if self.apiserver_pid is None:
            return
        stop_pid(
            self.apiserver_pid, str(self.directory), self._popens.pop(self.apiserver_pid, None)
        )
        self.apiserver_pid = None
        self._save()

    def start_apiserver(self, timeout_s: float = 120.0) -> None:
        """Start kube-apiserver (on the port it had before, if any) and wait for /readyz."""
        if self.apiserver_pid is not None and is_running(self.apiserver_pid):
            raise TestEnvError(f"kube-apiserver already running as pid {self.apiserver_pid}")
        if self.placement is not None:
            self.ports = Ports(
                self.ports.etcd_client, self.ports.etcd_peer, self.placement.host_port
            )
        keep_port = self.ports.apiserver != 0
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            if not keep_port:
                self.ports = Ports(self.ports.etcd_client, self.ports.etcd_peer, free_port())
            log = self.logs / "kube-apiserver.log"
            proc = spawn(self._apiserver_argv(), log)
            self._track("apiserver_pid", proc)
            try:
                wait_until(self._apiserver_ready, proc, "kube-apiserver", log, timeout_s)
                return
            except ProcessFailedError:
                self.stop_apiserver()
                if keep_port or attempt == _PORT_ATTEMPTS or not _port_clash(log):
                    raise

    def restart_apiserver(self, timeout_s: float = 120.0) -> None:
        self.stop_apiserver()
        self.start_apiserver(timeout_s)

    # --- using it ---------------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        stdin: str | None = None,
        kubeconfig: Path | None = None,
        check: bool = True,
        timeout_s: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this server (admin unless ``kubeconfig`` is given)."""
        argv = [
            str(self.binaries.kubectl),
            f"--kubeconfig={kubeconfig or self.kubeconfig}",
            # Discovery cache inside our directory: nothing left behind in ~/.kube.
            f"--cache-dir={self.directory / 'kubectl-cache'}",
            *args,
        ]
        result = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if check and result.returncode != 0:
            raise TestEnvError(
                f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def pids(self) -> list[int]:
        return [p for p in (self.apiserver_pid, self.etcd_pid) if p is not None]

    # --- internals --------------------------------------------------------------------

    def _start_etcd(self, timeout_s: float) -> None:
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            if self.placement is None:
                self.ports = Ports(free_port(), free_port(), self.ports.apiserver)
            else:
                self.ports = Ports(*NETNS_ETCD_PORTS, self.ports.apiserver)
            log = self.logs / "etcd.log"
            proc = spawn(self._etcd_argv(), log)
            self._track("etcd_pid", proc)
            if self.placement is not None:
                # Its loopback is the namespace's, out of the host's reach; the API
                # server's /readyz includes etcd, so readiness is checked there.
                return
            url = f"http://127.0.0.1:{self.ports.etcd_client}/health"
            try:
                wait_until(
                    functools.partial(http_ok, url, expect=b'"health":"true"'),
                    proc,
                    "etcd",
                    log,
                    timeout_s,
                )
                return
            except ProcessFailedError:
                stop_pid(proc.pid, str(self.directory), self._popens.pop(proc.pid, None))
                self.etcd_pid = None
                shutil.rmtree(self.directory / "etcd", ignore_errors=True)
                if attempt == _PORT_ATTEMPTS or not _port_clash(log):
                    raise

    def _etcd_argv(self) -> list[str]:
        client = f"http://127.0.0.1:{self.ports.etcd_client}"
        peer = f"http://127.0.0.1:{self.ports.etcd_peer}"
        return [
            *self._prefix(),
            str(self.binaries.etcd),
            "--name=default",
            f"--data-dir={self.directory / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--initial-cluster-state=new",
            # Test data only: skipping fsync makes writes ~10x faster on a shared disk.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def _apiserver_argv(self) -> list[str]:
        pki = self.pki
        if self.placement is not None:
            return self._netns_apiserver_argv()
        return [
            str(self.binaries.kube_apiserver),
            f"--etcd-servers=http://127.0.0.1:{self.ports.etcd_client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.ports.apiserver}",
            f"--cert-dir={pki.ca_cert.parent}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki.sa_public_key}",
            f"--service-account-signing-key-file={pki.sa_private_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # No controller manager runs, so nothing creates each namespace's `default`
            # ServiceAccount; this admission plugin would reject every pod without it.
            "--disable-admission-plugins=ServiceAccount",
            # The `kubernetes` Service would get 127.0.0.1 endpoints, which the API
            # rejects as loopback; nothing in a kubelet-less cluster needs them.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]

    def _prefix(self) -> list[str]:
        return [] if self.placement is None else list(self.placement.argv_prefix)

    def _netns_apiserver_argv(self) -> list[str]:
        assert self.placement is not None
        pki, ip = self.pki, self.placement.advertise_ip
        return [
            *self._prefix(),
            str(self.binaries.kube_apiserver),
            f"--etcd-servers=http://127.0.0.1:{self.ports.etcd_client}",
            f"--bind-address={ip}",
            f"--advertise-address={ip}",
            f"--secure-port={NETNS_APISERVER_PORT}",
            f"--cert-dir={pki.ca_cert.parent}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            # Kubelets are users system:node:NAME: the Node authorizer and NodeRestriction
            # limit each to its own Node and pods; RBAC covers everyone else.
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={pki.kubelet_client_cert}",
            f"--kubelet-client-key={pki.kubelet_client_key}",
            # Node names resolve nowhere; the InternalIP (--node-ip) is what to dial.
            "--kubelet-preferred-address-types=InternalIP",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki.sa_public_key}",
            f"--service-account-signing-key-file={pki.sa_private_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]

    def _tls(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return ctx

    def _apiserver_ready(self) -> bool:
        # /readyz covers etcd, informer sync and the RBAC bootstrap post-start hook; the
        # `default` namespace is created asynchronously after that, and tests use it.
        ctx = self._tls()
        return http_ok(f"{self.server}/readyz", ctx, b"ok") and http_ok(
            f"{self.server}/api/v1/namespaces/default", ctx
        )

    def _track(self, field: str, proc: subprocess.Popen[bytes]) -> None:
        self._popens[proc.pid] = proc
        setattr(self, field, proc.pid)
        self._save()

    def _save(self) -> None:
        if not self.directory.exists():
            return
        state = {
            "etcd_pid": self.etcd_pid,
            "apiserver_pid": self.apiserver_pid,
            "ports": asdict(self.ports),
            "binaries": {k: str(v) for k, v in asdict(self.binaries).items()},
            "pki": {k: str(v) for k, v in asdict(self.pki).items()},
            "placement": None if self.placement is None else asdict(self.placement),
        }
        tmp = self.directory / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.directory / STATE_FILE)


def _placement(raw: object) -> Placement | None:
    if not isinstance(raw, dict):
        return None
    return Placement(
        argv_prefix=tuple(raw["argv_prefix"]),
        advertise_ip=str(raw["advertise_ip"]),
        host_port=int(raw["host_port"]),
        extra_sans=tuple(raw.get("extra_sans", ())),
    )


def _port_clash(log: Path) -> bool:
    return "address already in use" in log_tail(log, 200)


def describe(env: TestEnv) -> Sequence[str]:
    """Human-readable lines about a running environment (for the CLI)."""
    lines = [
        f"server:     {env.server}",
        f"kubeconfig: {env.kubeconfig}",
        f"pids:       kube-apiserver {env.apiserver_pid}, etcd {env.etcd_pid}",
        f"logs:       {env.logs}",
        f"export KUBECONFIG={env.kubeconfig}",
    ]
    return lines
