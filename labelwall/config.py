"""The operator's and agent's settings: a frozen `Config` read from the chart's YAML file.

The file is what the Helm chart's ConfigMap renders (charts/labelwall/templates/configmap.yaml)
and is mounted at /etc/labelwall/config.yaml. Keys are camelCase, like Kubernetes objects;
attributes are snake_case. Every problem (unknown key, wrong type, value out of range) is
reported as `labelwall.errors.InvalidInputError` naming the field path (`mapSizes.policy`), all of
them at once, so a bad ConfigMap is fixed in one round.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml

from labelwall.cluster import IPNetwork
from labelwall.datapath import mapspecs
from labelwall.decode.fields import type_name
from labelwall.errors import FieldError, InvalidInputError
from labelwall.identity.labels import DEFAULT_EXCLUDE_LABELS

#: Where the chart mounts the rendered config file in both pods.
DEFAULT_CONFIG_PATH = "/etc/labelwall/config.yaml"

LOG_LEVELS = ("debug", "info", "warning", "error")


#: The largest map the loader accepts, in entries (a sanity bound against typos such as an
#: extra zero; 16M entries of the largest value is already gigabytes of kernel memory).
MAX_MAP_ENTRIES = 1 << 24

_OBJ = "Config"

#: Upper bound of the conntrack promotion rate and burst (u32 in lw_ct_config; a burst is
#: multiplied by 1e9 token units in a u64, so 2^32 - 1 cannot overflow).
MAX_PROMOTE = (1 << 32) - 1


@dataclass(frozen=True)
class IdentityConfig:
    """How pod labels become identities and how long unused identities live."""

    #: Pod label keys left out of the identity's label set.
    exclude_labels: tuple[str, ...] = DEFAULT_EXCLUDE_LABELS
    #: Seconds an Identity object stays after its last pod is gone (then it is deleted).
    gc_grace_period_seconds: int = 300


@dataclass(frozen=True)
class MapSizes:
    """max_entries of each BPF map (entries, not bytes).

    The defaults are the datapath ABI's sizes (abi.h LW_*_MAX, mirrored in
    labelwall.datapath.abi), i.e. the sizes the shipped object is built with and the loader
    checks, so a default config never needs a rebuild.
    """

    endpoints: int = mapspecs.ENDPOINTS_MAX  # local pods (host-veth ifindex -> subject identity)
    subjects: int = mapspecs.SUBJECTS_MAX  # subject identities with isolation flags
    policy: int = mapspecs.POLICY_MAX  # (subject, peer, direction, protocol, port) -> allow
    ipcache: int = mapspecs.IPCACHE_MAX  # pod addresses -> peer identity (exact-match hash)
    cidrs: int = mapspecs.CIDRS_MAX  # ipBlock prefixes the policies name (LPM trie)
    ports: int = mapspecs.PORTS_MAX  # named-port / port-range entries
    conntrack: int = mapspecs.CT_MAX  # LRU flows with a reply seen (lw_ct_v3)
    conntrack_new: int = mapspecs.CT_NEW_MAX  # LRU flows not replied yet (lw_ct_new_v1)


@dataclass(frozen=True)
class ConntrackConfig:
    """How fast one endpoint (pod veth) may move flows into the replied-flows table.

    Over budget a flow keeps working from the unreplied table (conntrack.h); defaults are
    abi.h's LW_CT_PROMOTE_*_DEFAULT.
    """

    promote_per_second: int = 1000
    promote_burst: int = 2000


@dataclass(frozen=True)
class OperatorConfig:
    """The operator Deployment's listening ports (TCP, all interfaces of the pod)."""

    metrics_port: int = 9964  # Prometheus GET /metrics
    health_port: int = 9965  # GET /healthz (liveness)


def _node_name_from_env() -> str:
    # The chart sets NODE_NAME from the downward API (spec.nodeName); outside a cluster it
    # is usually unset and the agent must be told its node some other way.
    return os.environ.get("NODE_NAME", "")


