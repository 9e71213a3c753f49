"""The service layer: resolves names and depths, reads arrays, calls analysis, caches answers."""

from .core import ModelSummary, Service
from .jobs import Job
from .settings import Settings, default_store_uri
from .types import (
    AffinityMatrixResult,
    CkaResult,
    DiagonalTestResult,
    LayerRef,
    MutualKnnResult,
    Neighbor,
    SimilarityMatrixResult,
)

__all__ = [
    "AffinityMatrixResult", "CkaResult", "DiagonalTestResult", "Job", "LayerRef", "ModelSummary",
    "MutualKnnResult", "Neighbor", "Service", "Settings", "SimilarityMatrixResult", "default_store_uri",
]
