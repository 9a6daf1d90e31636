"""The prober: a helper process inside a pod's netns that runs echo servers and probes.

``ProbeHelper.start(netns)`` runs ``python -m labelwall.lab.prober --netns NAME`` (it
calls setns(2) itself before opening any socket). The helper is long-lived and speaks
line-oriented JSON on stdin/stdout: ``serve`` starts TCP/UDP (and raw SCTP) echo servers
on every address of the netns, ``probe`` runs a batch of ``Probe``s concurrently and
answers once for the batch. It exits when its stdin closes, so a crashed parent leaves
no helper behind. Where the netns comes from is ``labelwall.lab.topology``'s job.

Usage::

    with ProbeHelper.start(b.name) as server, ProbeHelper.start(a.name) as client:
        server.serve(tcp=[80], udp=[80])
        [r] = client.probe([Probe("tcp", "10.244.1.3", 80)])
        assert r.ok
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import IO, Any, Literal

from pyroute2 import netns as _netns

from labelwall.lab.node import LabError

Proto = Literal["tcp", "udp", "sctp"]
Outcome = Literal["ok", "timeout", "refused", "unreachable", "error"]


@dataclass(frozen=True)
class Probe:
    """One connection attempt: TCP connect + echo, or UDP/SCTP datagram + echo."""

    proto: Proto
    dst: str
    port: int
    timeout: float = 0.3  # seconds; a dropped packet shows up as "timeout"
    src: str | None = None  # bind to this source address (host probes use the node's addresses)


@dataclass(frozen=True)
class ProbeResult:
    probe: Probe
    outcome: Outcome
    rtt_ms: float
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


class ProbeHelper:
    """A long-lived helper process inside one netns: echo servers and a prober.

    Commands go as JSON lines on its stdin; each gets one JSON line back. Not thread
    safe: one caller thread per helper.
    """

    def __init__(self, netns: str | None, proc: subprocess.Popen[str]) -> None:
        self.netns = netns
        self.proc = proc

    @classmethod
    def start(cls, netns: str | None) -> ProbeHelper:
        argv = [sys.executable, "-m", "labelwall.lab.prober"]
        if netns is not None:
            argv += ["--netns", netns]
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        helper = cls(netns, proc)
        try:
            helper._call({"op": "ping"}, timeout=10.0)
        except BaseException:
            helper.close()
            raise
        return helper

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _call(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        if stdin is None or stdout is None or self.proc.poll() is not None:
            raise LabError(f"probe helper in {self.netns} is not running")
        stdin.write(json.dumps(request) + "\n")
        stdin.flush()
        ready, _, _ = select.select([stdout], [], [], timeout)
        if not ready:
            raise LabError(
                f"probe helper in {self.netns}: no answer to {request['op']} in {timeout}s"
            )
        line = stdout.readline()
        if not line:
            raise LabError(f"probe helper in {self.netns} exited (code {self.proc.poll()})")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise LabError(f"probe helper in {self.netns}: {answer['error']}")
        return answer

    def serve(
        self, tcp: Sequence[int] = (), udp: Sequence[int] = (), sctp: Sequence[int] = ()
    ) -> None:
        """Start echo servers on all addresses of the netns (IPv4 and IPv6). Idempotent
        per port; servers run until the helper closes."""
        self._call({"op": "serve", "tcp": list(tcp), "udp": list(udp), "sctp": list(sctp)}, 10)

    def probe(self, probes: Sequence[Probe]) -> list[ProbeResult]:
        """Run ``probes`` concurrently; one result per probe, in order. Bounded by the
        largest probe timeout (plus process overhead)."""
        if not probes:
            return []
        wait = max(p.timeout for p in probes) * (1 + len(probes) // _PROBE_WORKERS) + 10
        answer = self._call({"op": "probe", "probes": [asdict(p) for p in probes]}, wait)
        return [
            ProbeResult(p, r["outcome"], r["rtt_ms"], r.get("detail", ""))
            for p, r in zip(probes, answer["results"], strict=True)
        ]

    def close(self) -> None:
        """Stop the helper (EOF, then SIGKILL after 2 s) and reap it."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def __enter__(self) -> ProbeHelper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- the helper process

_PROBE_WORKERS = 64
_ECHO_IDLE_S = 5.0  # an idle echo connection is closed after this many seconds
_IPPROTO_SCTP = 132
_SCTP_INIT = 1
_SCTP_INIT_ACK = 2


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)  # Castagnoli, reflected
        table.append(c)
    return tuple(table)


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC32c (RFC 9260 appendix A): the SCTP checksum; the stdlib has only CRC32."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _sctp_packet(sport: int, dport: int, vtag: int, chunk_type: int, init_tag: int) -> bytes:
    """A minimal SCTP packet with one INIT / INIT-ACK chunk (RFC 9260 §3.3.2): ports,
    verification tag and chunk fields in network byte order; the CRC32c checksum is
    stored little-endian, as Linux's sctp_compute_cksum() does."""
    # chunk: type, flags, length; initiate tag, a_rwnd, out streams, in streams, initial TSN
    chunk = struct.pack("!BBHIIHHI", chunk_type, 0, 20, init_tag, 65536, 1, 1, init_tag)
    header = struct.pack("!HHI", sport, dport, vtag)
    checksum = struct.pack("<I", crc32c(header + b"\0\0\0\0" + chunk))
    return header + checksum + chunk


