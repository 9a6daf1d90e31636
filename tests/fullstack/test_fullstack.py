"""kubectl to enforced packets: the real API server, the helm-installed chart, the operator and
one agent run as the chart runs them, and the lab kubelet giving each Pod a network namespace.

Every upstream NetworkPolicy e2e case (and our extras) is applied with kubectl, step by
step, and probed with real TCP/UDP/SCTP packets between the pods' namespaces; every table
must match the upstream expectation. Like upstream's ``ValidateOrFail``, a table is probed
again (until ``SETTLE_TIMEOUT_S``) while the change is still propagating; before the first
probe the test waits until the agent has handled the change and gone quiet.

    sudo .venv/bin/pytest tests/fullstack/test_fullstack.py
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from conformance.cases import Case, load_cases, walk
from conformance.expectations import compare, diff_report, evaluate
from conformance.model import POD_IPS, build_model

from labelwall.cluster import Protocol
from labelwall.lab import topology
from labelwall.lab.truth import measure
from labelwall.manifests import SourceDoc, load_cluster

from .harness import NAMESPACE, Converger, Stack, requirements

pytestmark = [pytest.mark.apiserver, pytest.mark.root, pytest.mark.bpf, pytest.mark.netns]

PREFIX = "lwf-"
CASES = load_cases()
PROBE_TIMEOUT_S = 0.5
#: How long a table may take to show a change (upstream retries its probes likewise).
SETTLE_TIMEOUT_S = 20.0
Doc = dict[str, Any]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    missing = requirements()
    if missing:
        pytest.fail(
            "the full-stack test needs: " + "; ".join(missing)
            + " (CI: run as root after tools/k8s/build.sh and tools/helm/build.sh)",
            pytrace=False,
        )  # fmt: skip
    the_stack = Stack(tmp_path_factory.mktemp("fullstack"), PREFIX)
    the_stack.up()
    try:
        yield the_stack
    finally:
        the_stack.down()
        assert not topology.list_netns(PREFIX), "the stack left network namespaces behind"
        assert not topology.list_links(PREFIX), "the stack left links behind"


@pytest.fixture(scope="module")
def cluster(stack: Stack) -> Converger:
    return Converger(stack)


def as_docs(objs: Sequence[Mapping[str, Any]]) -> list[SourceDoc]:
    return [SourceDoc("test", i, o) for i, o in enumerate(objs)]


def converge(stack: Stack, cluster: Converger, docs: Sequence[Doc]) -> None:
    """kubectl until the cluster holds ``docs``; then wait until the agent went quiet."""
    before = stack.agent_syncs()
    if cluster.converge(docs):
        stack.wait_agent_quiet(before)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_upstream_case_applied_with_kubectl_matches_the_expectation_with_real_packets(
    stack: Stack, cluster: Converger, case: Case, record_property: Any
) -> None:
    failures: list[str] = []
    attempts: list[int] = []
    for state in walk(case):
        converge(stack, cluster, state.docs)
        model = load_cluster(as_docs(state.docs)).state
        pods = state.pods
        expected = evaluate(pods, state.step.expect)
        for probe in state.step.probes:
            deadline = time.monotonic() + SETTLE_TIMEOUT_S
            tries = 0
            while True:
                tries += 1
                ports = [(probe.port, Protocol[probe.protocol])]
                # The kubelet answers Lab.probe's requests, which is all measure() uses; it
                # has no lab node, so pod cells only.
                cells = measure(
                    stack.kubelet,  # type: ignore[arg-type]
                    model,
                    ports,
                    PROBE_TIMEOUT_S,
                    with_node=False,
                )
                observed = {(m.cell.src, m.cell.dst): bool(m.measured) for m in cells}
                if not compare(pods, expected, observed):
                    break
                if time.monotonic() > deadline:
                    title = f"{case.id} step {state.step.index} {probe.label} (kubectl + packets)"
                    failures.append(diff_report(title, pods, expected, observed))
                    break
                time.sleep(0.2)
            attempts.append(tries)
    record_property("probe_attempts", attempts)
    stack.check_alive()
    assert not failures, "\n\n".join(failures)


# ---------------------------------------------------------------- kubectl verbs


def policy(namespace: str, name: str, spec: Mapping[str, Any]) -> Doc:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": dict(spec),
    }


def to_x_a(allowed_from: Mapping[str, Any]) -> Doc:
    """Ingress to x/a on TCP 80 only from ``allowed_from`` (one peer)."""
    return policy(
        "x",
        "allow-to-a",
        {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [dict(allowed_from)], "ports": [{"port": 80}]}],
        },
    )


Flow = tuple[str, str]  # (src pod, dst pod), TCP 80


def observe(stack: Stack, flows: Sequence[Flow], ip: Mapping[str, str] | None = None) -> list[bool]:
    requests = [
        {
            "src": s,
            "dst": d,
            "port": 80,
            "protocol": "TCP",
            **({"ip": ip[d]} if ip and d in ip else {}),
        }
        for s, d in flows
    ]
    return [r["outcome"] in ("ok", "refused") for r in stack.probe(requests, PROBE_TIMEOUT_S)]


def expect_flows(
    stack: Stack,
    want: Mapping[Flow, bool],
    timeout_s: float = SETTLE_TIMEOUT_S,
    ip: Mapping[str, str] | None = None,
) -> float:
    """Probe until every flow is as wanted; seconds it took. Fails with the last outcome."""
    flows = sorted(want)
    t0 = time.monotonic()
    while True:
        seen = dict(zip(flows, observe(stack, flows, ip), strict=True))
        if seen == dict(want):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            wrong = {f"{s}->{d}": seen[(s, d)] for s, d in flows if seen[(s, d)] != want[(s, d)]}
            raise AssertionError(f"after {timeout_s}s these flows are wrong (allowed?): {wrong}")
        time.sleep(0.1)


def test_kubectl_label_pod_admits_and_then_drops_the_relabelled_client(
    stack: Stack, cluster: Converger
) -> None:
    converge(
        stack,
        cluster,
        [
            *build_model(),
            to_x_a({"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "client"}}}),
        ],
    )
    closed = {("y/b", "x/a"): False, ("y/c", "x/a"): False, ("x/b", "x/a"): False}
    expect_flows(stack, closed)
    try:
        stack.kubectl("label", "pod", "-n", "y", "b", "role=client")
        expect_flows(stack, {**closed, ("y/b", "x/a"): True})
    finally:
        stack.kubectl("label", "pod", "-n", "y", "b", "role-")
    expect_flows(stack, closed)


def test_kubectl_label_namespace_admits_and_then_drops_its_pods(
    stack: Stack, cluster: Converger
) -> None:
    converge(
        stack,
        cluster,
        [*build_model(), to_x_a({"namespaceSelector": {"matchLabels": {"team": "blue"}}})],
    )
    closed = {(f"{ns}/{p}", "x/a"): False for ns in ("y", "z") for p in ("a", "b")}
    expect_flows(stack, closed)
    try:
        stack.kubectl("label", "namespace", "y", "team=blue")
        expect_flows(stack, {**closed, ("y/a", "x/a"): True, ("y/b", "x/a"): True})
    finally:
        stack.kubectl("label", "namespace", "y", "team-")
    expect_flows(stack, closed)


def test_kubectl_delete_networkpolicy_reopens_traffic(stack: Stack, cluster: Converger) -> None:
    deny = policy("x", "deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})
    converge(stack, cluster, [*build_model(), deny])
    flows = [("y/b", "x/a"), ("z/c", "x/b"), ("x/c", "x/a")]
    expect_flows(stack, dict.fromkeys(flows, False))
    stack.kubectl("delete", "networkpolicy", "-n", "x", "deny-ingress")
    cluster.policies.pop("x/deny-ingress")
    took = expect_flows(stack, dict.fromkeys(flows, True))
    assert took < SETTLE_TIMEOUT_S


def _identity_numbers(stack: Stack, namespace: str) -> dict[str, str]:
    items = json.loads(
        stack.kubectl(
            "get", "identities", "-l", f"labelwall.io/namespace={namespace}", "-o", "json"
        ).stdout
    )["items"]
    return {i["spec"].get("summary", ""): i["metadata"]["name"] for i in items}


def test_pod_deleted_and_recreated_with_a_new_ip_is_enforced_without_a_policy_map_write(
    stack: Stack, cluster: Converger
) -> None:
    allow_b = to_x_a({"podSelector": {"matchLabels": {"pod": "b"}}})
    model = [*build_model(), allow_b]
    converge(stack, cluster, model)
    want = {("x/b", "x/a"): True, ("x/c", "x/a"): False, ("y/b", "x/a"): False}
    expect_flows(stack, want)
    assert stack.kubelet is not None
    assert stack.kubelet.running()["x/a"] == POD_IPS["x/a"]
    ids_before = _identity_numbers(stack, "x")
    before = stack.policy_map_writes()
    ipcache_before = stack.agent_metric(
        "labelwall_agent_map_writes_total", {"map": "lw_ipcache_v1"}
    )

    new_ip = "10.244.1.99"
    moved = [
        {**d, "status": {**d["status"], "podIP": new_ip, "podIPs": [{"ip": new_ip}]}}
        if d["kind"] == "Pod" and d["metadata"]["namespace"] == "x" and d["metadata"]["name"] == "a"
        else d
        for d in model
    ]
    try:
        converge(stack, cluster, moved)  # kubectl delete pod x/a, kubectl apply (new address)
        assert cluster.commands[-2][:5] == ["delete", "pod", "-n", "x", "a"]
        assert stack.kubelet.running()["x/a"] == new_ip
        expect_flows(stack, want)
        # the old address is nobody's now
        assert observe(stack, [("x/b", "x/a")], ip={"x/a": POD_IPS["x/a"]}) == [False]
        assert stack.policy_map_writes() == before
        assert (
            stack.agent_metric("labelwall_agent_map_writes_total", {"map": "lw_ipcache_v1"})
            > ipcache_before
        )
        assert _identity_numbers(stack, "x") == ids_before
    finally:
        converge(stack, cluster, model)


def test_operator_and_agent_run_as_the_chart_service_accounts_and_are_never_forbidden(
    stack: Stack,
) -> None:
    stack.check_alive()
    for proc, account in ((stack.operator, "labelwall-operator"), (stack.agent, "labelwall-agent")):
        assert proc is not None
        kubeconfig = proc.env["KUBECONFIG"]
        user = yaml.safe_load(Path(kubeconfig).read_text())["users"][0]["name"]
        assert user == f"system:serviceaccount:{NAMESPACE}:{account}"
        # least privilege: neither may touch pods
        can = stack.kubectl(
            "auth", "can-i", "delete", "pods", "-A", kubeconfig=Path(kubeconfig), check=False
        )
        assert can.stdout.strip() == "no"
        log = proc.log.read_text()
        assert "Forbidden" not in log, proc.tail()
        assert " 403" not in log, proc.tail()
