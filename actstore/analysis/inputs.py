"""Validation and per-layer statistics shared by CKA and its permutation tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import validation as V
from .errors import AnalysisError
from .hsic import LayerStats, layer_stats

__all__ = ["prepare_layers"]


def prepare_layers(
    layers_a: object, layers_b: object, *, debiased: bool, name_a: str, name_b: str, indexed: bool = True
) -> tuple[list[np.ndarray], list[np.ndarray], list[LayerStats], list[LayerStats], int]:
    """Validate two sets of layers (same prompts) and compute each layer's float64 stats.

    Returns (layers_a, layers_b, stats_a, stats_b, n). Raises AnalysisError for: a bad
    ``debiased`` flag, non-2-D or non-finite layers, row counts that differ, n < 4 (debiased)
    or n < 2 (biased), a constant layer.
    """
    if not isinstance(debiased, (bool, np.bool_)):
        raise AnalysisError(f"debiased must be True or False, got {debiased!r}")
    min_rows = 4 if debiased else 2
    a = V.activation_list(layers_a, name_a, indexed=indexed)
    b = V.activation_list(layers_b, name_b, indexed=indexed)
    fa: Callable[[int], str] = (lambda i: f"{name_a}[{i}]") if indexed else (lambda i: name_a)
    fb: Callable[[int], str] = (lambda j: f"{name_b}[{j}]") if indexed else (lambda j: name_b)
    n = V.check_same_rows([a[0], b[0]], [fa(0), fb(0)])
    if n < min_rows:
        what = "debiased CKA needs n >= 4 prompts" if debiased else "biased CKA needs n >= 2 prompts"
        raise AnalysisError(f"n = {n} prompts is too few: {what}")
    sa = [layer_stats(x, fa(i)) for i, x in enumerate(a)]
    sb = [layer_stats(y, fb(j)) for j, y in enumerate(b)]
    return a, b, sa, sb, n