@dataclass(frozen=True)
class _SctpChunk:
    """The fields of a raw-socket SCTP read that the INIT / INIT-ACK exchange uses."""

    sport: int
    dport: int
    vtag: int
    ctype: int
    init_tag: int


def _parse_sctp(data: bytes, family: socket.AddressFamily) -> _SctpChunk | None:
    """The common header and first chunk of a raw-socket read, or None."""
    if family == socket.AF_INET:  # IPv4 raw sockets deliver the IP header too
        if len(data) < 20:
            return None
        data = data[(data[0] & 0x0F) * 4 :]
    if len(data) < 20:
        return None
    sport, dport, vtag, _crc, ctype, _fl, _ln, itag = struct.unpack("!HHIIBBHI", data[:20])
    return _SctpChunk(sport, dport, vtag, ctype, itag)


def _is_our_init_ack(
    chunk: _SctpChunk | None, peer: str, dst: str, port: int, sport: int, tag: int
) -> bool:
    """Whether a read is the INIT-ACK answering our INIT to ``dst``:``port``.

    Every raw SCTP socket in the namespace sees every SCTP packet, and concurrent probes
    from one pod all target the same port. Ports alone are not enough (two probes can draw
    the same source port, and then one probe's answer would count for the other): the
    answer must also come from the probed address and carry our initiate tag as its
    verification tag (RFC 9260 §8.5), which is 32 random bits per probe.
    """
    return (
        chunk is not None
        and chunk.ctype == _SCTP_INIT_ACK
        and (chunk.sport, chunk.dport) == (port, sport)
        and chunk.vtag == tag
        and socket.inet_pton(_family(peer), peer) == socket.inet_pton(_family(dst), dst)
    )


class _SourcePorts:
    """Source ports for UDP and SCTP probes: each helper walks the ephemeral range in order
    from a random start, so a port repeats only after 28 000 probes from one pod.

    The kernel picks a random port for an unbound UDP socket (and SCTP here is raw, so
    we pick). A port reused within the conntrack timeout (60 s for UDP/SCTP) would make
    the new probe the continuation of an old flow that an earlier policy allowed, and
    the probe would measure that policy instead of the current one: a probe must be a
    new connection, as the upstream e2e tests assume.
    """

    LOW, COUNT = 32768, 28000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = int.from_bytes(os.urandom(2), "big") % self.COUNT

    def take(self) -> int:
        with self._lock:
            port = self.LOW + self._next
            self._next = (self._next + 1) % self.COUNT
            return port


_SOURCE_PORTS = _SourcePorts()


def _bind_fresh_port(s: socket.socket, src: str | None, fam: socket.AddressFamily) -> int:
    """Bind ``s`` to the next free source port of the sequence (skip ports in use)."""
    host = src or ("::" if fam == socket.AF_INET6 else "0.0.0.0")
    for _ in range(64):
        port = _SOURCE_PORTS.take()
        try:
            s.bind((host, port))
            return port
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, "no free source port in 64 tries")


@dataclass
class _HelperState:
    tcp: dict[int, socket.socket] = field(default_factory=dict)
    udp: dict[int, socket.socket] = field(default_factory=dict)
    sctp: set[int] = field(default_factory=set)
    sctp_started: bool = False


def _dual_stack(kind: socket.SocketKind, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 arrives v4-mapped
    s.bind(("::", port))
    return s


def _echo_conn(conn: socket.socket) -> None:
    with conn:
        conn.settimeout(_ECHO_IDLE_S)
        with contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)


def _tcp_server(s: socket.socket) -> None:
    s.listen(512)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=_echo_conn, args=(conn,), daemon=True).start()


def _udp_server(s: socket.socket) -> None:
    while True:
        data, peer = s.recvfrom(65536)
        with contextlib.suppress(OSError):
            s.sendto(data, peer)


def _sctp_server(state: _HelperState, family: socket.AddressFamily) -> None:
    """Answer an SCTP INIT to a served port with an INIT-ACK (raw sockets; no SCTP stack)."""
    s = socket.socket(family, socket.SOCK_RAW, _IPPROTO_SCTP)
    while True:
        data, peer = s.recvfrom(65536)
        got = _parse_sctp(data, family)
        if got is not None and got.ctype == _SCTP_INIT and got.dport in state.sctp:
            reply = _sctp_packet(
                got.dport, got.sport, got.init_tag, _SCTP_INIT_ACK, got.init_tag ^ 0x5A5A5A5A
            )
            with contextlib.suppress(OSError):
                s.sendto(reply, (peer[0], 0))


