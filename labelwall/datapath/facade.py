"""Datapath: the one object other code uses to load, attach, write and read the classifier.

    with Datapath.open() as dp:          # load (reusing pinned maps), pin programs
        dp.set_endpoint(ifindex, identity)
        dp.apply(mapstate.diff(dp.read_state(), desired))
        dp.attach("veth1234")            # tc clsact ingress + egress, idempotent
        verdict, retval, _ = dp.test_run("handle_from_pod", packet, ifindex=1)

Closing releases this process's handles only; pinned maps and programs (and attached
filters) keep enforcing. ``unpin_all()`` removes the pins (tests, uninstall).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from labelwall.cluster import Direction, IPAddress, IPNetwork
from labelwall.datapath import codecs, libbpf, loader, mapspecs, netfilter, reader, tc, testrun
from labelwall.datapath.events import EventStream
from labelwall.datapath.mapio import LibbpfMapIO
from labelwall.datapath.writer import MapWriter
from labelwall.policy.lookup import Reason
from labelwall.policy.mapstate import MapDelta, MapState

FROM_POD = mapspecs.PROG_FROM_POD  # tc ingress of the host-side veth: the pod's egress policy
TO_POD = mapspecs.PROG_TO_POD  # tc egress of the host-side veth: the pod's ingress policy


class Datapath:
    def __init__(self, loaded: loader.LoadedObject) -> None:
        self._loaded = loaded
        self.io = LibbpfMapIO(loaded.map_fds)
        self.writer = MapWriter(self.io)

    @classmethod
    def open(
        cls,
        object_file: Path | None = None,
        config: codecs.DatapathConfig | None = None,
        maps: tuple[mapspecs.MapSpec, ...] = mapspecs.MAPS,
    ) -> Datapath:
        """Load the object onto the pinned maps (creating them the first time).

        ``maps``: the layouts ``object_file`` was built with (see ``sizing.object_for``).
        """
        dp = cls(loader.load(object_file, maps=maps))
        dp.writer.set_config(config or codecs.DatapathConfig())
        dp.writer.sync_policy_index()  # the group index derives from the pinned trie
        dp.writer.sync_endpoints()  # and the endpoints' subject-flags mirror from the subjects
        return dp

    # ---- handles ----

    @property
    def map_fds(self) -> dict[str, int]:
        return dict(self._loaded.map_fds)

    def prog_fd(self, program: str) -> int:
        return self._loaded.prog_fds[program]

    def prog_id(self, program: str) -> int:
        """The kernel's id of this load's ``program`` (what tc reports as TCA_BPF_ID)."""
        return libbpf.prog_info(self.prog_fd(program)).id

    # ---- tc ----

    def attach(self, link: str | int) -> None:
        """Both hooks on a host-side veth; re-attaching replaces the programs atomically."""
        tc.attach(
            link,
            [
                tc.Hook(tc.PARENT_INGRESS, self.prog_fd(FROM_POD), "lw_from_pod_v1"),
                tc.Hook(tc.PARENT_EGRESS, self.prog_fd(TO_POD), "lw_to_pod_v1"),
            ],
        )

    def detach(self, link: str | int) -> None:
        tc.detach(link, [tc.PARENT_INGRESS, tc.PARENT_EGRESS])

    def is_attached(self, link: str | int) -> bool:
        """Both hooks run THIS load's programs (by program id, not only by filter name).

        A veth still running an older object's program (agent restarted with a new one)
        is not attached: the caller re-attaches, and tc replace swaps it atomically.
        """
        return ("lw_from_pod_v1", self.prog_id(FROM_POD)) in tc.attached_programs(
            link, tc.PARENT_INGRESS
        ) and ("lw_to_pod_v1", self.prog_id(TO_POD)) in tc.attached_programs(link, tc.PARENT_EGRESS)

    # ---- egress through Services (netfilter.py) ----

    def enable_services(
        self, cidrs: Iterable[IPNetwork], object_file: Path | None = None
    ) -> netfilter.ServiceHook:
        """Judge egress to ``cidrs`` after DNAT: attach handle_svc_nat (idempotent, pinned
        links), then write the CIDRs. Not possible (old kernel): no CIDRs, tc judges them."""
        return netfilter.enable(
            self.io, cidrs, object_file or netfilter.object_path(), self._endpoints_map_id()
        )

    def disable_services(self) -> list[str]:
        """Empty the Service CIDRs (tc judges them again), then detach the links."""
        return netfilter.disable(self.io)

    def service_cidrs(self) -> list[IPNetwork]:
        return netfilter.read_cidrs(self.io)

    def services_attached(self) -> bool:
        return netfilter.attached(self._endpoints_map_id())

    def _endpoints_map_id(self) -> int:
        return libbpf.map_info(self._loaded.map_fds[mapspecs.ENDPOINTS_MAP.name]).id

    # ---- writes ----

    def set_endpoint(
        self, ifindex: int, identity: int, addresses: Iterable[IPAddress] = ()
    ) -> None:
        """The pod behind ``ifindex`` and the addresses it may send from (source check)."""
        self.writer.set_endpoint(ifindex, identity, addresses)

    def delete_endpoint(self, ifindex: int) -> None:
        self.writer.delete_endpoint(ifindex)

    def apply(self, delta: MapDelta) -> None:
        self.writer.apply(delta)

    def set_config(self, config: codecs.DatapathConfig) -> None:
        self.writer.set_config(config)

    # ---- reads ----

    def read_state(self) -> MapState:
        return reader.read_state(self.io)

    def endpoints(self) -> dict[int, int]:
        return {i: e.identity for i, e in reader.read_endpoints(self.io).items()}

    def endpoint_addresses(self) -> dict[int, frozenset[IPAddress]]:
        return self.writer.endpoint_addresses()

    def counters(self) -> dict[tuple[Direction, Reason], codecs.Counter]:
        return reader.read_counters(self._loaded.map_fds)

    def rule_counters(self) -> dict[tuple[int, Direction], codecs.Counter]:
        """Per-rule counters: (rule cookie, direction) -> what that rule allowed."""
        return reader.read_rule_counters(self._loaded.map_fds)

    def rule_overflow(self) -> dict[Direction, codecs.Counter]:
        return reader.read_rule_overflow(self._loaded.map_fds)

    def conntrack(self) -> dict[codecs.CtKey, codecs.CtValue]:
        return reader.read_conntrack(self.io)

    def fragments(self) -> dict[codecs.FragKey, int]:
        return reader.read_fragments(self.io)

    def clear_fragments(self) -> None:
        spec = mapspecs.FRAGS_MAP
        self.writer.delete_raw(spec, [k for k, _ in self.io.items(spec)])

    def event_rate(self) -> codecs.EventRate:
        return reader.read_event_rate(self._loaded.map_fds)

    def conntrack_tables(
        self,
    ) -> tuple[dict[codecs.CtKey, codecs.CtValue], dict[codecs.CtKey, codecs.CtValue]]:
        """(unreplied, replied): lw_ct_new_v1 and lw_ct_v3 (conntrack.h)."""
        return reader.read_conntrack_tables(self.io)

    def clear_conntrack(self) -> None:
        """Both conntrack tables and the promotion buckets (full again)."""
        for spec in (mapspecs.CT_MAP, mapspecs.CT_NEW_MAP, mapspecs.CT_BUDGET_MAP):
            self.writer.delete_raw(spec, [k for k, _ in self.io.items(spec)])

    def events(self) -> EventStream:
        return EventStream(self._loaded.map_fds[mapspecs.EVENTS_MAP.name])

    # ---- testing ----

    def test_run(
        self, program: str, packet: bytes, ifindex: int = testrun.LOOPBACK_IFINDEX, repeat: int = 1
    ) -> testrun.TestRunResult:
        """BPF_PROG_TEST_RUN of ``program`` (FROM_POD/TO_POD) on ``packet`` (Ethernet first)."""
        return testrun.run(self.prog_fd(program), packet, ifindex, repeat)

    # ---- lifecycle ----

    def close(self) -> None:
        self._loaded.close()

    @staticmethod
    def unpin_all() -> list[str]:
        return loader.unpin_all()

    def __enter__(self) -> Datapath:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
