"""Run probe requests from many pods at once: one batch per source pod, in parallel."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from labelwall.lab.node import LabNode
from labelwall.lab.prober import Probe, ProbeHelper, Proto
from labelwall.lab.sandbox import PodSandbox

PROTOCOLS: dict[str, Proto] = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}


def node_source(node: LabNode) -> str:
    """The ``src`` of a probe sent by the node itself (the kubelet's probe path)."""
    return f"node/{node.name}"


def fan_out(
    requests: Sequence[Mapping[str, Any]],
    timeout: float,
    sandboxes: Mapping[str, PodSandbox],
    addresses: Mapping[str, str | None],
    node: LabNode,
    node_prober: ProbeHelper | None = None,
) -> list[dict[str, Any]]:
    """One outcome per request ``{src, dst, port, protocol}`` (pod keys; ``ip`` overrides
    the destination address), in request order. A probe to an unknown destination goes
    to ``node.nowhere_v4``: it fails like a connection to a pod that does not exist and
    never leaves the lab. ``src`` ``node_source(node)``: sent by ``node_prober`` (a
    helper in the node's netns) from the node's own IPv4 address."""
    by_src: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        by_src.setdefault(str(r["src"]), []).append(i)
    out: list[dict[str, Any]] = [{} for _ in requests]

    def run(src: str, idxs: list[int]) -> None:
        from_node = src == node_source(node) and node_prober is not None
        sandbox = sandboxes.get(src)
        if sandbox is None and not from_node:
            for i in idxs:
                out[i] = {"outcome": "error", "detail": f"no running pod {src}"}
            return
        probes = []
        for i in idxs:
            r = requests[i]
            ip = r.get("ip") or addresses.get(str(r["dst"])) or node.nowhere_v4
            probes.append(
                Probe(PROTOCOLS[str(r["protocol"])], ip, int(r["port"]), timeout,
                      node.host_v4 if from_node else None)
            )  # fmt: skip
        if from_node:
            assert node_prober is not None
            results = node_prober.probe(probes)
        else:
            assert sandbox is not None
            results = sandbox.probe(probes)
        for i, res in zip(idxs, results, strict=True):
            out[i] = {"outcome": res.outcome, "rtt_ms": res.rtt_ms, "detail": res.detail}

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(by_src)))) as pool:
        for f in [pool.submit(run, s, idxs) for s, idxs in by_src.items()]:
            f.result()
    return out
