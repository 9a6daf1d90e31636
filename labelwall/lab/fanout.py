"""Run probe requests from many pods at once: one batch per source pod, in parallel."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from labelwall.lab import netns

PROTOCOLS: dict[str, netns.Proto] = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
#: Where a probe to an unknown destination goes: inside the pod CIDR, held by no pod, so
#: the probe fails like a connection to a pod that does not exist (never leaves the lab).
NOWHERE = "10.244.255.255"


@dataclass(frozen=True)
class Prober:
    """A source pod's persistent in-netns helper; ``lock`` serialises its command pipe."""

    lock: threading.Lock
    helper: netns.Agent


def fan_out(
    requests: Sequence[Mapping[str, Any]],
    timeout: float,
    probers: Mapping[str, Prober],
    addresses: Mapping[str, str | None],
) -> list[dict[str, Any]]:
    """One outcome per request ``{src, dst, port, protocol}`` (pod keys; ``ip`` overrides
    the destination address), in request order."""
    by_src: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        by_src.setdefault(str(r["src"]), []).append(i)
    out: list[dict[str, Any]] = [{} for _ in requests]

    def run(src: str, idxs: list[int]) -> None:
        prober = probers.get(src)
        if prober is None:
            for i in idxs:
                out[i] = {"outcome": "error", "detail": f"no running pod {src}"}
            return
        probes = []
        for i in idxs:
            r = requests[i]
            ip = r.get("ip") or addresses.get(str(r["dst"]))
            probes.append(
                netns.Probe(PROTOCOLS[str(r["protocol"])], ip or NOWHERE, int(r["port"]), timeout)
            )
        with prober.lock:
            results = prober.helper.probe(probes)
        for i, res in zip(idxs, results, strict=True):
            out[i] = {"outcome": res.outcome, "rtt_ms": res.rtt_ms, "detail": res.detail}

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(by_src)))) as pool:
        for f in [pool.submit(run, s, idxs) for s, idxs in by_src.items()]:
            f.result()
    return out
