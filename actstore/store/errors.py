"""Errors the store raises. Every message names the bad value and what is allowed.

The API layer turns any ``ActstoreError`` into a GraphQL error with its message; anything
else is treated as a bug (masked for clients, logged on the server).
"""

from __future__ import annotations


class ActstoreError(Exception):
    """Base class of every user-facing error in actstore."""


class InvalidInputError(ActstoreError, ValueError):
    """The caller passed a value outside what is allowed (shape, range, NaN, ...)."""


class NotFoundError(ActstoreError, KeyError):
    """A named thing (model, dataset, prompt id, layer table) does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message, quotes and all
        return str(self.args[0]) if self.args else ""
