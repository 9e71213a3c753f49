"""actstore: a database-backed store of LLM activations with a GraphQL query API."""

from .store import ActstoreError, InvalidInputError, NotFoundError, Store

__version__ = "0.1.0"
__all__ = ["ActstoreError", "InvalidInputError", "NotFoundError", "Store", "__version__"]
