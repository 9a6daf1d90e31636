"""Flags that several commands share, so each is spelled (and parsed) one way everywhere."""

from __future__ import annotations

import argparse


def add_filename(p: argparse.ArgumentParser, help: str, required: bool = True) -> None:
    """kubectl's ``-f/--filename``: repeatable, a file, a directory or ``-`` for stdin."""
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        default=[],
        required=required,
        metavar="PATH",
        help=help,
    )
