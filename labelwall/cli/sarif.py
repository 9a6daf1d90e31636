"""Compile findings as a SARIF 2.1.0 log, for GitHub code scanning and other review tools.

Each finding is one result whose ``ruleId`` is its stable code and whose location is the
file and the line where the offending object's document starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from labelwall import __version__
from labelwall.errors import FieldError
from labelwall.policy.findings import CompileWarning

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
#: Input warnings (normalised CIDRs, ignored kinds...) carry no compile code of their own.
INPUT_WARNING = "input-warning"

RULES: Mapping[str, str] = {
    "selects-nothing": "A policy or peer selects no pod",
    "excluded-label-key": "A selector uses a label key that identities exclude",
    "unknown-port-name": "No pod declares the named port a rule uses",
    "shadowed-port-name": "Another name of the same port hides the named port",
    "egress-blocks-dns": "Egress isolation leaves pods without DNS",
    "host-network-selected": "A policy selects hostNetwork pods, where it is not enforced",
    "redundant-rule": "Another rule already allows every peer and port of this rule",
    "unknown-namespace": "A policy is in, or selects by name, a namespace not in the inputs",
    INPUT_WARNING: "An input object was accepted with a change or ignored",
}


def _location(uri: str, line: int | None) -> dict[str, Any]:
    physical: dict[str, Any] = {"artifactLocation": {"uri": uri}}
    if line is not None:
        physical["region"] = {"startLine": line}
    return {"physicalLocation": physical}


def sarif_log(
    findings: Sequence[CompileWarning],
    input_warnings: Sequence[FieldError],
    policy_locations: Mapping[str, tuple[str, int | None]],
) -> dict[str, Any]:
    """One SARIF run: the rules used, then a result per finding."""
    results: list[dict[str, Any]] = []
    for w in findings:
        where = policy_locations.get(w.policy)
        result: dict[str, Any] = {
            "ruleId": w.code,
            "level": "warning",
            "message": {"text": f"NetworkPolicy {w.policy}: {w.field}: {w.message}"},
        }
        if where is not None:
            result["locations"] = [_location(*where)]
        results.append(result)
    for e in input_warnings:
        results.append(
            {
                "ruleId": INPUT_WARNING,
                "level": "warning",
                "message": {"text": str(e)},
                "locations": [_location(e.source, e.line)],
            }
        )
    used = sorted({r["ruleId"] for r in results})
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "labelwall",
                        "version": __version__,
                        "rules": [
                            {"id": code, "shortDescription": {"text": RULES.get(code, code)}}
                            for code in used
                        ],
                    }
                },
                "results": results,
            }
        ],
    }
