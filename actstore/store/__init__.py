"""LanceDB-backed storage of prompts and activations, with FAISS k-NN per activation table."""

from .errors import ActstoreError, InvalidInputError, NotFoundError
from .store import DatasetInfo, ModelInfo, PromptRecord, Store

__all__ = ["ActstoreError", "DatasetInfo", "InvalidInputError", "ModelInfo", "NotFoundError", "PromptRecord", "Store"]
