"""actstore: a database-backed store of LLM activations with a GraphQL query API."""

from typing import TYPE_CHECKING, Any

from actstore.errors import ActstoreError, InvalidInput, NotFound

if TYPE_CHECKING:
    from .store import Store

__version__ = "0.1.0"
__all__ = ["ActstoreError", "InvalidInput", "NotFound", "Store", "__version__"]


def __getattr__(name: str) -> Any:
    # `Store` is imported on first use: it pulls in LanceDB (~1 s), which `actstore --help`
    # and every command that does not open a store should not pay for.
    if name == "Store":
        from .store import Store

        return Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
