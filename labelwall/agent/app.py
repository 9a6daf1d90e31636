"""The node agent's wiring: config, source, datapath, metrics and health endpoints; run the loop.

The command line that fills ``AgentOptions`` is ``labelwall/cli/agent.py``.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import Gauge, start_http_server

from labelwall.agent import logs
from labelwall.agent.dirsource import DirSource
from labelwall.agent.flowring import DEFAULT_BUFFER
from labelwall.agent.loop import DRIFT_INTERVAL_S, Agent
from labelwall.agent.metrics import AgentMetrics
from labelwall.agent.observation import start_observation
from labelwall.agent.routes import HostRoutes
from labelwall.config import Config, load_config
from labelwall.errors import FieldError, InvalidInputError
from labelwall.policy.compile import CompileOptions
from labelwall.source import ClusterSource

if TYPE_CHECKING:
    from labelwall.datapath.facade import Datapath
    from labelwall.datapath.netfilter import ServiceHook

log = logging.getLogger("labelwall.agent")


def _usage(msg: str) -> InvalidInputError:
    return InvalidInputError([FieldError("<command line>", None, "labelwall agent", "", msg)])


def make_source(spec: str, node: str | None = None) -> tuple[ClusterSource, bool]:
    """The source and whether it publishes identities (Kubernetes) or not (a directory)."""
    if spec.startswith("dir:") and len(spec) > 4:
        return DirSource(spec[4:]), False
    if spec == "kubernetes":
        # Imported here: the Kubernetes client is ~900 modules that a lab agent (dir:PATH)
        # must not carry in its heap (see commit f21ce42: gc.freeze and start-up time).
        from labelwall.kube.source import KubernetesSource

        return KubernetesSource(node=node), True
    raise _usage(f"--source {spec!r}: expected dir:PATH or kubernetes")


def serve_health(port: int, agent: Agent, max_age_s: float) -> ThreadingHTTPServer:
    """GET /healthz: 200 while the loop turned within ``max_age_s``, 503 otherwise."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            age = agent.clock() - agent.heartbeat
            ok = self.path.startswith("/healthz") and age <= max_age_s
            body = (b"ok\n" if ok else b"stale\n") if self.path.startswith("/healthz") else b""
            self.send_response(200 if ok else (503 if body else 404))
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("", port), Handler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server


def map_sizes(config: Config) -> dict[str, int]:
    """The config's mapSizes as {pinned map name: max_entries}."""
    from labelwall.datapath import mapspecs

    ms = config.map_sizes
    return {
        mapspecs.ENDPOINTS_MAP.name: ms.endpoints,
        mapspecs.EPADDR_MAP.name: 2 * ms.endpoints,  # one IPv4 + one IPv6 address per pod
        mapspecs.SUBJECTS_MAP.name: ms.subjects,
        mapspecs.POLICY_MAP.name: ms.policy,
        mapspecs.POLOVF_MAP.name: ms.policy,  # the overflow trie holds a subset of the policy
        mapspecs.IPCACHE_MAP.name: ms.ipcache,
        mapspecs.CIDRS_MAP.name: ms.cidrs,
        mapspecs.PORTS_MAP.name: ms.ports,
        mapspecs.CT_MAP.name: ms.conntrack,
        mapspecs.CT_NEW_MAP.name: ms.conntrack_new,
    }


def enable_services(dp: Datapath, config: Config, nf_object: Path, metrics: AgentMetrics) -> Gauge:
    """Egress through Services judged after DNAT (datapath/netfilter.py), or say why not.

    Idempotent (pinned links are kept across restarts). Where the kernel refuses the
    netfilter program, Service addresses stay judged at tc (fail closed): one warning and
    ``labelwall_agent_service_egress_after_dnat`` 0.
    """
    gauge = Gauge(
        "labelwall_agent_service_egress_after_dnat",
        "1: egress to serviceCIDRs is judged on the translated (backend) destination; "
        "0: on the Service address itself (no netfilter program: kernel < 6.6, or no CIDRs)",
        registry=metrics.registry,
    )
    hook = dp.enable_services(config.service_cidrs, nf_object)
    gauge.set(1 if hook.active else 0)
    _log_services(hook)
    return gauge


def watch_services(
    dp: Datapath, config: Config, nf_object: Path, gauge: Gauge, stop: threading.Event,
    interval_s: float,
) -> threading.Thread:  # fmt: skip
    """Every ``interval_s``: while Service CIDRs are written, both netfilter links must be
    attached. If one went (its pin removed by hand), the CIDRs are emptied first (tc judges
    Service addresses itself again: fail closed, never unjudged), then re-attached."""

    def run() -> None:
        while not stop.wait(interval_s):
            try:
                if not dp.service_cidrs() or dp.services_attached():
                    continue
                log.warning("a netfilter link of egress through Services is gone; re-attaching")
                dp.disable_services()
                hook = dp.enable_services(config.service_cidrs, nf_object)
                gauge.set(1 if hook.active else 0)
                _log_services(hook)
            except OSError as e:
                log.error("checking the netfilter links failed", extra={"error": str(e)})

    thread = threading.Thread(target=run, name="service-links", daemon=True)
    thread.start()
    return thread


