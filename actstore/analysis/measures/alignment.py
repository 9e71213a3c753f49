"""Alignment measures by ReSi's names: orthogonal Procrustes (two normalisations), the angular
shape metric, aligned cosine similarity, permutation Procrustes, linear regression and hard /
soft correlation match.

The orthogonally invariant ones reduce each layer once to its scores Z = U diag(s) [n, r]
(X = Z V^T, V orthonormal), so a pair needs only Z_x^T Z_y [r_x, r_y] instead of X^T Y
[p, q]: ||X^T Y||_* = ||Z_x^T Z_y||_*. ReSi zero-pads the narrower layer to a common width;
padding adds zero columns, which changes none of these values, so it is not done here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..errors import AnalysisError
from .registry import Measure, Options, register
from .subspaces import ThinSVD, as_float64, centre_columns, svd_flops, thin_svd

__all__: list[str] = []

RESI = "mklabunde/resi@24ab9e5055c71527445b0b196f5872f3cbe9a020"


def _scores_flops(n: int, p: int, q: int) -> float:
    rp, rq = min(n, p), min(n, q)
    return 2.0 * n * rp * rq + svd_flops(rp, rq)


def _nuclear(a: ThinSVD, b: ThinSVD) -> float:
    """||X^T Y||_* (sum of singular values) from the two layers' thin SVDs."""
    return float(np.linalg.svd(a.scores.T @ b.scores, compute_uv=False).sum())


def _nonzero(X: np.ndarray, name: str) -> np.ndarray:
    if not np.any(X):
        raise AnalysisError(f"measure {name!r} is undefined for a layer whose (centred) activations are all zero")
    return X


# --------------------------------------------------------------- orthogonal Procrustes


def _procrustes_prepare(normalize: bool, name: str) -> Callable[[np.ndarray, Options], ThinSVD]:
    def prepare(X: np.ndarray, opts: Options) -> ThinSVD:
        A = centre_columns(as_float64(X, name))
        if normalize:
            A = _nonzero(A, name) / np.linalg.norm(A)
        return thin_svd(A)

    return prepare


def _procrustes_distance(a: ThinSVD, b: ThinSVD, opts: Options) -> float:
    # ReSi rounds a slightly negative squared distance (round-off) up to zero; so does this
    return float(np.sqrt(max(a.frob2 + b.frob2 - 2.0 * _nuclear(a, b), 0.0)))


_PROCRUSTES_DEF = (
    "min over orthogonal Q of ||X Q - Y||_F (the narrower layer zero-padded) = "
    "sqrt(||X||_F^2 + ||Y||_F^2 - 2 ||X^T Y||_*), ||.||_* the nuclear norm (sum of singular values), "
    "a negative square from round-off taken as 0 (so near 0 the distance is accurate to about "
    "sqrt(eps) * max(||X||_F, ||Y||_F), as ReSi's); "
)


def _svd_prepare_cost(n: int, d: int, opts: Options) -> float:
    return svd_flops(n, d) + 2.0 * n * d


def _svd_compare_cost(n: int, p: int, q: int, opts: Options) -> float:
    return _scores_flops(n, p, q)


register(
    Measure(
        name="orthogonal_procrustes_centered_and_normalized",
        family="alignment",
        direction="distance",
        definition=(
            "Centre the columns of X [n, p] and Y [n, q] and divide each by its Frobenius norm (Ding et al. "
            "2021's setup). " + _PROCRUSTES_DEF + "so d = sqrt(2 - 2 ||X^T Y||_*), in [0, 2]."
        ),
        sensitive_to="any difference in the centred point clouds' shape up to rotation and overall scale",
        reference=(
            "Schönemann 1966; Ding, Denain, Steinhardt 2021 (Grounding representation similarity, NeurIPS). "
            f"ReSi repsim/measures/procrustes.py orthogonal_procrustes_centered_and_normalized ({RESI}): "
            "largest difference 4e-15 over five random pairs each of 60x20/60x30, 60x80/60x50, 30x10/30x10 and 100x20/100x30."
        ),
        prepare=_procrustes_prepare(True, "orthogonal_procrustes_centered_and_normalized"),
        compare=_procrustes_distance,
        prepare_cost=_svd_prepare_cost,
        compare_cost=_svd_compare_cost,
    )
)

