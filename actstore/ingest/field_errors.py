"""Errors that name the argument at fault, so that each face can word it.

Messages raised in ``actstore/ingest`` name no command-line flags; where a message tells the
user what to change, the error carries the argument's Python name in ``field`` (``key``,
``dtype``, ``prompts``, ``next_tokens``, ``chat_template``, ``device``, ``text_column``;
:class:`actstore.errors.ActstoreError` holds it) and the command line
(``actstore/cli/flags.py``) turns the words into its flag. :func:`with_field` sets it on an
error built elsewhere.
"""

from __future__ import annotations

from typing import TypeVar

from actstore.errors import ActstoreError

__all__ = ["with_field"]

E = TypeVar("E", bound=ActstoreError)


def with_field(err: E, field: str) -> E:
    """``err`` with ``err.field = field``."""
    err.field = field
    return err
