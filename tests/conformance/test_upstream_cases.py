"""Runs every conformance case, step by step, through load -> compile -> the reachability matrix."""

from __future__ import annotations

import pytest

from .cases import Case, StepState, load_cases, walk
from .expectations import compare, diff_report, evaluate

CASES = load_cases()


def _matrix(state: StepState, case: Case) -> dict[str, dict[tuple[str, str], bool]]:
    """Observed table per probe label, computed by labelwall exactly as `labelwall matrix` does."""
    # Imported here so the data/model tests run even while these modules are being written.
    from labelwall.cluster import Protocol
    from labelwall.manifests import SourceDoc, load_cluster
    from labelwall.policy.compile import compile_cluster
    from labelwall.policy.matrix import reachability

    source = f"{case.source}#{case.id}/step{state.step.index}"
    docs = [SourceDoc(source, i, obj) for i, obj in enumerate(state.docs)]
    compiled = compile_cluster(load_cluster(docs).state)
    observed: dict[str, dict[tuple[str, str], bool]] = {}
    for probe in state.step.probes:
        # One call per probe, so a cell belongs to its probe whatever port form it reports.
        cells = reachability(compiled, [(probe.port, Protocol[probe.protocol])])
        observed[probe.label] = {(str(c.src), str(c.dst)): bool(c.allowed) for c in cells}
    return observed


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case_reachability_matches_upstream_expectation_at_every_step(case: Case) -> None:
    failures: list[str] = []
    for state in walk(case):
        pods = state.pods
        expected = evaluate(pods, state.step.expect)
        for label, observed in _matrix(state, case).items():
            if compare(pods, expected, observed):
                title = f"{case.id} step {state.step.index} {label} ({state.step.by or case.name})"
                failures.append(diff_report(title, pods, expected, observed))
    assert not failures, "\n\n".join(failures)
