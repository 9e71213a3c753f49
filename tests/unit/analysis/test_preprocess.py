"""Preprocessing (actstore.analysis.preprocess) and Procrustes with isotropic scaling, against
direct float64 implementations of METHODS.md's formulas."""

from __future__ import annotations

import numpy as np
import pytest

from actstore.analysis import AnalysisError, linear_cka
from actstore.analysis.bridges import LinearBridge, evaluate_bridge
from actstore.analysis.preprocess import fit_preprocess, preprocess
from tests.reference import direct_debiased_cka

# ----------------------------------------------------------------- direct formulas


def direct_biased_cka(X, Y):
    X, Y = X - X.mean(0), Y - Y.mean(0)
    return np.linalg.norm(Y.T @ X) ** 2 / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y))


def zscore(X):
    return (X - X.mean(0)) / X.std(0)


def massive(seed=0, n=40, d=12, col=7, factor=30.0):
    """Gaussian rows with one planted massive-activation column."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) + 0.5
    X[:, col] = X[:, col] * factor + 100.0
    return X


# ----------------------------------------------------------------- standardize
@pytest.mark.parametrize("debiased", [True, False])
def test_cka_after_standardize_equals_cka_of_hand_zscored_rows(debiased):
    X, Y = massive(1), massive(2, d=9, col=2)
    Xs, dx = preprocess(X, "standardize")
    Ys, dy = preprocess(Y, "standardize")
    assert (dx, dy) == ((), ())
    np.testing.assert_allclose(Xs, zscore(X), rtol=0, atol=1e-12)
    direct = direct_debiased_cka if debiased else direct_biased_cka
    assert linear_cka(Xs, Ys, debiased=debiased) == pytest.approx(direct(zscore(X), zscore(Y)), abs=1e-6)
    # the planted column dominated raw CKA; standardizing changes the answer
    assert abs(direct(X, Y) - direct(zscore(X), zscore(Y))) > 0.01


def test_standardize_drops_and_counts_constant_columns():
    X = massive(3)
    X[:, 4] = 2.5
    Xs, dropped = preprocess(X, "standardize")
    assert dropped == (4,)
    np.testing.assert_allclose(Xs, zscore(np.delete(X, 4, axis=1)), atol=1e-12)


def test_standardize_fitted_on_train_is_applied_to_test_with_train_statistics():
    X = massive(4)
    tr, te = X[:30], X[30:]
    p = fit_preprocess(tr, "standardize")
    np.testing.assert_allclose(p.apply(te), (te - tr.mean(0)) / tr.std(0), atol=1e-12)


# ----------------------------------------------------------------- outlier dims
def test_drop_outlier_dims_drops_exactly_the_planted_massive_dimension():
    X = massive(5)
    X[:, 3] *= 3.0  # a larger but ordinary dimension: share about 9 / 920, kept
    Xd, dropped = preprocess(X, "drop_outlier_dims")
    assert dropped == (7,)
    np.testing.assert_array_equal(Xd, np.delete(X, 7, axis=1))
    Y = massive(6, d=9, col=2)
    Yd, dy = preprocess(Y, "drop_outlier_dims", threshold=0.5)
    assert dy == (2,)
    assert linear_cka(Xd, Yd) == pytest.approx(
        direct_debiased_cka(np.delete(X, 7, axis=1), np.delete(Y, 2, axis=1)), abs=1e-6
    )


def test_drop_outlier_dims_keeps_everything_without_an_outlier():
    X = np.random.default_rng(7).standard_normal((400, 40))  # each share about 1/40 < 0.05
    assert preprocess(X, "drop_outlier_dims")[1] == ()


def test_preprocess_errors_name_the_value_and_the_choices():
    X = massive(8)
    with pytest.raises(
        AnalysisError,
        match=r"preprocess must be one of none, standardize, drop_outlier_dims, platonic, "
        r"got 'zscore'",
    ):
        preprocess(X, "zscore")
    with pytest.raises(AnalysisError, match=r"outlier threshold must be a number strictly between 0 and 1, got 1.5"):
        preprocess(X, "drop_outlier_dims", threshold=1.5)
    with pytest.raises(AnalysisError, match=r"drop_outlier_dims would drop every one of the 1 columns of X"):
        preprocess(X[:, :1], "drop_outlier_dims")
    with pytest.raises(AnalysisError, match=r"X is constant over its 5 rows; preprocess standardize needs"):
        preprocess(np.ones((5, 3)), "standardize")
    with pytest.raises(AnalysisError, match=r"X has 11 columns but the preprocessing was fitted on 12"):
        fit_preprocess(X, "standardize").apply(X[:, :11])


# ----------------------------------------------------------------- procrustes scale
def planted_scaled_rotation(noise, seed=0, n=60, p=6, factor=2.5):
    rng = np.random.default_rng(seed)
    R, _ = np.linalg.qr(rng.standard_normal((p, p)))
    S = rng.standard_normal((n, p)) * np.arange(1, p + 1) + 3.0
    T = factor * S @ R + 1.0 + noise * rng.standard_normal((n, p))
    return S, T


def direct_scaled_procrustes(S, T):
    Sc, Tc = S - S.mean(0), T - T.mean(0)
    U, sig, Vt = np.linalg.svd(Sc.T @ Tc, full_matrices=False)
    s = sig.sum() / (Sc**2).sum()
    return s * U @ Vt, s


def test_scaled_procrustes_recovers_a_planted_scale_exactly():
    S, T = planted_scaled_rotation(noise=0.0)
    f = evaluate_bridge(S[:45], T[:45], S[45:], T[45:], "procrustes", scale=True)
    assert f.scale == pytest.approx(2.5, abs=1e-9)
    assert f.r2 == pytest.approx(1.0, abs=1e-9)
    # without scaling, the residual is 1.5 (S - mean) R against 2.5 (S - mean) R: r2 = 1 - 1.5^2 / 2.5^2
    g = evaluate_bridge(S[:45], T[:45], S[45:], T[45:], "procrustes")
    assert g.scale is None
    assert g.r2 == pytest.approx(0.64, abs=1e-9)


def test_scaled_procrustes_matches_a_direct_svd_implementation():
    S, T = planted_scaled_rotation(noise=2.0, seed=3)
    W, s = direct_scaled_procrustes(S[:45], T[:45])
    b = LinearBridge("procrustes", scale=True).fit(S[:45], T[:45])
    np.testing.assert_allclose(b.W_, W, atol=1e-6)
    assert b.scale_ == pytest.approx(s, abs=1e-6)
    assert 2.3 < s < 2.7
    P = (S[45:] - S[:45].mean(0)) @ W + T[:45].mean(0)
    r2 = 1 - ((T[45:] - P) ** 2).sum() / ((T[45:] - T[:45].mean(0)) ** 2).sum()
    assert b.score(S[45:], T[45:]) == pytest.approx(r2, abs=1e-6)


def test_scale_applies_only_to_procrustes():
    with pytest.raises(AnalysisError, match="scale applies only to procrustes, not to ridge; leave it unset"):
        LinearBridge("ridge", scale=True)
    with pytest.raises(AnalysisError, match="scale must be True or False, got 'yes'"):
        LinearBridge("procrustes", scale="yes")
