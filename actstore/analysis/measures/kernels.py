"""Kernel-alignment measures of platonic-representation: ``cka`` (biased linear CKA) and
``unbiased_cka`` (debiased linear CKA), METHODS.md "Linear CKA".

Per layer (``prepare``): the float64 statistics of the centred layer (:mod:`..hsic`), its
centred float64 rows and its self trace tr(K~ K~), so a pair only adds its cross trace
tr(K~ L~): ||X_c^T Y_c||_F^2 - d_K . d_L (2 n p q flops) or, when cheaper, the Gram form
(n^2 (p + q) flops). The all-pairs form is :func:`actstore.analysis.cka.cka_matrix` (centred
Gram triangles once per layer, then GEMMs).

What platonic-rep's ``AlignmentMetrics.cka`` / ``unbiased_cka`` compute (metrics.py @ dcd76ba):
* kernel_metric "ip" (the default, the only one its pipeline uses): K = X X^T on the rows it
  is given (unit-length rows in its pipeline); "rbf" (exp(-|x - y|^2 / (2 sigma^2))) exists
  there but is not offered here.
* biased: HSIC = tr(K H L H) (not divided by (n - 1)^2; the ratio is the same), equal to
  Kornblith's linear CKA of the centred columns; unbiased: Song et al.'s HSIC1 on the raw
  (uncentred) Gram, which equals HSIC1 of the centred one (METHODS.md) and is computed here
  on centred columns for accuracy (the reference, in float32 on uncentred unit-length rows,
  loses digits to cancellation when the rows share a large mean direction).
* the ratio is HSIC_KL / (sqrt(HSIC_KK HSIC_LL) + 1e-6): the option ``eps`` (default 0)
  adds the same term; eps = 1e-6 reproduces the reference's numbers. The difference matters
  for the unbiased estimator, whose HSIC values on unit-length rows are small (~1/d).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .. import validation as V
from ..cka import cka_matrix
from ..errors import AnalysisError, StopCheck
from ..hsic import LayerStats, layer_stats
from ..traces import self_trace
from .registry import Measure, Option, Options, register

__all__ = ["KernelLayer", "prepare_kernel", "self_hsic"]

_REF = "minyoungg/platonic-rep metrics.py @ dcd76ba3c950c1b197a2ae8b1c6713535c94ecf9"
_CPU = torch.device("cpu")


@dataclass(frozen=True, eq=False)
class KernelLayer:
    """A centred layer: rows xc [n, p] float64, its LayerStats, tr(K~ K~) and its HSIC with
    itself in the reference's normalisation (``hsic``: tr(K H K H) biased, HSIC1 unbiased)."""

    xc: np.ndarray
    stats: LayerStats
    self_trace: float
    hsic: float


def self_hsic(st: LayerStats, t_self: float, debiased: bool) -> float:
    """HSIC of a layer with itself from its stats and tr(K~ K~): HSIC1 (debiased) or tr(KHKH)."""
    n = st.n
    if debiased:
        return (t_self + st.s * st.s / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(st.r @ st.r)) / (n * (n - 3))
    return t_self + float(st.d @ st.d)


def prepare_kernel(X: np.ndarray, debiased: bool, name: str = "X") -> KernelLayer:
    """Centre X [n, p] once (float64) and compute its statistics; AnalysisError for a
    constant layer or a non-positive self-HSIC."""
    x = V.activations(X, name, min_rows=4 if debiased else 2)
    st = layer_stats(x, name)
    t = self_trace(x, st, device=_CPU)
    h = self_hsic(st, t, debiased)
    if not h > 0:
        raise AnalysisError(
            f"the {'debiased HSIC1' if debiased else 'HSIC'} of {name} with itself is "
            f"{h:.3g} (not positive) over n = {st.n} prompts, so CKA is undefined; "
            f"use more prompts"
        )
    return KernelLayer(np.asarray(x, dtype=np.float64) - st.mean, st, t, h)


def _cross_trace(a: KernelLayer, b: KernelLayer) -> float:
    """tr(K~ L~) in float64 by the cheaper of the feature and Gram forms."""
    n, p = a.xc.shape
    q = b.xc.shape[1]
    if 2.0 * p * q <= float(n) * (p + q):
        c = a.xc.T @ b.xc
        return float(np.sum(c * c)) - float(a.stats.d @ b.stats.d)
    k, l_ = a.xc @ a.xc.T, b.xc @ b.xc.T
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l_, 0.0)
    return float(np.sum(k * l_))


