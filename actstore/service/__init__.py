"""The service layer: resolves names and depths, reads arrays, calls analysis, caches answers."""

from .core import ModelSummary, Service
from .jobs import Job
from .types import (
    AffinityMatrixResult,
    CkaResult,
    DiagonalTestResult,
    MutualKnnResult,
    Neighbor,
    SimilarityMatrixResult,
)

__all__ = [
    "AffinityMatrixResult", "CkaResult", "DiagonalTestResult", "Job", "ModelSummary",
    "MutualKnnResult", "Neighbor", "Service", "SimilarityMatrixResult",
]
