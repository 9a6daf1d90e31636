"""Workload objects (Deployment, StatefulSet, ...) to the pod their template describes (pure).

A pull request holds workloads, not running pods: each workload becomes one pod value named
``name[Kind]`` (np-guard's naming) with its pod template's labels, container ports, node
and hostNetwork, and no address (the manifests layer gives it one; see manifests.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from labelwall.cluster import Pod
from labelwall.decode.corev1 import decode_pod
from labelwall.decode.fields import (
    DEFAULT_NAMESPACE,
    Problems,
    as_object,
    child,
    read_metadata,
)
from labelwall.decode.validation import dns1123_subdomain_errors


@dataclass(frozen=True)
class WorkloadKind:
    """A kind whose pods come from a template at ``template_path`` (field names from spec)."""

    name: str
    api_version: str
    template_path: tuple[str, ...]


_TEMPLATE = ("spec", "template")
WORKLOAD_KINDS: Mapping[str, WorkloadKind] = {
    k.name: k
    for k in (
        WorkloadKind("Deployment", "apps/v1", _TEMPLATE),
        WorkloadKind("StatefulSet", "apps/v1", _TEMPLATE),
        WorkloadKind("DaemonSet", "apps/v1", _TEMPLATE),
        WorkloadKind("ReplicaSet", "apps/v1", _TEMPLATE),
        WorkloadKind("ReplicationController", "v1", _TEMPLATE),
        WorkloadKind("Job", "batch/v1", _TEMPLATE),
        WorkloadKind("CronJob", "batch/v1", ("spec", "jobTemplate", "spec", "template")),
    )
}


def workload_key(namespace: str, name: str, kind: str) -> str:
    """The row name of a workload: ``namespace/name[Kind]``."""
    return f"{namespace}/{name}[{kind}]"


def decode_workload(
    kind: WorkloadKind, obj: Mapping[str, Any], path: str, p: Problems
) -> tuple[str, Pod | None]:
    """The pod ``kind``'s template describes, named ``name[Kind]``; None on any error."""
    before = len(p.errors)
    meta = read_metadata(obj, path, p, name_errors=dns1123_subdomain_errors, namespaced=True)
    namespace = meta.namespace or DEFAULT_NAMESPACE
    label = f"{kind.name} {namespace}/{meta.name or '<no name>'}"
    node: Mapping[str, Any] = obj
    template_path = path
    for part in kind.template_path:
        template_path = child(template_path, part)
        node = as_object(node.get(part), template_path, p) or {}
    if not node and len(p.errors) == before:
        p.error(template_path, "Required value: the pod template")
    template_meta = as_object(node.get("metadata"), child(template_path, "metadata"), p) or {}
    as_pod = {
        "metadata": {
            "name": meta.name or "unnamed",
            "namespace": namespace,
            "labels": template_meta.get("labels") or {},
        },
        "spec": node.get("spec") or {},
    }
    _, pod = decode_pod(as_pod, template_path, p)
    if len(p.errors) > before or pod is None or meta.name is None:
        return label, None
    return label, replace(pod, name=f"{meta.name}[{kind.name}]", ips=())
