"""CIDR and IP parsing follow the API server's legacy rules: normalise, never misread."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelwall.decode.validation import parse_cidr, parse_ip

v4 = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))
v6 = st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1))


@settings(max_examples=200, deadline=None)
@given(addr=v4 | v6, data=st.data())
def test_any_address_with_any_prefix_normalises_to_its_network(
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address, data: st.DataObject
) -> None:
    bits = data.draw(st.integers(0, addr.max_prefixlen))
    parsed = parse_cidr(f"{addr}/{bits}")
    expected = ipaddress.ip_network(f"{addr}/{bits}", strict=False)
    assert parsed.network == expected
    # A warning exactly when the input had host bits set.
    assert bool(parsed.warnings) == (expected.network_address != addr)


ACCEPTED = [
    ("10.244.1.1/4", "0.0.0.0/4", True),
    ("010.001.0.0/16", "10.1.0.0/16", True),
    ("10.0.0.0/08", "10.0.0.0/8", True),
    ("::ffff:10.0.0.0/104", "10.0.0.0/8", True),
    ("2001:DB8::/32", "2001:db8::/32", False),
    ("0.0.0.0/0", "0.0.0.0/0", False),
    ("::/0", "::/0", False),
]


@pytest.mark.parametrize(("text", "network", "warned"), ACCEPTED)
def test_legacy_cidr_forms_are_accepted_and_normalised(
    text: str, network: str, warned: bool
) -> None:
    parsed = parse_cidr(text)
    assert (str(parsed.network), bool(parsed.warnings)) == (network, warned)


@pytest.mark.parametrize(
    "text",
    [
        "10.0.0.1",
        "10.0.0.0/33",
        "fd00::/129",
        "10.0.0.0/255.0.0.0",
        "10.0.0/8",
        "10.0.0.256/8",
        "10.0.0.0/-1",
        "10.0.0.0/",
        "/8",
        "fe80::1%eth0/64",
        "10.0.0.0/8/8",
        "10.0.0.0/ 8",
        "10.0.0.0/\u0668",
        "",
    ],
)
def test_malformed_cidrs_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="must be a valid CIDR value"):
        parse_cidr(text)


def test_ipv4_mapped_pod_ip_reads_as_ipv4_with_a_warning() -> None:
    parsed = parse_ip("::ffff:10.244.1.5")
    assert parsed.address == ipaddress.IPv4Address("10.244.1.5")
    assert parsed.warning is not None
