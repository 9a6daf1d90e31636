"""The transcribed case data is complete, well formed, and faithful to how upstream builds it."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

import pytest

from .cases import DATA_DIR, EXTRA_FILE, UPSTREAM_FILE, Case, load_cases, read_file, walk
from .expectations import evaluate
from .model import POD_IPS

CASES = load_cases()
UPSTREAM = [c for c in CASES if c.source == UPSTREAM_FILE.name]
ALL_POLICIES = [(c, s.index, doc) for c in CASES for s in c.steps for doc in s.apply]

# --- a structural NetworkPolicy checker written from the networking.k8s.io/v1 API reference,
# independent of labelwall's own validation (which the runner test exercises) -----------------

_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
# IANA_SVC_NAME: 1-15 chars, lower-case alphanumerics and '-', at least one letter, no '--',
# no leading or trailing '-'.
_SVC_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9]|-(?=[a-z0-9])){0,14}$")


def _keys(obj: Any, allowed: set[str], where: str, problems: list[str]) -> bool:
    if not isinstance(obj, Mapping):
        problems.append(f"{where}: not a mapping")
        return False
    extra = set(obj) - allowed
    if extra:
        problems.append(f"{where}: unknown fields {sorted(extra)}")
    return True


def _label_key_ok(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    return (
        (not prefix or bool(_DNS1123_SUBDOMAIN.match(prefix)))
        and len(name) <= 63
        and bool(_LABEL_NAME.match(name))
    )


def _selector(sel: Any, where: str, problems: list[str]) -> None:
    if not _keys(sel, {"matchLabels", "matchExpressions"}, where, problems):
        return
    for k, v in (sel.get("matchLabels") or {}).items():
        if not (
            isinstance(k, str) and _label_key_ok(k) and isinstance(v, str) and _LABEL_VALUE.match(v)
        ):
            problems.append(f"{where}.matchLabels: bad label {k!r}: {v!r}")
    for i, req in enumerate(sel.get("matchExpressions") or []):
        w = f"{where}.matchExpressions[{i}]"
        if not _keys(req, {"key", "operator", "values"}, w, problems):
            continue
        op, values = req.get("operator"), req.get("values") or []
        if not _label_key_ok(str(req.get("key", ""))):
            problems.append(f"{w}.key: bad label key")
        if op in ("In", "NotIn") and not values:
            problems.append(f"{w}: {op} needs values")
        elif op in ("Exists", "DoesNotExist") and values:
            problems.append(f"{w}: {op} takes no values")
        elif op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            problems.append(f"{w}.operator: {op!r}")


def _ip_block(block: Any, where: str, problems: list[str]) -> None:
    if not _keys(block, {"cidr", "except"}, where, problems):
        return
    try:
        cidr = ipaddress.ip_network(block["cidr"], strict=False)
    except (KeyError, ValueError) as exc:
        problems.append(f"{where}.cidr: {exc}")
        return
    for i, exc_cidr in enumerate(block.get("except") or []):
        try:
            hole = ipaddress.ip_network(exc_cidr, strict=False)
        except ValueError as exc:
            problems.append(f"{where}.except[{i}]: {exc}")
            continue
        if hole.version != cidr.version or not hole.subnet_of(cidr) or hole == cidr:  # type: ignore[arg-type]
            problems.append(
                f"{where}.except[{i}]: {exc_cidr} is not strictly inside {block['cidr']}"
            )


def _port(port: Any, where: str, problems: list[str]) -> None:
    if not _keys(port, {"protocol", "port", "endPort"}, where, problems):
        return
    if port.get("protocol", "TCP") not in ("TCP", "UDP", "SCTP"):
        problems.append(f"{where}.protocol: {port['protocol']!r}")
    p, end = port.get("port"), port.get("endPort")
    if isinstance(p, bool) or not (p is None or isinstance(p, int | str)):
        problems.append(f"{where}.port: {p!r}")
    elif isinstance(p, int) and not 1 <= p <= 65535:
        problems.append(f"{where}.port: {p} out of range")
    elif isinstance(p, str) and not _SVC_NAME.match(p):
        problems.append(f"{where}.port: {p!r} is not a valid port name")
    if end is not None and (
        not isinstance(p, int) or not isinstance(end, int) or end < p or end > 65535
    ):
        problems.append(f"{where}.endPort: {end!r} needs a numeric port <= endPort <= 65535")


def _peer(peer: Any, where: str, problems: list[str]) -> None:
    if not _keys(peer, {"podSelector", "namespaceSelector", "ipBlock"}, where, problems):
        return
    if not peer:
        problems.append(f"{where}: a peer must set at least one field")
    if "ipBlock" in peer and len(peer) > 1:
        problems.append(f"{where}: ipBlock excludes the selectors")
    for field in ("podSelector", "namespaceSelector"):
        if field in peer:
            _selector(peer[field], f"{where}.{field}", problems)
    if "ipBlock" in peer:
        _ip_block(peer["ipBlock"], f"{where}.ipBlock", problems)


def network_policy_problems(doc: Any) -> list[str]:
    problems: list[str] = []
    if not _keys(doc, {"apiVersion", "kind", "metadata", "spec"}, "", problems):
        return problems
    if doc.get("apiVersion") != "networking.k8s.io/v1" or doc.get("kind") != "NetworkPolicy":
        problems.append(f"apiVersion/kind: {doc.get('apiVersion')}/{doc.get('kind')}")
    meta = doc.get("metadata")
    if _keys(meta, {"name", "namespace", "labels", "annotations"}, "metadata", problems):
        name = meta.get("name", "")
        if not (isinstance(name, str) and len(name) <= 253 and _DNS1123_SUBDOMAIN.match(name)):
            problems.append(f"metadata.name: {name!r}")
        if meta.get("namespace") not in ("x", "y", "z"):
            problems.append(
                f"metadata.namespace: {meta.get('namespace')!r} is not a model namespace"
            )
    spec = doc.get("spec")
    if not _keys(spec, {"podSelector", "policyTypes", "ingress", "egress"}, "spec", problems):
        return problems
    if "podSelector" not in spec:
        problems.append("spec.podSelector: required")
    else:
        _selector(spec["podSelector"], "spec.podSelector", problems)
    types = spec.get("policyTypes") or []
    if len(set(types)) != len(types) or set(types) - {"Ingress", "Egress"}:
        problems.append(f"spec.policyTypes: {types!r}")
    for direction, peers_field in (("ingress", "from"), ("egress", "to")):
        rules = spec.get(direction)
        if rules is None:
            continue
        if not isinstance(rules, list):
            problems.append(f"spec.{direction}: not a list")
            continue
        for i, rule in enumerate(rules):
            w = f"spec.{direction}[{i}]"
            if not _keys(rule, {peers_field, "ports"}, w, problems):
                continue
            for j, peer in enumerate(rule.get(peers_field) or []):
                _peer(peer, f"{w}.{peers_field}[{j}]", problems)
            for j, port in enumerate(rule.get("ports") or []):
                _port(port, f"{w}.ports[{j}]", problems)
    return problems


# --- the checker itself must catch what it claims to catch -------------------------------------


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"podSelectr": {}}, "unknown fields"),
        (
            {
                "podSelector": {},
                "ingress": [
                    {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/24"]}}]}
                ],
            },
            "not strictly inside",
        ),
        (
            {"podSelector": {}, "ingress": [{"ports": [{"port": "serve-80-tcp", "endPort": 81}]}]},
            "endPort",
        ),
        ({"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]}, "out of range"),
        ({"podSelector": {}, "egress": [{"to": [{}]}]}, "at least one field"),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}, "needs values"),
        ({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]}, "protocol"),
    ],
)
def test_the_policy_checker_rejects_what_the_api_server_rejects(
    spec: dict[str, Any], fragment: str
) -> None:
    doc = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "x"},
        "spec": spec,
    }
    assert any(fragment in p for p in network_policy_problems(doc))


# --- the data -----------------------------------------------------------------------------------


def test_upstream_file_records_the_commit_and_holds_one_case_per_it_block() -> None:
    meta = read_file(UPSTREAM_FILE)["upstream"]
    assert meta["repository"] == "kubernetes/kubernetes"
    assert meta["path"] == "test/e2e/network/netpol/network_policy.go"
    assert re.fullmatch(r"[0-9a-f]{40}", meta["commit"])
    # 42 Its in "NetworkPolicy between server and client", 3 in the UDP context, 3 in SCTP.
    assert meta["it_blocks"] == 48 == len(UPSTREAM)
    contexts = [c.upstream["context"] for c in UPSTREAM]
    assert contexts.count("NetworkPolicy between server and client") == 42
    assert contexts.count("NetworkPolicy between server and client using UDP") == 3
    assert contexts.count("NetworkPolicy between server and client using SCTP") == 3


def test_each_upstream_it_appears_once_per_context() -> None:
    keys = [(c.upstream["context"], c.name) for c in UPSTREAM]
    assert len(set(keys)) == len(keys)


def test_extra_cases_are_marked_as_not_upstream() -> None:
    extra = [c for c in CASES if c.source == EXTRA_FILE.name]
    assert extra, "labelwall_extra.yaml holds the endPort cases"
    assert all(c.upstream == {"origin": "labelwall"} and c.id.startswith("extra-") for c in extra)


@pytest.mark.parametrize(
    ("case", "step", "doc"),
    ALL_POLICIES,
    ids=[f"{c.id}-step{i}-{d['metadata']['name']}" for c, i, d in ALL_POLICIES],
)
def test_every_policy_is_a_well_formed_network_policy(
    case: Case, step: int, doc: dict[str, Any]
) -> None:
    assert network_policy_problems(doc) == []


def test_every_upstream_policy_states_policy_types_as_upstream_helpers_always_do() -> None:
    # SetSpecIngressRules / SetSpecEgressRules append the type and set the (possibly empty) list.
    for case, _, doc in ALL_POLICIES:
        if case.source != UPSTREAM_FILE.name:
            continue
        spec = doc["spec"]
        for direction, kind in (("ingress", "Ingress"), ("egress", "Egress")):
            assert (direction in spec) == (kind in spec["policyTypes"]), (case.id, doc["metadata"])


def test_every_ipblock_cidr_is_derived_from_a_model_pod_ip() -> None:
    ips = set(POD_IPS.values())
    blocks = [
        peer["ipBlock"]
        for _, _, doc in ALL_POLICIES
        for direction, field in (("ingress", "from"), ("egress", "to"))
        for rule in doc["spec"].get(direction) or []
        for peer in rule.get(field) or []
        if "ipBlock" in peer
    ]
    assert len(blocks) == 4  # CIDR block, except clause, and both steps of the overlap case
    for block in blocks:
        for cidr in [block["cidr"], *block.get("except", [])]:
            addr, _, prefix = cidr.partition("/")
            assert addr in ips, cidr
            assert prefix in ("32", "4"), cidr


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_step_walks_and_its_expectation_evaluates_over_the_model(case: Case) -> None:
    for state in walk(case):
        table = evaluate(state.pods, state.step.expect)
        assert len(table) == len(state.pods) ** 2
        assert {tuple(k.split("/")) for k in state.pods} >= {("x", "a")}
        applied = {f"{d['metadata']['namespace']}/{d['metadata']['name']}" for d in state.policies}
        assert len(applied) == len(state.policies)


def test_multi_step_cases_cover_update_relabel_and_delete() -> None:
    steps = [s for c in UPSTREAM for s in c.steps]
    assert sum(len(c.steps) > 1 for c in UPSTREAM) == 15
    assert {r.get("pod") or r.get("namespace") for s in steps for r in s.relabel} == {
        "y",
        "x/b",
        "x/a",
    }
    assert [d for s in steps for d in s.delete] == ["x/deny-all"]
    protocols = {p.protocol for s in steps for p in s.probes}
    assert protocols == {"TCP", "UDP", "SCTP"}


def test_readme_inventory_lists_the_upstream_cases_in_data_order_with_their_step_counts() -> None:
    readme = (DATA_DIR.parent / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| ([a-z0-9-]+) \| (\d+)", readme, re.MULTILINE)
    assert [(int(n), case_id, int(steps)) for n, case_id, steps in rows] == [
        (i + 1, c.id, len(c.steps)) for i, c in enumerate(UPSTREAM)
    ]
    steps = sum(len(c.steps) for c in UPSTREAM)
    probes = sum(len(s.probes) for c in UPSTREAM for s in c.steps)
    assert f"the whole file has {steps} steps and {probes} probes" in readme
