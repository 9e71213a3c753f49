"""ReSi's RSM-based measures (Klabunde et al. 2024, "ReSi: A Comprehensive Benchmark for
Representational Similarity Measures"; definitions from Klabunde et al. 2023, "Similarity of
Neural Network Models: A Survey of Functional and Representational Measures", sec. 4.2):
``rsa``, ``rsm_norm_difference`` and ``distance_correlation`` (ReSi's classes RSA,
RSMNormDifference, DistanceCorrelation in ``repsim/measures/``).

Each builds an n x n representational similarity (or distance) matrix of a layer once, in
``prepare``, from the layer's float64 Gram matrix, and keeps only what ``compare`` needs: the
upper triangle (the matrices are symmetric), ranked and standardised where the outer
similarity is a correlation. Memory: a prepared layer holds about n^2 / 2 float64 values
(34 MB at n = 4096; ``rsm_norm_difference`` with norm ``spectral`` keeps the full n x n
matrix, 134 MB), so these measures are meant for n <= 4096 prompts; prepare cost n^2 d.

Euclidean RSMs are computed as sqrt(|x_i|^2 + |x_j|^2 - 2 x_i.x_j) on column-centred float64
rows (distances do not change under translation, and centring keeps the Gram form accurate
for activations with a large common offset); negative round-off is clipped to 0 and the
diagonal is exactly 0, as sklearn's ``pairwise_distances`` makes it.

Checked against ReSi's own functions at commit 24ab9e5055c71527445b0b196f5872f3cbe9a020
(repsim/measures/*.py run from a scratch copy with scipy 1.17, sklearn 1.9; 10 random pairs
of related layers, n = 200, d = 48 and 64, float64); the largest difference is in each
measure's ``reference``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.stats

from ..errors import AnalysisError
from .registry import Measure, Option, Options, register

__all__ = [
    "correlation_rsm",
    "cosine_distance_rsm",
    "euclidean_rsm",
    "pairwise_sq_euclidean",
    "rsm_upper",
]

_RESI = "mklabunde/resi @ 24ab9e5055c71527445b0b196f5872f3cbe9a020"
_SQRT2 = float(np.sqrt(2.0))


def pairwise_sq_euclidean(X: np.ndarray) -> np.ndarray:
    """float64 [n, n]: |x_i - x_j|^2 of the rows of X [n, d], from the Gram matrix of the
    column-centred rows; >= 0, diagonal exactly 0."""
    Xc = np.asarray(X, dtype=np.float64)
    Xc = Xc - Xc.mean(axis=0, keepdims=True)
    G = Xc @ Xc.T
    sq = np.diag(G).copy()
    D2: np.ndarray = sq[:, None] + sq[None, :] - 2.0 * G
    np.maximum(D2, 0.0, out=D2)
    np.fill_diagonal(D2, 0.0)
    return D2


def euclidean_rsm(X: np.ndarray) -> np.ndarray:
    """float64 [n, n]: Euclidean distances |x_i - x_j| of the rows of X [n, d]."""
    D: np.ndarray = np.sqrt(pairwise_sq_euclidean(X))
    return D


def _unit_rows(X: np.ndarray, problem: str) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise AnalysisError(f"row {zero[0]} {problem}")
    unit: np.ndarray = X / norms[:, None]
    return unit


def correlation_rsm(X: np.ndarray) -> np.ndarray:
    """float64 [n, n]: Pearson correlation between the rows of X [n, d] (each row centred over
    its d features, then cosine similarity). A constant row raises AnalysisError."""
    Xr = np.asarray(X, dtype=np.float64)
    U = _unit_rows(
        Xr - Xr.mean(axis=1, keepdims=True), "is constant; its Pearson correlation with other rows is undefined"
    )
    S: np.ndarray = U @ U.T
    np.fill_diagonal(S, 1.0)
    return S


def cosine_distance_rsm(X: np.ndarray) -> np.ndarray:
    """float64 [n, n]: cosine distance 1 - cos(x_i, x_j) of the rows of X [n, d], diagonal 0.
    A zero row raises AnalysisError."""
    U = _unit_rows(np.asarray(X, dtype=np.float64), "is all zeros; its cosine with other rows is undefined")
    D: np.ndarray = 1.0 - U @ U.T
    np.fill_diagonal(D, 0.0)
    return D


def rsm_upper(S: np.ndarray) -> np.ndarray:
    """float64 [n (n - 1) / 2]: the entries of S [n, n] above the diagonal, row by row
    (the same set as scipy's ``squareform`` of a symmetric S)."""
    return S[np.triu_indices(S.shape[0], k=1)]


# --- rsa ------------------------------------------------------------------------------------

_INNER_RSA = {"correlation": correlation_rsm, "euclidean": euclidean_rsm}


def _standardised(v: np.ndarray, what: str) -> np.ndarray:
    c = v - v.mean()
    norm = np.linalg.norm(c)
    if norm == 0:
        raise AnalysisError(
            f"every entry of the layer's {what} is equal; its correlation with another layer's is undefined"
        )
    standardised: np.ndarray = c / norm
    return standardised


def _prepare_rsa(X: np.ndarray, o: Options) -> np.ndarray:
    v = rsm_upper(_INNER_RSA[o["inner"]](X))
    if o["outer"] == "spearman":
        v = scipy.stats.rankdata(v)  # average ranks of ties, as scipy.stats.spearmanr
    return _standardised(v, f"{o['inner']} RSM")


register(
    Measure(
        name="rsa",
        family="rsm",
        direction="similarity",
        definition=(
            "RSA(X, Y) = corr(vec(S_X), vec(S_Y)): S_X [n, n] the RSM of X under the inner "
            "similarity (correlation: Pearson correlation between rows, i.e. cosine of the "
            "row-centred rows; euclidean: |x_i - x_j|), vec the n (n - 1) / 2 entries above "
            "the diagonal, corr the outer similarity (spearman: Pearson correlation of the "
            "average ranks; pearson). In [-1, 1]. Input not centred or scaled (the RSMs do "
            "not depend on a column offset; correlation RSMs not on row scale)."
        ),
        sensitive_to="the ordering (spearman) or linear trend (pearson) of all pairwise "
        "dissimilarities between prompts; not rotations, not isotropic scale",
        reference=(
            "Kriegeskorte et al. 2008 (RSA); Klabunde et al. 2023 survey eq. of RSA; "
            f"{_RESI} repsim/measures/rsa.py representational_similarity_analysis "
            "(class RSA): max |difference| 2.2e-16 (inner correlation and euclidean, outer "
            "spearman). ReSi's outer 'euclidean' (|vec S_X - vec S_Y|, a distance with the "
            "opposite direction) is not offered: use rsm_norm_difference; outer pearson is "
            "the paper's alternative that ReSi does not implement (checked against "
            "scipy.stats.pearsonr of scipy pdist vectors: 2.2e-16)."
        ),
        prepare=_prepare_rsa,
        compare=lambda a, b, o: float(np.clip(a @ b, -1.0, 1.0)),
        prepare_cost=lambda n, d, o: (
            float(n) * n * d + (float(n) * n * np.log2(max(2, n * n)) if o["outer"] == "spearman" else 0.0)
        ),
        compare_cost=lambda n, p, q, o: float(n) * n,
        options=(
            Option(
                "inner",
                str,
                "correlation",
                "similarity of two prompts within a layer",
                choices=("correlation", "euclidean"),
            ),
            Option(
                "outer", str, "spearman", "correlation between the two layers' RSMs", choices=("spearman", "pearson")
            ),
        ),
        min_rows=lambda o: 3,
    )
)


# --- rsm_norm_difference --------------------------------------------------------------------

_INNER_NORM = {"euclidean": euclidean_rsm, "cosine": cosine_distance_rsm}


def _prepare_norm(X: np.ndarray, o: Options) -> np.ndarray:
    D = _INNER_NORM[o["inner"]](X)
    if o["norm"] == "spectral":
        return D
    return _SQRT2 * rsm_upper(D)  # |v_X - v_Y| = ||D_X - D_Y||_F (zero diagonals)


def _compare_norm(a: np.ndarray, b: np.ndarray, o: Options) -> float:
    if o["norm"] == "spectral":
        ev = scipy.linalg.eigvalsh(a - b)  # symmetric: spectral norm = max |eigenvalue|
        return float(max(abs(ev[0]), abs(ev[-1])))
    return float(np.linalg.norm(a - b))


register(
    Measure(
        name="rsm_norm_difference",
        family="rsm",
        direction="distance",
        definition=(
            "||D_X - D_Y||: D_X [n, n] the RSM of X under the inner distance (euclidean: "
            "|x_i - x_j|; cosine: 1 - cos(x_i, x_j)), zero diagonal; norm frobenius (the "
            "paper's, default) over all n^2 entries, or spectral (largest singular value; "
            "what ReSi's code computes). >= 0, 0 for identical RSMs. Input not centred or "
            "scaled (euclidean RSMs do not depend on a column offset)."
        ),
        sensitive_to="every pairwise distance between prompts, in absolute units: scale changes "
        "it, rotations and translations do not",
        reference=(
            "Klabunde et al. 2023 survey eq. of RSM norm difference, ||S - S'||_F; "
            f"{_RESI} repsim/measures/rsm_norm_difference.py rsm_norm_diff (class "
            "RSMNormDifference): it applies np.linalg.norm(S - Sp, ord=2) to the full n x n "
            "matrices, which is the spectral norm, not the Frobenius norm its comment "
            "intends. norm spectral vs ReSi: max relative difference 1.2e-15 (inner "
            "euclidean), 6.4e-16 (inner cosine); norm frobenius vs np.linalg.norm(S - Sp, "
            "'fro') of scipy pdist matrices: 2.8e-16 relative. Default follows the paper."
        ),
        prepare=_prepare_norm,
        compare=_compare_norm,
        prepare_cost=lambda n, d, o: float(n) * n * d,
        compare_cost=lambda n, p, q, o: float(n) * n if o["norm"] == "frobenius" else 4.0 * n**3,
        options=(
            Option(
                "inner", str, "euclidean", "distance of two prompts within a layer", choices=("euclidean", "cosine")
            ),
            Option(
                "norm",
                str,
                "frobenius",
                "matrix norm of the difference: frobenius (paper) or spectral (ReSi's code)",
                choices=("frobenius", "spectral"),
            ),
        ),
    )
)


# --- distance_correlation -------------------------------------------------------------------


def _prepare_dcor(X: np.ndarray, o: Options) -> np.ndarray:
    D = euclidean_rsm(X)
    A = D - D.mean(axis=0, keepdims=True) - D.mean(axis=1, keepdims=True) + D.mean()
    # sum_ij A_ij B_ij of two symmetric matrices = w_A . w_B with w = (sqrt2 upper, diagonal)
    w = np.concatenate([_SQRT2 * rsm_upper(A), np.diag(A)])
    norm = np.linalg.norm(w)
    if norm == 0:
        raise AnalysisError(
            "every row of the layer is the same point; its distance variance is 0 and distance correlation is undefined"
        )
    unit: np.ndarray = w / norm
    return unit


register(
    Measure(
        name="distance_correlation",
        family="rsm",
        direction="similarity",
        definition=(
            "dCor(X, Y) = sqrt( dCov2(X, Y) / sqrt(dCov2(X, X) dCov2(Y, Y)) ), "
            "dCov2(X, Y) = 1/n^2 sum_ij A_ij B_ij, A = H D_X H the double-centred "
            "Euclidean distance matrix (A_ij = d_ij - mean_i. - mean_.j + mean_..). "
            "In [0, 1], 1 for identical or rotated and isotropically scaled inputs. Input "
            "not centred or scaled. The V-statistic is biased upwards: unrelated layers "
            "do not give 0 (independent Gaussian rows: 0.70 at n = 200, d = 48; 0.45 at "
            "n = 1000, d = 64), so read it against a permutation baseline."
        ),
        sensitive_to="any (also non-linear) dependence between the two layers' pairwise "
        "Euclidean distances; not rotations, translations or isotropic scale",
        reference=(
            "Szekely, Rizzo & Bakirov 2007 (V-statistic dCor); Klabunde et al. 2023 survey; "
            f"{_RESI} repsim/measures/distance_correlation.py distance_correlation (class "
            "DistanceCorrelation): same definition, max |difference| 2.2e-16."
        ),
        prepare=_prepare_dcor,
        compare=lambda a, b, o: float(np.sqrt(np.clip(a @ b, 0.0, 1.0))),
        prepare_cost=lambda n, d, o: float(n) * n * d + 6.0 * n * n,
        compare_cost=lambda n, p, q, o: float(n) * n,
    )
)
