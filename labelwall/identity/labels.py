"""Canonical label sets: what a pod's identity is a function of (ARCHITECTURE §2)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from labelwall.cluster import Labels, Namespace, Pod

#: Pod label keys that vary per pod or per rollout and would split one workload into many
#: identities (ARCHITECTURE §2). Configurable through CompileOptions.exclude.
#: In the order the chart's values.yaml lists them (the config's default, identity.excludeLabels).
DEFAULT_EXCLUDE_LABELS: tuple[str, ...] = (
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "batch.kubernetes.io/job-completion-index",
    "pod-template-generation",
)
DEFAULT_EXCLUDE: frozenset[str] = frozenset(DEFAULT_EXCLUDE_LABELS)

#: The label the API server puts on every namespace (immutable, = the namespace name).
#: We add it when the input lacks it, so `namespaceSelector` on it works on plain YAML.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

#: Reserved prefix of namespace-derived labels in the flat form (``flat()``), and the key
#: that carries the namespace name. The flat form is for display and for the Identity
#: resource; the canonical form below keeps the three sources apart, so a pod label that
#: happens to start with this prefix can never impersonate another namespace.
NAMESPACE_LABEL_PREFIX = "labelwall.io/ns."
NAMESPACE_NAME_KEY = "labelwall.io/namespace"

#: Version tag in the canonical form, so a future change of form never collides with this one.
CANONICAL_VERSION = 1


class LabelSetError(ValueError):
    """A serialised label set that cannot be parsed back."""


@dataclass(frozen=True)
class LabelSet:
    """Pod labels (minus the exclude list), the namespace name and the namespace labels.

    ``pod_labels`` serves podSelector, ``namespace_labels`` namespaceSelector and
    ``namespace`` the "pods in the policy's own namespace" rule.
    """

    namespace: str
    pod_labels: Labels = field(default_factory=Labels)
    namespace_labels: Labels = field(default_factory=Labels)

    @classmethod
    def from_pod(
        cls,
        pod: Pod,
        namespace: Namespace | None,
        exclude: Iterable[str] = DEFAULT_EXCLUDE,
    ) -> LabelSet:
        """The label set of ``pod``; ``namespace`` None means a namespace we hold no object for."""
        excluded = frozenset(exclude)
        pod_labels = {k: v for k, v in pod.labels.items() if k not in excluded}
        return cls(
            namespace=pod.namespace,
            pod_labels=Labels(pod_labels),
            namespace_labels=namespace_labels(
                namespace if namespace is not None else Namespace(pod.namespace)
            ),
        )

    def canonical(self) -> str:
        """A serialisation stable across processes and Python versions (sorted keys, ASCII)."""
        return json.dumps(
            {
                "v": CANONICAL_VERSION,
                "namespace": self.namespace,
                "namespaceLabels": dict(self.namespace_labels.items_sorted()),
                "podLabels": dict(self.pod_labels.items_sorted()),
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
        )

    def digest(self) -> bytes:
        """sha256 of the canonical form: the input of number allocation."""
        return hashlib.sha256(self.canonical().encode("ascii")).digest()

    def flat(self) -> dict[str, str]:
        """One flat label map: pod labels, namespace labels under the reserved prefix."""
        out = dict(self.pod_labels.items_sorted())
        for k, v in self.namespace_labels.items_sorted():
            out[NAMESPACE_LABEL_PREFIX + k] = v
        out[NAMESPACE_NAME_KEY] = self.namespace
        return out

    def __str__(self) -> str:
        pod = ",".join(f"{k}={v}" for k, v in self.pod_labels.items_sorted())
        return f"{self.namespace}{{{pod}}}"


def namespace_labels(namespace: Namespace) -> Labels:
    """A namespace's labels as the API server stores them (with the metadata.name label)."""
    if namespace.labels.get(NAMESPACE_NAME_LABEL) == namespace.name:
        return namespace.labels
    return Labels({**dict(namespace.labels), NAMESPACE_NAME_LABEL: namespace.name})


def parse_canonical(text: str) -> LabelSet:
    """The inverse of ``LabelSet.canonical``; raises LabelSetError on anything else."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise LabelSetError(f"not a canonical label set: {e}") from e
    if not isinstance(data, dict) or data.get("v") != CANONICAL_VERSION:
        raise LabelSetError("not a canonical label set: missing or unknown version")
    ns = data.get("namespace")
    if not isinstance(ns, str) or set(data) != {"v", "namespace", "namespaceLabels", "podLabels"}:
        raise LabelSetError("not a canonical label set: unexpected fields")
    maps: list[Labels] = []
    for name in ("podLabels", "namespaceLabels"):
        raw = data[name]
        if not isinstance(raw, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
        ):
            raise LabelSetError(f"not a canonical label set: {name} must map strings to strings")
        maps.append(Labels(raw))
    result = LabelSet(ns, maps[0], maps[1])
    if result.canonical() != text:
        raise LabelSetError("not in canonical form (key order, spacing or escaping differ)")
    return result
