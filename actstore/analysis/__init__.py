"""Pure numerics for comparing layers and models: arrays in, small frozen dataclasses out.

No I/O and no imports from the rest of actstore. Modules:
  cka          linear CKA (biased / debiased), all-pairs matrices, permutation tests
  knn          cosine k-NN graphs, mutual k-NN, affinity matrices
  diagonal     generalized-diagonal test, argmax path, Bonferroni
  atlas        many models at once: all k-NN graph overlaps / all CKA traces in one blocked
               product, per-pair summaries, resizing, the models x models maximum
  errors       AnalysisError (a ValueError)
Also feature_sums (CKA from per-shard sums over rows, for distributed engines), bridges, preprocess (per-query standardize / drop_outlier_dims), probes, permutation, sae, sae_match (imported by module), and the building blocks
they share: validation (input checks), devices (device / precision), hsic, traces, inputs.
No module here imports a private name of another (tests/unit/test_architecture.py checks it).

The names below are loaded on first use (PEP 562): importing the package, or
:mod:`.results` and :mod:`.errors`, costs no torch or scipy import, so a command line that
only declares or prints results starts fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# ``X as X``: re-exported for the type checker too (it does not evaluate the computed __all__)
from .errors import AnalysisCancelled as AnalysisCancelled
from .errors import AnalysisError as AnalysisError
from .results import BridgeFit as BridgeFit
from .results import BridgeRankSweep as BridgeRankSweep
from .results import DiagonalTest as DiagonalTest
from .results import NextTokenTransfer as NextTokenTransfer
from .results import PairSummary as PairSummary
from .results import ProbeTransfer as ProbeTransfer
from .results import ProbeTransferSweep as ProbeTransferSweep

# name -> the module defining it, imported when the name is first used
_EXPORTS = {
    "gram_cka": "atlas",
    "graph_overlaps": "atlas",
    "max_similarity": "atlas",
    "pair_summary": "atlas",
    "resize": "atlas",
    "CkaMatrixTest": "cka",
    "CkaPlan": "cka",
    "CkaTest": "cka",
    "cka_matrix": "cka",
    "cka_matrix_permutation_test": "cka",
    "cka_permutation_test": "cka",
    "linear_cka": "cka",
    "plan_cka_matrix": "cka",
    "argmax_path": "diagonal",
    "bonferroni": "diagonal",
    "diagonal_test": "diagonal",
    "generalized_diagonal_mask": "diagonal",
    "affinity_matrix": "knn",
    "knn_graph": "knn",
    "knn_graph_recall": "knn",
    "mutual_knn": "knn",
    "null_mean": "knn",
    "permutation_p_value": "permutation",
    "stratified_permutations": "permutation",
}
_MODULES = (
    "atlas",
    "bridges",
    "cka",
    "devices",
    "diagonal",
    "feature_sums",
    "hsic",
    "inputs",
    "knn",
    "measures",
    "permutation",
    "preprocess",
    "probes",
    "sae",
    "sae_match",
    "traces",
    "validation",
)

__all__ = sorted(
    [
        *_EXPORTS,
        "AnalysisCancelled",
        "AnalysisError",
        "BridgeFit",
        "BridgeRankSweep",
        "DiagonalTest",
        "NextTokenTransfer",
        "PairSummary",
        "ProbeTransfer",
        "ProbeTransferSweep",
    ]
)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    if name in _MODULES:
        return import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, *_MODULES])
