"""One core/v1 Event body for whoever posts one (the operator on policies, the agent on nodes)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from kubernetes.client import CoreV1Event, V1EventSource, V1ObjectMeta, V1ObjectReference

#: The API server refuses longer messages (events.k8s.io note limit: 1 kB).
MESSAGE_MAX = 1024


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
