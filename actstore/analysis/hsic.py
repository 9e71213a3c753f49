"""Per-layer statistics and the HSIC estimator formulas behind linear CKA (used by cka and permutation).

Notation (METHODS.md): X is [n, p]; K = X X^T; K~ is K with its diagonal set to zero.

Every layer is centred (column means, accumulated in float64) before anything else.
Debiased HSIC1 is exactly invariant to centring the columns of X (it is the U-statistic of
||Cov(x, y)||_F^2 for linear kernels, a function of differences x_i - x_j only; the tests
check this numerically), and biased CKA is defined on centred columns. Centring first is what
keeps the estimator accurate on LLM activations, whose raw Gram entries are dominated by
large means and outlier dimensions (cancellation of order |mean|^2 / variance otherwise).

For centred X the quantities that do not depend on the other layer are
  d = diag(K)            (squared row norms, [n] float64),
  r = K~ 1 = X (X^T 1) - d   ([n] float64; = -d to float64 rounding as X^T 1 ~ 0),
  s = 1^T K~ 1 = |X^T 1|^2 - sum(d)   (float64 scalar),
all O(n p) in float64. The only pair term is T = tr(K~ L~) = sum_{i != j} K_ij L_ij, and
  HSIC1 = [T + s_K s_L / ((n-1)(n-2)) - 2/(n-2) r_K . r_L] / (n (n-3)),
  biased: tr(K L) = T + d_K . d_L  (CKA_b = tr(KL) / sqrt(tr(KK) tr(LL))).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import AnalysisError

__all__ = ["LayerStats", "layer_stats", "cka_table"]

_CHUNK_ELEMS = 1 << 20  # float64 elements per row chunk (8 MiB)


@dataclass(frozen=True)
class LayerStats:
    """Float64 statistics of one centred layer; vectors are [n]."""

    n: int
    mean: np.ndarray  # [p] column means of the raw layer
    d: np.ndarray  # [n] squared norms of centred rows = diag(K)
    r: np.ndarray  # [n] K~ 1
    s: float  # 1^T K~ 1
    total_variance: float  # sum(d) = ||X_c||_F^2


def layer_stats(x: np.ndarray, name: str = "X") -> LayerStats:
    """Centre ``x`` [n, p] (float64 accumulation, row chunks) and return its LayerStats.

    One pass after the mean: d and u = X_c^T 1 in float64. r = X_c u - d is taken as -d - the
    dropped X_c u is below float64 rounding of d, since u is only the rounding residual of
    the column sums (|u| ~ 1e-16 n |mean|). Raises AnalysisError for a constant layer
    (every column constant over the prompts: CKA is undefined).
    """
    n, p = x.shape
    mean = x.mean(axis=0, dtype=np.float64)
    rows = max(1, min(n, _CHUNK_ELEMS // p))
    buf = np.empty((rows, p), dtype=np.float64)
    d = np.empty(n, dtype=np.float64)
    u = np.zeros(p, dtype=np.float64)
    for s0 in range(0, n, rows):
        s1 = min(n, s0 + rows)
        xc = buf[: s1 - s0]
        np.subtract(x[s0:s1], mean, out=xc)  # float64 copy; the caller's array is untouched
        d[s0:s1] = np.einsum("ij,ij->i", xc, xc)
        u += xc.sum(axis=0)
    dn = d
    un = u
    total = float(dn.sum())
    scale = float(np.abs(mean).max()) ** 2 * n * p
    if total == 0.0 or total <= 1e-24 * scale:
        raise AnalysisError(
            f"{name} is constant over the {n} prompts (every column has zero variance); "
            f"CKA is undefined for a constant layer"
        )
    return LayerStats(n=n, mean=mean, d=dn, r=-dn, s=float(un @ un) - total, total_variance=total)


def cka_table(
    debiased: bool,
    t_ab: np.ndarray,
    t_aa: np.ndarray,
    t_bb: np.ndarray,
    stats_a: list[LayerStats],
    stats_b: list[LayerStats],
    *,
    r_dot: np.ndarray | None = None,
    d_dot: np.ndarray | None = None,
    names: tuple[str, str] = ("layers_a", "layers_b"),
    indexed: bool = True,
) -> np.ndarray:
    """Vectorised CKA for traces ``t_ab`` [..., m_a, m_b] (e.g. a leading permutation axis).

    ``r_dot`` / ``d_dot`` [..., m_a, m_b] override r_K . r_L and d_K . d_L (permuted
    vectors); by default they are taken from the stats. Self traces t_aa [m_a], t_bb [m_b].
    """
    n = stats_a[0].n
    ra = np.stack([s.r for s in stats_a])
    rb = np.stack([s.r for s in stats_b])
    da = np.stack([s.d for s in stats_a])
    db = np.stack([s.d for s in stats_b])
    sa = np.array([s.s for s in stats_a])
    sb = np.array([s.s for s in stats_b])
    if debiased:
        rd = ra @ rb.T if r_dot is None else r_dot
        c1, c2, c3 = (n - 1) * (n - 2), 2.0 / (n - 2), n * (n - 3)
        num = (t_ab + np.multiply.outer(sa, sb) / c1 - c2 * rd) / c3
        ha = (t_aa + sa * sa / c1 - c2 * np.einsum("ij,ij->i", ra, ra)) / c3
        hb = (t_bb + sb * sb / c1 - c2 * np.einsum("ij,ij->i", rb, rb)) / c3
    else:
        dd = da @ db.T if d_dot is None else d_dot
        num = t_ab + dd
        ha = t_aa + np.einsum("ij,ij->i", da, da)
        hb = t_bb + np.einsum("ij,ij->i", db, db)
    for h, nm in ((ha, names[0]), (hb, names[1])):
        bad = np.flatnonzero(~(h > 0))
        if bad.size:
            kind = "debiased HSIC1" if debiased else "HSIC"
            which = f"{nm}[{bad[0]}]" if indexed else nm
            raise AnalysisError(
                f"the {kind} of {which} with itself is {h[bad[0]]:.3g} (not positive) over "
                f"n = {n} prompts, so CKA is undefined; use more prompts" + (" or debiased=False" if debiased else "")
            )
    cka: np.ndarray = num / np.sqrt(np.multiply.outer(ha, hb))
    return cka