@dataclass(frozen=True)
class AgentConfig:
    """The agent DaemonSet's ports (on the host network), node name and bpffs mount point."""

    metrics_port: int = 9962  # Prometheus GET /metrics
    health_port: int = 9963  # GET /healthz (liveness)
    node_name: str = field(default_factory=_node_name_from_env)
    bpffs: str = "/sys/fs/bpf"


@dataclass(frozen=True)
class Config:
    """Everything the operator and the agent read from /etc/labelwall/config.yaml."""

    log_level: str = "info"
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    #: Audit mode: the datapath counts and reports would-be drops but passes the packets.
    audit: bool = False
    #: Namespaces in audit mode when ``audit`` is false (empty: none). Ignored if ``audit``.
    audit_namespaces: tuple[str, ...] = ()
    map_sizes: MapSizes = field(default_factory=MapSizes)
    #: The cluster's Service CIDRs (kube-apiserver --service-cluster-ip-range): egress from
    #: an egress-isolated pod to an address inside is judged after kube-proxy's DNAT, on
    #: the backend pod (kernel >= 6.6; older kernels judge the Service address itself).
    service_cidrs: tuple[IPNetwork, ...] = tuple(
        ipaddress.ip_network(c) for c in mapspecs.DEFAULT_SERVICE_CIDRS
    )
    operator: OperatorConfig = field(default_factory=OperatorConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    conntrack: ConntrackConfig = field(default_factory=ConntrackConfig)

    def audits(self, namespace: str) -> bool:
        """Whether policy drops in ``namespace`` are only reported, not enforced."""
        return self.audit or namespace in self.audit_namespaces

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any] | None,
        *,
        source: str = "<config>",
        env: Mapping[str, str] | None = None,
    ) -> Config:
        """Build a Config from the parsed YAML (camelCase keys); missing keys take defaults.

        ``env`` (default: the process environment) supplies ``NODE_NAME`` when
        ``agent.nodeName`` is not set in the file. Raises InvalidInputError naming every bad field.
        """
        env = os.environ if env is None else env
        r = _Reader(source)
        top = r.section(data, "")
        identity = r.section(top.get("identity"), "identity")
        maps = r.section(top.get("mapSizes"), "mapSizes")
        op = r.section(top.get("operator"), "operator")
        ag = r.section(top.get("agent"), "agent")
        ct = r.section(top.get("conntrack"), "conntrack")
        r.unknown(top, "", _TOP_KEYS)
        r.unknown(identity, "identity", ("excludeLabels", "gcGracePeriodSeconds"))
        r.unknown(maps, "mapSizes", tuple(_MAP_KEYS))
        r.unknown(op, "operator", ("metricsPort", "healthPort"))
        r.unknown(ag, "agent", ("metricsPort", "healthPort", "nodeName", "bpffs"))
        r.unknown(ct, "conntrack", ("promotePerSecond", "promoteBurst"))

        d = cls()
        config = cls(
            log_level=r.enum(top, "", "logLevel", LOG_LEVELS, d.log_level),
            identity=IdentityConfig(
                exclude_labels=r.strings(
                    identity, "identity", "excludeLabels", d.identity.exclude_labels
                ),
                gc_grace_period_seconds=r.integer(
                    identity,
                    "identity",
                    "gcGracePeriodSeconds",
                    d.identity.gc_grace_period_seconds,
                    0,
                    None,
                ),
            ),
            audit=r.boolean(top, "", "audit", d.audit),
            audit_namespaces=r.strings(top, "", "auditNamespaces", d.audit_namespaces),
            map_sizes=MapSizes(
                **{
                    attr: r.integer(
                        maps, "mapSizes", key, getattr(d.map_sizes, attr), 1, MAX_MAP_ENTRIES
                    )
                    for key, attr in _MAP_KEYS.items()
                }
            ),
            service_cidrs=r.networks(
                top, "", "serviceCIDRs", d.service_cidrs, mapspecs.SVCNETS_MAX
            ),
            operator=OperatorConfig(
                metrics_port=r.port(op, "operator", "metricsPort", d.operator.metrics_port),
                health_port=r.port(op, "operator", "healthPort", d.operator.health_port),
            ),
            agent=AgentConfig(
                metrics_port=r.port(ag, "agent", "metricsPort", d.agent.metrics_port),
                health_port=r.port(ag, "agent", "healthPort", d.agent.health_port),
                node_name=r.string(ag, "agent", "nodeName", env.get("NODE_NAME", "")),
                bpffs=r.string(ag, "agent", "bpffs", d.agent.bpffs, nonempty=True),
            ),
            conntrack=ConntrackConfig(
                promote_per_second=r.integer(
                    ct,
                    "conntrack",
                    "promotePerSecond",
                    d.conntrack.promote_per_second,
                    1,
                    MAX_PROMOTE,
                ),
                promote_burst=r.integer(
                    ct, "conntrack", "promoteBurst", d.conntrack.promote_burst, 1, MAX_PROMOTE
                ),
            ),
        )
        for name, section in (("operator", config.operator), ("agent", config.agent)):
            if section.metrics_port == section.health_port:
                r.fail(f"{name}.healthPort", f"must differ from {name}.metricsPort")
        r.raise_if_any()
        return config

    def to_mapping(self) -> dict[str, Any]:
        """The camelCase mapping `from_mapping` reads (round-trips; for tests and the lab)."""
        return {
            "logLevel": self.log_level,
            "identity": {
                "excludeLabels": list(self.identity.exclude_labels),
                "gcGracePeriodSeconds": self.identity.gc_grace_period_seconds,
            },
            "audit": self.audit,
            "auditNamespaces": list(self.audit_namespaces),
            "mapSizes": {key: getattr(self.map_sizes, attr) for key, attr in _MAP_KEYS.items()},
            "serviceCIDRs": [str(n) for n in self.service_cidrs],
            "operator": {
                "metricsPort": self.operator.metrics_port,
                "healthPort": self.operator.health_port,
            },
            "agent": {
                "metricsPort": self.agent.metrics_port,
                "healthPort": self.agent.health_port,
                "nodeName": self.agent.node_name,
                "bpffs": self.agent.bpffs,
            },
            "conntrack": {
                "promotePerSecond": self.conntrack.promote_per_second,
                "promoteBurst": self.conntrack.promote_burst,
            },
        }


