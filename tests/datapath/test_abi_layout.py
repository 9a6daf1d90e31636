"""abi.py against abi.h: host offsetof/sizeof, the compiled object's BTF, constants, goldens."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from labelwall.cluster import Direction, Protocol
from labelwall.datapath import abi, codecs, groups, mapspecs
from labelwall.datapath.loader import object_path
from labelwall.identity.numbers import ANY, Reserved
from labelwall.policy.lookup import Reason
from labelwall.policy.mapstate import IpcacheEntry, NamedPortKey, PolicyKey, SubjectFlags

from .conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
INCLUDE = ROOT / "bpf_src" / "include"

# Every C constant the Python side relies on, with the Python value it must equal.
CONSTANTS: dict[str, int] = {
    "LW_ABI_VERSION": abi.ABI_VERSION,
    "LW_ID_ANY": ANY,
    "LW_ID_HOST": Reserved.HOST,
    "LW_ID_WORLD": Reserved.WORLD,
    "LW_DIR_INGRESS": Direction.INGRESS,
    "LW_DIR_EGRESS": Direction.EGRESS,
    "LW_DIR_NAMED": abi.DIR_NAMED,
    "LW_FAMILY_IPV4": abi.Family.IPV4,
    "LW_FAMILY_IPV6": abi.Family.IPV6,
    "LW_VERDICT_DROP": abi.TcVerdict.DROP,
    "LW_VERDICT_ALLOW": abi.TcVerdict.ALLOW,
    "LW_REASON_MAX": abi.REASON_MAX,
    "LW_REASON_FIRST_DROP": abi.REASON_FIRST_DROP,
    "LW_CT_F_REPLY_SEEN": abi.CtFlags.REPLY_SEEN,
    "LW_CT_F_CLOSING": abi.CtFlags.CLOSING,
    "LW_CT_F_FLIPPED": abi.CtFlags.FLIPPED,
    "LW_CT_TCP_SYN_TIMEOUT_S": abi.CT_TCP_SYN_TIMEOUT_S,
    "LW_CT_TCP_TIMEOUT_S": abi.CT_TCP_TIMEOUT_S,
    "LW_CT_TCP_CLOSE_TIMEOUT_S": abi.CT_TCP_CLOSE_TIMEOUT_S,
    "LW_CT_UDP_TIMEOUT_S": abi.CT_UDP_TIMEOUT_S,
    "LW_CT_ICMP_TIMEOUT_S": abi.CT_ICMP_TIMEOUT_S,
    "LW_CT_OTHER_TIMEOUT_S": abi.CT_OTHER_TIMEOUT_S,
    "LW_FRAG_TIMEOUT_S": abi.FRAG_TIMEOUT_S,
    "LW_FRAGS_MAX": mapspecs.FRAGS_MAX,
    "LW_EVENTS_PER_S_DEFAULT": abi.EVENTS_PER_S_DEFAULT,
    "LW_EVENTS_BURST_DEFAULT": abi.EVENTS_BURST_DEFAULT,
    "LW_CFG_NO_ALLOW_EVENTS": abi.ConfigFlags.NO_ALLOW_EVENTS,
    "LW_CFG_NO_EVENTS": abi.ConfigFlags.NO_EVENTS,
    "LW_ENDPOINTS_MAX": mapspecs.ENDPOINTS_MAX,
    "LW_EPADDRS_MAX": mapspecs.EPADDRS_MAX,
    "LW_EPADDR_F_POD": abi.EPADDR_F_POD,
    "LW_SUBJECTS_MAX": mapspecs.SUBJECTS_MAX,
    "LW_POLICY_MAX": mapspecs.POLICY_MAX,
    "LW_IPCACHE_MAX": mapspecs.IPCACHE_MAX,
    "LW_CIDRS_MAX": mapspecs.CIDRS_MAX,
    "LW_PORTS_MAX": mapspecs.PORTS_MAX,
    "LW_CT_MAX": mapspecs.CT_MAX,
    "LW_CT_NEW_MAX": mapspecs.CT_NEW_MAX,
    "LW_CT_PROMOTE_PER_S_DEFAULT": abi.CT_PROMOTE_PER_S_DEFAULT,
    "LW_CT_PROMOTE_BURST_DEFAULT": abi.CT_PROMOTE_BURST_DEFAULT,
    "LW_EVENTS_BYTES": mapspecs.EVENTS_BYTES,
    "LW_COUNTERS_MAX": mapspecs.COUNTERS_MAX,
    "LW_POLICY_PREFIX_ANY_PROTO": abi.POLICY_PREFIX_ANY_PROTO,
    "LW_POLICY_PREFIX_PROTO": abi.POLICY_PREFIX_PROTO,
    "LW_POLICY_PREFIX_FULL": abi.POLICY_PREFIX_FULL,
    "LW_CIDR_PREFIX_BASE": abi.CIDR_PREFIX_BASE,
    "LW_GROUP_SLOTS": abi.GROUP_SLOTS,
    "LW_EP_F_SUBJECT": abi.EP_F_SUBJECT,
    "LW_EP_SUBJECT_MASK": abi.EP_SUBJECT_MASK,
    "LW_GROUP_F_OVERFLOW": abi.GroupFlags.OVERFLOW,
    "LW_GROUP_F_NAMED": abi.GroupFlags.NAMED,
    "LW_SLOT_NAMED": abi.SLOT_NAMED,
    "LW_POLGRP_MAX": mapspecs.POLGRP_MAX,
    "LW_SVCNETS_MAX": mapspecs.SVCNETS_MAX,
    **{f"LW_REASON_{r.name}": r.value for r in Reason},
    **{f"LW_SUBJECT_{f.name}": f.value for f in SubjectFlags if f.name and f.value},
    **{f"LW_PROTO_{p.name}": p.value for p in Protocol},
}


@pytest.fixture(scope="module")
def host_layout(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """sizeof/offsetof of every ABI struct and every constant, from the host C compiler."""
    cc = require_tool("cc")
    lines = ["#include <stdio.h>", "#include <stddef.h>", '#include "labelwall/abi.h"',
             "int main(void) {"]  # fmt: skip
    for s in abi.STRUCTS:
        lines.append(f'printf("S {s.c_name} %zu\\n", sizeof(struct {s.c_name}));')
        for f in s.fields:
            member = f"((struct {s.c_name} *)0)->{f.name}"
            lines.append(
                f'printf("F {s.c_name} {f.name} %zu %zu\\n", '
                f"offsetof(struct {s.c_name}, {f.name}), sizeof({member}));"
            )
    for name in CONSTANTS:
        lines.append(f'printf("C {name} %lld\\n", (long long)({name}));')
    lines.append("return 0; }")
    tmp = tmp_path_factory.mktemp("abi")
    src, exe = tmp / "layout.c", tmp / "layout"
    src.write_text("\n".join(lines))
    subprocess.run([cc, f"-I{INCLUDE}", str(src), "-o", str(exe)], check=True)
    out: dict[str, Any] = {"S": {}, "F": {}, "C": {}}
    for line in subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split(
        "\n"
    ):
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "S":
            out["S"][parts[1]] = int(parts[2])
        elif parts[0] == "F":
            out["F"][(parts[1], parts[2])] = (int(parts[3]), int(parts[4]))
        else:
            out["C"][parts[1]] = int(parts[2])
    return out


def test_every_struct_has_the_same_size_on_the_host_and_in_python(
    host_layout: dict[str, Any],
) -> None:
    assert {s.c_name: s.size for s in abi.STRUCTS} == host_layout["S"]


def test_every_field_has_the_same_offset_and_size_on_the_host_and_in_python(
    host_layout: dict[str, Any],
) -> None:
    python = {
        (s.c_name, f.name): (s.offsets()[f.name], f.size) for s in abi.STRUCTS for f in s.fields
    }
    assert python == host_layout["F"]


def test_every_constant_has_the_same_value_in_c_and_python(host_layout: dict[str, Any]) -> None:
    assert host_layout["C"] == {k: int(v) for k, v in CONSTANTS.items()}


def test_map_specs_agree_with_the_struct_sizes() -> None:
    assert mapspecs.POLICY_MAP.key_size == abi.POLICY_KEY.size
    assert mapspecs.IPCACHE_MAP.value_size == abi.IPCACHE_VALUE.size
    assert mapspecs.CT_MAP.key_size == abi.CT_KEY.size
    assert (mapspecs.FRAGS_MAP.key_size, mapspecs.FRAGS_MAP.value_size) == (
        abi.FRAG_KEY.size,
        abi.FRAG_VALUE.size,
    )
    assert all(len(m.name) <= 15 for m in mapspecs.MAPS)  # BPF_OBJ_NAME_LEN - 1: no truncation


def _btf_structs() -> dict[str, dict[str, Any]]:
    bpftool = require_tool("bpftool")
    dump = subprocess.run(
        [bpftool, "btf", "dump", "file", str(object_path()), "-j"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    types = {t["id"]: t for t in json.loads(dump)["types"]}

    def size_of(type_id: int) -> int:
        t = types[type_id]
        if t["kind"] in ("TYPEDEF", "VOLATILE", "CONST"):
            return size_of(t["type_id"])
        if t["kind"] == "ARRAY":
            return int(t["nr_elems"]) * size_of(t["type_id"])
        return int(t["size"])

    out = {}
    for t in types.values():
        if t["kind"] == "STRUCT" and t["name"].startswith("lw_"):
            out[t["name"]] = {
                "size": t["size"],
                "members": [
                    (m["name"], m["bits_offset"] // 8, size_of(m["type_id"])) for m in t["members"]
                ],
            }
    return out


def test_btf_of_the_compiled_object_matches_python_for_every_struct() -> None:
    btf = _btf_structs()
    python = {
        s.c_name: {
            "size": s.size,
            "members": [(f.name, s.offsets()[f.name], f.size) for f in s.fields],
        }
        for s in abi.STRUCTS
    }
    assert btf == python


# ---- golden encodings (byte-exact; x86-64 little-endian host order) ----


def test_policy_key_for_a_tcp_port_encodes_byte_exact() -> None:
    key = PolicyKey(0x12345, 0x100, Direction.INGRESS, Protocol.TCP, 8080, 16)
    assert codecs.encode_policy_key(key).hex() == "60000000452301000001000001061f90"


def test_policy_key_for_any_protocol_uses_prefix_72() -> None:
    key = PolicyKey(256, 0, Direction.EGRESS)
    assert codecs.encode_policy_key(key).hex() == "48000000000100000000000002000000"


def test_named_policy_key_sets_the_named_bit_and_a_full_port_prefix() -> None:
    key = PolicyKey(256, 2, Direction.EGRESS, Protocol.UDP, 7, 16, named=True)
    assert codecs.encode_policy_key(key).hex() == "60000000000100000200000082110007"


def test_port_range_prefix_keeps_only_its_leading_bits() -> None:
    key = PolicyKey(256, 0, Direction.INGRESS, Protocol.SCTP, 0x8000, 1)
    assert codecs.encode_policy_key(key).hex() == "51000000000100000000000001848000"


def test_ipcache_key_and_value_encode_byte_exact() -> None:
    assert codecs.encode_ip_key(ipaddress.ip_address("10.244.1.2")).hex() == (
        "040000000af40102" + "00" * 12
    )
    assert codecs.encode_ip_key(ipaddress.ip_address("fd00::1")).hex() == (
        "06000000fd00" + "00" * 13 + "01"
    )
    assert codecs.encode_ipcache_value(IpcacheEntry(300, 0x1000001)).hex() == "2c01000001000001"


def test_cidr_key_carries_32_plus_prefix_length() -> None:
    assert codecs.encode_cidr_key(ipaddress.ip_network("10.0.0.0/8")).hex() == (
        "28000000040000000a000000" + "00" * 12
    )


def test_named_port_key_encodes_port_in_network_order() -> None:
    key = NamedPortKey(ipaddress.ip_address("10.244.0.9"), Protocol.TCP, 443)
    assert codecs.encode_port_key(key).hex() == "040601bb0af40009" + "00" * 12


def test_an_endpoint_mirroring_its_subject_flags_encodes_byte_exact() -> None:
    mirror = codecs.Endpoint.mirroring(257, SubjectFlags.EGRESS_ISOLATED | SubjectFlags.AUDIT)
    assert codecs.encode_endpoint(mirror).hex() == "0101000006000080"


def test_an_endpoint_address_key_is_ifindex_family_and_address_in_network_order() -> None:
    v4 = codecs.encode_epaddr_key(0x0102, ipaddress.ip_address("10.244.0.9"))
    assert v4.hex() == "02010000" + "04000000" + "0af40009" + "00" * 12
    v6 = codecs.encode_epaddr_key(7, ipaddress.ip_address("fd00::1"))
    assert v6.hex() == "07000000" + "06000000" + "fd00" + "00" * 13 + "01"
    assert codecs.decode_epaddr_key(v6) == (7, ipaddress.ip_address("fd00::1"))
    assert codecs.encode_epaddr_value().hex() == "01000000"
    assert mapspecs.EPADDR_MAP.key_size == abi.EPADDR_KEY.size == 24


def test_subject_and_endpoint_values_encode_byte_exact() -> None:
    assert codecs.encode_subject(SubjectFlags.INGRESS_ISOLATED | SubjectFlags.AUDIT).hex() == (
        "05000000"
    )
    assert codecs.encode_endpoint(codecs.Endpoint(257)).hex() == "0101000000000000"


def test_ct_key_encodes_ports_and_addresses_in_network_order() -> None:
    key = codecs.CtKey(4, 6, 2, 40000, 80, ipaddress.ip_address("1.2.3.4"),
                    ipaddress.ip_address("5.6.7.8"), 0x0102)  # fmt: skip
    assert codecs.encode_ct_key(key).hex() == (
        "040602009c40005001020304" + "00" * 12 + "05060708" + "00" * 12 + "02010000"
    )  # the veth ifindex last, host order (little-endian here)
    assert codecs.decode_ct_key(codecs.encode_ct_key(key)) == key


def test_frag_key_encodes_the_datagram_id_host_order_and_addresses_network_order() -> None:
    key = codecs.FragKey(6, 17, 1, 0x01020304, ipaddress.ip_address("fd00::1"),
                         ipaddress.ip_address("fd00::2"), 7)  # fmt: skip
    assert codecs.encode_frag_key(key).hex() == (
        "06110100" "04030201" "fd00" + "00" * 13 + "01" "fd00" + "00" * 13 + "02" "07000000"
    )  # fmt: skip
    assert codecs.decode_frag_key(codecs.encode_frag_key(key)) == key


@pytest.mark.parametrize(
    "key",
    [
        PolicyKey(256, 0, Direction.EGRESS),
        PolicyKey(1 << 24 | 5, 300, Direction.INGRESS, Protocol.TCP, 0x1F00, 8),
        PolicyKey(256, 2, Direction.EGRESS, Protocol.UDP, 7, 16, named=True),
        PolicyKey(256, 2, Direction.EGRESS, Protocol.ICMP, 0, 0),
    ],
)
def test_policy_keys_round_trip(key: PolicyKey) -> None:
    assert codecs.decode_policy_key(codecs.encode_policy_key(key)) == key


def test_event_decodes_from_a_golden_record() -> None:
    raw = bytes.fromhex(
        "0100000000000000" "2c010000" "02000000" "05000001" "07000000" "01000000"
        "04" "06" "01" "00" "10" "00" "9c40" "0050" "ff00"
        "0af40001" + "00" * 12 + "08080808" + "00" * 12
    )  # fmt: skip
    ev = codecs.decode_event(raw)
    assert ev == codecs.Event(
        1, 300, 2, 0x1000005, 7, 1, 4, 6, 1, abi.TcVerdict.DROP, Reason.POLICY_DENIED, 40000, 80,
        ipaddress.ip_address("10.244.0.1"), ipaddress.ip_address("8.8.8.8"),
    )  # fmt: skip


def test_group_key_and_slots_encode_byte_exact_longest_prefix_first_named_last() -> None:
    entries = {
        PolicyKey(256, 2, Direction.EGRESS): 5,  # any protocol: last of the port slots
        PolicyKey(256, 2, Direction.EGRESS, Protocol.TCP, 3, 16, named=True): 7,
        PolicyKey(256, 2, Direction.EGRESS, Protocol.TCP, 0x8000, 1): 8,
        PolicyKey(256, 2, Direction.EGRESS, Protocol.TCP, 80, 16): 6,
    }
    assert groups.encode_group_key(groups.GroupKey(256, 2, Direction.EGRESS)).hex() == (
        "000100000200000002000000"
    )
    assert groups.encode_group(entries.items()).hex() == (
        "02000000" "04000000"  # NAMED, 4 slots
        "0610" "5000" "06000000"  # TCP /16 port 80 (host order), cookie 6
        "0601" "0080" "08000000"  # TCP /1 port 0x8000
        "0000" "0000" "05000000"  # any protocol
        "0690" "0300" "07000000"  # named (0x80 | 16), name id 3
        + "00" * 32
    )  # fmt: skip


def test_a_group_with_more_entries_than_slots_encodes_as_overflow_without_slots() -> None:
    entries = {PolicyKey(1, 2, Direction.INGRESS, Protocol.UDP, p, 16): p for p in range(9)}
    flags, slots = groups.decode_group(groups.encode_group(entries.items()))
    assert (flags, slots) == (abi.GroupFlags.OVERFLOW, [])