def _log_services(hook: ServiceHook) -> None:
    if hook.active:
        log.info(
            "egress to Services judged after DNAT",
            extra={"service_cidrs": [str(c) for c in hook.cidrs], "links_created": hook.created},
        )
    else:
        log.warning(
            "egress to Services is judged on the Service address, not the backend pod "
            "(denied unless an ipBlock admits it)",
            extra={"reason": hook.reason},
        )


def build_agent(
    config: Config,
    source_spec: str,
    node: str | None,
    drift_s: float,
    stop: threading.Event | None = None,
    flows_port: int = 0,
    flows_buffer: int = DEFAULT_BUFFER,
) -> tuple[Agent, Any]:
    """The agent and its datapath; with ``stop``, also the netfilter-link watcher until set."""
    from labelwall.datapath import codecs, mapspecs, sizing
    from labelwall.datapath.facade import Datapath

    source, published_mode = make_source(source_spec, node)
    defines = sizing.defines_for(map_sizes(config))
    maps = mapspecs.resized(defines)
    ct = config.conntrack
    dp_config = codecs.DatapathConfig(
        ct_promote_per_s=ct.promote_per_second, ct_promote_burst=ct.promote_burst
    )
    dp = Datapath.open(sizing.object_for(defines), config=dp_config, maps=maps)
    metrics = AgentMetrics(max_entries={m.name: m.max_entries for m in maps})
    nf_object = sizing.object_for(defines, netfilter=True)
    services = enable_services(dp, config, nf_object, metrics)
    if stop is not None:
        watch_services(dp, config, nf_object, services, stop, max(1.0, drift_s))
    metrics.add_datapath(dp.counters)
    metrics.add_kernel_written(lambda spec: len(dp.io.items(spec)))
    options = CompileOptions(
        exclude=frozenset(config.identity.exclude_labels),
        audit=config.audit,
        audit_namespaces=frozenset(config.audit_namespaces),
        # Only this node's addresses are `host`; the rest are `remote-node` (under policy).
        node=node,
    )
    agent = Agent(
        source,
        dp,
        HostRoutes(),
        options=options,
        node=node,
        grace_s=float(config.identity.gc_grace_period_seconds),
        published_mode=published_mode,
        metrics=metrics,
        drift_interval_s=drift_s,
    )
    start_observation(agent, dp, node or os.uname().nodename, flows_port, flows_buffer)
    return agent, dp


@dataclass(frozen=True)
class AgentOptions:
    """What ``labelwall agent`` was asked to do (``None`` = take it from the config)."""

    config: str | None = None
    cleanup: bool = False
    source: str | None = None
    node: str | None = None
    netns: str | None = None
    drift_interval: float = DRIFT_INTERVAL_S
    metrics_port: int | None = None
    health_port: int | None = None
    flows_port: int = 0
    flows_buffer: int = DEFAULT_BUFFER


def run(args: AgentOptions) -> int:
    """Run the agent until SIGTERM/SIGINT (or remove labelwall from the node: ``cleanup``)."""
    config = load_config(args.config)
    logs.setup(config.log_level)
    if os.geteuid() != 0:
        raise _usage("the agent needs root (CAP_BPF and CAP_NET_ADMIN)")
    if args.netns:
        from pyroute2 import netns as _netns

        _netns.setns(args.netns, flags=0)  # before any socket: the whole process moves
    if args.cleanup:
        from labelwall.datapath.uninstall import remove_all

        removed = remove_all()
        print(f"detached from {len(removed.links)} links: {' '.join(removed.links) or '-'}")
        print(f"removed {len(removed.pins)} pins")
        return 0
    if not args.source:
        raise _usage("--source is required (dir:PATH or kubernetes), unless --cleanup")
    node = config.agent.node_name if args.node is None else args.node
    stop = threading.Event()
    agent, dp = build_agent(
        config,
        args.source,
        node or None,
        args.drift_interval,
        stop,
        flows_port=args.flows_port,
        flows_buffer=args.flows_buffer,
    )
    metrics_port = config.agent.metrics_port if args.metrics_port is None else args.metrics_port
    health_port = config.agent.health_port if args.health_port is None else args.health_port
    if metrics_port:
        start_http_server(metrics_port, registry=agent.metrics.registry)
    if health_port:
        serve_health(health_port, agent, max(5.0, 5 * args.drift_interval))

    def _stop(signum: int, _frame: Any) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info(
        "agent starting",
        extra={
            "source": args.source,
            "node": node or "*",
            "netns": args.netns or "",
            "metrics_port": metrics_port,
            "pid": os.getpid(),
        },
    )
    # Everything alive now (modules, the loaded BPF object, the config) lives as long as
    # the process: move it out of the collector's generations, so a full collection walks
    # only what the loop allocates. Without this, a gen-2 pass over ~170k start-up objects
    # paused a sync for 100-150 ms about once per 200 syncs (bench/apply_latency.py p99).
    gc.freeze()
    t0 = time.monotonic()
    try:
        agent.run(stop)
    finally:
        stop.set()  # the netfilter-link watcher too, before the maps close
        for stop_one in agent.on_stop:  # readers of the datapath first (flow collector)
            stop_one()
        dp.close()
        log.info("agent stopped", extra={"uptime_s": round(time.monotonic() - t0, 1)})
    return 0
