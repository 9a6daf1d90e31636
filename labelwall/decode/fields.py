"""Typed, path-tracking reads of decoded Kubernetes YAML that collect every problem found.

Decoding follows what the API server's JSON decoder does with the same document: ``null``
means "not set", a number is never a string (``app: 1`` in a selector is an error, as it is
for kubectl), a boolean is never an integer, and field names are case-sensitive. Unknown
fields are errors, as with ``kubectl --validate=strict``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from labelwall.cluster import Labels
from labelwall.decode.validation import (
    dns1123_label_errors,
    label_value_errors,
    qualified_name_errors,
)

# ObjectMeta fields; the ones we do not read are what `kubectl get -o yaml` carries.
OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)


def child(path: str, name: str) -> str:
    """``spec`` + ``ingress`` -> ``spec.ingress``; the root path is ``""``."""
    return f"{path}.{name}" if path else name


def item(path: str, index: int) -> str:
    return f"{path}[{index}]"


def map_key(path: str, key: str) -> str:
    """A map entry, as Go's field.Path.Key renders it: ``metadata.labels[app.k8s.io/name]``."""
    return f"{path}[{key}]"


def type_name(value: object) -> str:
    """The JSON type name of a decoded YAML value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__  # e.g. a YAML timestamp or binary value


@dataclass
class Problems:
    """Errors and warnings as (field path, message), in the order found."""

    errors: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)

    def error(self, path: str, message: str) -> None:
        self.errors.append((path, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append((path, message))

    def all_invalid(self, path: str, messages: Sequence[str], value: object) -> bool:
        """Record each message as ``Invalid value: <value>: <msg>``; True if there were none."""
        for msg in messages:
            self.error(path, f"Invalid value: {value!r}: {msg}")
        return not messages


def _wrong_type(problems: Problems, path: str, want: str, value: object) -> None:
    hint = ""
    if want == "a string" and isinstance(value, bool | int | float):
        hint = " (quote it: YAML reads 1, 1.0, true, yes and on as non-strings)"
    problems.error(path, f"must be {want}, got {type_name(value)} {value!r}{hint}")


def as_object(
    value: object,
    path: str,
    problems: Problems,
    known: Collection[str] | None = None,
) -> Mapping[str, Any] | None:
    """The mapping at ``path`` (None when unset/null or wrong type).

    With ``known``, every other field name is an error naming the field's full path.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        _wrong_type(problems, path, "an object", value)
        return None
    for key in value:
        if not isinstance(key, str):
            problems.error(child(path, str(key)), f"field name must be a string, got {key!r}")
        elif known is not None and key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            problems.error(child(path, key), f'unknown field "{key}"{hint}')
    return value


def as_list(value: object, path: str, problems: Problems) -> list[Any]:
    """The list at ``path``; unset/null and wrong types read as empty (errors recorded)."""
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        _wrong_type(problems, path, "an array", value)
        return []
    return list(value)


def as_str(value: object, path: str, problems: Problems) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        _wrong_type(problems, path, "a string", value)
        return None
    return value


def as_int(value: object, path: str, problems: Problems) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        _wrong_type(problems, path, "an integer", value)
        return None
    return value


def as_bool(value: object, path: str, problems: Problems) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        _wrong_type(problems, path, "a boolean", value)
        return None
    return value


def read_labels(value: object, path: str, problems: Problems) -> Labels:
    """A ``map[string]string`` of labels, keys and values validated (``matchLabels`` too).

    A null value reads as ``""``, as Go's decoder stores the zero value.
    """
    raw = as_object(value, path, problems)
    out: dict[str, str] = {}
    for key, val in (raw or {}).items():
        if not isinstance(key, str):
            continue  # already reported by as_object
        key_path = map_key(path, key)
        problems.all_invalid(key_path, qualified_name_errors(key), key)
        text = "" if val is None else as_str(val, key_path, problems)
        if text is None:
            continue
        problems.all_invalid(key_path, label_value_errors(text), text)
        out[key] = text
    return Labels(out)


#: The namespace of a namespaced object without one: what kubectl fills in without -n or a
#: context namespace.
DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class ObjectMeta:
    """The parts of ``metadata`` labelwall uses."""

    name: str | None
    namespace: str | None
    labels: Labels


def read_metadata(
    obj: Mapping[str, Any],
    path: str,
    problems: Problems,
    *,
    name_errors: Callable[[str], Sequence[str]],
    namespaced: bool,
) -> ObjectMeta:
    """Read and validate ``metadata`` like ``ValidateObjectMeta``.

    ``name_errors`` is the kind's name rule (a ``*_errors`` function from validation).
    A namespaced object without ``metadata.namespace`` gets ``None`` (the caller defaults
    it); a cluster-scoped object's namespace is ignored, as the API server clears it.
    Invalid names are returned as written (errors recorded) so messages can name the object.
    """
    meta_path = child(path, "metadata")
    meta = as_object(obj.get("metadata"), meta_path, problems, OBJECT_META_FIELDS) or {}
    name_path = child(meta_path, "name")
    name = as_str(meta.get("name"), name_path, problems) or None
    if name is None:
        if meta.get("name") in (None, ""):
            problems.error(name_path, "Required value: name is required")
    else:
        problems.all_invalid(name_path, name_errors(name), name)
    namespace: str | None = None
    if namespaced:
        ns_path = child(meta_path, "namespace")
        namespace = as_str(meta.get("namespace"), ns_path, problems) or None
        if namespace is not None:
            problems.all_invalid(ns_path, dns1123_label_errors(namespace), namespace)
    labels = read_labels(meta.get("labels"), child(meta_path, "labels"), problems)
    ann_path = child(meta_path, "annotations")
    for key, val in (as_object(meta.get("annotations"), ann_path, problems) or {}).items():
        if isinstance(key, str):
            # ValidateAnnotations checks keys case-insensitively; values are free text.
            problems.all_invalid(map_key(ann_path, key), qualified_name_errors(key.lower()), key)
            if val is not None:
                as_str(val, map_key(ann_path, key), problems)
    return ObjectMeta(name, namespace, labels)
