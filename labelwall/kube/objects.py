"""Kubernetes API objects to labelwall values (the kinds table's decoders), and Identity objects."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from cachetools import LRUCache

from labelwall.cluster import Labels, Namespace, Node, Pod
from labelwall.decode.fields import Problems
from labelwall.decode.kinds import NAMESPACE, NETWORK_POLICY, NODE, POD, Kind
from labelwall.decode.networkpolicy import parse_network_policy
from labelwall.decode.validation import label_value_errors, qualified_name_errors
from labelwall.errors import FieldError, InvalidInputError
from labelwall.identity.labels import (
    NAMESPACE_LABEL_PREFIX,
    NAMESPACE_NAME_KEY,
    LabelSet,
    LabelSetError,
    parse_canonical,
)
from labelwall.policy.model import NetworkPolicy

T = TypeVar("T")

#: The Identity custom resource (charts/labelwall/crds/identities.labelwall.io.yaml).
GROUP = "labelwall.io"
VERSION = "v1alpha1"
PLURAL = "identities"
KIND = "Identity"
API_VERSION = f"{GROUP}/{VERSION}"

#: The exact canonical label set, written once at creation. spec.labels holds the flat form,
#: which is ambiguous when a pod itself carries a key under the reserved ``labelwall.io/ns.``
#: prefix; this annotation keeps the three sources apart (LabelSet.canonical()).
CANONICAL_ANNOTATION = "labelwall.io/labelset"
#: The CRD caps spec.summary at 1024 characters.
SUMMARY_MAX = 1024
#: NetworkPolicy annotation holding the operator's compile outcome as JSON.
STATUS_ANNOTATION = "labelwall.io/status"
#: The source that error messages about API objects name.
API_SOURCE = "kube-apiserver"


def _decode(kind: Kind[T], obj: Mapping[str, Any]) -> T | None:
    """``obj`` (a watch event's or list item's object) as ``kind``'s value; None if invalid.

    Items of a list response carry no apiVersion/kind: the table supplies them.
    """
    problems = Problems()
    _, value = kind.decode({**obj, "apiVersion": kind.api_version, "kind": kind.name}, "", problems)
    return None if problems.errors else value


def parse_pod(obj: Mapping[str, Any]) -> Pod | None:
    """The Pod value of an API object (the manifests' decoder); None if it does not parse."""
    return _decode(POD, obj)


def parse_namespace(obj: Mapping[str, Any]) -> Namespace | None:
    return _decode(NAMESPACE, obj)


def parse_node(obj: Mapping[str, Any]) -> Node | None:
    return _decode(NODE, obj)


@dataclass(frozen=True)
class PolicyEntry:
    """One NetworkPolicy as the operator sees it: its model, or why it has none."""

    namespace: str
    name: str
    uid: str
    policy: NetworkPolicy | None
    errors: tuple[FieldError, ...] = ()
    warnings: tuple[FieldError, ...] = ()
    #: The labelwall.io/status annotation currently on the object (None: absent).
    status_annotation: str | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_policy(obj: Mapping[str, Any], status_annotation_key: str) -> PolicyEntry:
    meta = obj.get("metadata") or {}
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    annotations = meta.get("annotations") or {}
    current = annotations.get(status_annotation_key)
    uid = str(meta.get("uid") or "")
    try:
        parsed = parse_network_policy(
            {**obj, "apiVersion": NETWORK_POLICY.api_version, "kind": NETWORK_POLICY.name},
            API_SOURCE,
            None,
        )
    except InvalidInputError as e:
        return PolicyEntry(namespace, name, uid, None, tuple(e.errors), (), current)
    return PolicyEntry(namespace, name, uid, parsed.policy, (), parsed.warnings, current)


# --- Identity objects -------------------------------------------------------------------


def kube_labels(labelset: LabelSet) -> dict[str, str]:
    """The flat label set restricted to what metadata.labels accepts (for `-l` selection).

    Pod labels and the namespace name are always valid; namespace labels under the reserved
    prefix are dropped when the prefixed key is not a qualified name (a key that has its own
    prefix, e.g. ``labelwall.io/ns.kubernetes.io/metadata.name``, has two slashes).
    """
    return {
        k: v
        for k, v in labelset.flat().items()
        if not qualified_name_errors(k) and not label_value_errors(v)
    }


def summary(labelset: LabelSet) -> str:
    """Pod labels sorted by key as k=v,k=v (the LABELS printer column), capped for the CRD."""
    text = ",".join(f"{k}={v}" for k, v in labelset.pod_labels.items_sorted())
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 3] + "..."


