"""SAE numerics: encoding against the direct formulas, feature statistics, exact greedy
matching against a naive full-matrix greedy, a planted permutation, SVCCA/RSA against
direct float64 implementations, the 99%-variance component count, keyword subspaces."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import spearmanr

from actstore.analysis import AnalysisError
from actstore.analysis.sae import (
    SaeParams,
    encode,
    feature_stats,
    keyword_features,
    keyword_hits,
    top_activating,
)
from actstore.analysis.sae_match import (
    match_features,
    paired_space_test,
    rsa,
    svcca,
    svcca_components,
)


def _sae(rng, d_in=12, d_sae=40, **kw) -> SaeParams:
    return SaeParams(
        W_enc=rng.standard_normal((d_in, d_sae)).astype(np.float32),
        b_enc=(0.3 * rng.standard_normal(d_sae) - 0.2).astype(np.float32),
        W_dec=rng.standard_normal((d_sae, d_in)).astype(np.float32),
        b_dec=(0.5 * rng.standard_normal(d_in)).astype(np.float32),
        **kw,
    )


def _direct(X, p: SaeParams) -> np.ndarray:
    """The formulas of METHODS.md / SAELens in float64, one prompt at a time."""
    out = []
    for x in X.astype(np.float64):
        if p.normalize_activations == "constant_norm_rescale":
            x = x * np.sqrt(len(x)) / np.linalg.norm(x)
        elif p.normalize_activations == "layer_norm":
            x = (x - x.mean()) / (x.std(ddof=1) + 1e-5)
        elif p.normalize_activations == "expected_average_only_in" and p.norm_scaling_factor:
            x = x * p.norm_scaling_factor
        if p.apply_b_dec_to_input:
            x = x - p.b_dec
        pre = x @ p.W_enc.astype(np.float64) + p.b_enc
        if p.architecture == "relu":
            f = np.maximum(pre, 0)
        elif p.architecture == "jumprelu":
            f = pre * (pre > p.threshold)  # METHODS.md form (threshold >= 0 here)
        else:
            f = np.maximum(pre, 0)
            keep = np.argsort(-f, kind="stable")[: p.k]
            g = np.zeros_like(f)
            g[keep] = f[keep]
            f = g
        out.append(f)
    return np.array(out)


@pytest.mark.parametrize("arch", ["relu", "jumprelu", "topk"])
@pytest.mark.parametrize("apply_b", [True, False])
@pytest.mark.parametrize("norm", ["none", "constant_norm_rescale", "layer_norm", "expected_average_only_in"])
def test_encode_matches_direct_formulas(rng, arch, apply_b, norm):
    kw = {}
    if arch == "jumprelu":
        kw["threshold"] = np.abs(rng.standard_normal(40)).astype(np.float32)
    if arch == "topk":
        kw["k"] = 5
    if norm == "expected_average_only_in":
        kw["norm_scaling_factor"] = 0.7
    p = _sae(rng, architecture=arch, apply_b_dec_to_input=apply_b, normalize_activations=norm, **kw)
    X = (3.0 * rng.standard_normal((57, 12)) + 1.0).astype(np.float32)
    want = _direct(X, p)
    dense = encode(X, p, dense=True, precision="float64", device="cpu")
    np.testing.assert_allclose(dense, want, atol=1e-9)
    # sparse output in small batches, float32 arithmetic
    F = encode(X, p, device="cpu", memory_budget_bytes=40 * 4 * 3 * 8)
    assert sp.issparse(F) and F.shape == (57, 40) and F.dtype == np.float32
    np.testing.assert_allclose(F.toarray(), want, rtol=1e-4, atol=1e-4)
    assert (F.data != 0).all()
    if arch == "topk":
        assert (np.diff(F.indptr) <= 5).all()
    assert X.flags.writeable  # input untouched
    np.testing.assert_array_equal(X, X.copy())


def test_encode_errors(rng):
    p = _sae(rng)
    with pytest.raises(AnalysisError, match="X has 11 columns but the SAE has d_in = 12"):
        encode(np.zeros((3, 11)), p)
    with pytest.raises(AnalysisError, match="non-finite"):
        encode(np.full((3, 12), np.nan), p)
    with pytest.raises(AnalysisError, match="a jumprelu SAE needs threshold"):
        _sae(rng, architecture="jumprelu")
    with pytest.raises(AnalysisError, match="architecture must be one of"):
        _sae(rng, architecture="gated")
    with pytest.raises(AnalysisError, match="W_dec must have shape"):
        SaeParams(W_enc=np.zeros((4, 6)), b_enc=np.zeros(6), W_dec=np.zeros((4, 6)), b_dec=np.zeros(4))


def test_feature_stats_and_top_activating():
    F = np.array([[0, 1, 2, 0], [0, 3, 2, 0], [0, 0, 2, 5], [0, 2, 2, 0.0]])
    s = feature_stats(sp.csr_matrix(F))
    np.testing.assert_allclose(s.mean, F.mean(0))
    np.testing.assert_allclose(s.std, F.std(0))
    assert s.varies.tolist() == [False, True, False, True]  # dead, varies, constant 2, varies
    np.testing.assert_array_equal(s.nnz, [0, 3, 4, 1])
    top = top_activating(F, 2)
    assert top.tolist() == [[-1, -1], [1, 3], [0, 1], [2, -1]]  # ties: lower row first


def test_keyword_subspace():
    texts = ["The happy child", "a sad day", "stock prices fell", "HAPPY hour", "unhappy"]
    hits = keyword_hits(texts, ["happy", "sad day"])
    assert hits.tolist() == [True, True, False, True, False]  # whole words only
    F = np.zeros((5, 3))
    F[[0, 3], 0] = [2, 1]  # fires on two hits
    F[[2, 4, 0], 1] = [3, 2, 1]  # top two are non-hits
    F[[1, 2], 2] = [1, 1]  # one of two
    assert keyword_features(F, hits, top=2, min_share=0.5).tolist() == [0, 2]
    assert keyword_features(F, hits, top=2, min_share=1.0).tolist() == [0]
    with pytest.raises(AnalysisError, match="keywords must hold"):
        keyword_hits(texts, [" "])


# -------------------------------------------------------------------- matching
def _sparse_acts(rng, n, d, density):
    return rng.exponential(1.0, (n, d)) * (rng.random((n, d)) < density)


def _naive_greedy(A, B, mode):
    va, vb = np.flatnonzero(A.std(0) > 0), np.flatnonzero(B.std(0) > 0)
    Za = (A[:, va] - A[:, va].mean(0)) / A[:, va].std(0)
    Zb = (B[:, vb] - B[:, vb].mean(0)) / B[:, vb].std(0)
    C = Za.T @ Zb / len(A)
    if mode == "many_to_one":
        j = C.argmax(1)
        return {int(va[i]): (int(vb[j[i]]), C[i, j[i]]) for i in range(len(va))}
    out, ua, ub = {}, set(), set()
    for f in np.argsort(-C, axis=None, kind="stable"):
        i, j = divmod(int(f), C.shape[1])
        if i not in ua and j not in ub:
            ua.add(i)
            ub.add(j)
            out[int(va[i])] = (int(vb[j]), C[i, j])
    return out


@pytest.mark.parametrize("mode", ["one_to_one", "many_to_one"])
@pytest.mark.parametrize("method", ["sparse", "dense"])
@pytest.mark.parametrize("candidates", [1, 3, 16])
def test_matching_equals_naive_greedy_on_the_full_matrix(rng, mode, method, candidates):
    n = 200
    A, B = _sparse_acts(rng, n, 70, 0.08), _sparse_acts(rng, n, 55, 0.1)
    B[:, :30] += 0.6 * A[:, 10:40]
    A[:, 5] = 0.0  # dead
    B[:, 7] = 1.5  # constant
    m = match_features(
        sp.csr_matrix(A), B, matching=mode, method=method, candidates=candidates, memory_budget_bytes=4000, device="cpu"
    )  # tiny blocks
    want = _naive_greedy(A, B, mode)
    got = {int(a): (int(b), r) for a, b, r in zip(m.pairs_a, m.pairs_b, m.correlation)}
    assert set(got) == set(want)
    assert all(got[a][0] == want[a][0] for a in got)
    np.testing.assert_allclose([got[a][1] for a in got], [want[a][1] for a in got], atol=5e-6)
    assert (m.dropped_a, m.dropped_b, m.kept_a, m.kept_b) == (1, 1, 69, 54)
    assert np.all(np.diff(m.correlation) <= 1e-12)  # descending
    assert len(m.pairs_a) == (54 if mode == "one_to_one" else 69)
    if mode == "one_to_one":
        assert len(set(m.pairs_b.tolist())) == len(m.pairs_b)


def test_matching_options_and_errors(rng):
    A, B = _sparse_acts(rng, 100, 30, 0.2), _sparse_acts(rng, 100, 20, 0.2)
    m = match_features(A, B, min_correlation=0.1)
    assert (m.correlation >= 0.1).all()
    sub = match_features(A, B, features_a=[1, 2, 3], features_b=[4, 5])
    assert set(sub.pairs_a) <= {1, 2, 3} and set(sub.pairs_b) <= {4, 5} and len(sub.pairs_a) == 2
    assert sub.n_features_a == 3
    with pytest.raises(AnalysisError, match="matching must be one of"):
        match_features(A, B, matching="best")
    with pytest.raises(AnalysisError, match="row counts differ"):
        match_features(A, B[:50])
    with pytest.raises(AnalysisError, match="no feature of SAE B varies"):
        match_features(A, np.ones((100, 4)))
    with pytest.raises(AnalysisError, match="features_a must be feature indices in 0..29"):
        match_features(A, B, features_a=[30])


# ------------------------------------------------------------------ SVCCA, RSA
def _svcca_direct(X, Y, thr=0.99):
    """Textbook SVCCA in float64: SVD-reduce each side to 99% variance (explicit loop over
    the cumulative variance), then classical CCA via covariance whitening."""

    def reduce(M):
        Mc = M - M.mean(0)
        U, s, _ = np.linalg.svd(Mc, full_matrices=False)
        total, acc, r = (s**2).sum(), 0.0, 0
        while acc < thr * total - 1e-12 * total:
            acc += s[r] ** 2
            r += 1
        return U[:, :r] * s[:r]

    Xr, Yr = reduce(X), reduce(Y)
    Sxx, Syy, Sxy = Xr.T @ Xr, Yr.T @ Yr, Xr.T @ Yr

    def inv_sqrt(S):
        w, V = np.linalg.eigh(S)
        return V @ np.diag(w**-0.5) @ V.T

    rho = np.linalg.svd(inv_sqrt(Sxx) @ Sxy @ inv_sqrt(Syy), compute_uv=False)
    return float(np.clip(rho, 0, 1).mean())


def _rsa_direct(X, Y):
    def rdm(M):
        return 1.0 - np.corrcoef(M)

    iu = np.triu_indices(len(X), 1)
    return float(spearmanr(rdm(X)[iu], rdm(Y)[iu]).statistic)


def test_svcca_and_rsa_against_direct_float64(rng):
    K = 150
    X = rng.standard_normal((K, 10)) @ np.diag(np.linspace(3, 0.1, 10))
    Y = X @ rng.standard_normal((10, 14)) + 0.8 * rng.standard_normal((K, 14))
    assert abs(svcca(X, Y) - _svcca_direct(X, Y)) < 1e-6
    assert abs(rsa(X, Y) - _rsa_direct(X, Y)) < 1e-6
    # ties in the RDM (duplicate rows, as MANY_TO_ONE gives) use average ranks as spearmanr does
    Yd = Y.copy()
    Yd[10:20] = Yd[0]
    assert abs(rsa(X, Yd) - _rsa_direct(X, Yd)) < 1e-6
    t = paired_space_test(X, Y, random_pairs=5, seed=1)
    assert abs(t.svcca - _svcca_direct(X, Y)) < 1e-6 and abs(t.rsa - _rsa_direct(X, Y)) < 1e-6
    # each random value is the direct statistic of a permuted pairing
    rng2 = np.random.default_rng(1)
    perms = [rng2.permutation(K) for _ in range(5)]
    np.testing.assert_allclose(t.random_svcca, [_svcca_direct(X, Y[p]) for p in perms], atol=1e-6)
    rsa_perms = [rng2.permutation(K) for _ in range(5)]
    np.testing.assert_allclose(t.random_rsa, [_rsa_direct(X, Y[q]) for q in rsa_perms], atol=1e-6)


def test_svcca_keeps_the_components_for_99_percent():
    s = np.sqrt(np.array([50.0, 30.0, 10.0, 5.0, 3.0, 0.9, 0.6, 0.5]))  # cumulative %: ..., 98, 98.9, 99.5, 100
    assert svcca_components(s) == 7
    s = np.sqrt(np.array([50.0, 30.0, 10.0, 5.0, 3.0, 1.0, 0.5, 0.5]))  # exactly 99.0 at 6 (float rounding)
    assert svcca_components(s) == 6
    s2 = np.sqrt(np.array([90.0, 5.0, 4.0, 0.5, 0.5]))  # 99.0 reached at 3 components
    assert svcca_components(s2) == 3
    assert svcca_components(np.sqrt([100.0, 0.0])) == 1
    # a slip comparing the normalised cumulative variance with 0.99 * total keeps one component
    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 6)) @ np.diag([5, 4, 3, 2, 1, 0.5])
    Y = X @ rng.standard_normal((6, 6))
    t = paired_space_test(X, Y, random_pairs=1, seed=0)
    sx = np.linalg.svd(X - X.mean(0), compute_uv=False)
    frac = np.cumsum(sx**2) / (sx**2).sum()  # ~ [.45, .74, .90, .97, .995, 1]
    assert t.dims_a == 1 + int(np.argmax(frac >= 0.99)) == 5
    with pytest.raises(AnalysisError, match="zero variance"):
        svcca_components(np.zeros(3))


def test_planted_permutation_recovered_with_svcca_near_one_and_p_at_floor(rng):
    n, d, d_in = 600, 400, 8
    FA = _sparse_acts(rng, n, d, 0.05)
    perm = rng.permutation(d)  # A feature i is B feature perm[i]
    FB = np.empty_like(FA)
    FB[:, perm] = FA + 0.3 * _sparse_acts(rng, n, d, 0.05)
    WA = rng.standard_normal((d, d_in))
    M = rng.standard_normal((d_in, 12))
    WB = np.empty((d, 12))
    WB[perm] = WA @ M + 0.05 * rng.standard_normal((d, 12))
    m = match_features(sp.csr_matrix(FA), sp.csr_matrix(FB), matching="one_to_one", device="cpu")
    assert len(m.pairs_a) == d
    np.testing.assert_array_equal(perm[m.pairs_a], m.pairs_b)
    R = 99
    t = paired_space_test(WA[m.pairs_a], WB[m.pairs_b], random_pairs=R, seed=0)
    assert t.svcca > 0.97
    assert t.random_svcca.mean() < 0.15
    assert t.p_value == pytest.approx(1 / (1 + R))
    assert (
        t.rsa > 0.4 and abs(t.random_rsa.mean()) < 0.05
    )  # M is not orthogonal: RDMs differ and t.rsa_p_value == pytest.approx(1 / (1 + R))
    # reproducible for a seed
    t2 = paired_space_test(WA[m.pairs_a], WB[m.pairs_b], random_pairs=R, seed=0)
    np.testing.assert_array_equal(t.random_svcca, t2.random_svcca)
    # random pairings are not significant
    tr = paired_space_test(WA, WB[rng.permutation(d)], random_pairs=R, seed=0)
    assert tr.p_value > 0.01


def test_rsa_subsample_and_errors(rng):
    X, Y = rng.standard_normal((60, 5)), rng.standard_normal((60, 5))
    t = paired_space_test(X, Y, random_pairs=3, seed=0, rsa_max_pairs=20)
    assert t.rsa_pairs == 20 and t.pairs == 60
    with pytest.raises(AnalysisError, match="too few"):
        svcca(X[:2], Y[:2])
    with pytest.raises(AnalysisError, match="X has 60 rows but Y has 59"):
        rsa(X, Y[:59])
    Z = X.copy()
    Z[4] = 1.0
    with pytest.raises(AnalysisError, match="row 4 of X is constant"):
        rsa(Z, Y)
