"""Kubernetes name, label, port and IP/CIDR syntax rules, as the API server applies them.

Each ``*_errors`` function returns the list of problems (empty = valid), worded like
``k8s.io/apimachinery/pkg/util/validation`` so users recognise the messages. The IP and CIDR
parsers follow the API server's *legacy* field rules (``IsValidCIDRForLegacyField`` with
strict validation off, the default today): leading zeros in IPv4 octets and prefix lengths,
host bits set and IPv4-mapped IPv6 are all accepted, normalised, and reported as warnings.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache

from labelwall.cluster import IPAddress, IPNetwork

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
QUALIFIED_NAME_MAX = 63
LABEL_VALUE_MAX = 63
PORT_NAME_MAX = 15  # IANA_SVC_NAME, RFC 6335 section 5.1

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_PORT_NAME_CHARS = re.compile(r"[-a-z0-9]+")
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: int() would also take "٣" and "1_0"


def _max_len(n: int) -> str:
    return f"must be no more than {n} characters"


def _pattern_errors(
    value: str, max_len: int, pattern: re.Pattern[str], message: str
) -> tuple[str, ...]:
    """The common rule: at most ``max_len`` characters, and the whole value matches ``pattern``."""
    errs: list[str] = []
    if len(value) > max_len:
        errs.append(_max_len(max_len))
    if not pattern.fullmatch(value):
        errs.append(message)
    return tuple(errs)


@lru_cache(maxsize=1 << 16)  # label keys and values repeat across thousands of pods
def dns1123_label_errors(value: str) -> tuple[str, ...]:
    """RFC 1123 label: namespace names."""
    return _pattern_errors(
        value,
        DNS1123_LABEL_MAX,
        _DNS1123_LABEL,
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
        "or '-', and must start and end with an alphanumeric character",
    )


@lru_cache(maxsize=1 << 16)  # label keys and values repeat across thousands of pods
def dns1123_subdomain_errors(value: str) -> tuple[str, ...]:
    """RFC 1123 subdomain: pod, node and NetworkPolicy names; label-key prefixes."""
    return _pattern_errors(
        value,
        DNS1123_SUBDOMAIN_MAX,
        _DNS1123_SUBDOMAIN,
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
        "'-' or '.', and must start and end with an alphanumeric character",
    )


@lru_cache(maxsize=1 << 16)  # label keys and values repeat across thousands of pods
def qualified_name_errors(value: str) -> tuple[str, ...]:
    """Label and annotation keys: ``[prefix/]name``, prefix a DNS subdomain."""
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
        errs: list[str] = []
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs = ["prefix part must be non-empty"]
        else:
            errs = [f"prefix part {m}" for m in dns1123_subdomain_errors(prefix)]
    else:
        return (
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and "
            "must start and end with an alphanumeric character, with an optional DNS "
            "subdomain prefix and '/' (e.g. 'example.com/MyName')",
        )
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > QUALIFIED_NAME_MAX:
        errs.append(f"name part {_max_len(QUALIFIED_NAME_MAX)}")
    if name and not _QUALIFIED_NAME_PART.fullmatch(name):
        errs.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character"
        )
    return tuple(errs)


@lru_cache(maxsize=1 << 16)  # label keys and values repeat across thousands of pods
def label_value_errors(value: str) -> tuple[str, ...]:
    """Label values (and selector values): empty, or <= 63 chars of ``[-A-Za-z0-9_.]``."""
    return _pattern_errors(
        value,
        LABEL_VALUE_MAX,
        _LABEL_VALUE,
        "a valid label must be an empty string or consist of alphanumeric characters, "
        "'-', '_' or '.', and must start and end with an alphanumeric character",
    )


@lru_cache(maxsize=1 << 16)  # label keys and values repeat across thousands of pods
def port_name_errors(value: str) -> tuple[str, ...]:
    """IANA_SVC_NAME: named container ports and named NetworkPolicy ports."""
    errs: list[str] = []
    if len(value) > PORT_NAME_MAX:
        errs.append(_max_len(PORT_NAME_MAX))
    if not _PORT_NAME_CHARS.fullmatch(value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search(r"[a-z]", value):
        errs.append("must contain at least one letter (a-z)")
    if "--" in value:
        errs.append("must not contain consecutive hyphens")
    if value.startswith("-") or value.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return tuple(errs)


def port_number_errors(value: int) -> tuple[str, ...]:
    if not 1 <= value <= 65535:
        return ("must be between 1 and 65535, inclusive",)
    return ()


@dataclass(frozen=True)
class ParsedIP:
    """An address plus a note when the input was in a non-standard (but accepted) form."""

    address: IPAddress
    warning: str | None = None


@dataclass(frozen=True)
class ParsedCIDR:
    """A normalised network plus notes on what normalisation changed."""

    network: IPNetwork
    warnings: tuple[str, ...] = ()


def _parse_ipv4_sloppy(text: str) -> ipaddress.IPv4Address | None:
    # Go's historical parser (netutils.ParseIPSloppy): four decimal octets, leading zeros
    # ignored (read as decimal, never octal).
    parts = text.split(".")
    if len(parts) != 4 or not all(_DIGITS.fullmatch(p) for p in parts):
        return None
    octets = [int(p) for p in parts]
    if any(o > 255 for o in octets):
        return None
    return ipaddress.IPv4Address(bytes(octets))


def parse_ip(text: str) -> ParsedIP:
    """Parse an IP the way legacy API fields (podIP, node addresses) accept it.

    Raises ValueError with the API server's message. IPv4-mapped IPv6 addresses are
    returned as the IPv4 address they denote.
    """
    invalid = ValueError("must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")
    if ":" in text:
        if "%" in text:  # zones are not IP addresses for Kubernetes
            raise invalid
        try:
            v6 = ipaddress.IPv6Address(text)
        except ValueError:
            raise invalid from None
        if v6.ipv4_mapped is not None:
            return ParsedIP(
                v6.ipv4_mapped,
                f"non-standard IP address {text!r} will be considered invalid in a future "
                f"Kubernetes release: use {str(v6.ipv4_mapped)!r}",
            )
        return ParsedIP(v6)
    v4 = _parse_ipv4_sloppy(text)
    if v4 is None:
        raise invalid
    if str(v4) != text:
        return ParsedIP(
            v4,
            f"non-standard IP address {text!r} will be considered invalid in a future "
            f"Kubernetes release: use {str(v4)!r}",
        )
    return ParsedIP(v4)


def parse_cidr(text: str) -> ParsedCIDR:
    """Parse a CIDR as NetworkPolicy ``ipBlock.cidr``/``except`` accept it; normalise it.

    ``10.244.1.1/4`` is accepted and becomes ``0.0.0.0/4`` with a warning, as the API server
    does. A bare address without ``/len`` and netmask notation are rejected (Go's
    ``ParseCIDR`` does). Raises ValueError with the API server's message.
    """
    invalid = ValueError("must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")
    addr_text, slash, bits_text = text.partition("/")
    if not slash or not _DIGITS.fullmatch(bits_text):
        raise invalid
    try:
        addr = parse_ip(addr_text)
    except ValueError:
        raise invalid from None
    bits = int(bits_text)
    warnings: list[str] = []
    mapped = ":" in addr_text and isinstance(addr.address, ipaddress.IPv4Address)
    if mapped:
        # An IPv4-mapped IPv6 prefix (::ffff:a.b.c.d/len, len 96..128) covers exactly the
        # IPv4 prefix a.b.c.d/(len-96); Go compares it against IPv4 CIDRs that way too.
        if bits > 128:
            raise invalid
        if bits < 96:
            net6 = ipaddress.IPv6Network((ipaddress.IPv6Address(addr_text), bits), strict=False)
            return ParsedCIDR(net6, (f"IPv4-mapped IPv6 CIDR {text!r} read as {str(net6)!r}",))
        bits -= 96
    network: IPNetwork
    if isinstance(addr.address, ipaddress.IPv4Address):
        if bits > 32:
            raise invalid
        network = ipaddress.IPv4Network((addr.address, bits), strict=False)
    else:
        if bits > 128:
            raise invalid
        network = ipaddress.IPv6Network((addr.address, bits), strict=False)
    if network.network_address != addr.address:
        host = f"{addr.address}/{network.max_prefixlen}"
        warnings.append(
            f"CIDR value {text!r} has host bits set; read as {str(network)!r} "
            f"(did you mean {host!r}?)"
        )
    elif addr.warning is not None or bits_text != str(int(bits_text)):
        warnings.append(
            f"non-standard CIDR value {text!r} will be considered invalid in a future "
            f"Kubernetes release: use {str(network)!r}"
        )
    return ParsedCIDR(network, tuple(warnings))
