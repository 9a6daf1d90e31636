"""Numbering of what the policy set names: CIDR identities for ipBlock prefixes, port-name ids.

Both are functions of the whole policy set (``identity.allocator.allocate_local`` for
prefixes, ``policy.ports.allocate_name_ids`` for names), so ``PolicyNumbering`` keeps
reference counts per prefix and name over the policies compiled, and ``check_change``
tells an incremental update when a policy change would renumber an existing prefix or
name (``NeedsRebuild``: the caller recompiles fully).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from labelwall.cluster import IPNetwork
from labelwall.identity.allocator import allocate_local
from labelwall.policy.cidr import block_prefixes
from labelwall.policy.ports import allocate_name_ids, port_names
from labelwall.policy.rules import LoweredPolicy


class NeedsRebuild(Exception):  # noqa: N818 - a signal, not a failure
    """An update would renumber an existing CIDR identity or name id; recompile fully."""


def policy_prefixes(policy: LoweredPolicy) -> Counter[IPNetwork]:
    """The prefixes a policy's ipBlock peers need CIDR identities for (with multiplicity)."""
    out: Counter[IPNetwork] = Counter()
    for rule in policy.rules:
        for peer in rule.peers:
            if peer.ip_block is not None:
                out.update(block_prefixes(peer.ip_block))
    return out


def policy_port_names(policy: LoweredPolicy) -> Counter[str]:
    """The port names a policy's rules use (with multiplicity)."""
    out: Counter[str] = Counter()
    for rule in policy.rules:
        out.update(port_names(rule.ports))
    return out


class PolicyNumbering:
    """Reference counts of the prefixes and port names the compiled policies use."""

    def __init__(self) -> None:
        self.prefix_refs: Counter[IPNetwork] = Counter()
        self.name_refs: Counter[str] = Counter()

    def add(self, policy: LoweredPolicy, sign: int = +1) -> None:
        """Count a policy in (``sign`` +1) or out (-1)."""
        if sign > 0:
            self.prefix_refs.update(policy_prefixes(policy))
            self.name_refs.update(policy_port_names(policy))
        else:
            self.prefix_refs.subtract(policy_prefixes(policy))
            self.name_refs.subtract(policy_port_names(policy))
            self.prefix_refs = +self.prefix_refs  # drop zero counts
            self.name_refs = +self.name_refs

    def prefix_ids(self) -> dict[IPNetwork, int]:
        return allocate_local(self.prefix_refs)

    def name_ids(self) -> dict[str, int]:
        return allocate_name_ids(self.name_refs)

    def check_change(
        self,
        old: LoweredPolicy | None,
        new: LoweredPolicy | None,
        prefix_ids: Mapping[IPNetwork, int],
        name_ids: Mapping[str, int],
    ) -> None:
        """Raise NeedsRebuild when replacing ``old`` by ``new`` would renumber an existing
        prefix (of ``prefix_ids``) or name (of ``name_ids``)."""
        prefixes = self.prefix_refs.copy()
        names = self.name_refs.copy()
        if old is not None:
            prefixes.subtract(policy_prefixes(old))
            names.subtract(policy_port_names(old))
        if new is not None:
            prefixes.update(policy_prefixes(new))
            names.update(policy_port_names(new))
        if {p for p, c in prefixes.items() if c > 0} != set(prefix_ids):
            ids = allocate_local(p for p, c in prefixes.items() if c > 0)
            if any(ids.get(p, v) != v for p, v in prefix_ids.items()):
                raise NeedsRebuild("prefix identities would be renumbered")
        if {n for n, c in names.items() if c > 0} != set(name_ids):
            nids = allocate_name_ids(n for n, c in names.items() if c > 0)
            if any(nids.get(n, v) != v for n, v in name_ids.items()):
                raise NeedsRebuild("port-name ids would be renumbered")
