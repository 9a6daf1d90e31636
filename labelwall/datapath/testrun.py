"""Run one packet through a loaded classifier with BPF_PROG_TEST_RUN.

The kernel builds an skb from the packet (Ethernet first) on the device named by the
context's ``__sk_buff.ifindex`` (it must exist; lo = 1 always does) and the program sees
that as ``skb->ifindex``, so the endpoint lookup works as on a real veth.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from labelwall.datapath import abi, libbpf

SK_BUFF_SIZE = 192  # sizeof(struct __sk_buff), linux/bpf.h
SK_BUFF_IFINDEX = 40  # offsetof(struct __sk_buff, ifindex)
TC_ACT_OK = 0
TC_ACT_SHOT = 2
LOOPBACK_IFINDEX = 1


class TestRunResult(NamedTuple):
    verdict: abi.TcVerdict
    retval: int
    duration_ns: int  # average per repetition


TestRunResult.__test__ = False  # type: ignore[attr-defined]  # not a pytest class


def skb_context(ifindex: int) -> bytes:
    ctx = bytearray(SK_BUFF_SIZE)
    struct.pack_into("=I", ctx, SK_BUFF_IFINDEX, ifindex)
    return bytes(ctx)


def run(
    prog_fd: int, packet: bytes, ifindex: int = LOOPBACK_IFINDEX, repeat: int = 1
) -> TestRunResult:
    r = libbpf.prog_test_run(prog_fd, packet, skb_context(ifindex), repeat)
    verdict = abi.TcVerdict.ALLOW if r.retval == TC_ACT_OK else abi.TcVerdict.DROP
    return TestRunResult(verdict, r.retval, r.duration_ns)
