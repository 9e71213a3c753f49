"""Linear bridges: maps from source activations S [n, p] to target activations T [n, q].

Definitions are METHODS.md's ("Linear bridges"). Every method centres S and T with the
training means, which are stored with the map; predictions are
``(S - source_mean_) @ W_ + target_mean_``.

* ``procrustes``: W with orthonormal columns (p >= q) or rows (p < q) minimising
  ||S_c W - T_c||_F: SVD of S_c^T T_c = U Sigma V^T, W = U V^T (thin). With ``scale=True``:
  W = s U V^T, s = tr(Sigma) / ||S_c||_F^2, the isotropic scale minimising the same error.
* ``ridge``: W = (S_c^T S_c + alpha I)^-1 S_c^T T_c, one alpha shared by every target
  dimension. Without ``alpha`` it is chosen by generalized cross-validation (GCV) over a log
  grid, from one spectral decomposition of S_c (see :class:`GcvPath`).
* ``low_rank``: reduced-rank ridge: fit ridge (alpha given or by GCV), take the top-r right
  singular vectors V_r of the fitted values S_c W, W_r = W V_r V_r^T.
* ``lasso``: per target dimension, minimise (1 / (2 n)) ||t_k - S_c w_k||^2 + alpha ||w_k||_1
  (scikit-learn's Lasso objective and units), solved by scikit-learn's coordinate descent on
  a Gram matrix computed once, target dimensions in parallel threads.

How ridge is computed: S_c = U diag(s) V^T is never formed. When n >= p the eigenvectors V
of the p x p Gram matrix S_c^T S_c give it (cost 2 n p^2 + O(p^3)); when n < p those of the
n x n matrix S_c S_c^T do. With R = U^T T_c (r x q), W(alpha) = V diag(s / (s^2 + alpha)) R,
and every alpha of a grid costs O(r q) (for W) or O(r) (for its GCV score). Directions with
s^2 <= max(s^2) * max(n, p) * eps are treated as exactly zero (eps of the working dtype).

Precision: linear algebra runs through torch (on CUDA when ``device`` resolves to it) in
float64 by default (``precision="auto"`` or ``"float64"``): ridge works on the Gram matrix,
whose condition number is the square of S_c's, so float32 loses directions that float64
keeps. ``precision="float32"`` halves memory and is several times faster on GPUs; on
unit-scale, well-conditioned data its r2 agrees with float64 to ~1e-4 (tests check it).
Maps, predictions and scores are returned as float64 either way.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from . import validation as V
from .devices import from_numpy, resolve_device
from .errors import AnalysisError
from .results import BridgeFit, BridgeRankSweep

__all__ = [
    "BRIDGE_METHODS",
    "BridgeFit",
    "BridgeRankSweep",
    "BridgeScore",
    "GcvPath",
    "LinearBridge",
    "LowRankFamily",
    "bridge_dtype",
    "bridge_rank_sweep",
    "check_method",
    "default_alpha_grid",
    "evaluate_bridge",
    "gcv_path",
    "mean_cosine",
    "pooled_r2",
]

BRIDGE_METHODS = ("procrustes", "ridge", "low_rank", "lasso")
DEFAULT_GRID_DECADES = (-6.0, 3.0)  # relative to the mean eigenvalue of S_c^T S_c
DEFAULT_GRID_SIZE = 19
DEFAULT_LASSO_FRACTION = 0.05  # default lasso alpha as a fraction of alpha_max


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class BridgeScore:
    """Held-out scores of a bridge on n prompts.

    ``r2`` = 1 - SSE / SST pooled over all target dimensions, SST taken around the *training*
    mean of the target (so predicting the training mean scores about 0; it can be negative).
    ``mean_cosine`` = mean over prompts of cosine(predicted row, true row), on the raw
    (uncentred) vectors; a row with zero norm on either side counts as cosine 0.
    """

    r2: float
    mean_cosine: float
    n: int


@dataclass(frozen=True)
class GcvPath:
    """Generalized cross-validation of ridge over a grid of alphas.

    For alpha, with h_k = s_k^2 / (s_k^2 + alpha) the shrinkage of singular direction k:
      SSE(alpha) = ||T_c - S_c W(alpha)||_F^2,   df(alpha) = sum_k h_k + 1 (the +1 is the intercept),
      GCV(alpha) = (SSE / (n q)) / (1 - df / n)^2    (infinite when df >= n).
    ``alpha`` is the grid value with the smallest GCV (the first one on ties).
    """

    alphas: tuple[float, ...]
    scores: tuple[float, ...]
    alpha: float
    index: int


# --------------------------------------------------------------------------- checks
def check_method(method: object) -> str:
    """The bridge method as one of BRIDGE_METHODS (an enum's ``value`` is accepted, any case)."""
    m = str(getattr(method, "value", method)).lower() if method is not None else ""
    if m not in BRIDGE_METHODS:
        raise AnalysisError(f"method must be one of {', '.join(BRIDGE_METHODS)}, got {method!r}")
    return m


def _check_pair(
    S: object, T: object, *, min_rows: int, names: tuple[str, str] = ("S", "T")
) -> tuple[np.ndarray, np.ndarray]:
    s = V.activations(S, names[0], min_rows=min_rows)
    t = V.activations(T, names[1], min_rows=min_rows)
    V.check_same_rows([s, t], list(names))
    return s, t


def _t(a: np.ndarray, device: torch.device, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return from_numpy(a).to(device=device, dtype=dtype)


def bridge_dtype(precision: object) -> torch.dtype:
    """The working dtype of a bridge for ``precision`` "auto" | "float32" | "float64" ("auto" is
    float64: see the module doc)."""
    if precision not in ("auto", "float32", "float64"):
        raise AnalysisError(f"precision must be one of auto, float32, float64, got {precision!r}")
    return torch.float32 if precision == "float32" else torch.float64


def default_alpha_grid(S_c_sq_norm: float, p: int, size: int = DEFAULT_GRID_SIZE) -> np.ndarray:
    """The default ridge grid: ``size`` alphas log-spaced over 10^-6 .. 10^3 times the mean
    eigenvalue of S_c^T S_c (= ||S_c||_F^2 / p), so the grid follows the scale of the data."""
    scale = S_c_sq_norm / max(p, 1)
    if not scale > 0:
        scale = 1.0
    return scale * np.logspace(DEFAULT_GRID_DECADES[0], DEFAULT_GRID_DECADES[1], size)


# --------------------------------------------------------------------------- ridge core
class _Spectral:
    """S_c = U diag(s) V^T (never formed) and R = U^T T_c, from one eigendecomposition."""

    def __init__(self, Sc: torch.Tensor, Tc: torch.Tensor):
        n, p = Sc.shape
        self.n, self.p, self.q = n, p, Tc.shape[1]
        eps = torch.finfo(Sc.dtype).eps
        if n >= p:
            G = Sc.T @ Sc
            evals, vecs = torch.linalg.eigh(G)
            keep = evals > evals.max().clamp(min=0) * max(n, p) * eps
            evals, vecs = evals[keep].flip(0), vecs[:, keep].flip(1)
            s = evals.sqrt()
            B = vecs.T @ (Sc.T @ Tc)  # V^T S^T T = diag(s) U^T T
            self.V = vecs
            self.R = B / s[:, None]
        else:
            K = Sc @ Sc.T
            evals, U = torch.linalg.eigh(K)
            keep = evals > evals.max().clamp(min=0) * max(n, p) * eps
            evals, U = evals[keep].flip(0), U[:, keep].flip(1)
            s = evals.sqrt()
            self.V = (Sc.T @ U) / s[None, :]
            self.R = U.T @ Tc
        self.s = s
        self.sig2 = evals
        self.c = (self.R**2).sum(1)  # ||R_k||^2
        self.total = float((Tc**2).sum())

    def weights(self, alpha: float) -> torch.Tensor:
        W: torch.Tensor = self.V @ ((self.s / (self.sig2 + alpha))[:, None] * self.R)
        return W

    def gcv(self, alpha: float) -> float:
        h = self.sig2 / (self.sig2 + alpha)
        sse = self.total - float(self.c.sum()) + float((((1 - h) ** 2) * self.c).sum())
        sse = max(sse, 0.0)
        df = float(h.sum()) + 1.0
        if df >= self.n:
            return math.inf
        return (sse / (self.n * self.q)) / (1.0 - df / self.n) ** 2

    def fitted_right_vectors(self, alpha: float) -> torch.Tensor:
        """Right singular vectors of the fitted values S_c W (rows, descending), [m, q]."""
        h = self.sig2 / (self.sig2 + alpha)
        # S_c W = U diag(h) R with U orthonormal, so its right singular vectors are diag(h) R's.
        Vh: torch.Tensor
        _, _, Vh = torch.linalg.svd(h[:, None] * self.R, full_matrices=False)
        return Vh


def gcv_path(
    S: np.ndarray,
    T: np.ndarray,
    alphas: Sequence[float] | None = None,
    *,
    device: str = "auto",
    precision: str = "auto",
) -> GcvPath:
    """GCV score of ridge from S [n, p] to T [n, q] at every alpha (see :class:`GcvPath`).

    ``alphas`` defaults to :func:`default_alpha_grid`. Needs n >= 3.
    """
    s, t = _check_pair(S, T, min_rows=3)
    dev, dt = resolve_device(device), bridge_dtype(precision)
    St, Tt = _t(s, dev, dt), _t(t, dev, dt)
    Sc, Tc = St - St.mean(0), Tt - Tt.mean(0)
    spec = _Spectral(Sc, Tc)
    grid = _grid(alphas, float((Sc**2).sum()), s.shape[1])
    return _gcv_from(spec, grid)


def _grid(alphas: Sequence[float] | None, sq_norm: float, p: int) -> np.ndarray:
    if alphas is None:
        return default_alpha_grid(sq_norm, p)
    if isinstance(alphas, (str, bytes)) or not hasattr(alphas, "__len__") or len(alphas) == 0:
        raise AnalysisError(f"alphas must be a non-empty sequence of positive numbers, got {alphas!r}")
    return np.array([V.check_positive(a, "every alpha of the grid") for a in alphas], dtype=np.float64)


def _gcv_from(spec: _Spectral, grid: np.ndarray) -> GcvPath:
    scores = [spec.gcv(float(a)) for a in grid]
    if not any(math.isfinite(x) for x in scores):
        raise AnalysisError(
            f"GCV is undefined for every alpha of the grid: with n = {spec.n} prompts the ridge fits "
            "use all degrees of freedom; give alpha explicitly or use more prompts"
        )
    i = int(np.argmin(np.where(np.isfinite(scores), scores, np.inf)))
    return GcvPath(tuple(float(a) for a in grid), tuple(float(x) for x in scores), float(grid[i]), i)


# --------------------------------------------------------------------------- the bridge
class LinearBridge:
    """A linear map from source activations [n, p] to target activations [n, q].

    scikit-learn style: ``fit(S, T)`` returns self; ``predict(S)`` gives float64 [m, q];
    ``score(S, T)`` the pooled held-out r2 (METHODS.md); ``evaluate(S, T)`` a
    :class:`BridgeScore` with r2 and mean cosine.

    Args:
        method: "procrustes" | "ridge" | "low_rank" | "lasso".
        alpha: ridge / low_rank penalty (sum-of-squares units: W = (S^T S + alpha I)^-1 S^T T);
            None chooses it by GCV over ``alphas``. For lasso the L1 weight in scikit-learn's
            units (objective (1/2n)||t - S w||^2 + alpha ||w||_1); None means
            ``0.05 * alpha_max``, alpha_max = max_jk |S_c^T T_c|_jk / n being the smallest
            alpha whose map is all zeros. Not allowed for procrustes.
        scale: procrustes only: also fit the isotropic scale s (``scale_``).
        rank: the rank r of low_rank (1 <= r <= min(p, q)); only for low_rank.
        alphas: the GCV grid (default :func:`default_alpha_grid`).
        device: "auto" | "cpu" | "cuda" for the linear algebra (lasso always runs on CPU).
        precision: "auto" (= float64) | "float32" | "float64": the working dtype (module doc).
        lasso_tol, lasso_max_iter: passed to scikit-learn's Lasso (tol, max_iter).
        n_jobs: threads for lasso (default: the CPU count).

    Fitted attributes: ``W_`` [p, q] float64, ``source_mean_`` [p], ``target_mean_`` [q],
    ``alpha_`` (None for procrustes), ``scale_`` (procrustes with scale, else None), ``rank_``
    (low_rank only), ``gcv_`` (a GcvPath when alpha was chosen by GCV), ``n_train_``,
    ``lasso_n_iter_`` (lasso: max iterations used).
    """

    def __init__(
        self,
        method: str = "ridge",
        *,
        alpha: float | None = None,
        rank: int | None = None,
        alphas: Sequence[float] | None = None,
        device: str = "auto",
        lasso_tol: float = 1e-4,
        lasso_max_iter: int = 1000,
        n_jobs: int | None = None,
        scale: bool = False,
        precision: str = "auto",
    ):
        self.method = check_method(method)
        self.dtype = bridge_dtype(precision)
        self.precision = precision
        if not isinstance(scale, (bool, np.bool_)):
            raise AnalysisError(f"scale must be True or False, got {scale!r}")
        if scale and self.method != "procrustes":
            raise AnalysisError(f"scale applies only to procrustes, not to {self.method}; leave it unset")
        self.scale = bool(scale)
        if alpha is not None:
            alpha = V.check_positive(alpha, "alpha")
            if self.method == "procrustes":
                raise AnalysisError(
                    "alpha does not apply to procrustes (an orthogonal map has no penalty); leave it unset"
                )
        if rank is not None and self.method != "low_rank":
            raise AnalysisError(f"rank applies only to low_rank, not to {self.method}; leave it unset")
        if self.method == "low_rank":
            if rank is None:
                raise AnalysisError("low_rank needs a rank (an integer >= 1)")
            V.check_int(rank, "rank", minimum=1)
        self.alpha = alpha
        self.rank = None if rank is None else int(rank)
        self.alphas = alphas
        self.device = device
        self.lasso_tol = float(lasso_tol)
        self.lasso_max_iter = int(lasso_max_iter)
        self.n_jobs = n_jobs

    def __repr__(self) -> str:
        return f"LinearBridge(method={self.method!r}, alpha={self.alpha!r}, rank={self.rank!r})"

    # ------------------------------------------------------------------ fit
    def fit(self, S: np.ndarray, T: np.ndarray) -> LinearBridge:
        """Fit on S [n, p] and T [n, q] (same prompts, same order). Returns self."""
        min_rows = 3 if self.method in ("ridge", "low_rank") and self.alpha is None else 2
        s, t = _check_pair(S, T, min_rows=min_rows)
        n, p = s.shape
        q = t.shape[1]
        if self.method == "low_rank":
            V.check_rank(self.rank, p, q)
        dev = resolve_device(self.device) if self.method != "lasso" else torch.device("cpu")
        St, Tt = _t(s, dev, self.dtype), _t(t, dev, self.dtype)
        mu_s, mu_t = St.mean(0), Tt.mean(0)
        Sc, Tc = St - mu_s, Tt - mu_t
        self.source_mean_ = mu_s.cpu().double().numpy()
        self.target_mean_ = mu_t.cpu().double().numpy()
        self.n_train_ = n
        self.gcv_ = None
        self.rank_ = None
        self.scale_ = None
        if self.method == "procrustes":
            U, sig, Vh = torch.linalg.svd(Sc.T @ Tc, full_matrices=False)
            W = U @ Vh
            self.alpha_ = None
            if self.scale:
                sq = float((Sc**2).sum())
                if not sq > 0:
                    raise AnalysisError(
                        "procrustes with scale: the training source rows are all equal "
                        "(||S_c||_F = 0), so no scale is defined"
                    )
                self.scale_ = float(sig.sum()) / sq
                W = W * self.scale_
        elif self.method == "lasso":
            W = torch.from_numpy(self._fit_lasso(Sc.numpy(), Tc.numpy()))
        else:
            spec = _Spectral(Sc, Tc)
            if self.alpha is None:
                self.gcv_ = _gcv_from(spec, _grid(self.alphas, float((Sc**2).sum()), p))
                alpha = self.gcv_.alpha
            else:
                alpha = self.alpha
            self.alpha_ = float(alpha)
            W = spec.weights(alpha)
            if self.method == "low_rank":
                Vh = spec.fitted_right_vectors(alpha)[: self.rank]
                W = (W @ Vh.T) @ Vh
                self.rank_ = self.rank
        self.W_ = W.cpu().double().numpy()
        return self

    def _fit_lasso(self, Sc: np.ndarray, Tc: np.ndarray) -> np.ndarray:
        from sklearn.linear_model import Lasso

        n, p = Sc.shape
        q = Tc.shape[1]
        G = Sc.T @ Sc
        C = Sc.T @ Tc
        alpha_max = float(np.abs(C).max()) / n
        if self.alpha is None:
            if alpha_max <= 0:
                raise AnalysisError(
                    "lasso: S and T are uncorrelated (S_c^T T_c = 0), so every alpha gives the zero map"
                )
            alpha = DEFAULT_LASSO_FRACTION * alpha_max
        else:
            alpha = self.alpha
        self.alpha_ = float(alpha)
        jobs = self.n_jobs or os.cpu_count() or 1
        chunks = [c for c in np.array_split(np.arange(q), min(q, 4 * jobs)) if len(c)]
        W = np.zeros((p, q))
        iters = [0]
        Sf = np.asfortranarray(Sc)

        def solve(cols: np.ndarray) -> None:
            model = Lasso(
                alpha=alpha,
                fit_intercept=False,
                precompute=G,
                copy_X=False,
                max_iter=self.lasso_max_iter,
                tol=self.lasso_tol,
            )
            model.fit(Sf, np.asfortranarray(Tc[:, cols]))  # coordinate descent on the shared Gram
            coef = np.atleast_2d(model.coef_)
            W[:, cols] = coef.T
            it = np.max(np.atleast_1d(model.n_iter_))
            iters[0] = max(iters[0], int(it))

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(solve, chunks))
        self.lasso_n_iter_ = iters[0]
        self.lasso_alpha_max_ = alpha_max
        return W

    # ------------------------------------------------------------------ use
    def _check_fitted(self) -> None:
        if not hasattr(self, "W_"):
            raise AnalysisError("this bridge is not fitted yet; call fit(S, T) first")

    def predict(self, S: np.ndarray) -> np.ndarray:
        """Predicted target activations float64 [m, q] for source activations S [m, p]."""
        self._check_fitted()
        s = V.activations(S, "S")
        if s.shape[1] != self.W_.shape[0]:
            raise AnalysisError(
                f"S has {s.shape[1]} columns but the bridge was fitted on source width p = {self.W_.shape[0]}"
            )
        predicted: np.ndarray = (np.asarray(s, dtype=np.float64) - self.source_mean_) @ self.W_ + self.target_mean_
        return predicted

    def evaluate(self, S: np.ndarray, T: np.ndarray) -> BridgeScore:
        """Held-out r2 (pooled, SST around the training target mean) and mean cosine."""
        self._check_fitted()
        s, t = _check_pair(S, T, min_rows=1)
        if t.shape[1] != self.W_.shape[1]:
            raise AnalysisError(
                f"T has {t.shape[1]} columns but the bridge was fitted on target width q = {self.W_.shape[1]}"
            )
        P = self.predict(s)
        tt = np.asarray(t, dtype=np.float64)
        return BridgeScore(pooled_r2(tt, P, self.target_mean_), mean_cosine(P, tt), len(tt))

    def score(self, S: np.ndarray, T: np.ndarray) -> float:
        """Held-out r2, pooled over target dimensions (SST around the training target mean)."""
        return self.evaluate(S, T).r2


def pooled_r2(T: np.ndarray, P: np.ndarray, train_mean: np.ndarray) -> float:
    """1 - sum((T - P)^2) / sum((T - train_mean)^2) over all cells (float64)."""
    T = np.asarray(T, dtype=np.float64)
    sst = float(((T - train_mean) ** 2).sum())
    if sst <= 0:
        raise AnalysisError("r2 is undefined: every held-out target row equals the training mean (SST = 0)")
    return 1.0 - float(((T - P) ** 2).sum()) / sst


def mean_cosine(P: np.ndarray, T: np.ndarray) -> float:
    """Mean over rows of cosine(P_i, T_i); a zero-norm row counts as 0."""
    P = np.asarray(P, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    num = (P * T).sum(1)
    den = np.linalg.norm(P, axis=1) * np.linalg.norm(T, axis=1)
    cos = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return float(cos.mean())


def evaluate_bridge(
    S_train: np.ndarray,
    T_train: np.ndarray,
    S_test: np.ndarray,
    T_test: np.ndarray,
    method: str = "ridge",
    *,
    alpha: float | None = None,
    rank: int | None = None,
    alphas: Sequence[float] | None = None,
    device: str = "auto",
    scale: bool = False,
    precision: str = "auto",
) -> BridgeFit:
    """Fit a bridge on the training rows and score it on the test rows (see LinearBridge)."""
    s_tr, t_tr = _check_pair(S_train, T_train, min_rows=2, names=("S_train", "T_train"))
    s_te, t_te = _check_pair(S_test, T_test, min_rows=1, names=("S_test", "T_test"))
    if s_te.shape[1] != s_tr.shape[1] or t_te.shape[1] != t_tr.shape[1]:
        raise AnalysisError(
            f"train and test widths differ: S {s_tr.shape[1]} vs {s_te.shape[1]}, T {t_tr.shape[1]} vs {t_te.shape[1]}"
        )
    b = LinearBridge(
        method, alpha=alpha, rank=rank, alphas=alphas, device=device, scale=scale, precision=precision
    ).fit(s_tr, t_tr)
    sc = b.evaluate(s_te, t_te)
    return BridgeFit(b.method, b.rank_, b.alpha_, len(s_tr), len(s_te), sc.r2, sc.mean_cosine, b.scale_)


# --------------------------------------------------------------------------- rank sweep
class LowRankFamily:
    """One ridge fit and one SVD of its fitted values; W_r for any rank is then cheap.

    ``project(S)`` returns A = (S - mu_S) W Vh^T [m, k]; the rank-r prediction (centred) is
    A[:, :r] Vh[:r].
    """

    def __init__(
        self,
        S: np.ndarray,
        T: np.ndarray,
        alpha: float | None,
        alphas: Sequence[float] | None,
        device: str,
        precision: str = "auto",
    ):
        dev = resolve_device(device)
        self.dtype = bridge_dtype(precision)
        St, Tt = _t(S, dev, self.dtype), _t(T, dev, self.dtype)
        self.dev = dev
        self.mu_s, self.mu_t = St.mean(0), Tt.mean(0)
        Sc, Tc = St - self.mu_s, Tt - self.mu_t
        spec = _Spectral(Sc, Tc)
        self.gcv = None
        if alpha is None:
            self.gcv = _gcv_from(spec, _grid(alphas, float((Sc**2).sum()), S.shape[1]))
            alpha = self.gcv.alpha
        self.alpha = float(alpha)
        self.W = spec.weights(self.alpha)
        self.Vh = spec.fitted_right_vectors(self.alpha)
        self.max_rank = min(S.shape[1], T.shape[1])

    def centred_source(self, S: np.ndarray) -> torch.Tensor:
        return _t(np.asarray(S), self.dev, self.dtype) - self.mu_s

    def predict_rank(self, A: torch.Tensor, r: int) -> np.ndarray:
        """Uncentred rank-r predictions from A = S_c W Vh^T."""
        k = min(r, self.Vh.shape[0])
        return (A[:, :k] @ self.Vh[:k] + self.mu_t).cpu().double().numpy()

    def predict_full(self, Sc: torch.Tensor) -> np.ndarray:
        return (Sc @ self.W + self.mu_t).cpu().double().numpy()


def bridge_rank_sweep(
    S_train: np.ndarray,
    T_train: np.ndarray,
    S_test: np.ndarray,
    T_test: np.ndarray,
    ranks: Sequence[int],
    *,
    alpha: float | None = None,
    alphas: Sequence[float] | None = None,
    device: str = "auto",
    precision: str = "auto",
) -> BridgeRankSweep:
    """Held-out r2 and mean cosine of reduced-rank ridge at every rank in ``ranks``.

    Shares all work across ranks: one ridge fit (GCV or ``alpha``), one SVD of its fitted
    values, one projection of the test rows; each rank then costs O(n_test q) through
    running sums over the orthonormal directions. Equal to fitting ``LinearBridge("low_rank",
    rank=r)`` separately for each r (the tests check it).
    """
    s_tr, t_tr = _check_pair(S_train, T_train, min_rows=3 if alpha is None else 2, names=("S_train", "T_train"))
    s_te, t_te = _check_pair(S_test, T_test, min_rows=1, names=("S_test", "T_test"))
    if s_te.shape[1] != s_tr.shape[1] or t_te.shape[1] != t_tr.shape[1]:
        raise AnalysisError(
            f"train and test widths differ: S {s_tr.shape[1]} vs {s_te.shape[1]}, T {t_tr.shape[1]} vs {t_te.shape[1]}"
        )
    if alpha is not None:
        alpha = V.check_positive(alpha, "alpha")
    rk = V.check_ranks(ranks, s_tr.shape[1], t_tr.shape[1])
    fam = LowRankFamily(s_tr, t_tr, alpha, alphas, device, precision)
    Sc = fam.centred_source(s_te)
    Tt = _t(t_te, fam.dev, fam.dtype)
    A = (Sc @ fam.W) @ fam.Vh.T  # [m, k]: coordinates of the full prediction on Vh
    Bt = Tt @ fam.Vh.T  # true rows on the same directions
    Tc = Tt - fam.mu_t
    sst = float((Tc**2).sum())
    if sst <= 0:
        raise AnalysisError("r2 is undefined: every held-out target row equals the training mean (SST = 0)")
    mu_proj = fam.Vh @ fam.mu_t  # [k]
    # Running sums over directions k (orthonormal rows of Vh):
    # SSE_r = ||Tc||^2 - 2 sum_{k<r} <Tc Vh_k, A_k> + sum_{k<r} ||A_k||^2
    cross = ((Tc @ fam.Vh.T) * A).sum(0).cumsum(0)
    sq = (A**2).sum(0).cumsum(0)
    # cosine: <T_i, P_i> = <T_i, mu> + sum_{k<r} Bt_ik A_ik; |P_i|^2 = |mu|^2 + 2 sum A_ik mu_k' + sum A_ik^2
    dot_c = (Bt * A).cumsum(1)
    pn_c = (2 * A * mu_proj[None, :] + A**2).cumsum(1)
    t_mu = Tt @ fam.mu_t
    mu2 = float(fam.mu_t @ fam.mu_t)
    tn = Tt.norm(dim=1)
    r2s, coss = [], []
    for r in rk:
        k = min(r, A.shape[1]) - 1
        sse = sst - 2 * float(cross[k]) + float(sq[k])
        r2s.append(1.0 - max(sse, 0.0) / sst)
        num = t_mu + dot_c[:, k]
        den = (mu2 + pn_c[:, k]).clamp(min=0).sqrt() * tn
        cos = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))
        coss.append(float(cos.mean()))
    P = fam.predict_full(Sc)
    return BridgeRankSweep(
        tuple(rk),
        tuple(r2s),
        tuple(coss),
        pooled_r2(t_te, P, fam.mu_t.cpu().double().numpy()),
        mean_cosine(P, t_te),
        fam.alpha,
        len(s_tr),
        len(s_te),
    )
