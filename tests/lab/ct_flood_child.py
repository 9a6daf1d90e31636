"""A lab of its own where one pod floods new flows while another holds an idle connection.

Run by tests/lab/test_ct_flood_lab.py as a child process in a private mount namespace
with its own bpffs (the map sizes here are small, and the session lab's pins have the
default sizes: one bpffs cannot hold both). Prints one JSON object with what it measured;
the lab (namespaces, agent, pins) is removed in a finally.

    python tests/lab/ct_flood_child.py ROOT PREFIX CONFIG_JSON

Pods (lab namespace ``ct``): ``victim`` is ingress-isolated (admits nothing) and holds an
idle TCP connection to ``server``, whose answer only conntrack can let in; ``flooder`` is
egress-isolated, allowed any UDP to ``sink``, so every flow it sends is tracked at its
veth. Phase 1: FLOWS unanswered datagrams, one new flow each (sink ports 1..FLOWS).
Phase 2: FLOWS datagrams from FLOWS source ports to an echo server on ``sink``: every one
is answered, so every flow asks to be promoted at both veths. Then the server answers the
victim. Traffic only between these namespaces; both phases bounded in count and time.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from labelwall.lab import topology
from labelwall.lab.control import Lab, down
from labelwall.lab.layout import LabPaths
from labelwall.manifests import SourceDoc

FLOWS = 20_000
BUDGET_S = 20.0  # both phases together stop after this, whatever they sent
SERVER_PORT, ECHO_PORT = 7000, 7001
ADDRS = {"victim": "10.244.40.1", "server": "10.244.40.2", "flooder": "10.244.40.3",
         "sink": "10.244.40.4"}  # fmt: skip


def _pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ct", "labels": {"app": name}},
        "spec": {"containers": [{"name": "c"}]},
        "status": {"podIP": ADDRS[name], "podIPs": [{"ip": ADDRS[name]}]},
    }


OBJECTS: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ct"}},
    *(_pod(n) for n in ADDRS),
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "victim-admits-nothing", "namespace": "ct"},
        "spec": {"podSelector": {"matchLabels": {"app": "victim"}}, "policyTypes": ["Ingress"]},
    },
    {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "flooder-udp-to-sink", "namespace": "ct"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "flooder"}},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"podSelector": {"matchLabels": {"app": "sink"}}}],
                    "ports": [{"protocol": "UDP"}],
                }
            ],
        },
    },
]


def _metrics(lab: Lab) -> str:
    with topology.in_netns(lab.paths.node_netns):
        body: bytes = urllib.request.urlopen("http://127.0.0.1:9962/metrics", timeout=5).read()
    return body.decode()


def _sample(text: str, name: str, *labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(lbl in line for lbl in labels):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _echo(sock: socket.socket, stop: threading.Event, counts: dict[str, int]) -> None:
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            data, peer = sock.recvfrom(64)
        except TimeoutError:
            continue
        sock.sendto(data, peer)
        counts["echoed"] += 1


def scenario(lab: Lab) -> dict[str, Any]:
    ns = lab.paths.pod_netns
    out: dict[str, Any] = {}
    with topology.in_netns(ns("ct/server")):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with topology.in_netns(ns("ct/victim")):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with topology.in_netns(ns("ct/sink")):
        echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with topology.in_netns(ns("ct/flooder")):
        blast = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stop = threading.Event()
    counts = {"echoed": 0}
    echo_thread = threading.Thread(target=_echo, args=(echo, stop, counts), daemon=True)
    conn = None
    try:
        listener.bind((ADDRS["server"], SERVER_PORT))
        listener.listen(1)
        listener.settimeout(5)
        client.settimeout(5)
        client.connect((ADDRS["server"], SERVER_PORT))
        conn, _ = listener.accept()
        client.sendall(b"question")
        assert conn.recv(64) == b"question"
        echo.bind((ADDRS["sink"], ECHO_PORT))
        echo_thread.start()
        # phase 2 binds 20000..20000+FLOWS, which crosses the ephemeral range
        # (32768..): an autobound blast socket could hold one of those ports
        blast.bind((ADDRS["flooder"], 20000 - 1))

        start = time.monotonic()
        sent = 0
        for port in range(1, FLOWS + 1):  # phase 1: nobody answers
            if time.monotonic() - start > BUDGET_S / 2:
                break
            blast.sendto(b"x", (ADDRS["sink"], port))
            sent += 1
        with topology.in_netns(ns("ct/flooder")):
            for i in range(FLOWS):  # phase 2: every flow answered (a promotion each)
                if time.monotonic() - start > BUDGET_S:
                    break
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    s.bind((ADDRS["flooder"], 20000 + i))
                    s.sendto(b"y", (ADDRS["sink"], ECHO_PORT))
                finally:
                    s.close()
                sent += 1
        out["flood_flows"] = sent
        out["flood_seconds"] = round(time.monotonic() - start, 2)
        time.sleep(0.5)  # the last echoes
        out["echoed"] = counts["echoed"]
        text = _metrics(lab)
        out["pressure"] = {
            m: _sample(text, "labelwall_bpf_map_pressure", f'map="{m}"')
            for m in ("lw_ct_v3", "lw_ct_new_v1")
        }
        out["ct_unpromoted_packets"] = _sample(
            text, "labelwall_datapath_packets_total", 'reason="ct_unpromoted"'
        )
        # the delayed answer of the idle connection: only conntrack lets it in
        conn.sendall(b"answer")
        try:
            out["answer"] = client.recv(64).decode()
        except TimeoutError:
            out["answer"] = None
        return out
    finally:
        stop.set()
        if echo_thread.is_alive():
            echo_thread.join(2)
        for sock in (client, listener, echo, blast, conn):
            if sock is not None:
                sock.close()


def main(argv: list[str]) -> int:
    root, prefix, config = argv
    paths = LabPaths.from_env(root, prefix)
    config_file = Path(root) / "agent-config.json"
    lab = Lab(paths)
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        config_file.write_text(config)  # JSON is YAML
        lab.up([SourceDoc("ct-flood", i, o) for i, o in enumerate(OBJECTS)], 9962, config_file)
        result = scenario(lab)
    finally:
        down(paths)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
