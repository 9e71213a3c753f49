"""actstore: a database-backed store of LLM activations with a GraphQL query API."""

from typing import TYPE_CHECKING, Any

from actstore.errors import ActstoreError, InvalidInput, NotFound

if TYPE_CHECKING:
    from .session import Session
    from .store import Store

__version__ = "0.1.0"
__all__ = ["ActstoreError", "InvalidInput", "NotFound", "Session", "Store", "__version__", "open"]


def open(store: Any, settings: Any = None) -> "Session":  # noqa: A001 - the face's verb
    """Open a store for analysis: ``with actstore.open("./store") as s: s.cka_matrix("a", "b")``
    (see :mod:`actstore.session`)."""
    from .session import Session

    return Session(store, settings)


def __getattr__(name: str) -> Any:
    # `Store` and `Session` are imported on first use: they pull in LanceDB (~1 s), which
    # `actstore --help` and every command that does not open a store should not pay for.
    if name == "Store":
        from .store import Store

        return Store
    if name == "Session":
        from .session import Session

        return Session
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