def identity_body(number: int, labelset: LabelSet) -> dict[str, Any]:
    """The Identity object that claims ``number`` for ``labelset``."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": str(number),
            "labels": kube_labels(labelset),
            "annotations": {CANONICAL_ANNOTATION: labelset.canonical()},
        },
        "spec": {
            "labels": labelset.flat(),
            "namespace": labelset.namespace,
            "summary": summary(labelset),
        },
    }


# Parsing the canonical JSON again on every watch event of every identity is wasted work;
# label sets are immutable, so a bounded memo of text -> LabelSet is always correct.
_CANONICAL_MEMO: LRUCache[str, LabelSet] = LRUCache(maxsize=65536)


def _from_canonical(text: str) -> LabelSet:
    found = _CANONICAL_MEMO.get(text)
    if found is None:
        found = parse_canonical(text)
        _CANONICAL_MEMO[text] = found
    return found


def labelset_from_flat(flat: Mapping[str, str], namespace: str) -> LabelSet:
    """The inverse of LabelSet.flat() (exact unless pod labels use the reserved prefix)."""
    pod: dict[str, str] = {}
    ns: dict[str, str] = {}
    for k, v in flat.items():
        if k == NAMESPACE_NAME_KEY:
            continue
        if k.startswith(NAMESPACE_LABEL_PREFIX):
            ns[k[len(NAMESPACE_LABEL_PREFIX) :]] = v
        else:
            pod[k] = v
    return LabelSet(namespace, Labels(pod), Labels(ns))


def identity_labelset(obj: Mapping[str, Any]) -> LabelSet | None:
    """The label set an Identity object holds; None when the object is malformed.

    The canonical annotation is used when it agrees with the immutable spec (so editing
    the annotation cannot move an identity to another label set); otherwise the flat spec.
    """
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return None
    flat, namespace = spec.get("labels"), spec.get("namespace")
    if not isinstance(flat, Mapping) or not isinstance(namespace, str) or not namespace:
        return None
    flat_dict = {str(k): str(v) for k, v in flat.items()}
    text = ((obj.get("metadata") or {}).get("annotations") or {}).get(CANONICAL_ANNOTATION)
    if isinstance(text, str):
        try:
            exact = _from_canonical(text)
        except LabelSetError:
            exact = None
        if exact is not None and exact.namespace == namespace and exact.flat() == flat_dict:
            return exact
    return labelset_from_flat(flat_dict, namespace)


def parse_time(value: object) -> datetime.datetime | None:
    """An RFC 3339 timestamp as the API writes it (``2024-01-02T03:04:05Z``), UTC-aware."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def format_time(value: datetime.datetime) -> str:
    """RFC 3339 in UTC with microseconds (the CRD's fields are ``format: date-time``).

    Microseconds rather than metav1.Time's whole seconds: a truncated lastUsed would let
    garbage collection run up to a second before the grace period has really passed.
    """
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class IdentityRecord:
    """What the operator needs from one Identity object."""

    number: int
    labelset: LabelSet | None  # None: malformed object (the number is still taken)
    uid: str
    resource_version: str
    pods: int | None = None  # status.pods; None when status was never written
    last_used: datetime.datetime | None = None
    in_use_condition: str | None = None  # status of the InUse condition, if any

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> IdentityRecord | None:
        meta = obj.get("metadata") or {}
        try:
            number = int(str(meta.get("name")))
        except ValueError:
            return None
        status = obj.get("status") or {}
        pods = status.get("pods")
        cond = next(
            (c for c in status.get("conditions") or () if c.get("type") == IN_USE_CONDITION),
            None,
        )
        return cls(
            number=number,
            labelset=identity_labelset(obj),
            uid=str(meta.get("uid") or ""),
            resource_version=str(meta.get("resourceVersion") or ""),
            pods=pods if isinstance(pods, int) else None,
            last_used=parse_time(status.get("lastUsed")),
            in_use_condition=None if cond is None else str(cond.get("status")),
        )


#: The one condition the operator maintains on an Identity.
IN_USE_CONDITION = "InUse"
