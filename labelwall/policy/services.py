"""Services, as far as a reachability answer names them: which Service a destination backs.

A finding about ``frontend -> checkout[Deployment]`` on TCP/8080 reads better as
``checkout[Deployment] (Service checkout:5050)`` when a Service in the destination's
namespace selects it and one of its ports targets that container port. Services change no
verdict (policy judges the pod's port after DNAT); they only name the flow. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from labelwall.cluster import Labels, Pod, Protocol


@dataclass(frozen=True)
class ServicePort:
    port: int
    target: int | str  # targetPort: a number, or a container port name
    protocol: Protocol = Protocol.TCP
    name: str | None = None


@dataclass(frozen=True)
class Service:
    """``selector`` empty: a Service without selector (endpoints by hand) backs no pod here."""

    namespace: str
    name: str
    selector: Labels
    ports: tuple[ServicePort, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def selects(self, pod: Pod) -> bool:
        return (
            bool(self.selector)
            and pod.namespace == self.namespace
            and all(pod.labels.get(k) == v for k, v in self.selector.items())
        )


def _target_number(pod: Pod, sp: ServicePort) -> int | None:
    if isinstance(sp.target, int):
        return sp.target
    for cp in pod.ports:
        if cp.name == sp.target and cp.protocol == sp.protocol:
            return cp.port
    return None


def backing(
    services: Iterable[Service], pod: Pod, port: int | None, protocol: Protocol
) -> list[tuple[Service, ServicePort]]:
    """The (Service, port) pairs whose traffic lands on ``pod``'s ``port``/``protocol``.

    ``port`` is the destination's resolved container port (None: not declared; then no
    Service port can target it).
    """
    if port is None:
        return []
    return [
        (s, sp)
        for s in services
        if s.selects(pod)
        for sp in s.ports
        if sp.protocol == protocol and _target_number(pod, sp) == port
    ]


def describe(found: Sequence[tuple[Service, ServicePort]]) -> str:
    """``Service checkout:5050`` (several joined by ``, ``); empty when there are none."""
    return ", ".join(f"Service {s.name}:{sp.port}" for s, sp in found)


def selected_by(services: Iterable[Service], pod: Pod) -> list[Service]:
    return [s for s in services if s.selects(pod)]
