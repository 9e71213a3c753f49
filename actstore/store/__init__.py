"""LanceDB-backed storage of prompts and activations, with FAISS k-NN per activation table."""

from actstore.errors import ActstoreError, InvalidInput, NotFound
from .store import DatasetInfo, ModelInfo, PromptRecord, Store

__all__ = ["ActstoreError", "DatasetInfo", "InvalidInput", "ModelInfo", "NotFound", "PromptRecord", "Store"]
