"""What the agent needs from the node: the datapath (maps, tc) and the host's pod routes.

``labelwall.datapath.facade.Datapath`` and ``routes.HostRoutes`` are the real ones;
``MemoryDatapath`` and ``StaticRoutes`` are in-memory twins for unit tests; the datapath
twin is the real writer (``datapath.writer.MapWriter``) over dict maps
(``datapath.mapio.DictMapIO``), so tests run its policy index and endpoint mirror too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from labelwall.cluster import IPAddress
from labelwall.datapath import codecs, mapspecs, reader
from labelwall.datapath.mapio import DictMapIO
from labelwall.datapath.writer import MapWriter
from labelwall.policy.mapstate import TABLES, MapDelta, MapState, diff


class DatapathPort(Protocol):
    def apply(self, delta: MapDelta) -> None: ...

    def read_state(self) -> MapState: ...

    def endpoints(self) -> dict[int, int]: ...

    def endpoint_addresses(self) -> dict[int, frozenset[IPAddress]]:
        """ifindex -> the addresses its pod may send from, as the maps hold them."""
        ...

    def set_endpoint(
        self, ifindex: int, identity: int, addresses: Iterable[IPAddress] = ()
    ) -> None: ...

    def delete_endpoint(self, ifindex: int) -> None: ...

    def attach(self, link: str | int) -> None: ...

    def detach(self, link: str | int) -> None: ...

    def is_attached(self, link: str | int) -> bool: ...


class RoutesPort(Protocol):
    def host_routes(self) -> dict[IPAddress, int]:
        """Pod address -> ifindex of the interface its /32 (/128) host route points at."""
        ...

    def local_addresses(self) -> frozenset[IPAddress]:
        """The node's own addresses: every global address on an interface of its netns."""
        ...


class MemoryDatapath:
    """A datapath in dicts; ``writes`` counts every entry written (upsert, delete, endpoint).

    ``record``: ``history`` gets the MapState after every single entry write.
    ``capacity``: map name -> max_entries from then on (``initial`` is written first, so
    a map can start fuller than it may grow); tests of full maps change it later.
    """

    def __init__(
        self,
        initial: MapState | None = None,
        record: bool = False,
        capacity: Mapping[str, int] | None = None,
    ) -> None:
        self.io = DictMapIO()
        self.writer = MapWriter(self.io)
        if initial is not None:
            self.writer.apply(diff(MapState(), initial))
        self.io.capacity = dict(capacity or {})
        self.attached: set[int] = set()
        self.writes = 0
        self.ops: list[tuple[str, object]] = []  # ("endpoint"|"attach"|"detach"|"apply", arg)
        self.history: list[MapState] = []
        if record:
            self.io.on_write = lambda: self.history.append(self.read_state())

    def apply(self, delta: MapDelta) -> None:
        self.writes += sum(len(t.changes(delta)) for t in TABLES)
        self.ops.append(("apply", delta))
        self.writer.apply(delta)

    def read_state(self) -> MapState:
        return reader.read_state(self.io)

    def endpoints(self) -> dict[int, int]:
        return {i: e.identity for i, e in reader.read_endpoints(self.io).items()}

    def endpoint_addresses(self) -> dict[int, frozenset[IPAddress]]:
        return self.writer.endpoint_addresses()

    def set_endpoint(
        self, ifindex: int, identity: int, addresses: Iterable[IPAddress] = ()
    ) -> None:
        self.writes += 1
        self.ops.append(("endpoint", (ifindex, identity)))
        self.writer.set_endpoint(ifindex, identity, addresses)

    def delete_endpoint(self, ifindex: int) -> None:
        self.writes += 1
        self.ops.append(("delete_endpoint", ifindex))
        self.writer.delete_endpoint(ifindex)

    def drift(self, delta: MapDelta) -> None:
        """Change the maps behind the writer's back (as another program would): tests of
        drift repair."""
        for codec in codecs.TABLE_CODECS:
            changes = codec.table.changes(delta)
            for k, v in changes.upserts.items():
                self.io.update(codec.spec, codec.encode_key(k), codec.encode_value(v))
            for k in changes.deletes:
                self.io.delete(codec.spec, codec.encode_key(k))

    def drop_endpoint(self, ifindex: int) -> None:
        """Delete an endpoint behind the writer's back (drift)."""
        self.io.delete(mapspecs.ENDPOINTS_MAP, codecs.encode_u32(ifindex))

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
    def __init__(
        self,
        routes: Mapping[IPAddress, int] | None = None,
        local: Iterable[IPAddress] = (),
    ) -> None:
        self.routes: dict[IPAddress, int] = dict(routes or {})
        self.local: frozenset[IPAddress] = frozenset(local)

    def host_routes(self) -> dict[IPAddress, int]:
        return dict(self.routes)

    def local_addresses(self) -> frozenset[IPAddress]:
        return self.local
