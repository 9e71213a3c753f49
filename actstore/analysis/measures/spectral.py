"""Spectral measures by ReSi's names: ``eigenspace_overlap_score`` (May et al. 2019) and
``gulp`` (Boix-Adserà et al. 2022).

Both compare the left singular subspaces of the two layers, so ``prepare`` does one thin SVD
per layer and ``compare`` one [r_x, r_y] product U_x^T U_y.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import AnalysisError
from .registry import Measure, Option, Options, register
from .subspaces import as_float64, centre_columns, svd_flops, thin_svd

__all__: list[str] = []

RESI = "mklabunde/resi@24ab9e5055c71527445b0b196f5872f3cbe9a020"


def _pair_flops(n: int, p: int, q: int) -> float:
    return 2.0 * n * min(n, p) * min(n, q)


# --------------------------------------------------------------- eigenspace overlap


@dataclass(frozen=True)
class _Basis:
    U: np.ndarray  # [n, r]
    d: int  # width of the layer


def _eos_prepare(X: np.ndarray, opts: Options) -> _Basis:
    svd = thin_svd(as_float64(X, "eigenspace_overlap_score"))
    return _Basis(svd.U, svd.d)


def _eos_compare(a: _Basis, b: _Basis, opts: Options) -> float:
    return float(np.sum((a.U.T @ b.U) ** 2) / max(a.d, b.d))


register(
    Measure(
        name="eigenspace_overlap_score",
        family="spectral",
        direction="similarity",
        definition=(
            "No centring (as ReSi and the paper). U_x [n, r_x], U_y [n, r_y]: the left singular vectors of X "
            "[n, p] and Y [n, q] at their numerical rank. eos = ||U_x^T U_y||_F^2 / max(p, q), in [0, 1]; it is "
            "1 only when both layers have full column rank p = q and span the same subspace (with n < p it "
            "stays below n / p, as in ReSi)."
        ),
        sensitive_to="the overlap of the two layers' column spaces, ignoring every invertible linear map",
        reference=(
            "May, Zhang, Dao, Ré 2019 (On the downstream performance of compressed word embeddings, NeurIPS). "
            f"ReSi repsim/measures/eigenspace_overlap.py eigenspace_overlap_score ({RESI}): largest difference "
            "4e-16 over five random pairs each of 60x20/60x30, 60x80/60x50, 30x10/30x10 and 100x20/100x30."
        ),
        prepare=_eos_prepare,
        compare=_eos_compare,
        prepare_cost=lambda n, d, opts: svd_flops(n, d),
        compare_cost=lambda n, p, q, opts: _pair_flops(n, p, q),
    )
)


# ------------------------------------------------------------------------------- GULP


@dataclass(frozen=True)
class _Hat:
    G: np.ndarray  # [n, r] = U diag(sqrt(f)): the ridge hat matrix is H = G G^T
    sum_f2: float  # tr(H^2) = sum f^2


def _gulp_prepare(X: np.ndarray, opts: Options) -> _Hat:
    A = centre_columns(as_float64(X, "gulp"))
    n = A.shape[0]
    norm = np.linalg.norm(A)
    if norm == 0:
        raise AnalysisError("measure 'gulp' is undefined for a layer whose activations do not vary over the inputs")
    svd = thin_svd(A * (np.sqrt(n) / norm))
    e = svd.s**2 / n  # eigenvalues of the covariance X^T X / n
    lam = opts["lmbda"]
    f = e / (e + lam) if lam > 0 else np.ones_like(e)
    return _Hat(svd.U * np.sqrt(f), float(np.sum(f * f)))


def _gulp_compare(a: _Hat, b: _Hat, opts: Options) -> float:
    d2 = max(a.sum_f2 + b.sum_f2 - 2.0 * float(np.sum((a.G.T @ b.G) ** 2)), 0.0)
    return d2 if opts["squared"] else float(np.sqrt(d2))


register(
    Measure(
        name="gulp",
        family="spectral",
        direction="distance",
        definition=(
            "Centre the columns of X [n, p] and Y [n, q] and scale each so that ||X||_F^2 = n (the GULP "
            "authors' preprocessing, as ReSi). H_X = X (X^T X + n lmbda I)^+ X^T [n, n] is the hat matrix of "
            "ridge regression on X (lmbda = 0: the projector on X's column space at numerical rank). "
            "gulp = ||H_X - H_Y||_F^2 = tr(H_X^2) + tr(H_Y^2) - 2 tr(H_X H_Y), the squared GULP distance "
            "d_lmbda^2 as the authors' predictor_dist and ReSi return it; squared=false gives the metric "
            "d_lmbda itself. Difference: with lmbda = 0 ReSi counts every eigenvalue > 0 of X X^T, so the "
            "round-off eigenvalues of a rank-deficient X (p >= n after centring) add spurious 1s to tr(H^2); "
            "here directions below numpy's rank tolerance are dropped, so ReSi's value can be larger there."
        ),
        sensitive_to="differences in what ridge-regularised linear predictors on the two layers can predict",
        reference=(
            "Boix-Adserà, Lawrence, Stepaniants, Rigollet 2022 (GULP: a prediction-based metric between "
            f"representations, NeurIPS). ReSi repsim/measures/gulp.py gulp ({RESI}): largest relative "
            "difference 1e-10 at lmbda = 0 (ReSi inverts the eigenvalues), 3e-14 at lmbda = 0.01 and 1e-15 at "
            "lmbda = 1 over five random pairs each of 60x20/60x30, 30x10/30x10 and 100x20/100x30; ReSi "
            "refuses p > n (assert k <= n), computed here."
        ),
        prepare=_gulp_prepare,
        compare=_gulp_compare,
        prepare_cost=lambda n, d, opts: svd_flops(n, d) + 2.0 * n * d,
        compare_cost=lambda n, p, q, opts: _pair_flops(n, p, q),
        options=(
            Option(
                "lmbda",
                float,
                0.0,
                "ridge penalty lambda on the covariance eigenvalues (ReSi's lmbda, default 0)",
                minimum=0.0,
            ),
            Option("squared", bool, True, "return d^2 as ReSi and the GULP authors' code do (false: the metric d)"),
        ),
    )
)