register(
    Measure(
        name="procrustes_size_and_shape_distance",
        family="alignment",
        direction="distance",
        definition=(
            "Centre the columns of X [n, p] and Y [n, q] (Williams et al. 2021's size-and-shape setup, no "
            "scaling). " + _PROCRUSTES_DEF + "in the units of the activations."
        ),
        sensitive_to="differences in the centred point clouds up to rotation, including their overall scale",
        reference=(
            "Williams, Kunz, Kornblith, Linderman 2021 (Generalized shape metrics on neural representations, "
            f"NeurIPS). ReSi repsim/measures/procrustes.py procrustes_size_and_shape_distance ({RESI}): "
            "largest difference 9e-13 (relative 1e-15) over five random pairs each of 60x20/60x30, 60x80/60x50, 30x10/30x10 and 100x20/100x30."
        ),
        prepare=_procrustes_prepare(False, "procrustes_size_and_shape_distance"),
        compare=_procrustes_distance,
        prepare_cost=_svd_prepare_cost,
        compare_cost=_svd_compare_cost,
    )
)


def _angular(a: ThinSVD, b: ThinSVD, opts: Options) -> float:
    return float(np.arccos(np.clip(_nuclear(a, b), -1.0, 1.0)))


register(
    Measure(
        name="orthogonal_angular_shape_metric_centered",
        family="alignment",
        direction="distance",
        definition=(
            "Centre the columns of X [n, p] and Y [n, q] and divide each by its Frobenius norm. "
            "theta = arccos(max over orthogonal Q of <X Q, Y>_F) = arccos(||X^T Y||_*) (argument clipped "
            "to [-1, 1]), in radians, in [0, pi/2]."
        ),
        sensitive_to="the angle between the centred, unit-norm point clouds after the best rotation",
        reference=(
            "Williams, Kunz, Kornblith, Linderman 2021 (Generalized shape metrics on neural representations, "
            f"NeurIPS), angular shape metric. ReSi repsim/measures/procrustes.py "
            f"orthogonal_angular_shape_metric_centered ({RESI}): largest difference 3e-15 over "
            "five random pairs each of 60x20/60x30, 60x80/60x50, 30x10/30x10 and 100x20/100x30."
        ),
        prepare=_procrustes_prepare(True, "orthogonal_angular_shape_metric_centered"),
        compare=_angular,
        prepare_cost=_svd_prepare_cost,
        compare_cost=_svd_compare_cost,
    )
)


# ------------------------------------------------------------- aligned cosine similarity


@dataclass(frozen=True)
class _RowStats:
    svd: ThinSVD
    norms: np.ndarray  # [n] row norms of X


def _aligned_prepare(X: np.ndarray, opts: Options) -> _RowStats:
    A = _nonzero(as_float64(X, "aligned_cosine_similarity"), "aligned_cosine_similarity")
    return _RowStats(thin_svd(A), np.linalg.norm(A, axis=1))


def _aligned_compare(a: _RowStats, b: _RowStats, opts: Options) -> float:
    Za, Zb = a.svd.scores, b.svd.scores
    L, s, Rt = np.linalg.svd(Za.T @ Zb, full_matrices=False)
    c = int(np.count_nonzero(s > (s[0] if s.size else 0.0) * max(Za.shape[1], Zb.shape[1]) * np.finfo(float).eps))
    # row i of X Q* . row i of Y, with Q* the Procrustes rotation restricted to the two row spaces
    dots = np.einsum("ij,ij->i", Za @ (L[:, :c] @ Rt[:c]), Zb)
    ok = (a.norms > 0) & (b.norms > 0)
    if not ok.any():
        raise AnalysisError(
            "measure 'aligned_cosine_similarity' is undefined: every input has an all-zero "
            "activation vector in one of the two layers"
        )
    return float(np.mean(dots[ok] / (a.norms[ok] * b.norms[ok])))


