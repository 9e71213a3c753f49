"""Tests on a layer-by-layer similarity matrix (e.g. a mutual k-NN affinity matrix).

Generalized diagonal (METHODS.md): for M [n1, n2] with n1 >= n2 (else M is transposed), the
cells (i, j) with j <= i <= j + n1 - n2, i.e. the band a diagonal sweeps when a shorter model's
layers are stretched over a longer model's. The diagonal test is a one-sided Welch t-test that
on-diagonal cells have a higher mean than off-diagonal cells.

p-values that underflow: the Welch p is also reported as ``log10_p``, computed exactly (the
regularized incomplete beta in arbitrary precision with mpmath) where the double p underflows.
``p_value`` is then the smallest normal double, P_FLOOR = 2.2250738585072014e-308, with
``p_value_is_bound`` True: read it as "p < P_FLOOR", never as p = 0. (Permutation p-values,
(1 + count) / (1 + P), are never below 1 / (1 + P) and cannot underflow.)
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
from scipy import stats

from .errors import AnalysisError
from .results import DiagonalTest
from .validation import finite_matrix

__all__ = [
    "DiagonalTest",
    "P_FLOOR",
    "diagonal_test",
    "generalized_diagonal_mask",
    "argmax_path",
    "bonferroni",
    "t_sf_log10",
]

#: the smallest normal double: a p-value below it is reported as this bound (see module doc)
P_FLOOR = float(np.finfo(np.float64).tiny)


def t_sf_log10(t: float, df: float) -> float:
    """log10 P(T >= t) for Student's t with ``df`` degrees of freedom, finite even where the
    double P(T >= t) underflows: there it is 0.5 I_x(df/2, 1/2), x = df / (df + t^2), in
    mpmath at 40 significant digits."""
    p = float(stats.t.sf(t, df))
    if p >= P_FLOOR:
        return math.log10(p)
    with mpmath.workdps(40):
        x = mpmath.mpf(df) / (mpmath.mpf(df) + mpmath.mpf(t) ** 2)
        val = mpmath.betainc(mpmath.mpf(df) / 2, mpmath.mpf(1) / 2, 0, x, regularized=True) / 2
        return float(mpmath.log10(val))


def generalized_diagonal_mask(n1: int, n2: int) -> np.ndarray:
    """Boolean [n1, n2] mask of the generalized diagonal of an n1 x n2 matrix, n1 >= n2."""
    if n1 < n2:
        raise AnalysisError(f"the generalized diagonal is defined for n1 >= n2 (transpose first), got {n1} x {n2}")
    i = np.arange(n1)[:, None]
    j = np.arange(n2)[None, :]
    return (j <= i) & (i <= j + n1 - n2)


def diagonal_test(M: np.ndarray) -> DiagonalTest:
    """One-sided Welch t-test that M's generalized diagonal has a higher mean than the rest.

    M [n1, n2] is transposed first when n1 < n2. Needs at least 2 on- and 2 off-diagonal
    cells and some variance in one of the groups.
    """
    a = finite_matrix(M, "M", min_rows=2, min_cols=2)
    transposed = a.shape[0] < a.shape[1]
    if transposed:
        a = a.T
    mask = generalized_diagonal_mask(*a.shape)
    on, off = a[mask], a[~mask]
    if off.size < 2:
        raise AnalysisError(
            f"M of shape {M.shape} has {off.size} off-diagonal cell(s) outside its "
            f"generalized diagonal; the diagonal test needs at least 2"
        )
    m1, m0 = float(on.mean()), float(off.mean())
    v1, v0 = float(on.var(ddof=1)), float(off.var(ddof=1))
    se2 = v1 / on.size + v0 / off.size
    if not se2 > 0:
        raise AnalysisError(
            "M is constant within both the on- and the off-diagonal cells; "
            "the Welch t statistic is undefined (zero variance)"
        )
    t = (m1 - m0) / np.sqrt(se2)
    df = se2**2 / ((v1 / on.size) ** 2 / (on.size - 1) + (v0 / off.size) ** 2 / (off.size - 1))
    p = float(stats.t.sf(t, df))
    log10_p = t_sf_log10(float(t), float(df))
    bound = p < P_FLOOR
    return DiagonalTest(
        on_diagonal_mean=m1,
        off_diagonal_mean=m0,
        t_statistic=float(t),
        p_value=P_FLOOR if bound else p,
        df=float(df),
        n_on=int(on.size),
        n_off=int(off.size),
        transposed=bool(transposed),
        log10_p=log10_p,
        p_value_is_bound=bound,
    )


def argmax_path(M: np.ndarray) -> list[int]:
    """For each row i of M [n1, n2], the column of its largest value (first one on ties)."""
    a = finite_matrix(M, "M")
    return [int(j) for j in np.argmax(a, axis=1)]


def bonferroni(p_values: np.ndarray) -> np.ndarray:
    """Bonferroni-adjusted p-values: min(1, m p) for m tests; same shape, float64."""
    p = np.asarray(p_values)
    if p.dtype == object or p.dtype.kind not in "fiu":
        raise AnalysisError(f"p_values must be numbers, got dtype {p.dtype}")
    p = p.astype(np.float64)
    if p.size == 0:
        raise AnalysisError("p_values is empty; Bonferroni needs at least one p-value")
    bad = ~np.isfinite(p) | (p < 0) | (p > 1)
    if bad.any():
        raise AnalysisError(f"p_values must be in [0, 1], got {float(p[bad].flat[0])!r}")
    adjusted: np.ndarray = np.minimum(1.0, p * p.size)
    return adjusted
