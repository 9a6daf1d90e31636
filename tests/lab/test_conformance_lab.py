"""The upstream NetworkPolicy e2e cases in the lab: real packets, every step, every probe.

All 48 upstream cases (and our endPort/named-port extras) run in CI: the whole file takes
about 50 s on a 2-core machine, far under the 10-minute budget, so there is no subset::

    sudo .venv/bin/pytest tests/lab/test_conformance_lab.py
"""

from __future__ import annotations

import pytest
from conformance.cases import Case, load_cases, walk
from conformance.expectations import compare, diff_report, evaluate

from labelwall.cluster import Protocol
from labelwall.lab.control import Lab
from labelwall.lab.truth import measure
from labelwall.manifests import load_cluster

from .helpers import as_docs, sync_to

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.netns]

CASES = load_cases()
PROBE_TIMEOUT_S = 0.5


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_upstream_case_with_real_packets_matches_the_expectation_at_every_step(
    lab: Lab, case: Case
) -> None:
    failures: list[str] = []
    for state in walk(case):
        sync_to(lab, state.docs)
        cluster = load_cluster(as_docs(state.docs)).state
        pods = state.pods
        expected = evaluate(pods, state.step.expect)
        for probe in state.step.probes:
            cells = measure(lab, cluster, [(probe.port, Protocol[probe.protocol])], PROBE_TIMEOUT_S)
            observed = {(m.cell.src, m.cell.dst): bool(m.measured) for m in cells}
            if compare(pods, expected, observed):
                title = f"{case.id} step {state.step.index} {probe.label} (measured)"
                failures.append(diff_report(title, pods, expected, observed))
    assert not failures, "\n\n".join(failures)
