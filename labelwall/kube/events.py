"""One core/v1 Event body for whoever posts one (the operator on policies, the agent on nodes)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from kubernetes.client import CoreV1Event, V1EventSource, V1ObjectMeta, V1ObjectReference

#: The API server refuses longer messages (events.k8s.io note limit: 1 kB).
MESSAGE_MAX = 1024

#: The Node condition an agent keeps while a full map refuses entries: how a node's
#: degraded enforcement reaches the policies' labelwall.io/status (the operator watches
#: Nodes and names the degraded nodes a policy's pods run on: operator/plan.py). Set
#: only when the state changes, like the MapFull / MapSpaceReturned Events beside it.
DEGRADED_CONDITION = "LabelwallEnforcementDegraded"


@dataclass(frozen=True)
class Poster:
    """Who posts: ``component`` (source.component / reportingController), ``instance``."""

    component: str
    instance: str
    host: str | None = None  # source.host, for Events about a node


def event_body(
    poster: Poster,
    involved: V1ObjectReference,
    namespace: str,
    kind: str,
    reason: str,
    message: str,
    now: datetime.datetime,
) -> CoreV1Event:
    """A new Event (count 1) about ``involved``, stored in ``namespace``."""
    return CoreV1Event(
        metadata=V1ObjectMeta(generate_name=f"{involved.name}.", namespace=namespace),
        involved_object=involved,
        type=kind,
        reason=reason,
        message=message[:MESSAGE_MAX],
        source=V1EventSource(component=poster.component, host=poster.host),
        reporting_component=poster.component,
        reporting_instance=poster.instance,
        first_timestamp=now,
        last_timestamp=now,
        count=1,
    )


def degraded_condition_patch(
    degraded: bool, reason: str, message: str, now: datetime.datetime
) -> dict[str, object]:
    """A nodes/status strategic-merge patch that sets only our condition (merged by type)."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "status": {
            "conditions": [
                {
                    "type": DEGRADED_CONDITION,
                    "status": "True" if degraded else "False",
                    "reason": reason,
                    "message": message[:MESSAGE_MAX],
                    "lastTransitionTime": stamp,
                    "lastHeartbeatTime": stamp,
                }
            ]
        }
    }
