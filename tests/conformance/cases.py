"""Loads the conformance case files and walks a case's steps into the cluster state of each step."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .model import Doc, apply_relabels, build_model, pod_keys

DATA_DIR = Path(__file__).parent / "data"
UPSTREAM_FILE = DATA_DIR / "network_policy.yaml"
# Cases we wrote ourselves in the upstream style, for shapes upstream does not probe (endPort).
EXTRA_FILE = DATA_DIR / "labelwall_extra.yaml"

PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True)
class Probe:
    """One ValidateOrFail call: every pod pair on ``port`` (a number or a port name)."""

    port: int | str
    protocol: str

    @property
    def label(self) -> str:
        return f"{self.protocol}/{self.port}"


@dataclass(frozen=True)
class Step:
    """Changes, in order relabel -> delete -> apply; then probes checked against expect."""

    index: int
    by: str
    relabel: tuple[Mapping[str, Any], ...]
    delete: tuple[str, ...]
    apply: tuple[Doc, ...]
    probes: tuple[Probe, ...]
    expect: Mapping[str, Any]


@dataclass(frozen=True)
class Case:
    id: str
    name: str
    source: str  # data file name
    upstream: Mapping[str, Any]
    setup: Mapping[str, Any]
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class StepState:
    """The cluster as it stands when a step's probes run."""

    step: Step
    cluster: tuple[Doc, ...]  # Namespaces and Pods, relabels so far applied
    policies: tuple[Doc, ...]  # NetworkPolicies applied so far minus those deleted

    @property
    def docs(self) -> list[Doc]:
        return [*self.cluster, *self.policies]

    @property
    def pods(self) -> list[str]:
        return pod_keys(self.cluster)


def read_file(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise ValueError(f"{path}: expected a mapping with a 'cases' list")
    return data


def load_cases(paths: tuple[Path, ...] = (UPSTREAM_FILE, EXTRA_FILE)) -> list[Case]:
    cases: list[Case] = []
    for path in paths:
        for i, raw in enumerate(read_file(path)["cases"]):
            try:
                cases.append(_case(raw, path.name))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path.name}: cases[{i}] ({raw.get('id')!r}): {exc}") from exc
    ids = [c.id for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"duplicate case ids: {dupes}")
    return cases


_CASE_KEYS = {"id", "name", "upstream", "setup", "steps"}
_STEP_KEYS = {"by", "relabel", "delete", "apply", "probes", "expect"}


def _case(raw: Mapping[str, Any], source: str) -> Case:
    unknown = set(raw) - _CASE_KEYS
    if unknown:
        raise ValueError(f"unknown case keys {sorted(unknown)}")
    steps = tuple(_step(i, s) for i, s in enumerate(raw["steps"]))
    if not steps:
        raise ValueError("a case needs at least one step")
    return Case(
        id=str(raw["id"]),
        name=str(raw["name"]),
        source=source,
        upstream=dict(raw.get("upstream") or {}),
        setup=dict(raw.get("setup") or {}),
        steps=steps,
    )


def _step(index: int, raw: Mapping[str, Any]) -> Step:
    unknown = set(raw) - _STEP_KEYS
    if unknown:
        raise ValueError(f"steps[{index}]: unknown keys {sorted(unknown)}")
    probes = tuple(_probe(p) for p in raw["probes"])
    if not probes:
        raise ValueError(f"steps[{index}]: needs at least one probe")
    return Step(
        index=index,
        by=str(raw.get("by", "")),
        relabel=tuple(raw.get("relabel") or ()),
        delete=tuple(str(d) for d in raw.get("delete") or ()),
        apply=tuple(raw.get("apply") or ()),
        probes=probes,
        expect=raw["expect"],
    )


def _probe(raw: Mapping[str, Any]) -> Probe:
    if set(raw) != {"port", "protocol"}:
        raise ValueError(f"a probe is {{port, protocol}}, got {dict(raw)!r}")
    port, protocol = raw["port"], raw["protocol"]
    if protocol not in PROTOCOLS:
        raise ValueError(f"probe protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if isinstance(port, bool) or not isinstance(port, int | str):
        raise ValueError(f"probe port must be a number or a port name, got {port!r}")
    if isinstance(port, int) and not 1 <= port <= 65535:
        raise ValueError(f"probe port out of range: {port}")
    return Probe(port, protocol)


def policy_key(doc: Mapping[str, Any]) -> str:
    meta = doc["metadata"]
    return f"{meta['namespace']}/{meta['name']}"


def walk(case: Case) -> Iterator[StepState]:
    """Yield the state after each step's changes. ``apply`` creates or replaces by namespace/name
    (upstream CreatePolicy and UpdatePolicy alike); deleting a policy that does not exist is an
    error in the data."""
    cluster = build_model(case.setup)
    policies: dict[str, Doc] = {}
    for step in case.steps:
        cluster = apply_relabels(cluster, step.relabel)
        for key in step.delete:
            if key not in policies:
                raise ValueError(f"{case.id} step {step.index}: delete of unknown policy {key!r}")
            del policies[key]
        for doc in step.apply:
            policies[policy_key(doc)] = copy.deepcopy(doc)
        yield StepState(
            step, tuple(copy.deepcopy(cluster)), tuple(copy.deepcopy(list(policies.values())))
        )
