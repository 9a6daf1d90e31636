"""`labelwall observe` and `labelwall lab observe`: flows from every node, filtered, printed.

Flows come from each node's agent (``GET /flows`` on the agent's 127.0.0.1 flow port,
labelwall/agent/flowring.py) through a ``FlowSource``: the lab's enters the lab's node
netns; a cluster's goes through the API server (the agent pod's port-forward) with the
user's own RBAC. Everything after the fetch is shared: merge by time, filter
(labelwall/policy/flowfilter.py), ``--last``/``--since``/``--until``, print compact, table
or JSON (one flow per line, Hubble's shape), and ``--follow`` (poll every 0.2 s).

An agent that does not answer is named on stderr and the others are still shown (exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from labelwall.cli.render import table
from labelwall.errors import FieldError, InvalidInputError
from labelwall.policy import flowfilter
from labelwall.policy.flows import Flow, FlowEndpoint, PolicyRef, flow_from_json

EXIT_OK, EXIT_FINDINGS = 0, 1
FOLLOW_POLL_S = 0.2

# ---- arguments ----


class _TermAction(argparse.Action):
    """Appends a flowfilter.Term in command-line order; ``--not`` negates the next one."""

    def __call__(self, parser: Any, ns: argparse.Namespace, values: Any, opt: Any = None) -> None:
        terms: list[flowfilter.Term] = list(getattr(ns, "terms", None) or [])
        flag = self.dest.replace("_", "-")
        terms.append(flowfilter.Term(flag, str(values), bool(getattr(ns, "negate_next", False))))
        ns.terms = terms
        ns.negate_next = False


class _NotAction(argparse.Action):
    def __call__(self, parser: Any, ns: argparse.Namespace, values: Any, opt: Any = None) -> None:
        ns.negate_next = True


FILTER_HELP = {
    "pod": "[NS/]NAME (prefix) at either end",
    "namespace": "namespace at either end",
    "label": "label selector at either end (k=v,k2!=v,k3,!k4)",
    "ip": "IP address or CIDR at either end",
    "port": "L4 port at either end",
    "identity": "identity number or reserved name (world, host, remote-node, ...)",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Hubble's flags. OR within a flag (repeat it), AND across flags."""
    p.set_defaults(terms=[], negate_next=False)
    p.add_argument("-n", "--namespace", dest="namespace", action=_TermAction, metavar="NS",
                   help=FILTER_HELP["namespace"] + " (repeatable)")  # fmt: skip
    p.add_argument("-A", "--all-namespaces", action="store_true",
                   help="every namespace (the default without -n)")  # fmt: skip
    for what in ("pod", "label", "ip", "port", "identity"):
        short = ["-l"] if what == "label" else []
        p.add_argument(*short, f"--{what}", dest=what, action=_TermAction, metavar="VALUE",
                       help=FILTER_HELP[what])  # fmt: skip
    for side in ("from", "to"):
        for what in ("pod", "namespace", "label", "ip", "port", "identity"):
            p.add_argument(f"--{side}-{what}", dest=f"{side}_{what}", action=_TermAction,
                           metavar="VALUE", help=f"{side} end: " + FILTER_HELP[what])  # fmt: skip
    p.add_argument("--protocol", action=_TermAction, metavar="PROTO",
                   help="tcp, udp, sctp, icmp, icmpv4, icmpv6")  # fmt: skip
    p.add_argument("--verdict", action=_TermAction, metavar="VERDICT",
                   help="FORWARDED, DROPPED or AUDIT")  # fmt: skip
    p.add_argument("--drop-reason-desc", dest="drop_reason_desc", action=_TermAction,
                   metavar="REASON",
                   help="e.g. POLICY_DENIED (isolated, no allow matched)")  # fmt: skip
    p.add_argument("--traffic-direction", dest="traffic_direction", action=_TermAction,
                   metavar="DIR", help="ingress or egress")  # fmt: skip
    p.add_argument("--node-name", dest="node_name", action=_TermAction, metavar="GLOB",
                   help="node name (glob)")  # fmt: skip
    p.add_argument("--policy", action=_TermAction, metavar="NS/NAME",
                   help="flows allowed or denied by this NetworkPolicy")  # fmt: skip
    p.add_argument("--not", action=_NotAction, nargs=0,
                   help="negate the filter flag that follows")  # fmt: skip
    p.add_argument("--last", metavar="N", help="only the N newest matching flows")
    p.add_argument("--since", metavar="TIME", help="RFC 3339, or a duration ago (5m, 1h30m)")
    p.add_argument("--until", metavar="TIME", help="RFC 3339, or a duration ago")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new flows")
    p.add_argument("-o", "--output", choices=["compact", "table", "json"], default="compact")


