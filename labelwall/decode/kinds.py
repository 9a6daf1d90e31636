"""The Kubernetes kinds labelwall reads: apiVersion, scope and decoder of each, in one table.

Manifests (``labelwall/manifests.py``), the lab's object store, the operator and the
agent's cluster source all read this table, so a new kind is one more row here plus its
decoder module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from labelwall.cluster import Namespace, Node, Pod
from labelwall.decode import networkpolicy
from labelwall.decode.corev1 import decode_namespace, decode_node, decode_pod
from labelwall.decode.fields import Problems
from labelwall.decode.networkpolicy import read_network_policy
from labelwall.policy.model import NetworkPolicy

T = TypeVar("T")

#: Reads one object (field paths prefixed with the given path) into its label for messages
#: and its value; records problems, and returns None as the value if any is an error.
Decoder = Callable[[Mapping[str, Any], str, Problems], tuple[str, T | None]]


@dataclass(frozen=True)
class Kind(Generic[T]):
    """One kind we decode: ``api_version`` is the only version accepted."""

    name: str
    api_version: str
    #: The resource name in API paths (what kopf and ``kubectl get`` take).
    plural: str
    namespaced: bool
    decode: Decoder[T]

    @property
    def group(self) -> str:
        """The API group (``""`` for core)."""
        return api_group(self.api_version)

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


def api_group(api_version: object) -> str:
    """``networking.k8s.io/v1`` -> ``networking.k8s.io``; ``v1`` -> ``""`` (the core group)."""
    return str(api_version).rpartition("/")[0]


_CORE = "v1"

NAMESPACE: Kind[Namespace] = Kind("Namespace", _CORE, "namespaces", False, decode_namespace)
POD: Kind[Pod] = Kind("Pod", _CORE, "pods", True, decode_pod)
NODE: Kind[Node] = Kind("Node", _CORE, "nodes", False, decode_node)
NETWORK_POLICY: Kind[NetworkPolicy] = Kind(
    networkpolicy.KIND, networkpolicy.API_VERSION, "networkpolicies", True, read_network_policy
)

#: Every kind we read, by ``kind``; objects of other kinds are ignored (with a warning).
KINDS: Mapping[str, Kind[Any]] = {k.name: k for k in (NAMESPACE, POD, NODE, NETWORK_POLICY)}

#: Removed API versions of our kinds: an error (use the current version), not "ignored".
RETIRED: frozenset[tuple[str, str]] = frozenset({("extensions/v1beta1", "NetworkPolicy")})
