"""Remove labelwall from a node: detach the classifier from every link, then drop the pins."""

from __future__ import annotations

from dataclasses import dataclass

from pyroute2 import IPRoute

from labelwall.datapath import loader, tc


@dataclass(frozen=True)
class Removed:
    links: tuple[str, ...]
    pins: tuple[str, ...]


def attached_links() -> list[tuple[int, str]]:
    """(ifindex, name) of every link in this network namespace carrying our classifier."""
    with IPRoute() as ipr:
        links = [
            (int(link["index"]), str(link.get_attr("IFLA_IFNAME"))) for link in ipr.get_links()
        ]
    found = []
    for idx, name in links:
        names = tc.attached_names(idx, tc.PARENT_INGRESS) + tc.attached_names(idx, tc.PARENT_EGRESS)
        # The facade names its tc filters after the program pins (lw_*_v<layout>).
        if any(n.startswith("lw_") for n in names):
            found.append((idx, name))
    return found


def remove_all() -> Removed:
    """Detach first (so no link keeps a program whose maps we then unpin), then unpin."""
    links = attached_links()
    for idx, _ in links:
        tc.detach(idx, [tc.PARENT_INGRESS, tc.PARENT_EGRESS])
    return Removed(tuple(name for _, name in links), tuple(loader.unpin_all()))