@dataclass(frozen=True)
class Query:
    keep: flowfilter.FlowFilter
    since_ns: int | None
    until_ns: int | None
    last: int | None


def _usage(flag: str, message: str) -> InvalidInputError:
    return InvalidInputError([FieldError("<command line>", None, "labelwall observe", flag,
                                         message)])  # fmt: skip


def query_of(args: argparse.Namespace, now_ns: int | None = None) -> Query:
    """Parse every filter value before anything is read (a bad one: exit 2, nothing shown)."""
    now = time.time_ns() if now_ns is None else now_ns
    terms: list[flowfilter.Term] = list(args.terms)
    if args.negate_next:
        raise _usage("--not", "--not must be followed by a filter flag")
    namespaces = [t.value for t in terms if t.flag == "namespace" and not t.negated]
    if args.all_namespaces and namespaces:
        raise _usage("-A", "-A (every namespace) and -n NS exclude each other")
    since = flowfilter.parse_time("since", args.since, now) if args.since else None
    until = flowfilter.parse_time("until", args.until, now) if args.until else None
    if since is not None and until is not None and since > until:
        raise _usage("--until", "--until is before --since")
    last = flowfilter.parse_last(args.last) if args.last else None
    return Query(flowfilter.build(terms, namespaces), since, until, last)


# ---- rendering ----


def _end(e: FlowEndpoint, ip: str, port: int) -> str:
    where = e.key or (e.node and f"node {e.node}") or ip
    if e.key or e.node:
        where = f"{where} ({ip})" if not e.key else where
    elif e.labels:
        where = f"{ip} ({e.labels[0]})"
    return f"{where}:{port}" if port else where


def _names(refs: Sequence[PolicyRef], rule: bool) -> str:
    out = []
    for r in refs:
        out.append(f"{r.key}[{r.rule_index}]" if rule and r.rule_index is not None else r.key)
    return ", ".join(out)


def attribution_text(f: Flow) -> str:
    allowed = f.ingress_allowed_by + f.egress_allowed_by
    denied = f.ingress_denied_by + f.egress_denied_by
    if allowed:
        return f"allowed by {_names(allowed, True)}"
    if denied:
        word = "would be denied by" if f.verdict == "AUDIT" else "denied by"
        return f"{word} {_names(denied, False)}"
    if f.is_reply:
        return "reply of a tracked connection"
    return f"({f.reason.name.lower()})"


def _l4(f: Flow) -> str:
    if f.protocol == "TCP" and f.tcp_flags:
        return f"TCP Flags: {', '.join(f.tcp_flags)}"
    if f.icmp_type is not None:
        return f"{f.protocol} type {f.icmp_type} code {f.icmp_code}"
    return f.protocol


def compact(f: Flow) -> str:
    """One line per flow, as hubble observe prints it, with the policy names."""
    src = _end(f.source, f.ip_source, f.source_port)
    dst = _end(f.destination, f.ip_destination, f.destination_port)
    verdict = f.verdict + (f" ({f.drop_reason_desc})" if f.drop_reason_desc else "")
    reply = " reply" if f.is_reply else ""
    return (f"{f.time} [{f.node_name}] {src} (ID:{f.source.identity}) -> {dst} "
            f"(ID:{f.destination.identity}) {f.traffic_direction.lower()}{reply} {verdict} "
            f"{_l4(f)}; {attribution_text(f)}")  # fmt: skip


TABLE_HEADERS = ["time", "node", "source", "destination", "type", "verdict", "policy"]


def table_row(f: Flow) -> list[str]:
    return [
        f.time, f.node_name, _end(f.source, f.ip_source, f.source_port),
        _end(f.destination, f.ip_destination, f.destination_port),
        f"{f.traffic_direction.lower()}{' reply' if f.is_reply else ''} {_l4(f)}",
        f.verdict + (f" ({f.drop_reason_desc})" if f.drop_reason_desc else ""),
        attribution_text(f),
    ]  # fmt: skip


def render(flows: Sequence[Flow], output: str, header: bool = True) -> str:
    if output == "json":
        return "\n".join(json.dumps(f.as_json(), sort_keys=True) for f in flows)
    if output == "table":
        rows = [table_row(f) for f in flows]
        text = table(TABLE_HEADERS, rows)
        return text if header else "\n".join(text.splitlines()[1:])
    return "\n".join(compact(f) for f in flows)


# ---- sources ----


class FlowSource(Protocol):
    """One node's agent: ``fetch(since)`` returns its /flows page after sequence ``since``."""

    node: str

    def fetch(self, since: int) -> dict[str, Any]: ...


class Unreachable(ConnectionError):  # noqa: N818 - reads as what happened
    pass