def load_config(path: str | None, *, env: Mapping[str, str] | None = None) -> Config:
    """Read the YAML config file at ``path``; ``None`` means all defaults.

    A path that does not exist is an error (a typo must not silently run with defaults);
    an empty file means all defaults.
    """
    if path is None:
        return Config.from_mapping(None, env=env)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise InvalidInputError(
            [FieldError(path, None, _OBJ, "", f"cannot read: {e.strerror}")]
        ) from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InvalidInputError([FieldError(path, None, _OBJ, "", f"not valid YAML: {e}")]) from e
    return Config.from_mapping(data, source=path, env=env)


_TOP_KEYS = ("logLevel", "identity", "audit", "auditNamespaces", "mapSizes", "serviceCIDRs",
             "operator", "agent", "conntrack")  # fmt: skip
#: camelCase YAML key -> MapSizes attribute (identical today; the table keeps them apart).
_MAP_KEYS = {
    "endpoints": "endpoints",
    "subjects": "subjects",
    "policy": "policy",
    "ipcache": "ipcache",
    "cidrs": "cidrs",
    "ports": "ports",
    "conntrack": "conntrack",
    "conntrackNew": "conntrack_new",
}

T = TypeVar("T")


class _Reader:
    """Typed field access that records every error with its camelCase field path."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[FieldError] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(FieldError(self.source, None, _OBJ, path, message))

    def raise_if_any(self) -> None:
        if self.errors:
            raise InvalidInputError(self.errors)

    @staticmethod
    def _path(parent: str, key: str) -> str:
        return f"{parent}.{key}" if parent else key

    def section(self, value: object, path: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(path, f"must be a mapping, got {_type_name(value)}")
            return {}
        return value

    def unknown(self, data: Mapping[str, Any], parent: str, known: tuple[str, ...]) -> None:
        for key in data:
            if key not in known:
                self.fail(
                    self._path(parent, str(key)),
                    f"unknown field (known: {', '.join(known)})",
                )

    def _get(
        self,
        data: Mapping[str, Any],
        parent: str,
        key: str,
        default: T,
        check: Callable[[object], str | None],
    ) -> T:
        # A key that is present with a null value is treated as missing (YAML `key:`).
        value = data.get(key)
        if value is None:
            return default
        problem = check(value)
        if problem is not None:
            self.fail(self._path(parent, key), problem)
            return default
        result: T = value  # check() proved the type
        return result

    def boolean(self, data: Mapping[str, Any], parent: str, key: str, default: bool) -> bool:
        def check(v: object) -> str | None:
            return None if isinstance(v, bool) else f"must be a boolean, got {_type_name(v)}"

        return self._get(data, parent, key, default, check)

    def integer(
        self,
        data: Mapping[str, Any],
        parent: str,
        key: str,
        default: int,
        minimum: int,
        maximum: int | None,
    ) -> int:
        def check(v: object) -> str | None:
            # bool is an int subclass in Python; `true` is never a valid count or port.
            if not isinstance(v, int) or isinstance(v, bool):
                return f"must be an integer, got {_type_name(v)}"
            if v < minimum or (maximum is not None and v > maximum):
                hi = "" if maximum is None else f" and <= {maximum}"
                return f"must be >= {minimum}{hi}, got {v}"
            return None

        return self._get(data, parent, key, default, check)

    def port(self, data: Mapping[str, Any], parent: str, key: str, default: int) -> int:
        return self.integer(data, parent, key, default, 1, 65535)

    def string(
        self,
        data: Mapping[str, Any],
        parent: str,
        key: str,
        default: str,
        *,
        nonempty: bool = False,
    ) -> str:
        def check(v: object) -> str | None:
            if not isinstance(v, str):
                return f"must be a string, got {_type_name(v)}"
            if nonempty and not v:
                return "must not be empty"
            return None

        return self._get(data, parent, key, default, check)

    def enum(
        self,
        data: Mapping[str, Any],
        parent: str,
        key: str,
        choices: tuple[str, ...],
        default: str,
    ) -> str:
        def check(v: object) -> str | None:
            if not isinstance(v, str):
                return f"must be a string, got {_type_name(v)}"
            if v not in choices:
                return f"must be one of {', '.join(choices)}, got {v!r}"
            return None

        return self._get(data, parent, key, default, check)

    def strings(
        self,
        data: Mapping[str, Any],
        parent: str,
        key: str,
        default: tuple[str, ...],
    ) -> tuple[str, ...]:
        value = data.get(key)
        if value is None:
            return default
        path = self._path(parent, key)
        if not isinstance(value, list):
            self.fail(path, f"must be a list of strings, got {_type_name(value)}")
            return default
        ok = True
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                self.fail(f"{path}[{i}]", f"must be a non-empty string, got {item!r}")
                ok = False
        return tuple(value) if ok else default

    def networks(
        self,
        data: Mapping[str, Any],
        parent: str,
        key: str,
        default: tuple[IPNetwork, ...],
        most: int,
    ) -> tuple[IPNetwork, ...]:
        """A list of CIDRs (host bits zero), at most ``most`` of them, no duplicates."""
        names = self.strings(data, parent, key, ())
        if data.get(key) is None:
            return default
        path = self._path(parent, key)
        out: list[IPNetwork] = []
        for i, text in enumerate(names):
            try:
                net = ipaddress.ip_network(text)
            except ValueError as e:
                self.fail(f"{path}[{i}]", f"must be a CIDR such as 10.96.0.0/12: {e}")
                continue
            if net in out:
                self.fail(f"{path}[{i}]", f"{net} is listed twice")
            out.append(net)
        if len(out) > most:
            self.fail(path, f"at most {most} CIDRs (map lw_svcnet_v1), got {len(out)}")
        return tuple(out)


def _type_name(value: object) -> str:
    # The manifest parser's vocabulary (JSON type names), plus the value of a string, which
    # is what a mistyped config value usually is (`audit: "yes"`).
    if isinstance(value, str):
        return f"string {value!r}"
    return type_name(value)
