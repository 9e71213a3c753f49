"""The service layer: resolves layer references, reads arrays, calls analysis, caches answers.

``Service(store)`` holds the parts (``catalog``, ``similarity``, ``bridges``, ``saes``,
``results``, ``jobs``); see :mod:`actstore.service.service`. The records and analysis
dataclasses its answers carry (ModelInfo, DatasetInfo, PromptRecord, SaeRecord, DiagonalTest)
are re-exported here, so its callers need nothing below it.
"""

from actstore.analysis.results import DiagonalTest
from actstore.store import DatasetInfo, ModelInfo, PromptRecord, SaeRecord
from actstore.store.knn import LayerIndex
from actstore.store.maintenance import Check, DropSummary

from .bridges import (
    BridgeResult,
    BridgeSweepResult,
    NextTokenTransferResult,
    ProbeTransferResult,
    ProbeTransferSweepResult,
)
from .catalog import ModelSummary, check_list_limit
from .jobs import Job
from .saes import FeaturePairResult, SaeCorrelationResult, SaeMatrixResult
from .service import Service
from .work import Cost
from .similarity import (
    AffinityMatrixByDataset,
    AffinityMatrixResult,
    CkaByDataset,
    CkaMatrixByDataset,
    CkaResult,
    DatasetCount,
    MutualKnnByDataset,
    MutualKnnResult,
    Neighbor,
    SimilarityMatrixResult,
)

__all__ = [
    "AffinityMatrixByDataset", "AffinityMatrixResult", "BridgeResult", "BridgeSweepResult", "Check", "CkaByDataset", "CkaMatrixByDataset", "CkaResult", "DatasetCount",
    "DatasetInfo", "DiagonalTest",
    "DropSummary",
    "FeaturePairResult", "Job", "LayerIndex", "ModelInfo", "ModelSummary", "MutualKnnByDataset", "MutualKnnResult",
    "Neighbor", "NextTokenTransferResult", "ProbeTransferResult",
    "ProbeTransferSweepResult", "PromptRecord", "SaeCorrelationResult", "SaeMatrixResult", "SaeRecord", "Service",
    "SimilarityMatrixResult", "Cost", "check_list_limit",
]