@dataclass
class HttpFlowSource:
    """An agent's flow endpoint at ``url``; ``enter`` wraps the connect (e.g. a netns)."""

    node: str
    url: str
    enter: Callable[[], Any] | None = None
    timeout: float = 5.0

    def fetch(self, since: int) -> dict[str, Any]:
        target = f"{self.url}/flows?since={since}"
        try:
            if self.enter is not None:
                with self.enter():
                    resp = urllib.request.urlopen(target, timeout=self.timeout)
            else:
                resp = urllib.request.urlopen(target, timeout=self.timeout)
            with resp:
                page: dict[str, Any] = json.loads(resp.read())
            return page
        except (OSError, urllib.error.URLError, json.JSONDecodeError, ValueError) as exc:
            raise Unreachable(f"node {self.node}: agent flow endpoint {self.url}: {exc}") from exc


def observe(
    sources: Sequence[FlowSource],
    q: Query,
    output: str,
    follow: bool,
    out: Callable[[str], None] = print,
    err: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Fetch, merge by time, filter, print; with ``follow`` keep polling until ``stop()``."""
    seen = {s.node: 0 for s in sources}
    failed: set[str] = set()

    def fetch(s: FlowSource) -> dict[str, Any] | Exception:
        try:
            return s.fetch(seen[s.node])
        except (ConnectionError, PermissionError) as exc:  # this node only; others go on
            return exc

    def poll() -> list[Flow]:
        got: list[Flow] = []
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(sources)))) as pool:
            pages = list(pool.map(fetch, sources))
        for s, page in zip(sources, pages, strict=True):
            if isinstance(page, Exception):
                if s.node not in failed:
                    err(f"error: {page}")
                failed.add(s.node)
                continue
            failed.discard(s.node)
            seen[s.node] = int(page.get("next", seen[s.node]))
            got += [flow_from_json(d) for d in page.get("flows", [])]
        return got

    first = flowfilter.select(poll(), q.keep, q.since_ns, q.until_ns, q.last)
    if first or output == "table":
        out(render(first, output))
    while follow and not stop():
        time.sleep(FOLLOW_POLL_S)
        new = flowfilter.select(poll(), q.keep, q.since_ns, q.until_ns)
        if new:
            out(render(new, output, header=False))
            sys.stdout.flush()
    return EXIT_FINDINGS if failed else EXIT_OK


# ---- `labelwall observe` (a cluster, through the API server) ----


#: Where the chart's agents are (kept here, not imported: parsing must not load the client).
DEFAULT_NAMESPACE = "labelwall-system"  # the namespace README and the chart README install into
DEFAULT_SELECTOR = "app.kubernetes.io/name=labelwall,app.kubernetes.io/component=agent"
DEFAULT_PORT = 9966  # chart agent.flowsPort (9964 is the operator's metrics port)


def add_cluster_parser(sub: Any) -> None:
    p = sub.add_parser(
        "observe",
        help="flows from every node's agent, with the policies behind each verdict",
        description="Read each labelwall agent's recent flows through the API server "
        "(the agent pod's pods/portforward subresource, with your own credentials and "
        "RBAC: list pods and create pods/portforward in the agent namespace), merge them "
        "by time and filter them with Hubble's flags: OR within a flag, AND across flags.",
    )
    add_arguments(p)
    p.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG, ~/.kube/config")
    p.add_argument("--agent-namespace", default=DEFAULT_NAMESPACE, metavar="NS",
                   help=f"namespace of the agent pods (default {DEFAULT_NAMESPACE})")  # fmt: skip
    p.add_argument("--agent-selector", default=DEFAULT_SELECTOR, metavar="SELECTOR",
                   help="label selector of the agent pods")  # fmt: skip
    p.add_argument("--flows-port", type=int, default=DEFAULT_PORT, metavar="PORT",
                   help=f"the agents' flow port (chart agent.flowsPort, "
                   f"{DEFAULT_PORT})")  # fmt: skip
    p.set_defaults(handler=cmd_observe)


def cmd_observe(args: argparse.Namespace) -> int:
    from labelwall.kube.client import NoClusterError, api_client
    from labelwall.kube.flows import FlowAccessError, agent_sources

    q = query_of(args)  # bad flags fail before any request (exit 2)
    try:
        sources = agent_sources(
            api_client(args.kubeconfig), args.agent_namespace, args.agent_selector,
            args.flows_port,
        )  # fmt: skip
    except (NoClusterError, FlowAccessError, ConnectionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FINDINGS
    if not sources:
        print(f"error: no agent pods in namespace {args.agent_namespace} with labels "
              f"{args.agent_selector}", file=sys.stderr)  # fmt: skip
        return EXIT_FINDINGS
    try:
        return observe(list(sources), q, args.output, args.follow)
    except KeyboardInterrupt:
        return EXIT_OK
