"""The ClusterKopfPeering object replicas coordinate through: make sure it exists, or say so.

kopf, given a peering name, waits for that object silently (a debug line per keep-alive)
when it does not exist: ``labelwall operator`` run outside the chart (which ships the
object, templates/operator/peering.yaml) would then never act (issue 10). So before kopf
starts: the object exists -> peering as asked; it is missing -> create it (an admin's
kubeconfig may; the chart's RBAC does not need to); that is refused or its CRD is not
installed -> run standalone, and log one line saying so and why. Never a silent wait.
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("labelwall.operator")

GROUP, VERSION, PLURAL = "kopf.dev", "v1", "clusterkopfpeerings"
TIMEOUT = (5.0, 30.0)


def ensure_peering(api: CustomObjectsApi, name: str) -> bool:
    """True: the ClusterKopfPeering ``name`` exists now (found or created); False: run
    standalone (the reason is logged, once)."""
    try:
        api.get_cluster_custom_object(GROUP, VERSION, PLURAL, name, _request_timeout=TIMEOUT)
        return True
    except ApiException as e:
        if e.status != 404:
            return _standalone(name, f"cannot read it ({_reason(e)})")
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterKopfPeering",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "labelwall"}},
    }
    try:
        api.create_cluster_custom_object(GROUP, VERSION, PLURAL, body, _request_timeout=TIMEOUT)
    except ApiException as e:
        if e.status == 409:  # another replica created it meanwhile
            return True
        why = (
            "its CRD clusterkopfpeerings.kopf.dev is not installed (charts/labelwall/crds/)"
            if e.status == 404
            else f"creating it was refused ({_reason(e)})"
        )
        return _standalone(name, f"it does not exist and {why}")
    log.info(
        "created ClusterKopfPeering %r: replicas coordinate through it", name,
        extra={"peering": name},
    )  # fmt: skip
    return True


def _reason(e: ApiException) -> str:
    return f"{e.status} {e.reason}"


def _standalone(name: str, why: str) -> bool:
    log.warning(
        "ClusterKopfPeering %r: %s; running standalone (every replica acts; writes stay "
        "conflict-safe). Create the object or pass --standalone to silence this.", name, why,
        extra={"peering": name},
    )  # fmt: skip
    return False


def start_priority(started_at_s: float) -> int:
    """This replica's kopf peering priority: the wall-clock millisecond it started.

    kopf pauses a replica while a live peer of higher priority exists, and pauses *every*
    replica while two live peers share a priority. kopf's default priority is 0 for all, so
    two replicas both paused for good, and an operator restarted after ``kill -9`` paused
    until its dead predecessor's entry expired (up to the peering lifetime, 60 s): new pods
    stayed ``init`` (isolated) that long. The start time makes priorities distinct and lets
    the newest replica act: a restarted or replacement operator (a rollout's new pod, a
    crashed container) acts at once, and older live replicas stand by.
    """
    return int(started_at_s * 1000)
