"""The one exception hierarchy of actstore.

Every user-facing failure is an :class:`ActstoreError` whose message names the bad value and
what is allowed. Boundaries (GraphQL, the CLI, background jobs) catch the base class: through
GraphQL it becomes an error entry (HTTP 200), on the command line ``error: ...`` with exit
status 2, in a job its ``message``. Anything else is a bug: logged in full, masked for clients.

:mod:`actstore.analysis` imports nothing of the project and raises its own ``AnalysisError``;
the service layer translates it to :class:`InvalidInput` in one place.
"""

from __future__ import annotations

__all__ = ["ActstoreError", "Conflict", "DataCorrupted", "InvalidInput", "LimitExceeded", "NotFound", "QueryTimeout",
           "StorageUnavailable", "Unauthorized"]


class ActstoreError(Exception):
    """Base class of every user-facing error in actstore.

    ``code`` is what clients see as the GraphQL error's ``extensions.code``; each subclass
    sets its own, and the API reads it from here (one mapping for every error)."""

    code: str = "BAD_USER_INPUT"


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


class DataCorrupted(ActstoreError):
    """Stored data that fails its checksum (a flipped bit in a data file, a torn page): never
    served. The message names the table and the prompt ids."""

    code = "DATA_CORRUPTED"


class StorageUnavailable(ActstoreError):
    """The storage under the store failed: an object store that cannot be reached, a full
    disk. The message names the store and what failed (no stack)."""

    code = "STORAGE_UNAVAILABLE"
