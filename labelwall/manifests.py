"""Build a validated ClusterState from decoded Namespaces, Pods, Nodes and NetworkPolicies.

All-or-nothing: every problem in every object is collected and raised together as one
InvalidInputError, and nothing is returned partially loaded. Each object is decoded by its
kind's decoder (``labelwall.decode.kinds``); this module adds what spans objects:
``*List`` documents, duplicates, an address owned by two pods, referenced namespaces.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from labelwall.cluster import IPAddress, Labels, Namespace, Node, Pod
from labelwall.decode.fields import Problems, child, item
from labelwall.decode.kinds import KINDS, NAMESPACE, NETWORK_POLICY, NODE, POD, RETIRED, api_group
from labelwall.decode.services import decode_service
from labelwall.decode.workloads import WORKLOAD_KINDS, WorkloadKind, decode_workload
from labelwall.errors import FieldError, InvalidInputError
from labelwall.identity.labels import NAMESPACE_NAME_LABEL
from labelwall.policy.clusterstate import ClusterState
from labelwall.policy.model import NetworkPolicy
from labelwall.policy.services import Service


@dataclass(frozen=True)
class SourceDoc:
    """One decoded object and where it came from.

    ``index`` is the document's position in ``source``; ``path`` prefixes field paths
    (``items[3]`` for the fourth item of a ``kind: List`` document).
    """

    source: str
    index: int
    obj: Mapping[str, Any]
    path: str = ""
    line: int | None = None  # the line the document starts on (1-based), when known

    def location(self) -> str:
        where = f"{self.source}[doc {self.index}]"
        return f"{where} {self.path}" if self.path else where


@dataclass(frozen=True)
class LoadResult:
    state: ClusterState
    warnings: tuple[FieldError, ...] = ()
    objects: int = 0  # how many objects the input held (0: nothing to judge)
    #: Services (read with ``workloads``): they name flows, they change no verdict.
    services: tuple[Service, ...] = ()
    #: The namespaces the input declares (the others in ``state`` were assumed).
    declared_namespaces: frozenset[str] = frozenset()


def is_list_kind(obj: Mapping[str, Any]) -> bool:
    """``kind: List`` and typed lists (``PodList``...) as ``kubectl get -o yaml`` prints them."""
    kind = obj.get("kind")
    return isinstance(kind, str) and kind.endswith("List") and "items" in obj


def expand_lists(doc: SourceDoc) -> Iterator[SourceDoc | FieldError]:
    """Yield the objects inside ``doc`` (itself if it is not a list); nested lists too.

    Items that are not objects yield a FieldError instead.
    """
    if not is_list_kind(doc.obj):
        yield doc
        return
    items_path = child(doc.path, "items")
    items = doc.obj.get("items")
    if items is None:
        return
    if not isinstance(items, list):
        yield FieldError(
            doc.source, doc.index, str(doc.obj.get("kind")), items_path, "must be an array"
        )
        return
    item_kind = str(doc.obj.get("kind"))[: -len("List")]
    for i, entry in enumerate(items):
        sub_path = item(items_path, i)
        if not isinstance(entry, Mapping):
            yield FieldError(doc.source, doc.index, "List item", sub_path, "must be an object")
            continue
        if item_kind and "kind" not in entry:
            # A typed list from the raw API (``kubectl get --raw``, client-go dumps): its
            # items carry no kind or apiVersion; the list's own say what they are.
            entry = {"kind": item_kind, "apiVersion": doc.obj.get("apiVersion"), **entry}
        yield from expand_lists(SourceDoc(doc.source, doc.index, entry, sub_path, doc.line))


#: The label a Deployment's ReplicaSets and their pods carry (the ReplicaSet's name suffix).
POD_TEMPLATE_HASH = "pod-template-hash"


@dataclass
class _Loader:
    """Accumulates objects and problems across documents; one instance per load_cluster call."""

    errors: list[FieldError] = field(default_factory=list)
    warnings: list[FieldError] = field(default_factory=list)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    pods: dict[str, Pod] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    policies: dict[str, NetworkPolicy] = field(default_factory=dict)
    seen: dict[tuple[str, str], SourceDoc] = field(default_factory=dict)
    ip_owner: dict[IPAddress, tuple[str, SourceDoc]] = field(default_factory=dict)
    objects: int = 0  # objects read, lists expanded, of any kind
    read_workloads: bool = False  # Deployments etc. become one pod row each (offline review)
    workloads: dict[str, Pod] = field(default_factory=dict)
    #: (namespace, kind, name) of each object's controller (metadata.ownerReferences).
    owners: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)

    def report(self, doc: SourceDoc, label: str, problems: Problems) -> bool:
        """Turn ``problems`` into FieldErrors for ``doc``; True when there were no errors."""
        for path, msg in problems.errors:
            self.errors.append(FieldError(doc.source, doc.index, label, path, msg))
        for path, msg in problems.warnings:
            self.warnings.append(FieldError(doc.source, doc.index, label, path, msg))
        return not problems.errors

    def claim(self, doc: SourceDoc, kind: str, key: str, label: str) -> bool:
        """Record ``kind key`` as defined by ``doc``; a second definition is an error."""
        first = self.seen.setdefault((kind, key), doc)
        if first is doc:
            return True
        self.errors.append(
            FieldError(
                doc.source,
                doc.index,
                label,
                doc.path,
                f"duplicate object: {kind} {key} is also defined at {first.location()}",
            )
        )
        return False

    def add(self, doc: SourceDoc) -> None:
        obj = doc.obj
        if not isinstance(obj, Mapping):
            self.errors.append(
                FieldError(
                    doc.source,
                    doc.index,
                    "<not an object>",
                    doc.path,
                    f"a Kubernetes object must be a mapping, got {type(obj).__name__}",
                )
            )
            return
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        label = f"{kind} <unknown>" if isinstance(kind, str) else "<no kind>"
        if not isinstance(kind, str) or not kind:
            self.errors.append(
                FieldError(
                    doc.source,
                    doc.index,
                    label,
                    child(doc.path, "kind"),
                    "Required value: every object needs a kind",
                )
            )
            return
        workload = WORKLOAD_KINDS.get(kind) if self.read_workloads else None
        if workload is not None and api_version == workload.api_version:
            self._add_workload(doc, workload)
            return
        if self.read_workloads and kind == "Service" and api_version == "v1":
            self._add_service(doc)
            return
        want = KINDS.get(kind)
        foreign = want is not None and api_group(api_version) != want.group
        if want is None or (
            api_version is not None and foreign and (api_version, kind) not in RETIRED
        ):
            # Another kind, or a same-named kind of another API group (Calico's
            # crd.projectcalico.org NetworkPolicy): not ours to interpret.
            self.warnings.append(
                FieldError(
                    doc.source,
                    doc.index,
                    f"{kind} {_name_of(obj)}",
                    doc.path,
                    f"ignored: labelwall does not read {api_version}/{kind}",
                )
            )
            return
        if api_version != want.api_version:
            self.errors.append(
                FieldError(
                    doc.source,
                    doc.index,
                    f"{kind} {_name_of(obj)}",
                    child(doc.path, "apiVersion"),
                    f"must be {want.api_version!r} for kind {kind}, got {api_version!r}",
                )
            )
            return
        p = Problems()
        label, value = want.decode(obj, doc.path, p)
        if not self.report(doc, label, p) or value is None:
            return
        if isinstance(value, NetworkPolicy):
            if self.claim(doc, NETWORK_POLICY.name, value.key, f"NetworkPolicy {value.key}"):
                self.policies[value.key] = value
        elif isinstance(value, Namespace):
            if self.claim(doc, NAMESPACE.name, value.name, label):
                self.namespaces[value.name] = value
        elif isinstance(value, Node):
            if self.claim(doc, NODE.name, value.name, label):
                self.nodes[value.name] = value
        elif isinstance(value, Pod) and self.claim(doc, POD.name, value.key, label):
            self._add_pod(doc, label, value)
            self._note_owner(doc, value.key)

    def _add_workload(self, doc: SourceDoc, kind: WorkloadKind) -> None:
        p = Problems()
        label, pod = decode_workload(kind, doc.obj, doc.path, p)
        if not self.report(doc, label, p) or pod is None:
            return
        if self.claim(doc, kind.name, pod.key, label):
            self.workloads[pod.key] = replace(pod, workload=kind.name)
            self._note_owner(doc, pod.key)

    def _add_service(self, doc: SourceDoc) -> None:
        p = Problems()
        label, service = decode_service(doc.obj, doc.path, p)
        ok = self.report(doc, label, p) and service is not None
        if ok and service is not None and self.claim(doc, "Service", service.key, label):
            self.services[service.key] = service

    def _note_owner(self, doc: SourceDoc, key: str) -> None:
        meta = doc.obj.get("metadata")
        refs = meta.get("ownerReferences") if isinstance(meta, Mapping) else None
        for ref in refs if isinstance(refs, list) else []:
            if isinstance(ref, Mapping) and ref.get("controller"):
                namespace = key.split("/", 1)[0]
                self.owners[key] = (namespace, str(ref.get("kind")), str(ref.get("name")))

    def _add_pod(self, doc: SourceDoc, label: str, pod: Pod) -> None:
        self.pods[pod.key] = pod
        if pod.host_network:
            return  # hostNetwork pods share their node's addresses with each other
        for ip in pod.ips:
            owner = self.ip_owner.setdefault(ip, (pod.key, doc))
            if owner[0] != pod.key:
                self.errors.append(
                    FieldError(
                        doc.source,
                        doc.index,
                        label,
                        child(child(doc.path, "status"), "podIPs"),
                        f"IP {ip} is also the IP of Pod {owner[0]} at {owner[1].location()}",
                    )
                )

    def _workload_of(self, key: str) -> str | None:
        """The workload row ``key`` (a pod or a ReplicaSet) folds into, if it is in the input."""
        seen: set[str] = set()
        while key in self.owners and key not in seen:
            seen.add(key)
            namespace, kind, name = self.owners[key]
            owner = f"{namespace}/{name}[{kind}]"
            if owner not in self.workloads:
                return self._deployment_of_replicaset(key, namespace, kind, name)
            if owner not in self.owners:
                return owner
            key = owner
        return None

    def _deployment_of_replicaset(
        self, key: str, namespace: str, kind: str, name: str
    ) -> str | None:
        """A Pod owned by a ReplicaSet the input lacks, whose Deployment it has: the
        ReplicaSet is named ``<deployment>-<pod-template-hash>`` and the pod carries that
        hash as a label, so the pod folds into the Deployment."""
        pod = self.pods.get(key)
        if kind != "ReplicaSet" or pod is None:
            return None
        template_hash = pod.labels.get(POD_TEMPLATE_HASH)
        suffix = f"-{template_hash}"
        if not template_hash or not name.endswith(suffix):
            return None
        deployment = f"{namespace}/{name[: -len(suffix)]}[Deployment]"
        return deployment if deployment in self.workloads else None

    def _workload_pods(self) -> dict[str, Pod]:
        """Workload rows (ReplicaSets of a Deployment fold into it), each with an address.

        The stand-in addresses come from 198.18.0.0/15 (RFC 2544, never a pod's) and are
        marked so the compiler gives them no ipBlock prefix.
        """
        rows = {k: w for k, w in self.workloads.items() if self._workload_of(k) is None}
        used = {ip for p in self.pods.values() for ip in p.ips}
        pool = (a for a in ipaddress.IPv4Network("198.18.0.0/15").hosts() if a not in used)
        return {k: replace(rows[k], ips=(next(pool),)) for k in sorted(rows)}

    def result(self) -> LoadResult:
        if self.errors:
            raise InvalidInputError(self.errors)
        if self.workloads:
            folded = {k for k in self.pods if self._workload_of(k) is not None}
            self.pods = {k: p for k, p in self.pods.items() if k not in folded}
            self.pods.update(self._workload_pods())
            if any(
                peer.ip_block is not None
                for pol in self.policies.values()
                for rule in (*pol.ingress, *pol.egress)
                for peer in rule.peers
            ):
                self.warnings.append(
                    FieldError(
                        "<input>",
                        None,
                        "workloads",
                        "",
                        "ipBlock rules are not judged against workloads: their pods' "
                        "addresses are not in the input (give Pods with status.podIP for that)",
                    )
                )
        namespaces = dict(self.namespaces)
        for ns in sorted(
            {p.namespace for p in self.pods.values()}
            | {p.namespace for p in self.policies.values()}
        ):
            # Referenced but not declared: it exists on a real cluster, with only its name label.
            if ns not in namespaces and self.read_workloads:
                # A review of manifests says what it assumed (namespaceSelectors on other
                # labels will not select it); the lab and the agent create them silently.
                self.warnings.append(
                    FieldError(
                        "<input>",
                        None,
                        f"Namespace {ns}",
                        "",
                        "referenced but not in the input: assumed to exist with only its "
                        f"{NAMESPACE_NAME_LABEL} label",
                    )
                )
            namespaces.setdefault(ns, Namespace(ns, Labels({NAMESPACE_NAME_LABEL: ns})))
        state = ClusterState(
            namespaces=dict(sorted(namespaces.items())),
            pods=dict(sorted(self.pods.items())),
            nodes=dict(sorted(self.nodes.items())),
            policies=dict(sorted(self.policies.items())),
        )
        services = tuple(self.services[k] for k in sorted(self.services))
        return LoadResult(
            state, tuple(self.warnings), self.objects, services, frozenset(self.namespaces)
        )


def _name_of(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return "<no name>"
    name, ns = meta.get("name"), meta.get("namespace")
    return f"{ns}/{name}" if ns else str(name)


def in_namespace(doc: SourceDoc, namespace: str) -> SourceDoc | FieldError:
    """kubectl's ``-n``: a namespaced object without ``metadata.namespace`` gets ``namespace``.

    An object that names another namespace is an error, as ``kubectl apply -n`` makes it.
    Cluster-scoped kinds and kinds we do not read are returned unchanged.
    """
    obj = doc.obj
    name = str(obj.get("kind"))
    kind = KINDS.get(name)
    namespaced = (
        name in WORKLOAD_KINDS or name == "Service" or (kind is not None and kind.namespaced)
    )
    meta = obj.get("metadata")
    if not namespaced or not isinstance(meta, Mapping):
        return doc
    given = meta.get("namespace")
    if given in (None, ""):
        return replace(doc, obj={**obj, "metadata": {**meta, "namespace": namespace}})
    if given != namespace:
        return FieldError(
            doc.source,
            doc.index,
            f"{obj.get('kind')} {_name_of(obj)}",
            child(child(doc.path, "metadata"), "namespace"),
            f"the namespace from the object ({given!r}) does not match the namespace given "
            f"with -n/--namespace ({namespace!r})",
        )
    return doc


def load_cluster(
    docs: Iterable[SourceDoc], namespace: str | None = None, workloads: bool = False
) -> LoadResult:
    """Validate every object and build the ClusterState; InvalidInputError lists every error.

    Namespaces referenced by a pod or policy but not declared are created with just the
    ``kubernetes.io/metadata.name`` label; kinds other than Namespace, Pod, Node and
    NetworkPolicy are ignored with a warning; ``*List`` documents are expanded (typed lists
    from the raw API, whose items carry no kind, included). ``namespace`` is kubectl's
    ``-n``: the namespace of namespaced objects that name none (else ``default``).
    ``workloads``: Deployments, StatefulSets, DaemonSets, ReplicaSets, ReplicationControllers,
    Jobs and CronJobs become one pod row each, ``namespace/name[Kind]``; a Pod (or
    ReplicaSet) whose controller is in the input folds into it.
    """
    loader = _Loader(read_workloads=workloads)
    for doc in docs:
        for entry in expand_lists(doc):
            if not isinstance(entry, FieldError) and namespace is not None:
                entry = in_namespace(entry, namespace)
            if isinstance(entry, FieldError):
                loader.errors.append(entry)
            else:
                loader.objects += 1
                loader.add(entry)
    return loader.result()
