"""The service layer: resolves layer references, reads arrays, calls analysis, caches answers.

``Service(store)`` holds the parts (``catalog``, ``similarity``, ``measures``, ``bridges``, ``saes``,
``results``, ``jobs``); see :mod:`actstore.service.service`. The records and analysis
dataclasses its answers carry (ModelInfo, DatasetInfo, PromptRecord, SaeRecord, DiagonalTest)
are re-exported here, so its callers need nothing below it.

Names are loaded on first use (PEP 562): ``actstore.service.requests`` (the request types the
command line derives its flags from) imports no store, no numerics and no LanceDB.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# name -> the module defining it, imported when the name is first used
_EXPORTS = {
    "DiagonalTest": "actstore.analysis.results",
    "DatasetInfo": "actstore.store",
    "ModelInfo": "actstore.store",
    "PromptRecord": "actstore.store",
    "SaeRecord": "actstore.store",
    "LayerIndex": "actstore.store.knn",
    "Check": "actstore.store.maintenance",
    "DropSummary": "actstore.store.maintenance",
    "BridgeResult": ".bridges",
    "BridgeSweepResult": ".bridges",
    "NextTokenTransferResult": ".bridges",
    "ProbeTransferResult": ".bridges",
    "ProbeTransferSweepResult": ".bridges",
    "ModelSummary": ".catalog",
    "check_list_limit": ".catalog",
    "Cost": ".work",
    "MeasureInfo": ".measures",
    "SimilarityByDataset": ".measures",
    "SimilarityResult": ".measures",
    "Job": ".jobs",
    "FeaturePairResult": ".saes",
    "SaeCorrelationResult": ".saes",
    "SaeMatrixResult": ".saes",
    "Service": ".service",
    "AffinityMatrixByDataset": ".similarity",
    "AffinityMatrixResult": ".similarity",
    "CkaByDataset": ".similarity",
    "CkaMatrixByDataset": ".similarity",
    "CkaResult": ".similarity",
    "DatasetCount": ".similarity",
    "MutualKnnByDataset": ".similarity",
    "MutualKnnResult": ".similarity",
    "Neighbor": ".similarity",
    "SimilarityMatrixResult": ".similarity",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = _EXPORTS[name]
        return getattr(import_module(module, __name__) if module.startswith(".") else import_module(module), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
