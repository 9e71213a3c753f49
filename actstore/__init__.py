"""actstore: a database-backed store of LLM activations with a GraphQL query API."""

from .store import Store
from actstore.errors import ActstoreError, InvalidInput, NotFound

__version__ = "0.1.0"
__all__ = ["ActstoreError", "InvalidInput", "NotFound", "Store", "__version__"]
