"""A TCP relay from the host's loopback into a private network namespace.

``python -m labelwall.testenv.relay PORTFILE NETNS_PID TARGET_IP TARGET_PORT [MARKER]``
listens on 127.0.0.1 (a port the kernel picks, written to PORTFILE), then joins the
network namespace of NETNS_PID with setns(2): the listening socket stays in the host's
namespace, every socket made afterwards (the outgoing connections) is in the target's.
kubectl and helm on the host reach the control plane's API server this way without any
change to the host's network. The relay only copies bytes (TLS is end to end).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import sys
import threading

_CLONE_NEWNET = 0x40000000
_BUF = 65536


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(_BUF):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            with contextlib.suppress(OSError):
                s.shutdown(how)


def _serve(client: socket.socket, target: tuple[str, int]) -> None:
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def main(argv: list[str]) -> int:
    port_file, netns_pid, target_ip, target_port = argv[:4]
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    port = listener.getsockname()[1]
    _setns(f"/proc/{int(netns_pid)}/ns/net")
    tmp = f"{port_file}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{port}\n")
    os.replace(tmp, port_file)
    target = (target_ip, int(target_port))
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_serve, args=(client, target), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
