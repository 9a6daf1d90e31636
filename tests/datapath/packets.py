"""Packet builders for BPF_PROG_TEST_RUN: Ethernet + IPv4/IPv6 + TCP/UDP/SCTP/ICMP, by struct.

Checksums are left zero: the classifier never verifies them and the kernel's test run does
not either. Every builder returns bytes starting with the Ethernet header.
"""

from __future__ import annotations

import ipaddress
import struct

from labelwall.cluster import IPAddress

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100

TCP, UDP, SCTP, ICMP, ICMPV6 = 6, 17, 132, 1, 58
SYN, FIN, RST, ACK = 0x02, 0x01, 0x04, 0x10

MAC_DST = bytes.fromhex("020000000001")
MAC_SRC = bytes.fromhex("020000000002")


def eth(ethertype: int, payload: bytes) -> bytes:
    return MAC_DST + MAC_SRC + struct.pack("!H", ethertype) + payload


def tcp(sport: int, dport: int, flags: int = SYN) -> bytes:
    # sport, dport, seq, ack, data offset (5 words) << 4, flags, window, csum, urg
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)


def udp(sport: int, dport: int, payload: bytes = b"x") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def sctp(sport: int, dport: int) -> bytes:
    return struct.pack("!HHII", sport, dport, 0, 0)


def icmp(type_: int, code: int = 0, ident: int = 0, seq: int = 1) -> bytes:
    return struct.pack("!BBHHH", type_, code, 0, ident, seq)


def l4(proto: int, sport: int, dport: int, flags: int = SYN) -> bytes:
    """A minimal L4 header; for ICMP/ICMPv6 an echo request with id ``sport``."""
    if proto == TCP:
        return tcp(sport, dport, flags)
    if proto == UDP:
        return udp(sport, dport)
    if proto == SCTP:
        return sctp(sport, dport)
    if proto == ICMP:
        return icmp(8, ident=sport)
    if proto == ICMPV6:
        return icmp(128, ident=sport)
    return b"\0" * 8


def ipv4(
    src: str, dst: str, proto: int, payload: bytes, frag_offset: int = 0, more_frags: bool = False,
    ihl: int = 5, ident: int = 7,
) -> bytes:  # fmt: skip
    """``frag_offset`` in 8-byte units; ``ident`` is the IPv4 id fragments share."""
    frag = (0x2000 if more_frags else 0) | frag_offset
    options = b"\x01" * ((ihl - 5) * 4)  # NOP options
    hdr = struct.pack(
        "!BBHHHBBH4s4s", (4 << 4) | ihl, 0, ihl * 4 + len(payload), ident, frag, 64, proto, 0,
        ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed,
    )  # fmt: skip
    return eth(ETH_P_IP, hdr + options + payload)


def ipv6(src: str, dst: str, nexthdr: int, payload: bytes, hop_limit: int = 64) -> bytes:
    hdr = struct.pack(
        "!IHBB16s16s", 6 << 28, len(payload), nexthdr, hop_limit,
        ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed,
    )  # fmt: skip
    return eth(ETH_P_IPV6, hdr + payload)


def ipv6_ext(nexthdr: int, body: bytes = b"\0" * 6) -> bytes:
    """A hop-by-hop/destination-options style extension header (length in 8-byte units - 1)."""
    total = 2 + len(body)
    assert total % 8 == 0
    return struct.pack("!BB", nexthdr, total // 8 - 1) + body


def ipv6_frag(nexthdr: int, offset_units: int, more: bool, ident: int = 1) -> bytes:
    return struct.pack("!BBHI", nexthdr, 0, (offset_units << 3) | (1 if more else 0), ident)


def icmp_error(type_: int, quoted: bytes, code: int = 0) -> bytes:
    """An ICMP/ICMPv6 error quoting ``quoted`` (a packet from this module, Ethernet dropped)."""
    return struct.pack("!BBHI", type_, code, 0, 0) + quoted[14:]


def packet(src: IPAddress, dst: IPAddress, proto: int, sport: int, dport: int,
           flags: int = SYN) -> bytes:  # fmt: skip
    """The first packet of a flow, IPv4 or IPv6 by address family."""
    if src.version == 4:
        return ipv4(str(src), str(dst), proto, l4(proto, sport, dport, flags))
    return ipv6(str(src), str(dst), proto, l4(proto, sport, dport, flags))
