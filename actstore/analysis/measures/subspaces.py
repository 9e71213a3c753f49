"""Per-layer linear algebra shared by the ReSi measures of part A (cca, alignment, spectral):
column centring and a rank-revealing thin SVD, computed once per layer by ``prepare``.

Every function works in float64 and returns new arrays (inputs are never modified).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import AnalysisError

__all__ = ["ThinSVD", "as_float64", "centre_columns", "svd_flops", "thin_svd"]


def as_float64(X: np.ndarray, measure: str) -> np.ndarray:
    """X as a float64 [n, d] array; AnalysisError for NaN/inf values."""
    A = np.asarray(X, dtype=np.float64)
    if not np.isfinite(A).all():
        raise AnalysisError(f"measure {measure!r} needs finite activations, got NaN or inf values")
    return A


def centre_columns(X: np.ndarray) -> np.ndarray:
    """X [n, d] minus its column means."""
    centred: np.ndarray = X - X.mean(axis=0, keepdims=True)
    return centred


@dataclass(frozen=True)
class ThinSVD:
    """X = U diag(s) Vt restricted to its numerical rank r.

    U [n, r] orthonormal columns, s [r] descending singular values, Vt [r, d]; d is X's
    width and frob2 = ||X||_F^2 (the sum of all s^2, including the dropped ones).
    """

    U: np.ndarray
    s: np.ndarray
    Vt: np.ndarray
    d: int
    frob2: float

    @property
    def rank(self) -> int:
        return int(self.s.shape[0])

    @property
    def scores(self) -> np.ndarray:
        """U diag(s) [n, r]: X in the orthonormal basis of its row space (X = scores Vt)."""
        scores: np.ndarray = self.U * self.s
        return scores


def thin_svd(X: np.ndarray) -> ThinSVD:
    """Thin SVD of X [n, d] truncated at numpy's ``matrix_rank`` tolerance
    (s > s_max * max(n, d) * eps), so that round-off directions of a rank-deficient X
    (e.g. centred X with d >= n) never enter a subspace."""
    n, d = X.shape
    U, s, Vt = np.linalg.svd(X, full_matrices=False)
    tol = (s[0] if s.size else 0.0) * max(n, d) * np.finfo(np.float64).eps
    r = int(np.count_nonzero(s > tol))
    return ThinSVD(U[:, :r], s[:r], Vt[:r], d, float(np.sum(s * s)))


def svd_flops(n: int, d: int) -> float:
    """Approximate flops of a thin SVD of an [n, d] matrix (LAPACK gesdd, both factors)."""
    small, large = min(n, d), max(n, d)
    return 4.0 * large * small * small + 8.0 * small**3
