"""Errors that name the argument at fault, so that each face can word it.

Messages raised in ``actstore/ingest`` name no command-line flags; where a message tells the
user what to change, the error carries the argument's Python name in ``field`` (``key``,
``dtype``, ``prompts``, ``next_tokens``, ``chat_template``, ``device``, ``text_column``) and the
command line (``actstore/cli/ingest.py``) turns the words into its flag. Until
:class:`actstore.errors.InvalidInput` takes ``field=`` itself, the attribute is set here.
"""

from __future__ import annotations

from typing import TypeVar

from actstore.errors import ActstoreError, InvalidInput

__all__ = ["invalid", "with_field"]

E = TypeVar("E", bound=ActstoreError)


def with_field(err: E, field: str) -> E:
    """``err`` with ``err.field = field``."""
    err.field = field  # type: ignore[attr-defined]
    return err


def invalid(message: str, *, field: str | None = None) -> InvalidInput:
    """InvalidInput(message) carrying ``field`` (None: no argument in particular)."""
    err = InvalidInput(message)
    err.field = field  # type: ignore[attr-defined]
    return err
