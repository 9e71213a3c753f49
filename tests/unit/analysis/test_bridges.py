"""Linear bridges (actstore.analysis.bridges): every method against a direct float64
implementation of its METHODS.md formula, planted maps, GCV, the rank sweep, errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ortho_group

from actstore.analysis import AnalysisError
from actstore.analysis.bridges import (
    LinearBridge,
    bridge_rank_sweep,
    evaluate_bridge,
    gcv_path,
    mean_cosine,
    pooled_r2,
)


# ----------------------------------------------------------------- direct formulas
def direct_ridge(S, T, alpha):
    Sc, Tc = S - S.mean(0), T - T.mean(0)
    return np.linalg.solve(Sc.T @ Sc + alpha * np.eye(S.shape[1]), Sc.T @ Tc)


def direct_procrustes(S, T):
    Sc, Tc = S - S.mean(0), T - T.mean(0)
    U, _, Vt = np.linalg.svd(Sc.T @ Tc, full_matrices=False)
    return U @ Vt


def direct_low_rank(S, T, alpha, r):
    W = direct_ridge(S, T, alpha)
    F = (S - S.mean(0)) @ W
    _, _, Vt = np.linalg.svd(F, full_matrices=False)
    Vr = Vt[:r].T
    return W @ Vr @ Vr.T


def direct_gcv(S, T, alpha):
    """GCV with the explicit hat matrix (intercept adds one degree of freedom)."""
    n = len(S)
    Sc, Tc = S - S.mean(0), T - T.mean(0)
    H = Sc @ np.linalg.solve(Sc.T @ Sc + alpha * np.eye(S.shape[1]), Sc.T)
    sse = ((Tc - H @ Tc) ** 2).sum()
    df = np.trace(H) + 1
    return (sse / (n * T.shape[1])) / (1 - df / n) ** 2


def direct_r2(T, P, mu):
    return 1 - ((T - P) ** 2).sum() / ((T - mu) ** 2).sum()


def direct_cos(P, T):
    return np.mean([p @ t / (np.linalg.norm(p) * np.linalg.norm(t)) for p, t in zip(P, T)])


def data(rng, n=120, p=12, q=9, noise=0.5):
    S = rng.standard_normal((n, p)) + rng.standard_normal(p)
    T = S @ rng.standard_normal((p, q)) + noise * rng.standard_normal((n, q)) + 2.0
    return S, T


# ----------------------------------------------------------------- formulas
@pytest.mark.parametrize("shape", [(120, 12, 9), (30, 50, 7)])  # n >= p and n < p paths
def test_ridge_matches_closed_form(rng, shape):
    n, p, q = shape
    S, T = data(rng, n, p, q)
    b = LinearBridge("ridge", alpha=3.7).fit(S, T)
    np.testing.assert_allclose(b.W_, direct_ridge(S, T, 3.7), atol=1e-8)
    np.testing.assert_allclose(b.source_mean_, S.mean(0), atol=1e-12)
    np.testing.assert_allclose(b.target_mean_, T.mean(0), atol=1e-12)
    S2, T2 = data(rng, 40, p, q)
    P = (S2 - S.mean(0)) @ direct_ridge(S, T, 3.7) + T.mean(0)
    np.testing.assert_allclose(b.predict(S2), P, atol=1e-8)
    sc = b.evaluate(S2, T2)
    assert sc.r2 == pytest.approx(direct_r2(T2, P, T.mean(0)), abs=1e-6)
    assert sc.mean_cosine == pytest.approx(direct_cos(P, T2), abs=1e-6)
    assert b.score(S2, T2) == pytest.approx(sc.r2, abs=1e-12)


@pytest.mark.parametrize("pq", [(10, 6), (6, 10), (8, 8)])
def test_procrustes_matches_svd_and_is_semi_orthogonal(rng, pq):
    p, q = pq
    S, T = data(rng, 80, p, q)
    b = LinearBridge("procrustes").fit(S, T)
    np.testing.assert_allclose(b.W_, direct_procrustes(S, T), atol=1e-9)
    gram = b.W_.T @ b.W_ if p >= q else b.W_ @ b.W_.T
    np.testing.assert_allclose(gram, np.eye(min(p, q)), atol=1e-10)
    assert b.alpha_ is None


def test_planted_rotation_is_recovered_exactly(rng):
    Q = ortho_group.rvs(16, random_state=3)
    S = rng.standard_normal((200, 16)) + 1.0
    T = S @ Q + 5.0
    b = LinearBridge("procrustes").fit(S[:150], T[:150])
    np.testing.assert_allclose(b.W_, Q, atol=1e-10)
    assert b.score(S[150:], T[150:]) == pytest.approx(1.0, abs=1e-10)
    # p != q: semi-orthogonal planted maps are recovered exactly from isotropic (whitened)
    # sources, where S_c^T S_c = c I (otherwise the least-squares optimum is not the plant)
    X = rng.standard_normal((150, 16))
    U, _, Vt = np.linalg.svd(X - X.mean(0), full_matrices=False)
    Sw = 10 * U @ Vt + 1.0
    b2 = LinearBridge("procrustes").fit(Sw, Sw @ Q[:, :10])
    np.testing.assert_allclose(b2.W_, Q[:, :10], atol=1e-10)
    b3 = LinearBridge("procrustes").fit(Sw[:, :10], Sw[:, :10] @ Q[:10, :])
    np.testing.assert_allclose(b3.W_, Q[:10, :], atol=1e-10)


def test_low_rank_matches_direct(rng):
    S, T = data(rng, 100, 12, 9)
    for r in (1, 3, 9):
        b = LinearBridge("low_rank", rank=r, alpha=2.0).fit(S, T)
        np.testing.assert_allclose(b.W_, direct_low_rank(S, T, 2.0, r), atol=1e-8)
        assert np.linalg.matrix_rank(b.W_, tol=1e-8) == r
        assert b.rank_ == r


def test_gcv_scores_match_the_hat_matrix_formula(rng):
    S, T = data(rng, 60, 10, 5, noise=2.0)
    alphas = [0.01, 0.3, 4.0, 50.0, 900.0]
    path = gcv_path(S, T, alphas)
    for a, g in zip(alphas, path.scores):
        assert g == pytest.approx(direct_gcv(S, T, a), rel=1e-8)
    assert path.alpha == alphas[int(np.argmin([direct_gcv(S, T, a) for a in alphas]))]
    b = LinearBridge("ridge", alphas=alphas).fit(S, T)
    assert b.alpha_ == path.alpha and b.gcv_ == path
    np.testing.assert_allclose(b.W_, direct_ridge(S, T, path.alpha), atol=1e-8)


def test_gcv_alpha_within_one_grid_step_of_best_held_out(rng):
    n, p, q = 400, 60, 20
    grid = np.logspace(-2, 5, 29)
    for trial in range(3):
        r = np.random.default_rng(10 + trial)
        W = r.standard_normal((p, q)) * (r.random(p)[:, None] < 0.3)
        S = r.standard_normal((n + 4000, p))
        T = S @ W + 6.0 * r.standard_normal((n + 4000, q))
        path = gcv_path(S[:n], T[:n], grid)
        held = [LinearBridge("ridge", alpha=a).fit(S[:n], T[:n]).evaluate(S[n:], T[n:]).r2 for a in grid]
        best = int(np.argmax(held))
        assert abs(path.index - best) <= 1, (path.index, best)


def test_noise_free_map_recovered_by_ridge_at_small_alpha(rng):
    S = rng.standard_normal((300, 20))
    W = rng.standard_normal((20, 15))
    T = S @ W + 1.5
    b = LinearBridge("ridge", alpha=1e-6).fit(S[:200], T[:200])
    assert b.score(S[200:], T[200:]) > 0.999
    np.testing.assert_allclose(b.W_, W, atol=1e-5)


def test_lasso_matches_sklearn_per_target(rng):
    from sklearn.linear_model import Lasso

    S, T = data(rng, 150, 15, 6, noise=1.0)
    b = LinearBridge("lasso", alpha=0.2, lasso_tol=1e-10, lasso_max_iter=100000, n_jobs=2).fit(S, T)
    Sc, Tc = S - S.mean(0), T - T.mean(0)
    for k in range(T.shape[1]):
        ref = Lasso(alpha=0.2, fit_intercept=False, tol=1e-10, max_iter=100000).fit(Sc, Tc[:, k]).coef_
        np.testing.assert_allclose(b.W_[:, k], ref, atol=1e-6)
    # direct objective check: no coordinate can improve (KKT conditions)
    n = len(S)
    grad = Sc.T @ (Tc - Sc @ b.W_) / n
    nz = b.W_ != 0
    assert np.all(np.abs(grad[~nz]) <= 0.2 + 1e-6)
    np.testing.assert_allclose(grad[nz], 0.2 * np.sign(b.W_[nz]), atol=1e-6)
    assert (b.W_ == 0).any()
    default = LinearBridge("lasso").fit(S, T)
    assert default.alpha_ == pytest.approx(0.05 * np.abs(Sc.T @ Tc).max() / n)


def test_rank_sweep_equals_separate_fits_and_flattens_after_planted_rank(rng):
    n, p, q, r = 500, 30, 25, 4
    A = rng.standard_normal((p, r))
    Bm = rng.standard_normal((r, q))
    S = rng.standard_normal((n, p))
    T = S @ A @ Bm + 0.05 * rng.standard_normal((n, q))
    ranks = [1, 2, 3, 4, 6, 10, 25]
    sw = bridge_rank_sweep(S[:400], T[:400], S[400:], T[400:], ranks, alpha=1e-3)
    for k, rk in enumerate(ranks):
        f = evaluate_bridge(S[:400], T[:400], S[400:], T[400:], "low_rank", rank=rk, alpha=1e-3)
        assert sw.r2[k] == pytest.approx(f.r2, abs=1e-6)
        assert sw.mean_cosine[k] == pytest.approx(f.mean_cosine, abs=1e-6)
    full = evaluate_bridge(S[:400], T[:400], S[400:], T[400:], "ridge", alpha=1e-3)
    assert sw.ridge_r2 == pytest.approx(full.r2, abs=1e-9)
    r2 = np.array(sw.r2)
    assert np.all(np.diff(r2[:4]) > 0.02)  # rises until the planted rank
    assert r2[3] > 0.99
    assert np.all(np.abs(r2[3:] - r2[3]) < 1e-3)  # then flat
    gcv = bridge_rank_sweep(S[:400], T[:400], S[400:], T[400:], [2, 4])
    assert gcv.alpha == LinearBridge("ridge").fit(S[:400], T[:400]).alpha_


def test_inputs_are_not_modified_and_read_only_arrays_work(rng):
    S, T = data(rng, 50, 8, 5)
    S32, T32 = S.astype(np.float32), T.astype(np.float32)
    S32.flags.writeable = False
    T32.flags.writeable = False
    before = S32.copy()
    for m, kw in (("ridge", {}), ("procrustes", {}), ("low_rank", {"rank": 2}), ("lasso", {"alpha": 0.1})):
        LinearBridge(m, **kw).fit(S32, T32).predict(S32)
    np.testing.assert_array_equal(S32, before)


def test_helpers():
    T = np.array([[1.0, 2.0], [3.0, 5.0]])
    P = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert pooled_r2(T, P, np.array([0.0, 1.0])) == pytest.approx(direct_r2(T, P, np.array([0.0, 1.0])))
    assert mean_cosine(P, T) == pytest.approx((3 / (np.sqrt(2) * np.sqrt(5)) + 0) / 2)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: LinearBridge("cubic"), "method must be one of procrustes, ridge, low_rank, lasso"),
        (lambda: LinearBridge("ridge", alpha=0), "alpha must be a finite number > 0"),
        (lambda: LinearBridge("ridge", alpha=-1.0), "alpha must be a finite number > 0"),
        (lambda: LinearBridge("procrustes", alpha=1.0), "alpha does not apply to procrustes"),
        (lambda: LinearBridge("ridge", rank=2), "rank applies only to low_rank"),
        (lambda: LinearBridge("low_rank"), "low_rank needs a rank"),
        (lambda: LinearBridge("low_rank", rank=0), "rank must be >= 1"),
    ],
)
def test_constructor_errors(make, message):
    with pytest.raises(AnalysisError, match=message):
        make()


def test_fit_errors(rng):
    S, T = data(rng, 20, 5, 4)
    with pytest.raises(AnalysisError, match=r"rank must be <= 4"):
        LinearBridge("low_rank", rank=5).fit(S, T)
    with pytest.raises(AnalysisError, match="row counts differ"):
        LinearBridge().fit(S, T[:10])
    bad = S.copy()
    bad[3, 1] = np.nan
    with pytest.raises(AnalysisError, match="non-finite value"):
        LinearBridge().fit(bad, T)
    with pytest.raises(AnalysisError, match="at least 3 are needed"):
        LinearBridge().fit(S[:2], T[:2])
    with pytest.raises(AnalysisError, match="not fitted yet"):
        LinearBridge().predict(S)
    b = LinearBridge(alpha=1.0).fit(S, T)
    with pytest.raises(AnalysisError, match="fitted on source width p = 5"):
        b.predict(S[:, :3])
    with pytest.raises(AnalysisError, match="ranks must not repeat"):
        bridge_rank_sweep(S, T, S, T, [2, 2])
    with pytest.raises(AnalysisError, match="every alpha of the grid must be a finite number > 0"):
        gcv_path(S, T, [1.0, -2.0])
    with pytest.raises(AnalysisError, match="SST = 0"):
        b.evaluate(S[:1], b.target_mean_[None, :])


# ----------------------------------------------------------------- precision
@pytest.mark.parametrize(
    "method,kw", [("ridge", {"alpha": 3.7}), ("procrustes", {}), ("low_rank", {"alpha": 3.7, "rank": 4}), ("ridge", {})]
)
def test_float32_precision_agrees_with_float64_and_the_direct_formula(rng, method, kw):
    S, T = data(rng, 200, 12, 9)
    S2, T2 = data(rng, 60, 12, 9)
    f64 = LinearBridge(method, precision="float64", **kw).fit(S, T)
    f32 = LinearBridge(method, precision="float32", **kw).fit(S, T)
    auto = LinearBridge(method, **kw).fit(S, T)
    np.testing.assert_array_equal(auto.W_, f64.W_)  # "auto" is float64 for bridges
    assert f32.W_.dtype == np.float64 and f32.predict(S2).dtype == np.float64
    if method == "ridge" and "alpha" in kw:
        np.testing.assert_allclose(f64.W_, direct_ridge(S, T, 3.7), atol=1e-8)
    np.testing.assert_allclose(f32.W_, f64.W_, rtol=0, atol=2e-3 * np.abs(f64.W_).max())
    assert f32.score(S2, T2) == pytest.approx(f64.score(S2, T2), abs=1e-4)


def test_float32_rank_sweep_agrees_with_float64(rng):
    S, T = data(rng, 200, 12, 9)
    S2, T2 = data(rng, 60, 12, 9)
    a = bridge_rank_sweep(S, T, S2, T2, [1, 3, 9], alpha=2.0, precision="float32")
    b = bridge_rank_sweep(S, T, S2, T2, [1, 3, 9], alpha=2.0, precision="float64")
    np.testing.assert_allclose(a.r2, b.r2, atol=1e-4)
    np.testing.assert_allclose(a.mean_cosine, b.mean_cosine, atol=1e-4)


def test_bad_precision_is_refused(rng):
    with pytest.raises(AnalysisError, match=r"^precision must be one of auto, float32, float64, got 'half'$"):
        LinearBridge("ridge", precision="half")