register(
    Measure(
        name="aligned_cosine_similarity",
        family="alignment",
        direction="similarity",
        definition=(
            "No centring or scaling. Q* = argmin over orthogonal Q of ||X Q - Y||_F (orthogonal Procrustes, "
            "narrower layer zero-padded): with X^T Y = L S R^T, Q* = L R^T. "
            "aligned_cosine_similarity = mean over inputs i of cos((X Q*)_i, Y_i), in [-1, 1]; inputs with an "
            "all-zero row in either layer are left out (as ReSi does). Where X^T Y is rank-deficient in both "
            "directions Q* is not unique; here it is L R^T over the non-zero singular values only."
        ),
        sensitive_to="per-input direction agreement after the best global rotation (not translation- or scale-free)",
        reference=(
            "Hamilton, Leskovec, Jurafsky 2016 (Diachronic word embeddings, ACL), via Klabunde et al. 2023's "
            f"survey. ReSi repsim/measures/procrustes.py aligned_cossim ({RESI}): largest difference 9e-16 "
            "over five random pairs each of 60x20/60x30, 60x80/60x50, 30x10/30x10 and 100x20/100x30."
        ),
        prepare=_aligned_prepare,
        compare=_aligned_compare,
        prepare_cost=_svd_prepare_cost,
        compare_cost=lambda n, p, q, opts: _scores_flops(n, p, q) + 4.0 * n * min(n, p) * min(n, q),
    )
)


# --------------------------------------------------------------- permutation Procrustes


@dataclass(frozen=True)
class _Raw:
    X: np.ndarray
    frob2: float


def _raw_prepare(X: np.ndarray, opts: Options) -> _Raw:
    A = as_float64(X, "permutation_procrustes")
    return _Raw(A, float(np.sum(A * A)))


def _permutation_procrustes(a: _Raw, b: _Raw, opts: Options) -> float:
    C = a.X.T @ b.X
    rows, cols = linear_sum_assignment(C, maximize=True)
    return float(np.sqrt(max(a.frob2 + b.frob2 - 2.0 * C[rows, cols].sum(), 0.0)))


def _assignment_flops(p: int, q: int) -> float:
    return float(max(p, q)) ** 2 * min(p, q)


register(
    Measure(
        name="permutation_procrustes",
        family="alignment",
        direction="distance",
        definition=(
            "No centring or scaling. min over permutation matrices P of ||X P - Y||_F with the narrower layer "
            "zero-padded = sqrt(||X||_F^2 + ||Y||_F^2 - 2 max_P tr(P^T X^T Y)), the assignment solved exactly "
            "(Hungarian algorithm on X^T Y, rectangular when p != q); near 0 accurate to about "
            "sqrt(eps) * max(||X||_F, ||Y||_F)."
        ),
        sensitive_to="neuron-by-neuron differences up to a relabelling of the neurons (not rotations, shifts or scale)",
        reference=(
            "Williams, Kunz, Kornblith, Linderman 2021 (Generalized shape metrics on neural representations, "
            f"NeurIPS), permutation-invariant metric. ReSi repsim/measures/procrustes.py permutation_procrustes "
            f"({RESI}): largest difference 5e-13 (relative 2e-16) "
            "over five random pairs each of 60x20/60x30, 60x80/60x50, 30x10/30x10 and 100x20/100x30."
        ),
        prepare=_raw_prepare,
        compare=_permutation_procrustes,
        prepare_cost=lambda n, d, opts: 2.0 * n * d,
        compare_cost=lambda n, p, q, opts: 2.0 * n * p * q + _assignment_flops(p, q),
    )
)


# ---------------------------------------------------------------------- linear regression


def _regression_prepare(X: np.ndarray, opts: Options) -> ThinSVD:
    return thin_svd(_nonzero(centre_columns(as_float64(X, "linear_regression")), "linear_regression"))


def _regression_compare(a: ThinSVD, b: ThinSVD, opts: Options) -> float:
    # ||P_Y X||_F^2 / ||X||_F^2 with P_Y = U_y U_y^T the projector on Y's column space
    return float(np.sum((b.U.T @ a.scores) ** 2) / a.frob2)


