"""Canonical correlation measures: ``svcca`` (Raghu et al. 2017) and ``pwcca`` (Morcos et al.
2018), by ReSi's names (``svcca`` is also platonic-representation's name).

Both work on orthonormal bases of the centred layers, so ``prepare`` does one thin SVD per
layer and ``compare`` only needs the [r_x, r_y] matrix of cosines between the two bases: the
canonical correlations of X and Y are the singular values of U_x^T U_y (Björck & Golub 1973),
which is CCA without inverting a covariance matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import AnalysisError
from .registry import Measure, Option, Options, register
from .subspaces import ThinSVD, as_float64, centre_columns, svd_flops, thin_svd

__all__ = ["canonical_correlations"]

RESI_COMMIT = "mklabunde/resi@24ab9e5055c71527445b0b196f5872f3cbe9a020"
PLATONIC_COMMIT = "minyoungg/platonic-rep@dcd76ba3c950c1b197a2ae8b1c6713535c94ecf9"


def canonical_correlations(Ua: np.ndarray, Ub: np.ndarray) -> np.ndarray:
    """The min(r_a, r_b) canonical correlations (descending, in [0, 1]) of two subspaces of
    R^n given by orthonormal bases Ua [n, r_a] and Ub [n, r_b]."""
    return np.clip(np.linalg.svd(Ua.T @ Ub, compute_uv=False), 0.0, 1.0)


def _nonconstant(svd: ThinSVD, name: str) -> ThinSVD:
    if svd.rank == 0:
        raise AnalysisError(f"measure {name!r} is undefined for a layer whose activations do not vary over the inputs")
    return svd


# ------------------------------------------------------------------------------- svcca


def _svcca_prepare(X: np.ndarray, opts: Options) -> np.ndarray:
    A = centre_columns(as_float64(X, "svcca"))
    if opts["standardize"]:
        sd = A.std(axis=0)
        A = A / np.where(sd > 0, sd, 1.0)
    svd = _nonconstant(thin_svd(A), "svcca")
    if opts["dims"] > 0:
        k = min(opts["dims"], svd.rank)
    else:
        share = np.cumsum(svd.s**2)
        share /= share[-1]
        # the smallest k whose leading k directions hold keep_variance of the variance
        k = int(np.searchsorted(share, opts["keep_variance"] * (1.0 - 1e-12))) + 1
        k = min(k, svd.rank)
    return svd.U[:, :k]


def _svcca_compare(a: np.ndarray, b: np.ndarray, opts: Options) -> float:
    return float(canonical_correlations(a, b).mean())


def _cca_pair_cost(n: int, p: int, q: int, opts: Options) -> float:
    rp, rq = min(n, p), min(n, q)
    return 2.0 * n * rp * rq + svd_flops(rp, rq)


SVCCA = register(
    Measure(
        name="svcca",
        family="cca",
        direction="similarity",
        definition=(
            "Centre the columns of X [n, p] and Y [n, q] (with standardize: also divide each column by its "
            "standard deviation). SVD step: keep the top k_x left singular vectors U_x of centred X, k_x the "
            "smallest number whose squared singular values hold keep_variance of the total (or k_x = "
            "min(dims, rank) when dims > 0); the same for Y. CCA step: the canonical correlations rho_i of "
            "span(U_x) and span(U_y) are the singular values of U_x^T U_y. "
            "svcca = (1 / min(k_x, k_y)) * sum_i rho_i, in [0, 1]. "
            "Differences: ReSi's svcca (google/svcca's tutorial code) chooses k with "
            "argmax(cumsum(s^2) / sum(s^2) >= 0.99 * sum(s^2)) + 1, comparing a normalised cumulative share "
            "with a scaled total, so it keeps one component whenever sum(s^2) > 1/0.99 (i.e. almost always) "
            "and returns the top canonical correlation of the first principal components; the paper's rule "
            "(99% of the variance) is followed here, dims=1 reproduces ReSi's result. platonic-representation's "
            "svcca standardises the columns, keeps dims=10 randomized-SVD directions and runs sklearn's "
            "iterative CCA: svcca(standardize=True, dims=10) is its exact counterpart."
        ),
        sensitive_to="the shared high-variance subspace, ignoring scale, rotation and any invertible map within it",
        reference=(
            "Raghu, Gilmer, Yosinski, Sohl-Dickstein 2017, SVCCA (NeurIPS). ReSi repsim/measures/cca.py svcca "
            f"({RESI_COMMIT}): equal to svcca(dims=1) to 1e-10 relative (ReSi's epsilon = 1e-10) over five "
            "random pairs each of 60x20/60x30, 60x80/60x50, 30x10/30x10 and 100x20/100x30, where ReSi keeps "
            "one component; on one 100x20/100x30 pair ReSi gives 0.435 and the default svcca 0.900. "
            f"platonic-rep metrics.py AlignmentMetrics.svcca ({PLATONIC_COMMIT}): svcca(standardize=True, "
            "dims=10) differs by up to 0.10 over 20 random 200x40/200x50 pairs because torch.svd_lowrank "
            "(q=10, niter=2) is a randomized approximation; with an exact SVD in its place and sklearn's CCA "
            "run to convergence the difference is 1e-10."
        ),
        prepare=_svcca_prepare,
        compare=_svcca_compare,
        prepare_cost=lambda n, d, opts: svd_flops(n, d) + 2.0 * n * d,
        compare_cost=_cca_pair_cost,
        options=(
            Option(
                "keep_variance",
                float,
                0.99,
                "share of the variance the kept SVD directions hold (paper: 0.99)",
                minimum=1e-6,
                maximum=1.0,
            ),
            Option(
                "dims",
                int,
                0,
                "keep exactly this many SVD directions instead (0: use keep_variance; platonic-representation uses 10)",
                minimum=0,
            ),
            Option(
                "standardize",
                bool,
                False,
                "divide each centred column by its standard deviation first (platonic-representation does)",
            ),
        ),
        min_rows=lambda opts: 2,
    )
)


# ------------------------------------------------------------------------------- pwcca


@dataclass(frozen=True)
class _PwccaStats:
    U: np.ndarray  # [n, r] orthonormal basis of centred X
    loadings: np.ndarray  # [r, p] = diag(s) Vt: the centred neurons x_j in the basis U


def _pwcca_prepare(X: np.ndarray, opts: Options) -> _PwccaStats:
    svd = _nonconstant(thin_svd(centre_columns(as_float64(X, "pwcca"))), "pwcca")
    return _PwccaStats(svd.U, svd.s[:, None] * svd.Vt)


def _pwcca_compare(a: _PwccaStats, b: _PwccaStats, opts: Options) -> float:
    A, rho, _ = np.linalg.svd(a.U.T @ b.U, full_matrices=False)
    c = rho.shape[0]
    rho = np.clip(rho, 0.0, 1.0)
    # <h_i, x_j> with h_i = U a_i the unit-norm canonical variates of X, x_j = U loadings[:, j]
    alpha = np.abs(A[:, :c].T @ a.loadings).sum(axis=1)
    return float(alpha @ rho / alpha.sum())


PWCCA = register(
    Measure(
        name="pwcca",
        family="cca",
        direction="similarity",
        definition=(
            "Centre the columns of X [n, p] and Y [n, q]. CCA: rho_i (i = 1..c, c = min(rank X, rank Y)) "
            "the canonical correlations, h_i [n] the unit-norm canonical variates of X (orthonormal). "
            "Projection weights from X (the first argument): alpha_i = sum_j |<h_i, x_j>| over the centred "
            "neurons x_j [n] of X. pwcca = sum_i alpha_i rho_i / sum_i alpha_i, in [0, 1]; asymmetric "
            "(pwcca(X, Y) weights by X). Differences from ReSi's pwcca (google/svcca's pwcca.py): it "
            "weights by whichever layer has fewer neurons (and with p > q indexes X by Y's neuron mask, "
            "which fails); its directions are coef_x (X_c)^T without the Sigma_xx^(-1/2) whitening, "
            "orthonormalised by QR, with the neuron means added back and the weights taken against "
            "uncentred neurons. Where X's centred columns are orthogonal with equal norms "
            "(Sigma_xx proportional to I) and p <= q the two agree; otherwise they differ."
        ),
        sensitive_to="how much of X's variance lies along directions that Y reproduces linearly",
        reference=(
            "Morcos, Raghu, Bengio 2018, Insights on representational similarity in neural networks with "
            f"canonical correlation (NeurIPS), eq. for rho_PW. ReSi repsim/measures/cca.py pwcca ({RESI_COMMIT}): "
            "agrees to 2e-15 when X has orthogonal centred columns of equal norm (five 100x20/100x30 pairs); "
            "over five random pairs each of 60x20/60x30, 30x10/30x10 and 100x20/100x30 it differs by up to "
            "0.044 (the missing whitening); ReSi fails for p > n (assert) and for p > q (IndexError)."
        ),
        prepare=_pwcca_prepare,
        compare=_pwcca_compare,
        prepare_cost=lambda n, d, opts: svd_flops(n, d) + 2.0 * n * d,
        compare_cost=lambda n, p, q, opts: _cca_pair_cost(n, p, q, opts) + 2.0 * min(n, p) ** 2 * p,
        min_rows=lambda opts: 2,
        symmetric=False,
    )
)
