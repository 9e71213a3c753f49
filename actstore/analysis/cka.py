"""Linear CKA (biased and debiased) for one pair of layers and for all pairs of two sets.

Definitions are METHODS.md's. Inputs are activations [n_prompts, d] (float16/32/64; the
rows of both sides are the same prompts in the same order). Outputs are float64.

How the all-pairs matrix is computed (:func:`plan_cka_matrix` decides, counting flops):

* Gram form: per layer the strictly upper triangle of its centred Gram matrix, n^2 p flops,
  streamed in row blocks; all pairs then reduce to GEMMs over the vectorised blocks
  (m_a m_b n^2 flops). Total n^2 (sum p + sum q + m_a m_b + m_a + m_b). Never holds an
  n x n matrix per layer: memory is ~ ``memory_budget_bytes`` for the blocks.
* Feature form: ||X_c^T Y_c||^2 per pair in float64, 2 n p q flops per pair, never any
  n x n matrix. Chosen when n is large compared with the layer widths.

Float64 flops are weighted x2 (their measured CPU rate is about half of float32's). The Gram
form runs in float32 for large problems (``precision="auto"``) and float64 for small ones
(under 1e10 flops); the feature form always runs in float64 because it subtracts the
diagonal term d_K . d_L, which cancels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .devices import resolve_device, resolve_precision
from .errors import AnalysisError, StopCheck
from .hsic import cka_table
from .inputs import prepare_layers
from .permutation import (
    CkaMatrixTest,
    CkaTest,
    cka_matrix_permutation_test,
    cka_permutation_test,
)
from .traces import block_rows_for, feature_traces, gram_traces

__all__ = [
    "CkaPlan",
    "CkaMatrixTest",
    "CkaTest",
    "cka_matrix",
    "cka_matrix_permutation_test",
    "cka_permutation_test",
    "linear_cka",
    "plan_cka_matrix",
]

DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of working memory for the Gram-form row blocks
_SMALL_FLOPS = 1e10  # "auto" precision: float64 below this many (gram-form) flops
_FORMS = ("auto", "gram", "feature")


@dataclass(frozen=True)
class CkaPlan:
    """How :func:`cka_matrix` will compute a matrix, and what each form would cost.

    ``gram_flops`` / ``feature_flops`` are raw flop counts (2 per multiply-add);
    ``form`` is the cheaper one after weighting float64 flops x2 (or the forced one).
    ``precision`` is the dtype of the Gram-form GEMMs ("float64" for the feature form).
    ``block_rows`` is the Gram-form row block (prompts per block).
    """

    n: int
    dims_a: tuple[int, ...]
    dims_b: tuple[int, ...]
    form: str
    precision: str
    gram_flops: float
    feature_flops: float
    block_rows: int


def plan_cka_matrix(
    n: int,
    dims_a: Sequence[int],
    dims_b: Sequence[int],
    *,
    precision: str = "auto",
    form: str = "auto",
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
) -> CkaPlan:
    """Choose the form and precision for an all-pairs CKA matrix of n prompts.

    gram_flops = n^2 (sum(dims_a) + sum(dims_b))        one triangle per layer
               + n^2 (m_a m_b + m_a + m_b)              pair and self GEMMs on triangles
    feature_flops = 2 n sum(dims_a) sum(dims_b)         ||X^T Y||^2 per pair
                  + sum over layers of min(2 n p^2, n^2 p)   self terms
    """
    if form not in _FORMS:
        raise AnalysisError(f"form must be one of {_FORMS}, got {form!r}")
    m_a, m_b = len(dims_a), len(dims_b)
    pa, pb = float(sum(dims_a)), float(sum(dims_b))
    gram = float(n) ** 2 * (pa + pb + m_a * m_b + m_a + m_b)
    feat = 2.0 * n * pa * pb + sum(min(2.0 * n * p * p, float(n) ** 2 * p) for p in list(dims_a) + list(dims_b))
    dt = resolve_precision(precision, small=gram <= _SMALL_FLOPS)
    w_gram = 2.0 if dt == np.float64 else 1.0
    chosen = form if form != "auto" else ("gram" if gram * w_gram <= 2.0 * feat else "feature")
    prec = dt.name if chosen == "gram" else "float64"
    rows = block_rows_for(n, m_a + m_b, np.dtype(prec).itemsize, memory_budget_bytes)
    return CkaPlan(
        n=n,
        dims_a=tuple(int(p) for p in dims_a),
        dims_b=tuple(int(p) for p in dims_b),
        form=chosen,
        precision=prec,
        gram_flops=gram,
        feature_flops=feat,
        block_rows=rows,
    )


def cka_matrix(
    layers_a: Sequence[np.ndarray],
    layers_b: Sequence[np.ndarray],
    *,
    debiased: bool = True,
    device: str = "auto",
    precision: str = "auto",
    form: str = "auto",
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    should_stop: StopCheck | None = None,
) -> np.ndarray:
    """Linear CKA of every layer in ``layers_a`` with every layer in ``layers_b``.

    Args:
        layers_a: m_a arrays [n, p_i]; layers_b: m_b arrays [n, q_j]; same prompts, same order.
        debiased: debiased HSIC1 estimator (n >= 4) or biased (Kornblith et al. 2019).
        device: "auto" (CUDA when torch sees one) | "cpu" | "cuda".
        precision: "auto" | "float32" | "float64" for the Gram-form GEMMs (see module doc).
        form: "auto" (cheaper by flop count) | "gram" | "feature".
        memory_budget_bytes: working memory for the Gram-form row blocks.
        should_stop: asked before every Gram-form row block or feature-form layer pair; True
            stops the work with AnalysisCancelled.

    Returns:
        float64 array [m_a, m_b]; entry (i, j) is CKA(layers_a[i], layers_b[j]) (unitless).
    """
    a, b, sa, sb, n = prepare_layers(layers_a, layers_b, debiased=debiased, name_a="layers_a", name_b="layers_b")
    dev = resolve_device(device)
    plan = plan_cka_matrix(
        n,
        [x.shape[1] for x in a],
        [y.shape[1] for y in b],
        precision=precision,
        form=form,
        memory_budget_bytes=memory_budget_bytes,
    )
    if plan.form == "gram":
        t_ab, t_aa, t_bb = gram_traces(
            a,
            sa,
            b,
            sb,
            dtype=np.dtype(plan.precision),
            device=dev,
            block_rows=plan.block_rows,
            should_stop=should_stop,
        )
    else:
        t_ab, t_aa, t_bb = feature_traces(a, sa, b, sb, device=dev, should_stop=should_stop)
    return cka_table(debiased, t_ab, t_aa, t_bb, sa, sb)


def linear_cka(
    X: np.ndarray,
    Y: np.ndarray,
    *,
    debiased: bool = True,
    device: str = "auto",
    precision: str = "auto",
    form: str = "auto",
) -> float:
    """Linear CKA of X [n, p] and Y [n, q] (same prompts, same order); unitless float.

    Debiased (default) needs n >= 4; the value may be slightly negative for unrelated layers.
    Raises AnalysisError on mismatched rows, non-finite values or a constant layer.
    """
    a, b, sa, sb, n = prepare_layers([X], [Y], debiased=debiased, name_a="X", name_b="Y", indexed=False)
    dev = resolve_device(device)
    plan = plan_cka_matrix(n, [a[0].shape[1]], [b[0].shape[1]], precision=precision, form=form)
    if plan.form == "gram":
        t_ab, t_aa, t_bb = gram_traces(
            a, sa, b, sb, dtype=np.dtype(plan.precision), device=dev, block_rows=plan.block_rows
        )
    else:
        t_ab, t_aa, t_bb = feature_traces(a, sa, b, sb, device=dev)
    return float(cka_table(debiased, t_ab, t_aa, t_bb, sa, sb, names=("X", "Y"), indexed=False)[0, 0])