def _serve(state: _HelperState, request: dict[str, Any]) -> dict[str, Any]:
    for port in request.get("tcp", []):
        if port not in state.tcp:
            state.tcp[port] = _dual_stack(socket.SOCK_STREAM, port)
            threading.Thread(target=_tcp_server, args=(state.tcp[port],), daemon=True).start()
    for port in request.get("udp", []):
        if port not in state.udp:
            state.udp[port] = _dual_stack(socket.SOCK_DGRAM, port)
            threading.Thread(target=_udp_server, args=(state.udp[port],), daemon=True).start()
    state.sctp.update(request.get("sctp", []))
    if state.sctp and not state.sctp_started:
        state.sctp_started = True
        for fam in (socket.AF_INET, socket.AF_INET6):
            threading.Thread(target=_sctp_server, args=(state, fam), daemon=True).start()
    return {"ok": True}


def _probe_one(p: dict[str, Any]) -> dict[str, Any]:
    proto, dst, port = p["proto"], p["dst"], int(p["port"])
    timeout, src = float(p["timeout"]), p.get("src")
    fam = _family(dst)
    nonce = os.urandom(8)
    start = time.monotonic()

    def result(outcome: str, detail: str = "") -> dict[str, Any]:
        rtt = (time.monotonic() - start) * 1000
        return {"outcome": outcome, "rtt_ms": round(rtt, 3), "detail": detail}

    try:
        if proto == "tcp":
            with socket.socket(fam, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                if src:
                    s.bind((src, 0))
                s.connect((dst, port))
                s.sendall(nonce)
                got = b""
                while len(got) < len(nonce):
                    chunk = s.recv(64)
                    if not chunk:
                        return result("error", "connection closed before the echo")
                    got += chunk
                return result("ok" if got == nonce else "error")
        if proto == "udp":
            with socket.socket(fam, socket.SOCK_DGRAM) as s:
                s.settimeout(timeout)
                _bind_fresh_port(s, src, fam)
                s.connect((dst, port))
                s.send(nonce)
                while True:  # skip stray datagrams until the deadline
                    s.settimeout(max(0.001, timeout - (time.monotonic() - start)))
                    if s.recv(65536) == nonce:
                        return result("ok")
        if proto == "sctp":
            return _probe_sctp(fam, dst, port, timeout, src, start, result)
        return result("error", f"unknown protocol {proto}")
    except TimeoutError:
        return result("timeout")
    except ConnectionRefusedError:
        return result("refused")
    except OSError as e:
        if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return result("unreachable", str(e))
        return result("error", str(e))


def _probe_sctp(
    fam: socket.AddressFamily,
    dst: str,
    port: int,
    timeout: float,
    src: str | None,
    start: float,
    result: Any,
) -> dict[str, Any]:
    tag = int.from_bytes(os.urandom(4), "big") | 1
    sport = _SOURCE_PORTS.take()  # nothing binds SCTP ports here: raw sockets
    with socket.socket(fam, socket.SOCK_RAW, _IPPROTO_SCTP) as s:
        if src:
            s.bind((src, 0))
        s.sendto(_sctp_packet(sport, port, 0, _SCTP_INIT, tag), (dst, 0))
        while True:
            left = timeout - (time.monotonic() - start)
            if left <= 0:
                return dict(result("timeout"))
            s.settimeout(left)
            data, peer = s.recvfrom(65536)
            if _is_our_init_ack(_parse_sctp(data, fam), peer[0], dst, port, sport, tag):
                return dict(result("ok"))


def _helper_main(netns: str | None, stdin: IO[str], stdout: IO[str]) -> int:
    if netns is not None:
        _netns.setns(netns, flags=0)  # before any socket: the whole process moves
    state = _HelperState()
    pool = ThreadPoolExecutor(max_workers=_PROBE_WORKERS)
    for line in stdin:
        try:
            request = json.loads(line)
            op = request.get("op")
            if op == "ping":
                answer: dict[str, Any] = {"ok": True, "pid": os.getpid()}
            elif op == "serve":
                answer = _serve(state, request)
            elif op == "probe":
                answer = {"results": list(pool.map(_probe_one, request["probes"]))}
            else:
                answer = {"error": f"unknown op {op!r}"}
        except Exception as e:  # report to the caller; the helper keeps serving
            answer = {"error": f"{type(e).__name__}: {e}"}
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()
    pool.shutdown(wait=False, cancel_futures=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labelwall.lab.prober")
    parser.add_argument("--netns", default=None, help="enter this netns first")
    args = parser.parse_args(argv)
    return _helper_main(args.netns, sys.stdin, sys.stdout)


if __name__ == "__main__":
    # Daemon server threads may still block in accept(); exit without joining them.
    code = main()
    sys.stdout.flush()
    os._exit(code)
