"""Rule cookies: the stable number a policy-map entry carries back to the rule that made it."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from labelwall.cluster import Direction


@dataclass(frozen=True, order=True)
class RuleRef:
    """``policy`` is ``namespace/name``; ``index`` counts rules of ``direction`` from 0."""

    policy: str
    direction: Direction
    index: int

    @property
    def field(self) -> str:
        return f"spec.{self.direction.name.lower()}[{self.index}]"

    def __str__(self) -> str:
        return f"{self.policy} {self.field}"


def cookie(ref: RuleRef) -> int:
    """crc32 of ``ns/name/direction/index`` (direction lower-case); never 0 (0 = no rule).

    Stable across processes and nodes, so verdict events name the same rule everywhere.
    """
    value = zlib.crc32(f"{ref.policy}/{ref.direction.name.lower()}/{ref.index}".encode())
    return value or 1
