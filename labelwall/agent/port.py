"""What the agent needs from the node: the datapath (maps, tc) and the host's pod routes.

``labelwall.datapath.facade.Datapath`` and ``routes.HostRoutes`` are the real ones;
``MemoryDatapath`` and ``StaticRoutes`` are in-memory twins for unit tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from labelwall.cluster import IPAddress
from labelwall.datapath.writer import MemoryMapWriter
from labelwall.policy.mapstate import MapDelta, MapState


class DatapathPort(Protocol):
    def apply(self, delta: MapDelta) -> None: ...

    def read_state(self) -> MapState: ...

    def endpoints(self) -> dict[int, int]: ...

    def set_endpoint(self, ifindex: int, identity: int) -> None: ...

    def delete_endpoint(self, ifindex: int) -> None: ...

    def attach(self, link: str | int) -> None: ...

    def detach(self, link: str | int) -> None: ...

    def is_attached(self, link: str | int) -> bool: ...


class RoutesPort(Protocol):
    def host_routes(self) -> dict[IPAddress, int]:
        """Pod address -> ifindex of the interface its /32 (/128) host route points at."""
        ...


class MemoryDatapath:
    """A datapath in dicts; ``writes`` counts every entry written (upsert, delete, endpoint)."""

    def __init__(self, initial: MapState | None = None, record: bool = False) -> None:
        self.writer = MemoryMapWriter(initial, record=record)
        self.attached: set[int] = set()
        self.writes = 0
        self.ops: list[tuple[str, object]] = []  # ("endpoint"|"attach"|"detach"|"apply", arg)

    def apply(self, delta: MapDelta) -> None:
        self.writes += sum(
            len(getattr(delta, t))
            for t in ("subjects", "policy", "ipcache", "cidrs", "named_ports")
        )
        self.ops.append(("apply", delta))
        self.writer.apply(delta)

    def read_state(self) -> MapState:
        return self.writer.state

    def endpoints(self) -> dict[int, int]:
        return dict(self.writer.endpoints)

    def set_endpoint(self, ifindex: int, identity: int) -> None:
        self.writes += 1
        self.ops.append(("endpoint", (ifindex, identity)))
        self.writer.set_endpoint(ifindex, identity)

    def delete_endpoint(self, ifindex: int) -> None:
        self.writes += 1
        self.ops.append(("delete_endpoint", ifindex))
        self.writer.delete_endpoint(ifindex)

    def attach(self, link: str | int) -> None:
        assert isinstance(link, int)
        self.ops.append(("attach", link))
        self.attached.add(link)

    def detach(self, link: str | int) -> None:
        assert isinstance(link, int)
        self.ops.append(("detach", link))
        self.attached.discard(link)

    def is_attached(self, link: str | int) -> bool:
        return link in self.attached


class StaticRoutes:
    def __init__(self, routes: Mapping[IPAddress, int] | None = None) -> None:
        self.routes: dict[IPAddress, int] = dict(routes or {})

    def host_routes(self) -> dict[IPAddress, int]:
        return dict(self.routes)
