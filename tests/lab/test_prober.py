"""The prober's pure parts: the SCTP INIT/INIT-ACK exchange and probe source ports (no root)."""

from __future__ import annotations

import contextlib
import socket

import pytest

from labelwall.lab import prober as L  # noqa: N812 - the names as the lab tests spell them

B4, B6 = "10.244.7.3", "fd00:10:244:7::3"


def test_the_sctp_checksum_is_crc32c_with_the_standard_check_value() -> None:
    # RFC 3720 B.4 / the CRC catalogue: CRC-32C("123456789") = 0xE3069283.
    assert L.crc32c(b"123456789") == 0xE3069283
    assert L.crc32c(b"\0" * 32) == 0x8A9136AA


def _init_ack(vtag: int, sport: int = 80, dport: int = 40000) -> L._SctpChunk | None:
    data = L._sctp_packet(sport, dport, vtag, L._SCTP_INIT_ACK, vtag ^ 0x5A5A5A5A)
    return L._parse_sctp(data, socket.AF_INET6)  # v6 raw reads carry no IP header


@pytest.mark.parametrize(
    ("chunk_args", "peer", "accepted"),
    [
        ({"vtag": 0x1234}, "10.244.7.3", True),
        ({"vtag": 0x1234}, "fd00:10:244:7:0::3", True),  # another spelling of B6
        ({"vtag": 0x1235}, "10.244.7.3", False),  # another probe's answer: same ports
        ({"vtag": 0x1234}, "10.244.7.9", False),  # from an address we did not probe
        ({"vtag": 0x1234, "sport": 81}, "10.244.7.3", False),
        ({"vtag": 0x1234, "dport": 40001}, "10.244.7.3", False),
    ],
)
def test_an_sctp_probe_accepts_only_the_init_ack_answering_its_own_init(
    chunk_args: dict[str, int], peer: str, accepted: bool
) -> None:
    # Concurrent probes from one pod share the raw socket's view of every SCTP packet and
    # can draw the same source port; a CI run once counted a neighbour's answer as ours.
    dst = B6 if ":" in peer else B4
    chunk = _init_ack(**chunk_args)
    assert L._is_our_init_ack(chunk, peer, dst, 80, 40000, 0x1234) is accepted


def test_probe_source_ports_repeat_only_after_the_whole_ephemeral_range() -> None:
    # A reused port inside the conntrack timeout would continue an old, allowed flow.
    ports = L._SourcePorts()
    seen = [ports.take() for _ in range(L._SourcePorts.COUNT)]
    assert len(set(seen)) == L._SourcePorts.COUNT
    assert min(seen) == 32768
    assert max(seen) == 32768 + L._SourcePorts.COUNT - 1
    assert ports.take() == seen[0]


def _bind_some_port(s: socket.socket, candidates: range) -> int:
    for port in candidates:
        with contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            return port
    raise AssertionError(f"every port in {candidates} is in use")


def test_a_udp_probe_socket_skips_a_source_port_in_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        taken = _bind_some_port(busy, range(40000, 41000))
        L._SOURCE_PORTS._next = taken - 32768  # the sequence's next port is the busy one
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            got = L._bind_fresh_port(s, "127.0.0.1", socket.AF_INET)
        assert got > taken
        assert got - taken < 64