register(
    Measure(
        name="linear_regression",
        family="alignment",
        direction="similarity",
        definition=(
            "Centre the columns of X [n, p] and Y [n, q]. R^2 of the least-squares fit of X from Y: "
            "1 - min_B ||X - Y B||_F^2 / ||X||_F^2 = ||Q_Y^T X||_F^2 / ||X||_F^2 with Q_Y an orthonormal basis "
            "of Y's column space, in [0, 1]; asymmetric (linear_regression(X, Y) predicts X from Y). ReSi "
            "builds Q_Y = Y (Y^T Y)^(-1/2), which fails when Y^T Y is singular (q >= n after centring); Q_Y "
            "here is Y's thin-SVD basis at numerical rank, equal where ReSi's is defined (and R^2 = 1 when Y "
            "spans every centred direction)."
        ),
        sensitive_to="how much of X's variance a linear map of Y reproduces (invariant to any invertible map of Y)",
        reference=(
            "Kornblith, Norouzi, Lee, Hinton 2019 (Similarity of neural network representations revisited, "
            f"ICML), linear regression fit. ReSi repsim/measures/linear_regression.py linear_reg ({RESI}): "
            "largest difference 5e-14 over five random pairs each of 60x20/60x30, 60x80/60x50, 30x10/30x10 and 100x20/100x30."
        ),
        prepare=_regression_prepare,
        compare=_regression_compare,
        symmetric=False,
        prepare_cost=_svd_prepare_cost,
        compare_cost=_svd_compare_cost,
    )
)


# --------------------------------------------------------------------- correlation match


def _correlation_prepare(name: str) -> Callable[[np.ndarray, Options], np.ndarray]:
    def prepare(X: np.ndarray, opts: Options) -> np.ndarray:
        A = centre_columns(as_float64(X, name))
        norms = np.linalg.norm(A, axis=0)
        # a constant neuron has no correlation; like sklearn's cosine it correlates 0 with everything
        unit: np.ndarray = A / np.where(norms > 0, norms, 1.0)
        return unit

    return prepare


def _hard_match(a: np.ndarray, b: np.ndarray, opts: Options) -> float:
    C = a.T @ b
    rows, cols = linear_sum_assignment(C, maximize=True)
    return float(C[rows, cols].mean())


def _soft_match(a: np.ndarray, b: np.ndarray, opts: Options) -> float:
    C = a.T @ b
    return float((C.max(axis=1).mean() + C.max(axis=0).mean()) / 2.0)


_CORR_DEF = (
    "Centre the columns of X [n, p] and Y [n, q]; C [p, q] the Pearson correlations of X's neurons with "
    "Y's (a constant neuron correlates 0 with every neuron). "
)

register(
    Measure(
        name="hard_correlation_match",
        family="alignment",
        direction="similarity",
        definition=(
            _CORR_DEF + "hard_correlation_match = mean of C over the one-to-one matching of min(p, q) neuron "
            "pairs that maximises the sum of C (Hungarian algorithm), in [-1, 1]."
        ),
        sensitive_to="whether individual neurons have one-to-one linearly correlated counterparts",
        reference=(
            "Li, Yosinski, Clune, Lipson, Hopcroft 2016 (Convergent learning, ICLR), bipartite semi-matching. "
            f"ReSi repsim/measures/correlation_match.py hard_correlation_match ({RESI}): largest difference "
            "1e-16 over five random pairs each of 60x20/60x30, 60x80/60x50, 30x10/30x10 and 100x20/100x30."
        ),
        prepare=_correlation_prepare("hard_correlation_match"),
        compare=_hard_match,
        prepare_cost=lambda n, d, opts: 4.0 * n * d,
        compare_cost=lambda n, p, q, opts: 2.0 * n * p * q + _assignment_flops(p, q),
    )
)

register(
    Measure(
        name="soft_correlation_match",
        family="alignment",
        direction="similarity",
        definition=(
            _CORR_DEF + "soft_correlation_match = (mean_i max_j C_ij + mean_j max_i C_ij) / 2, in [-1, 1] "
            "(each neuron's best partner, averaged over both directions as ReSi does)."
        ),
        sensitive_to="whether individual neurons have linearly correlated counterparts (many-to-one allowed)",
        reference=(
            "Li, Yosinski, Clune, Lipson, Hopcroft 2016 (Convergent learning, ICLR), semi-matching. "
            f"ReSi repsim/measures/correlation_match.py soft_correlation_match ({RESI}): largest difference "
            "1e-16 over five random pairs each of 60x20/60x30, 60x80/60x50, 30x10/30x10 and 100x20/100x30."
        ),
        prepare=_correlation_prepare("soft_correlation_match"),
        compare=_soft_match,
        prepare_cost=lambda n, d, opts: 4.0 * n * d,
        compare_cost=lambda n, p, q, opts: 2.0 * n * p * q + 2.0 * p * q,
    )
)
