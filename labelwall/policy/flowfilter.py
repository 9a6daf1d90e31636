"""Flow filters in Hubble's vocabulary (pure): OR within a flag, AND across flags, ``--not``.

A filter is a list of ``Term`` values in command-line order: (flag, value, negated). Terms
of one flag (and the same negation) form a group; a flow passes when every plain group
has a matching value and no negated group has one (``--not`` applies to the flag right
after it, as in ``hubble observe --not --from-ip 10.0.0.1``). Values are parsed up front so
a bad one is a clear error naming the flag before any flow is read.

Flags (``either`` = the source or the destination):
  --namespace/-n NS (either), --pod [NS/]NAME (either; NAME is a prefix), --label/-l SEL
  (either; ``k=v,k2!=v,k3,!k4``), --ip IP|CIDR (either), --identity N|NAME (either),
  --from-/--to- pod|namespace|label|ip|port|identity, --port N (either),
  --protocol tcp|udp|sctp|icmp|icmpv4|icmpv6, --verdict FORWARDED|DROPPED|AUDIT,
  --drop-reason-desc NAME, --traffic-direction ingress|egress, --node-name GLOB,
  --policy NS/NAME (in any of the four attribution lists).
Time: --since/--until (RFC 3339, or a duration ago such as ``90s``, ``5m``, ``1h30m``) and
--last N (the N newest flows that pass), applied by ``select``.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from labelwall.cluster import IPNetwork
from labelwall.errors import FieldError, InvalidInputError
from labelwall.identity.numbers import Reserved
from labelwall.policy.flows import DROP_REASON_DESCS, VERDICTS, Flow, FlowEndpoint

Predicate = Callable[[Flow], bool]


@dataclass(frozen=True)
class Term:
    flag: str  # without dashes, e.g. "from-pod"
    value: str
    negated: bool = False


def usage(flag: str, message: str) -> InvalidInputError:
    return InvalidInputError([FieldError("<command line>", None, "labelwall observe",
                                         f"--{flag}", message)])  # fmt: skip


# ---- endpoint matchers ----


def _pod(value: str, default_ns: Sequence[str]) -> Callable[[FlowEndpoint], bool]:
    ns, sep, name = value.rpartition("/")
    namespaces = [ns] if sep else list(default_ns)

    def match(e: FlowEndpoint) -> bool:
        if not e.pod_name or (namespaces and e.namespace not in namespaces):
            return False
        return e.pod_name.startswith(name)

    return match


def _selector(flag: str, value: str) -> Callable[[FlowEndpoint], bool]:
    reqs: list[tuple[str, str, str | None]] = []  # (op, key, value)
    for part in (p.strip() for p in value.split(",")):
        if not part:
            raise usage(flag, f"{value!r}: empty requirement in the label selector")
        if "!=" in part:
            k, _, v = part.partition("!=")
            reqs.append(("!=", k.strip(), v.strip()))
        elif "=" in part:
            k, _, v = part.partition("=")
            reqs.append(("=", k.strip().removeprefix("k8s:"), v.strip().lstrip("=")))
        elif part.startswith("!"):
            reqs.append(("!", part[1:].strip(), None))
        else:
            reqs.append(("exists", part, None))
        if not reqs[-1][1]:
            raise usage(flag, f"{value!r}: a label requirement needs a key")

    def match(e: FlowEndpoint) -> bool:
        labels: dict[str, str] = {}
        for lab in e.labels:
            k, _, v = lab.partition("=")
            labels[k.partition(":")[2] if ":" in k else k] = v
            labels[k] = v  # also with its source prefix (k8s:, reserved:, cidr:)
        for op, k, want in reqs:
            if op == "=" and labels.get(k) != want:
                return False
            if op == "!=" and labels.get(k) == want:
                return False
            if op == "exists" and k not in labels:
                return False
            if op == "!" and k in labels:
                return False
        return True

    return match


def _identity(flag: str, value: str) -> Callable[[FlowEndpoint], bool]:
    if value.isdigit():
        n = int(value)
    else:
        try:
            n = int(Reserved[value.upper().replace("-", "_").removeprefix("RESERVED:")])
        except KeyError:
            names = ", ".join(r.name.lower().replace("_", "-") for r in Reserved)
            raise usage(flag, f"{value!r}: expected a number or one of {names}") from None
    return lambda e: e.identity == n


def _network(flag: str, value: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise usage(flag, f"{value!r}: expected an IP address or CIDR") from None


def _port(flag: str, value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise usage(flag, f"{value!r}: expected a port number 0-65535")
    return int(value)


def _in(addr: str, net: IPNetwork) -> bool:
    if not addr:
        return False
    ip = ipaddress.ip_address(addr)
    return ip.version == net.version and ip in net


PROTOCOL_NAMES = {
    "tcp": ("TCP",), "udp": ("UDP",), "sctp": ("SCTP",), "icmp": ("ICMPv4", "ICMPv6"),
    "icmpv4": ("ICMPv4",), "icmpv6": ("ICMPv6",),
}  # fmt: skip


def _side(
    term: Term, default_ns: Sequence[str]
) -> tuple[str, Callable[[FlowEndpoint], bool] | None, Callable[[Flow, bool], bool] | None]:
    """(which side, endpoint matcher, flow matcher taking is_source) for an endpoint flag."""
    flag, value = term.flag, term.value
    side, _, what = flag.partition("-") if flag.startswith(("from-", "to-")) else ("", "", flag)
    if what == "pod":
        return side, _pod(value, default_ns), None
    if what == "namespace":
        return side, (lambda e: e.namespace == value), None
    if what == "label":
        return side, _selector(flag, value), None
    if what == "identity":
        return side, _identity(flag, value), None
    if what == "ip":
        net = _network(flag, value)
        return side, None, lambda f, src: _in(f.ip_source if src else f.ip_destination, net)
    if what == "port":
        port = _port(flag, value)
        return side, None, lambda f, src: (f.source_port if src else f.destination_port) == port
    raise usage(flag, "unknown filter")


ENDPOINT_FLAGS = tuple(
    f"{side}{what}"
    for side in ("", "from-", "to-")
    for what in ("pod", "namespace", "label", "ip", "port", "identity")
)
FLOW_FLAGS = ("protocol", "verdict", "drop-reason-desc", "traffic-direction", "node-name",
              "policy")  # fmt: skip
FILTER_FLAGS = ENDPOINT_FLAGS + FLOW_FLAGS


def predicate(term: Term, default_ns: Sequence[str] = ()) -> Predicate:
    """One value of one flag as a test on a flow (raises InvalidInputError on a bad value)."""
    flag, value = term.flag, term.value
    if flag in ENDPOINT_FLAGS:
        side, on_endpoint, on_flow = _side(term, default_ns)
        if on_endpoint is not None:
            m = on_endpoint
            if side == "from":
                return lambda f: m(f.source)
            if side == "to":
                return lambda f: m(f.destination)
            return lambda f: m(f.source) or m(f.destination)
        assert on_flow is not None
        g = on_flow
        if side == "from":
            return lambda f: g(f, True)
        if side == "to":
            return lambda f: g(f, False)
        return lambda f: g(f, True) or g(f, False)
    if flag == "protocol":
        names = PROTOCOL_NAMES.get(value.lower())
        if names is None:
            raise usage(flag, f"{value!r}: expected one of {', '.join(PROTOCOL_NAMES)}")
        return lambda f: f.protocol in names
    if flag == "verdict":
        v = value.upper()
        if v not in VERDICTS:
            raise usage(flag, f"{value!r}: expected one of {', '.join(VERDICTS)}")
        return lambda f: f.verdict == v
    if flag == "drop-reason-desc":
        d = value.upper()
        if d not in DROP_REASON_DESCS:
            raise usage(flag, f"{value!r}: expected one of {', '.join(DROP_REASON_DESCS)}")
        return lambda f: f.drop_reason_desc == d
    if flag == "traffic-direction":
        t = value.upper()
        if t not in ("INGRESS", "EGRESS"):
            raise usage(flag, f"{value!r}: expected ingress or egress")
        return lambda f: f.traffic_direction == t
    if flag == "node-name":
        return lambda f: fnmatch.fnmatchcase(f.node_name, value)
    if flag == "policy":
        if value.count("/") != 1 or not all(value.split("/")):
            raise usage(flag, f"{value!r}: expected NAMESPACE/NAME")
        return lambda f: any(p.key == value for p in f.policies)
    raise usage(flag, "unknown filter")


@dataclass(frozen=True)
class FlowFilter:
    groups: tuple[tuple[bool, tuple[Predicate, ...]], ...]  # (negated, OR-ed predicates)

    def __call__(self, flow: Flow) -> bool:
        for negated, preds in self.groups:
            hit = any(p(flow) for p in preds)
            if hit == negated:
                return False
        return True


def build(terms: Iterable[Term], namespaces: Sequence[str] = ()) -> FlowFilter:
    """``namespaces``: the -n values, also the default namespace of --pod NAME."""
    grouped: dict[tuple[str, bool], list[Predicate]] = {}
    for t in terms:
        if t.flag not in FILTER_FLAGS:
            raise usage(t.flag, "unknown filter")
        grouped.setdefault((t.flag, t.negated), []).append(predicate(t, namespaces))
    return FlowFilter(tuple((neg, tuple(ps)) for (_, neg), ps in grouped.items()))


# ---- time ----

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_time(flag: str, text: str, now_ns: int) -> int:
    """RFC 3339 (``2026-12-02T16:20:00Z``, offsets allowed) or a duration ago (``5m``)."""
    m = _DURATION.match(text.strip())
    if text.strip() and m and any(m.groups()):
        h, mins, s = m.groups()
        ago = int(h or 0) * 3600 + int(mins or 0) * 60 + float(s or 0)
        return now_ns - int(ago * 1e9)
    try:
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise usage(flag, f"{text!r}: expected RFC 3339 (2026-12-02T16:20:00Z) or a "
                          "duration ago (90s, 5m, 1h30m)") from None  # fmt: skip
    if stamp.tzinfo is None:
        raise usage(flag, f"{text!r}: give a time zone (Z or +01:00)")
    return int(stamp.timestamp()) * 1_000_000_000 + stamp.microsecond * 1000


def parse_last(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise usage("last", f"{text!r}: expected a positive number of flows")
    return int(text)


def select(
    flows: Iterable[Flow],
    keep: FlowFilter,
    since_ns: int | None = None,
    until_ns: int | None = None,
    last: int | None = None,
) -> list[Flow]:
    """The flows that pass, oldest first; with ``last``, only the newest ``last`` of them."""
    out = [
        f
        for f in sorted(flows, key=lambda f: f.time_ns)
        if (since_ns is None or f.time_ns >= since_ns)
        and (until_ns is None or f.time_ns <= until_ns)
        and keep(f)
    ]
    return out[-last:] if last else out
