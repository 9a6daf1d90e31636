"""Typed input errors that name the file, the object and the field path."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One problem in one field of one input object.

    ``source`` is the file name (or ``-`` for stdin), ``index`` the document index
    inside that file, ``obj`` is ``Kind namespace/name``, ``field`` a JSON-path-like
    path such as ``spec.ingress[0].from[1].ipBlock.except[0]``.
    """

    source: str
    index: int | None
    obj: str
    field: str
    message: str
    line: int | None = None  # the line its document starts on (1-based), when known

    def __str__(self) -> str:
        where = self.source if self.index is None else f"{self.source}[doc {self.index}]"
        field = f" {self.field}:" if self.field else ""
        return f"{where}: {self.obj}:{field} {self.message}"


class InvalidInputError(Exception):
    """Raised when any input object is invalid; nothing is compiled or applied."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))
