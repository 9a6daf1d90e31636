"""Typed errors of the datapath layer (object missing, pinned layout mismatch, attach)."""

from __future__ import annotations


class DatapathError(Exception):
    """Base class: something about the BPF side is not as labelwall needs it."""


class ObjectMissingError(DatapathError):
    """The compiled classifier is not where the installed package expects it."""


class LayoutMismatchError(DatapathError):
    """A pinned map has another layout than this build expects; it is never written."""


class RingBufferClosedError(DatapathError):
    """The event ring buffer was polled after ``close()``."""


class ProgramNotFoundError(DatapathError):
    """The just-loaded program could not be found in the kernel by name and maps."""


class MapFullError(DatapathError):
    """A map refused a new entry because it holds ``max_entries`` already (E2BIG/ENOSPC).

    ``needed`` is how many entries the write wanted the map to hold (present + refused
    new keys). The writer raises it only after failing closed (writer.py, "When a write
    fails"); ``also`` lists the other maps that were full in the same delta.
    """

    def __init__(
        self, map_name: str, max_entries: int, needed: int, also: tuple[MapFullError, ...] = ()
    ) -> None:
        self.map_name = map_name
        self.max_entries = max_entries
        self.needed = needed
        self.also = also
        super().__init__(
            f"map {map_name} is full: it holds {max_entries} entries and needed {needed}"
        )

    @property
    def all(self) -> tuple[MapFullError, ...]:
        """This one and the others, one per map."""
        return (self, *self.also)
