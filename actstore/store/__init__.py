"""LanceDB-backed storage of prompts and activations, with FAISS k-NN per activation table."""

from .models import ModelInfo
from .prompts import DatasetInfo, PromptRecord
from .saes import SaeRecord
from .store import Store

__all__ = ["DatasetInfo", "ModelInfo", "PromptRecord", "SaeRecord", "Store"]
