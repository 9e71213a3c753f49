"""The service boundary: analysis errors become actstore errors here, once.

:mod:`actstore.analysis` imports nothing of the project and raises ``AnalysisError`` (a
ValueError) with a message that names the bad value and what is allowed. Every public method
of a service part is wrapped by :func:`service_boundary`, which re-raises it as
:class:`actstore.errors.InvalidInput` with the same message; API, CLI and jobs then catch
the one base class ``ActstoreError``. ``AnalysisCancelled`` (long work told to stop, see
:mod:`.work`) becomes :class:`actstore.errors.QueryTimeout`. A table dropped by another
process while a call read it (Lance's ``Not found: .../_versions``, where the store did not
already answer NotFound itself) becomes :class:`actstore.errors.NotFound`: a race with a drop
is an answer, not a crash. A storage failure (a full disk, an object store that does not
answer or refuses) becomes the error :func:`actstore.store.tables.storage_error` names.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any, TypeVar

from actstore.analysis import AnalysisCancelled, AnalysisError
from actstore.errors import ActstoreError, InvalidInput, NotFound, QueryTimeout
from actstore.store.tables import is_vanished, storage_error

__all__ = ["service_boundary"]

C = TypeVar("C", bound=type)


def _translating(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AnalysisError as exc:
            raise InvalidInput(str(exc)) from exc
        except AnalysisCancelled as exc:
            raise QueryTimeout(f"the computation was {exc}: its time limit passed or its client left") from exc
        except ActstoreError:
            raise
        except Exception as exc:
            if is_vanished(exc):
                raise NotFound(
                    "data this request read was dropped while it ran (a model or dataset removed "
                    "by another process); ask again for the current state"
                ) from exc
            store = getattr(args[0], "store", None) if args else None
            failed = storage_error(exc, str(getattr(store, "uri", "the store")))
            if failed is not None:  # a full disk, an object store gone or refusing: one clear error
                raise failed from exc
            raise

    return wrapper


def service_boundary(cls: C) -> C:
    """Class decorator: every public method re-raises ``AnalysisError`` as ``InvalidInput``,
    ``AnalysisCancelled`` as ``QueryTimeout`` and a read of a dropped table as ``NotFound``."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and isinstance(member, types.FunctionType):
            setattr(cls, name, _translating(member))
    return cls
