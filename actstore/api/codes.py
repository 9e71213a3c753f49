"""``extensions.code`` of every GraphQL error, and masking of unexpected ones: one place.

- an :class:`actstore.errors.ActstoreError` carries its class's ``code`` (``BAD_USER_INPUT``,
  ``NOT_FOUND``, ``UNAUTHENTICATED``, ``LIMIT_EXCEEDED``, ``TIMEOUT``, ``CONFLICT``,
  ``DATA_CORRUPTED`` (a stored vector failing its checksum), ``STORAGE_UNAVAILABLE`` (a full
  disk, an object store that does not answer));
- errors the API makes itself carry their code already (``GRAPHQL_PARSE_FAILED``,
  ``GRAPHQL_VALIDATION_FAILED``, ``LIMIT_EXCEEDED``, ``BAD_REQUEST``);
- graphql-core's own errors without a cause (variable coercion) are ``BAD_USER_INPUT``;
- anything else is a bug: masked as "Unexpected error." with ``INTERNAL_SERVER_ERROR``
  (the schema logs it in full).
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError

from actstore.errors import ActstoreError

__all__ = ["BAD_REQUEST", "INTERNAL", "MASKED_MESSAGE", "error_code", "format_error", "request_error", "should_mask"]

INTERNAL = "INTERNAL_SERVER_ERROR"
BAD_REQUEST = "BAD_REQUEST"
MASKED_MESSAGE = "Unexpected error."


def should_mask(error: GraphQLError) -> bool:
    """True for errors whose message may reveal internals (not an ActstoreError, not GraphQL's)."""
    original = error.original_error
    if original is None:  # syntax / validation / coercion errors: already safe and useful
        return False
    return not isinstance(original, (ActstoreError, GraphQLError))


def error_code(error: GraphQLError) -> str:
    """The ``extensions.code`` of ``error``."""
    code = (error.extensions or {}).get("code")
    if isinstance(code, str):
        return code
    original = error.original_error
    if isinstance(original, ActstoreError):
        return original.code
    if isinstance(original, GraphQLError):
        return error_code(original)
    if original is None and error.path is None:
        return "BAD_USER_INPUT"  # e.g. a variable of the wrong type, found before execution
    return INTERNAL


def format_error(error: GraphQLError) -> dict[str, Any]:
    """The JSON of one error for a client: masked if unexpected, always with extensions.code."""
    if should_mask(error):
        out: dict[str, Any] = {"message": MASKED_MESSAGE}
        if error.locations:
            out["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
        if error.path is not None:
            out["path"] = error.path
        out["extensions"] = {"code": INTERNAL}
        return out
    out = dict(error.formatted)
    out["extensions"] = {**(out.get("extensions") or {}), "code": error_code(error)}
    return out


def request_error(message: str, code: str = BAD_REQUEST) -> dict[str, Any]:
    """An error of the request itself (not of a field): ``{"message", "extensions": {"code"}}``."""
    return {"message": message, "extensions": {"code": code}}
