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
