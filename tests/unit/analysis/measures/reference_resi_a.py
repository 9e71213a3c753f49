"""Direct, slow float64 implementations of the ReSi part-A measures, written from the papers'
formulas (textbook covariance CCA, explicit rotations, brute-force permutations, explicit
n x n hat matrices), independent of actstore's SVD-based forms.

``DIRECT[name](X, Y, **opts) -> float`` for every measure of cca.py, alignment.py and
spectral.py, so that other tests can run them on real activations. The brute-force
permutation forms need widths <= 7.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

__all__ = ["DIRECT", "pwcca_resi_recipe", "resi_svcca_components"]


def _f64(X) -> np.ndarray:
    return np.asarray(X, dtype=np.float64)


def _centre(X) -> np.ndarray:
    X = _f64(X)
    return X - X.mean(axis=0)


def _pad(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = max(X.shape[1], Y.shape[1])
    return (
        np.hstack([X, np.zeros((X.shape[0], d - X.shape[1]))]),
        np.hstack([Y, np.zeros((Y.shape[0], d - Y.shape[1]))]),
    )


def _inv_sqrt(S: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh(S)
    return V @ np.diag(1.0 / np.sqrt(w)) @ V.T


def _cca(Xc: np.ndarray, Yc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Textbook CCA on centred data of full column rank: the canonical correlations and the
    X-side coefficient vectors w_i (canonical variates X w_i), from Sxx^-1/2 Sxy Syy^-1/2."""
    Sxx, Syy, Sxy = Xc.T @ Xc, Yc.T @ Yc, Xc.T @ Yc
    Wx = _inv_sqrt(Sxx)
    A, rho, _ = np.linalg.svd(Wx @ Sxy @ _inv_sqrt(Syy), full_matrices=False)
    return rho, Wx @ A


# ------------------------------------------------------------------------------- cca


def _pca_scores(X, keep_variance: float, dims: int, standardize: bool) -> np.ndarray:
    Xc = _centre(X)
    if standardize:
        sd = Xc.std(axis=0)
        Xc = Xc / np.where(sd > 0, sd, 1.0)
    w, V = np.linalg.eigh(Xc.T @ Xc)  # covariance eigen-decomposition, ascending
    w, V = w[::-1], V[:, ::-1]
    rank = int(np.sum(w > w[0] * 1e-12))
    if dims > 0:
        k = min(dims, rank)
    else:
        share = np.cumsum(w[:rank]) / np.sum(w[:rank])
        k = next(i + 1 for i, s in enumerate(share) if s >= keep_variance - 1e-12)
    return Xc @ V[:, :k]


def svcca_direct(X, Y, keep_variance: float = 0.99, dims: int = 0, standardize: bool = False) -> float:
    """Raghu et al. 2017: PCA to keep_variance (or dims) directions, CCA, mean correlation."""
    A = _pca_scores(X, keep_variance, dims, standardize)
    B = _pca_scores(Y, keep_variance, dims, standardize)
    rho, _ = _cca(A, B)
    return float(np.mean(rho[: min(A.shape[1], B.shape[1])]))


def resi_svcca_components(X) -> int:
    """The number of SVD components ReSi's top_k_pca_comps keeps (its rule, written out):
    argmax(cumsum(s^2) / sum(s^2) >= 0.99 * sum(s^2)) + 1."""
    s = np.linalg.svd(_centre(X), compute_uv=False)
    total = np.sum(s**2)
    return int(np.argmax(np.cumsum(s**2 / total) >= 0.99 * total)) + 1


def pwcca_direct(X, Y) -> float:
    """Morcos et al. 2018: rho_PW = sum alpha_i rho_i / sum alpha_i, alpha_i = sum_j |<h_i, x_j>|,
    h_i the unit canonical variates of X, x_j the centred neurons of X (needs n > p, q)."""
    Xc, Yc = _centre(X), _centre(Y)
    rho, W = _cca(Xc, Yc)
    c = min(Xc.shape[1], Yc.shape[1])
    H = Xc @ W[:, :c]
    H = H / np.linalg.norm(H, axis=0)
    alpha = np.abs(H.T @ Xc).sum(axis=1)
    return float(np.sum(alpha * rho[:c]) / np.sum(alpha))


def pwcca_resi_recipe(X, Y) -> float:
    """google/svcca's pwcca as ReSi runs it (for p <= q), written out from its steps: CCA
    coefficients u, directions u^T Xc^T without Sxx^-1/2, plus the neuron means, QR, weights
    against the uncentred neurons."""
    X = _f64(X)
    Xc, Yc = _centre(X), _centre(Y)
    rho, _ = _cca(Xc, Yc)
    A, _, _ = np.linalg.svd(_inv_sqrt(Xc.T @ Xc) @ (Xc.T @ Yc) @ _inv_sqrt(Yc.T @ Yc))
    dirns = A.T @ Xc.T + X.mean(axis=0)[:, None]
    P, _ = np.linalg.qr(dirns.T)
    w = np.abs(P.T @ X).sum(axis=1)
    w = w / w.sum()
    return float(np.sum(w * rho))


