"""The one exception hierarchy of actstore.

Every user-facing failure is an :class:`ActstoreError` whose message names the bad value and
what is allowed. Boundaries (GraphQL, the CLI, background jobs) catch the base class: through
GraphQL it becomes an error entry (HTTP 200), on the command line ``error: ...`` with exit
status 2, in a job its ``message``. Anything else is a bug: logged in full, masked for clients.

:mod:`actstore.analysis` imports nothing of the project and raises its own ``AnalysisError``;
the service layer translates it to :class:`InvalidInput` in one place.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Self

__all__ = [
    "ActstoreError",
    "Conflict",
    "DataCorrupted",
    "InvalidInput",
    "LimitExceeded",
    "MissingExtra",
    "NotFound",
    "QueryTimeout",
    "StorageUnavailable",
    "Unauthorized",
    "require_extra",
]


class ActstoreError(Exception):
    """Base class of every user-facing error in actstore.

    ``code`` is what clients see as the GraphQL error's ``extensions.code``; each subclass
    sets its own, and the API reads it from here (one mapping for every error).

    ``field`` (the Python name of the argument at fault, snake_case), ``value`` (what was given)
    and ``allowed`` (what would have been accepted, in words) are set where one argument is at
    fault. The message names the field by its Python name; each interface words it its own way
    with :meth:`worded` (the API with its argument names, the CLI with its flags)."""

    code: str = "BAD_USER_INPUT"

    def __init__(
        self, message: str, *, field: str | None = None, value: Any = None, allowed: str | None = None
    ) -> None:
        super().__init__(message)
        self.field, self.value, self.allowed = field, value, allowed

    @classmethod
    def of(cls, field: str, value: Any, allowed: str) -> Self:
        """The error for one argument: "FIELD must be ALLOWED, got VALUE"."""
        return cls(f"{field} must be {allowed}, got {value!r}", field=field, value=value, allowed=allowed)

    def worded(self, name: Callable[[str], str], names: Iterable[str] = ()) -> str:
        """The message with the field's Python name, and each of ``names`` (the other
        argument names of the call), replaced by ``name(python_name)``: whole words only. One-letter
        names other than the error's own field (the layers ``a`` and ``b``) are left alone: they
        are also English words ("must be a JSON object")."""
        words = sorted(
            {*(n for n in names if len(n) > 1), *([self.field] if self.field else [])}, key=len, reverse=True
        )
        if not words:
            return str(self)
        pattern = "|".join(re.escape(w) for w in words)
        return re.sub(rf"(?<![\w.-])({pattern})(?![\w-])", lambda m: name(m.group(1)), str(self))

    def reworded(self, name: Callable[[str], str], names: Iterable[str] = ()) -> ActstoreError:
        """The same error (same class, field, value and allowed) with the message of
        :meth:`worded`; ``self`` when nothing changes."""
        message = self.worded(name, names)
        if message == str(self):
            return self
        new = type(self)(message, field=self.field, value=self.value, allowed=self.allowed)
        new.__cause__ = self
        return new


class InvalidInput(ActstoreError, ValueError):
    """The caller passed a value outside what is allowed (shape, range, NaN, ...)."""

    code = "BAD_USER_INPUT"


class NotFound(ActstoreError, KeyError):
    """A named thing (store, model, dataset, prompt id, layer, SAE, result) does not exist."""

    code = "NOT_FOUND"

    def __str__(self) -> str:  # KeyError would repr() the message, quotes and all
        return str(self.args[0]) if self.args else ""


class Conflict(ActstoreError):
    """The request contradicts what is stored (another model under the same key, ...)."""

    code = "CONFLICT"


class Unauthorized(ActstoreError):
    """A mutation without the server's bearer token."""

    code = "UNAUTHENTICATED"


class QueryTimeout(ActstoreError):
    """A query ran past the server's per-request time limit."""

    code = "TIMEOUT"


class LimitExceeded(ActstoreError):
    """A request over one of the server's limits: estimated cost over ACTSTORE_MAX_COST, too
    many layers, a full queue of heavy work. The message names the value and the limit."""

    code = "LIMIT_EXCEEDED"


class MissingExtra(ActstoreError):
    """A feature whose packages are not installed: the message names the extra that brings them."""

    code = "MISSING_EXTRA"


#: the extras of pyproject.toml and a module each brings (checked without importing it)
EXTRAS = {
    "ingest": ("transformers", "gguf", "accelerate"),
    "server": ("strawberry", "uvicorn", "plotly"),
    "notebook": ("pandas", "matplotlib"),
    "ray": ("ray",),
}


def require_extra(extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` naming ``extra`` when one of its modules is not installed;
    ``what`` names the feature ("actstore serve", "text look-ups", ...)."""
    from importlib.util import find_spec

    missing = [m for m in EXTRAS[extra] if find_spec(m) is None]
    if missing:
        raise MissingExtra(
            f"{what} needs the [{extra}] extra ({', '.join(missing)} not installed): pip install 'actstore[{extra}]'"
        )


class DataCorrupted(ActstoreError):
    """Stored data that fails its checksum (a flipped bit in a data file, a torn page): never
    served. The message names the table and the prompt ids."""

    code = "DATA_CORRUPTED"


class StorageUnavailable(ActstoreError):
    """The storage under the store failed: an object store that cannot be reached, a full
    disk. The message names the store and what failed (no stack)."""

    code = "STORAGE_UNAVAILABLE"
