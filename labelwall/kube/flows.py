"""Each node agent's flow endpoint, reached through the API server with the user's own RBAC.

The agent serves ``GET /flows`` on 127.0.0.1 inside its pod (the host's network namespace:
it runs with hostNetwork) and nowhere else, so nothing on the node network answers. A user
reads it the way ``kubectl port-forward`` does: the ``pods/portforward`` subresource of the
agent pod, which the API server authorizes (the user's own credentials and RBAC) and the
kubelet connects to localhost inside the pod. Needed RBAC, in the agent's namespace:
``list`` on ``pods`` (to find the agents) and ``create`` on ``pods/portforward``.

Why not ``pods/proxy``: it connects to the pod IP, which for a hostNetwork pod is the
node's address, so the endpoint would have to listen on the node network. Why not a relay
in the operator: one more privileged hop that sees every node's flows; the port-forward
keeps the user's own identity end to end and costs nothing when unused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import portforward

DEFAULT_PORT = 9966  # chart agent.flowsPort (9964 is the operator's metrics port)


class FlowAccessError(PermissionError):
    """The user may not list or port-forward to the agents (RBAC)."""


def _forbidden(exc: ApiException) -> bool:
    return exc.status == 403 or "403" in str(exc.reason or "").split(" -+-+- ")[0]


def _reason(exc: ApiException) -> str:
    """The API server's Status message of a failed websocket handshake, else its status."""
    text = str(exc.reason or exc)
    parts = text.split(" -+-+- ")
    try:
        status = json.loads(parts[-1])
        return f"{status.get('code', '')} {status['message']}".strip()
    except (ValueError, KeyError, TypeError):
        return parts[0]


@dataclass
class AgentFlowSource:
    """One agent pod's flow endpoint over a port-forward (a new one per fetch)."""

    node: str
    pod: str
    namespace: str
    port: int
    api: client.CoreV1Api
    timeout: float = 10.0

    def fetch(self, since: int) -> dict[str, Any]:
        where = f"node {self.node}: agent pod {self.namespace}/{self.pod}"
        try:
            pf = portforward(
                self.api.connect_get_namespaced_pod_portforward, self.pod, self.namespace,
                ports=str(self.port),
            )  # fmt: skip
        except ApiException as exc:
            if _forbidden(exc):
                raise FlowAccessError(
                    f"{where}: forbidden: reading flows needs `create` on pods/portforward "
                    f"in namespace {self.namespace} ({_reason(exc)})"
                ) from None
            raise ConnectionError(f"{where}: port-forward failed: {_reason(exc)}") from None
        try:
            sock = pf.socket(self.port)
            sock.settimeout(self.timeout)
            request = f"GET /flows?since={since} HTTP/1.0\r\nHost: localhost\r\n\r\n"
            sock.sendall(request.encode())
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:  # TimeoutError included
            raise ConnectionError(f"{where}: no answer from the flow endpoint: {exc}") from None
        finally:
            pf.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 200 " not in status + " ":
            error = pf.error(self.port) or status or "connection closed"
            raise ConnectionError(f"{where}: flow endpoint on port {self.port}: {error}")
        page: dict[str, Any] = json.loads(body)
        return page


def agent_sources(
    api_client: client.ApiClient, namespace: str, selector: str, port: int = DEFAULT_PORT
) -> list[AgentFlowSource]:
    """One source per agent pod (by node); FlowAccessError when the user may not list them."""
    api = client.CoreV1Api(api_client)
    try:
        pods = api.list_namespaced_pod(namespace, label_selector=selector)
    except ApiException as exc:
        if _forbidden(exc):
            raise FlowAccessError(
                f"forbidden: finding the agents needs `list` on pods in namespace {namespace} "
                "(and `create` on pods/portforward to read their flows)"
            ) from None
        raise ConnectionError(f"listing agent pods in {namespace}: {_reason(exc)}") from None
    out = []
    for p in pods.items:
        node = (p.spec.node_name if p.spec else None) or "(unscheduled)"
        name = (p.metadata.name if p.metadata else None) or ""
        out.append(AgentFlowSource(str(node), str(name), namespace, port, api))
    return sorted(out, key=lambda s: (s.node, s.pod))