# ------------------------------------------------------------------------- alignment


def _rotation(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """argmax over orthogonal Q of tr(Q^T X^T Y), X and Y of equal width."""
    U, _, Vt = np.linalg.svd(X.T @ Y)
    return U @ Vt


def _procrustes(X: np.ndarray, Y: np.ndarray) -> float:
    X, Y = _pad(X, Y)
    return float(np.linalg.norm(X @ _rotation(X, Y) - Y))


def procrustes_cn_direct(X, Y) -> float:
    Xc, Yc = _centre(X), _centre(Y)
    return _procrustes(Xc / np.linalg.norm(Xc), Yc / np.linalg.norm(Yc))


def procrustes_ss_direct(X, Y) -> float:
    return _procrustes(_centre(X), _centre(Y))


def angular_direct(X, Y) -> float:
    Xc, Yc = _centre(X), _centre(Y)
    Xc, Yc = _pad(Xc / np.linalg.norm(Xc), Yc / np.linalg.norm(Yc))
    return float(np.arccos(np.clip(np.sum((Xc @ _rotation(Xc, Yc)) * Yc), -1.0, 1.0)))


def aligned_cosine_direct(X, Y) -> float:
    X, Y = _pad(_f64(X), _f64(Y))
    XQ = X @ _rotation(X, Y)
    cos = [a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) for a, b in zip(XQ, Y) if np.any(a) and np.any(b)]
    return float(np.mean(cos))


def permutation_procrustes_direct(X, Y) -> float:
    """Brute force over every permutation of the (zero-padded) columns."""
    X, Y = _pad(_f64(X), _f64(Y))
    return float(min(np.linalg.norm(X[:, list(perm)] - Y) for perm in itertools.permutations(range(X.shape[1]))))


def linear_regression_direct(X, Y) -> float:
    Xc, Yc = _centre(X), _centre(Y)
    B = np.linalg.lstsq(Yc, Xc, rcond=None)[0]
    return float(1.0 - np.sum((Xc - Yc @ B) ** 2) / np.sum(Xc**2))


def _correlations(X, Y) -> np.ndarray:
    p = _f64(X).shape[1]
    C = np.corrcoef(_f64(X), _f64(Y), rowvar=False)[:p, p:]
    return np.nan_to_num(C)


def hard_correlation_match_direct(X, Y) -> float:
    """Brute force over every one-to-one matching of the narrower layer's neurons."""
    C = _correlations(X, Y)
    if C.shape[0] > C.shape[1]:
        C = C.T
    best = max(
        sum(C[i, j] for i, j in enumerate(cols)) for cols in itertools.permutations(range(C.shape[1]), C.shape[0])
    )
    return float(best / C.shape[0])


def soft_correlation_match_direct(X, Y) -> float:
    C = _correlations(X, Y)
    return float((np.mean([max(row) for row in C]) + np.mean([max(col) for col in C.T])) / 2.0)


# -------------------------------------------------------------------------- spectral


def eigenspace_overlap_direct(X, Y) -> float:
    X, Y = _f64(X), _f64(Y)
    U = np.linalg.svd(X)[0][:, : np.linalg.matrix_rank(X)]
    V = np.linalg.svd(Y)[0][:, : np.linalg.matrix_rank(Y)]
    return float(np.linalg.norm(U.T @ V) ** 2 / max(X.shape[1], Y.shape[1]))


def _hat(X, lmbda: float) -> np.ndarray:
    Xc = _centre(X)
    n = Xc.shape[0]
    Xc = Xc * np.sqrt(n) / np.linalg.norm(Xc)
    if lmbda > 0:
        return Xc @ np.linalg.solve(Xc.T @ Xc + n * lmbda * np.eye(Xc.shape[1]), Xc.T)
    return Xc @ np.linalg.pinv(Xc)  # the projector on the column space


def gulp_direct(X, Y, lmbda: float = 0.0, squared: bool = True) -> float:
    d2 = float(np.sum((_hat(X, lmbda) - _hat(Y, lmbda)) ** 2))
    return d2 if squared else float(np.sqrt(d2))


DIRECT: dict[str, Callable[..., float]] = {
    "svcca": svcca_direct,
    "pwcca": pwcca_direct,
    "orthogonal_procrustes_centered_and_normalized": procrustes_cn_direct,
    "procrustes_size_and_shape_distance": procrustes_ss_direct,
    "orthogonal_angular_shape_metric_centered": angular_direct,
    "aligned_cosine_similarity": aligned_cosine_direct,
    "permutation_procrustes": permutation_procrustes_direct,
    "linear_regression": linear_regression_direct,
    "hard_correlation_match": hard_correlation_match_direct,
    "soft_correlation_match": soft_correlation_match_direct,
    "eigenspace_overlap_score": eigenspace_overlap_direct,
    "gulp": gulp_direct,
}
