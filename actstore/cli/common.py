"""What every ``actstore`` command shares: the ``--store`` option and the error exit."""

# No `from __future__ import annotations`: typer reads the Annotated hints at runtime.

import sys
from typing import Annotated

import typer

from actstore.config import Settings

StoreOption = Annotated[
    str,
    typer.Option("--store", envvar="ACTSTORE_STORE", help="Store URI (local folder or object-store URI)."),
]
DEFAULT_STORE = Settings().store_uri


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` to stderr and return the Exit to raise (status ``code``)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return typer.Exit(code)