def _compare(a: KernelLayer, b: KernelLayer, debiased: bool, eps: float) -> float:
    n = a.stats.n
    t = _cross_trace(a, b)
    if debiased:
        num = (t + a.stats.s * b.stats.s / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(a.stats.r @ b.stats.r)) / (
            n * (n - 3)
        )
    else:
        num = t + float(a.stats.d @ b.stats.d)
    return num / (float(np.sqrt(a.hsic * b.hsic)) + eps)


def _matrix(
    debiased: bool,
) -> Callable[[Sequence[np.ndarray], Sequence[np.ndarray], Options, StopCheck | None], np.ndarray]:
    def run(la: Sequence[np.ndarray], lb: Sequence[np.ndarray], opts: Options, stop: StopCheck | None) -> np.ndarray:
        m = cka_matrix(la, lb, debiased=debiased, should_stop=stop)
        if opts["eps"] > 0:
            ha = np.array([prepare_kernel(x, debiased).hsic for x in la])
            hb = np.array([prepare_kernel(y, debiased).hsic for y in lb])
            s = np.sqrt(np.multiply.outer(ha, hb))
            m = m * s / (s + opts["eps"])
        return m

    return run


def _prepare_cost(n: int, d: int, o: Options) -> float:
    return 4.0 * n * d + min(2.0 * n * d * d, float(n) * n * d)


def _compare_cost(n: int, p: int, q: int, o: Options) -> float:
    return min(2.0 * n * p * q, float(n) * n * (p + q))


_EPS = Option("eps", float, 0.0, "added to the denominator; 1e-6 reproduces platonic-rep's value", minimum=0.0)

register(
    Measure(
        name="cka",
        family="kernels",
        direction="similarity",
        definition=(
            "Biased linear CKA (Kornblith et al. 2019): centre the columns, then "
            "||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F + eps); = tr(KHLH) / sqrt(tr(KHKH) tr(LHLH)) "
            "with K = X X^T, L = Y Y^T, H = I - 11'/n. In [0, 1]."
        ),
        sensitive_to="the dominant directions of variance (large principal components, outlier dimensions)",
        reference=(
            f"Kornblith et al. 2019; {_REF} AlignmentMetrics.cka (kernel_metric='ip', "
            "unbiased=False): max |difference| 8.9e-16 with eps = 1e-6, 1.9e-10 with eps = 0 (20 "
            "random pairs, float64 unit rows, n = 300, d = 64 and 80; the matrix form agrees as "
            "well); its full pipeline (clip q = 0.95, unit rows, float32) against preprocess "
            "platonic + cka (eps = 1e-6): 1.1e-7 (float32 rounding)"
        ),
        prepare=lambda X, o: prepare_kernel(X, False),
        compare=lambda a, b, o: _compare(a, b, False, o["eps"]),
        prepare_cost=_prepare_cost,
        compare_cost=_compare_cost,
        options=(_EPS,),
        min_rows=lambda o: 2,
        matrix=_matrix(False),
    )
)

register(
    Measure(
        name="unbiased_cka",
        family="kernels",
        direction="similarity",
        definition=(
            "Debiased linear CKA: HSIC1(K, L) / (sqrt(HSIC1(K, K) HSIC1(L, L)) + eps) with "
            "METHODS.md's unbiased HSIC1 (Song et al. 2012) on K = X X^T, L = Y Y^T (invariant "
            "to centring the columns). Needs n >= 4; may be slightly negative."
        ),
        sensitive_to="the dominant directions of variance, without the finite-sample bias of cka",
        reference=(
            f"Song et al. 2012, Nguyen et al. 2021; {_REF} AlignmentMetrics.unbiased_cka: max "
            "|difference| 7.8e-16 with eps = 1e-6 and 1.7e-5 with eps = 0 (the default) (20 random "
            "pairs, float64 unit rows, n = 300, d = 64 and 80); its full pipeline in float32 "
            "against preprocess platonic + unbiased_cka (eps = 1e-6): 4.1e-7"
        ),
        prepare=lambda X, o: prepare_kernel(X, True),
        compare=lambda a, b, o: _compare(a, b, True, o["eps"]),
        prepare_cost=_prepare_cost,
        compare_cost=_compare_cost,
        options=(_EPS,),
        min_rows=lambda o: 4,
        matrix=_matrix(True),
    )
)
