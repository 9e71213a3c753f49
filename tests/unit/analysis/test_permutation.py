"""CKA permutation tests: exact agreement with a direct loop, reproducibility, null calibration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from actstore.analysis import (
    AnalysisError,
    cka_matrix,
    cka_matrix_permutation_test,
    cka_permutation_test,
    linear_cka,
)
from tests.unit.analysis.test_cka import ref_cka


def direct_null(X, Y, P, seed, debiased=True):
    """Reference: permute the rows of Y with default_rng(seed).permutation, recompute CKA."""
    rng = np.random.default_rng(seed)
    return np.array([ref_cka(X, Y[rng.permutation(len(Y))], debiased, dtype=np.float64) for _ in range(P)])


@pytest.mark.parametrize("debiased", [True, False])
def test_pair_test_matches_direct_loop(debiased):
    rng = np.random.default_rng(0)
    n = 14
    z = rng.standard_normal((n, 2))
    X = z @ rng.standard_normal((2, 5)) + rng.standard_normal((n, 5)) + 100
    Y = z @ rng.standard_normal((2, 3)) + 2 * rng.standard_normal((n, 3))
    res = cka_permutation_test(X, Y, permutations=40, seed=7, debiased=debiased)
    null = direct_null(X, Y, 40, 7, debiased)
    np.testing.assert_allclose(res.null, null, atol=1e-9)
    obs = ref_cka(X, Y, debiased)
    assert res.value == pytest.approx(obs, abs=1e-8)
    assert res.p_value == pytest.approx((1 + np.sum(null >= obs - 1e-12)) / 41)
    assert res.permutations == 40 and res.null.shape == (40,) and res.seed == 7


def test_reproducible_for_a_seed_and_different_across_seeds():
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((20, 4)), rng.standard_normal((20, 6))
    a = cka_permutation_test(X, Y, permutations=50, seed=3)
    b = cka_permutation_test(X, Y, permutations=50, seed=3)
    c = cka_permutation_test(X, Y, permutations=50, seed=4)
    assert a.p_value == b.p_value and np.array_equal(a.null, b.null)
    assert not np.array_equal(a.null, c.null)


def test_strong_signal_gets_smallest_p_and_zero_permutations_give_one():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((60, 5))
    Y = X @ rng.standard_normal((5, 8)) + 0.1 * rng.standard_normal((60, 8))
    res = cka_permutation_test(X, Y, permutations=199, seed=0)
    assert res.p_value == pytest.approx(1 / 200)  # never 0
    assert res.value == pytest.approx(linear_cka(X, Y), abs=1e-9)
    zero = cka_permutation_test(X, Y, permutations=0)
    assert zero.p_value == 1.0 and zero.null.shape == (0,)


def test_p_values_are_uniform_under_the_null():
    """Over many independent null data sets the p-values are ~ uniform (KS + bin counts)."""
    rng = np.random.default_rng(3)
    P, reps = 49, 300
    ps = np.array(
        [
            cka_permutation_test(
                rng.standard_normal((12, 3)), rng.standard_normal((12, 2)), permutations=P, seed=int(i)
            ).p_value
            for i in range(reps)
        ]
    )
    # discrete uniform on {1..50}/50: jitter within a step to compare with U(0, 1)
    u = ps - rng.uniform(0, 1 / (P + 1), reps)
    assert stats.kstest(u, "uniform").pvalue > 0.01
    counts = np.histogram(ps, bins=[0, 0.2, 0.4, 0.6, 0.8, 1.0001])[0]
    assert counts.min() > 35 and counts.max() < 85  # expected 60 per bin
    assert np.mean(ps <= 0.05) < 0.1


def test_matrix_test_max_statistic_against_direct_loop():
    rng = np.random.default_rng(4)
    n = 16
    z = rng.standard_normal((n, 2))
    A = [z @ rng.standard_normal((2, 4)) + rng.standard_normal((n, 4)), rng.standard_normal((n, 3)) + 50]
    B = [
        rng.standard_normal((n, 5)),
        z @ rng.standard_normal((2, 3)) + rng.standard_normal((n, 3)),
        rng.standard_normal((n, 2)),
    ]
    P, seed = 30, 11
    res = cka_matrix_permutation_test(A, B, permutations=P, seed=seed)
    # reference: one permutation of prompt order per draw, applied to all of B's layers
    r = np.random.default_rng(seed)
    null = np.empty((P, 2, 3))
    for k in range(P):
        pi = r.permutation(n)
        null[k] = [[ref_cka(a, b[pi], dtype=np.float64) for b in B] for a in A]
    obs = np.array([[ref_cka(a, b) for b in B] for a in A])
    np.testing.assert_allclose(res.values, obs, atol=1e-9)
    np.testing.assert_allclose(res.null, null, atol=1e-9)
    nmax = null.reshape(P, -1).max(1)
    np.testing.assert_allclose(res.null_max, nmax, atol=1e-9)
    assert res.best == (0, 1)
    assert res.p_max == pytest.approx((1 + np.sum(nmax >= obs[0, 1] - 1e-12)) / (P + 1))
    np.testing.assert_allclose(res.p_adjusted, (1 + (nmax[:, None, None] >= obs - 1e-12).sum(0)) / (P + 1))
    np.testing.assert_allclose(res.p_values, (1 + (null >= obs - 1e-12).sum(0)) / (P + 1))
    assert np.all(res.p_adjusted >= res.p_values)
    np.testing.assert_allclose(res.values, cka_matrix(A, B), atol=1e-9)
    # 1 x 1 matrix test == pair test with the same seed; also with B the smaller side
    one = cka_matrix_permutation_test([A[0]], [B[1]], permutations=P, seed=seed)
    pair = cka_permutation_test(A[0], B[1], permutations=P, seed=seed)
    np.testing.assert_allclose(one.null[:, 0, 0], pair.null, atol=1e-12)
    flipped = cka_matrix_permutation_test(B, A[:1], permutations=P, seed=seed)
    r = np.random.default_rng(seed)
    perms = [r.permutation(n) for _ in range(P)]
    ref_flip = np.array([[ref_cka(b, A[0][pi], dtype=np.float64) for b in B] for pi in perms])
    np.testing.assert_allclose(flipped.null[:, :, 0], ref_flip, atol=1e-9)


def test_float32_and_chunked_paths_agree():
    rng = np.random.default_rng(5)
    n = 40
    A = [rng.standard_normal((n, 6)) + 10 for _ in range(2)]
    B = [rng.standard_normal((n, 4)) for _ in range(3)]
    full = cka_matrix_permutation_test(A, B, permutations=10, seed=1, precision="float64")
    budget = 2 * n * n * 8 + (64 << 20) + n * n * 8  # A cached + one B Gram per chunk
    chunked = cka_matrix_permutation_test(
        A, B, permutations=10, seed=1, precision="float64", memory_budget_bytes=budget
    )
    np.testing.assert_allclose(chunked.null, full.null, atol=1e-12)
    f32 = cka_matrix_permutation_test(A, B, permutations=10, seed=1, precision="float32")
    np.testing.assert_allclose(f32.null, full.null, atol=1e-5)


def test_bad_inputs():
    rng = np.random.default_rng(6)
    X, Y = rng.standard_normal((10, 3)), rng.standard_normal((10, 2))
    with pytest.raises(AnalysisError, match=r"permutations must be >= 0, got -1"):
        cka_permutation_test(X, Y, permutations=-1)
    with pytest.raises(AnalysisError, match=r"permutations must be an integer, got 2.5"):
        cka_matrix_permutation_test([X], [Y], permutations=2.5)
    with pytest.raises(AnalysisError, match=r"seed must be >= 0, got -3"):
        cka_permutation_test(X, Y, permutations=5, seed=-3)
    with pytest.raises(AnalysisError, match=r"n = 3 prompts is too few"):
        cka_permutation_test(X[:3], Y[:3], permutations=5)
    with pytest.raises(AnalysisError, match=r"row counts differ: X has 10 rows but Y has 7"):
        cka_permutation_test(X, Y[:7], permutations=5)
    with pytest.raises(AnalysisError, match=r"needs at least .* GiB of Gram matrices"):
        cka_matrix_permutation_test([X], [Y], permutations=5, memory_budget_bytes=1000)


# ------------------------------------------------------------ stratified null (issue 13)
def direct_stratified_null(X, Y, strata, P, seed, debiased=True):
    """Reference: per draw, for each stratum in order of first appearance, shuffle its rows
    with default_rng(seed).permutation(len(stratum)); recompute CKA by the formula."""
    rng = np.random.default_rng(seed)
    labels = list(dict.fromkeys(strata))
    out = []
    for _ in range(P):
        pi = np.arange(len(Y))
        for lab in labels:
            idx = np.array([i for i, s in enumerate(strata) if s == lab])
            pi[idx] = idx[rng.permutation(len(idx))]
        out.append(ref_cka(X, Y[pi], debiased, dtype=np.float64))
    return np.array(out)


@pytest.mark.parametrize("debiased", [True, False])
def test_stratified_null_matches_direct_loop(debiased):
    rng = np.random.default_rng(5)
    strata = ["b"] * 7 + ["a"] * 5 + ["b"] * 2 + ["c"] * 6
    n = len(strata)
    X = rng.standard_normal((n, 4)) + 3 * np.array([s == "a" for s in strata])[:, None]
    Y = rng.standard_normal((n, 3)) + 3 * np.array([s == "a" for s in strata])[:, None]
    res = cka_permutation_test(X, Y, permutations=30, seed=11, debiased=debiased, strata=strata)
    null = direct_stratified_null(X, Y, strata, 30, 11, debiased)
    np.testing.assert_allclose(res.null, null, atol=1e-9)
    assert res.p_value == pytest.approx((1 + np.sum(null >= ref_cka(X, Y, debiased) - 1e-12)) / 31)
    # the matrix test (both gather directions) draws the same null
    m = cka_matrix_permutation_test([X, X[:, :2]], [Y], permutations=30, seed=11, debiased=debiased, strata=strata)
    np.testing.assert_allclose(m.null[:, 0, 0], null, atol=1e-9)


def test_stratified_permutations_only_move_rows_within_a_stratum():
    from actstore.analysis import stratified_permutations

    strata = np.array(["x", "y", "x", "z", "y", "x", "z", "z", "y", "x"])
    perms = list(stratified_permutations(len(strata), 200, seed=3, strata=strata))
    assert len(perms) == 200
    for pi in perms:
        assert sorted(pi.tolist()) == list(range(10))
        assert (strata[pi] == strata).all()
    assert any((pi != np.arange(10)).any() for pi in perms)
    # without strata: numpy's permutation, as the unstratified test uses
    plain = list(stratified_permutations(10, 2, seed=3))
    rng = np.random.default_rng(3)
    assert [p.tolist() for p in plain] == [rng.permutation(10).tolist() for _ in range(2)]


def test_stratified_null_removes_between_corpus_inflation():
    """Two corpora with different means: the pooled CKA is high; an unstratified null calls it
    significant, the stratified one does not (within each corpus X and Y are independent)."""
    rng = np.random.default_rng(2)
    strata = ["a"] * 20 + ["b"] * 20
    shift = np.repeat([0.0, 6.0], 20)[:, None]
    X = rng.standard_normal((40, 3)) + shift
    Y = rng.standard_normal((40, 3)) + shift
    plain = cka_permutation_test(X, Y, permutations=99, seed=0)
    strat = cka_permutation_test(X, Y, permutations=99, seed=0, strata=strata)
    assert plain.p_value == pytest.approx(0.01)
    assert strat.p_value > 0.05


def test_strata_of_wrong_length_is_refused():
    X = np.zeros((6, 2)) + np.arange(12).reshape(6, 2) ** 2
    with pytest.raises(AnalysisError, match=r"strata has 5 labels but there are n = 6 prompts"):
        cka_permutation_test(X, X, permutations=3, strata=["a"] * 5)
