"""Generalized-diagonal test, argmax path and Bonferroni against direct formulas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from actstore.analysis import AnalysisError, argmax_path, bonferroni, diagonal_test
from actstore.analysis.diagonal import generalized_diagonal_mask


def ref_mask(n1, n2):
    return np.array([[j <= i <= j + n1 - n2 for j in range(n2)] for i in range(n1)])


def ref_welch(on, off):
    m1, m0 = np.mean(on), np.mean(off)
    v1, v0 = np.var(on, ddof=1), np.var(off, ddof=1)
    a, b = v1 / len(on), v0 / len(off)
    t = (m1 - m0) / np.sqrt(a + b)
    df = (a + b) ** 2 / (a * a / (len(on) - 1) + b * b / (len(off) - 1))
    return m1, m0, t, stats.t.sf(t, df)


@pytest.mark.parametrize("n1,n2", [(2, 2), (5, 3), (16, 28), (28, 16), (7, 1 + 6)])
def test_diagonal_test_matches_welch_formula(n1, n2):
    rng = np.random.default_rng(n1 * 100 + n2)
    M = rng.uniform(0, 1, (n1, n2))
    if n1 == 2 and n2 == 2:
        M = rng.uniform(0, 1, (3, 3))  # 2 x 2 has only 2 off cells with variance; use 3 x 3
    res = diagonal_test(M)
    A = M if M.shape[0] >= M.shape[1] else M.T
    mask = ref_mask(*A.shape)
    m1, m0, t, p = ref_welch(A[mask], A[~mask])
    assert res.on_diagonal_mean == pytest.approx(m1, abs=1e-12)
    assert res.off_diagonal_mean == pytest.approx(m0, abs=1e-12)
    assert res.t_statistic == pytest.approx(t, abs=1e-9)
    assert res.p_value == pytest.approx(p, abs=1e-9)
    sp = stats.ttest_ind(A[mask], A[~mask], equal_var=False, alternative="greater")
    assert res.p_value == pytest.approx(sp.pvalue, abs=1e-9)
    assert res.transposed == (M.shape[0] < M.shape[1])
    assert res.n_on == mask.sum() and res.n_off == (~mask).sum()


def test_mask_definition():
    for n1, n2 in [(3, 3), (5, 2), (28, 16), (4, 1)]:
        np.testing.assert_array_equal(generalized_diagonal_mask(n1, n2), ref_mask(n1, n2))
    # square: the plain diagonal; 5 x 2: a band of width 4 per column
    assert generalized_diagonal_mask(3, 3).sum() == 3
    assert generalized_diagonal_mask(5, 2).sum() == 8


def test_planted_diagonal_is_detected_and_shuffled_is_not():
    rng = np.random.default_rng(0)
    n1, n2 = 24, 16
    M = 0.1 + 0.02 * rng.standard_normal((n1, n2))
    mask = ref_mask(n1, n2)
    M[mask] += 0.05
    res = diagonal_test(M)
    assert res.p_value < 0.001 and res.on_diagonal_mean > res.off_diagonal_mean
    assert diagonal_test(M.T).p_value == pytest.approx(res.p_value)  # transposed input
    ps = []
    for _ in range(50):
        S = rng.permutation(M.ravel()).reshape(M.shape)
        ps.append(diagonal_test(S).p_value)
    assert min(ps) > 0.001
    assert np.mean(np.array(ps) < 0.05) < 0.2


def test_argmax_path_and_bonferroni():
    M = np.array([[0.1, 0.5, 0.5], [0.9, 0.2, 0.3], [0.0, 0.0, 0.4], [0.2, 0.7, 0.1]])
    assert argmax_path(M) == [1, 0, 2, 1]  # ties: first column
    assert all(isinstance(j, int) for j in argmax_path(M))
    p = np.array([0.0001, 0.01, 0.3, 0.9])
    np.testing.assert_allclose(bonferroni(p), [0.0004, 0.04, 1.0, 1.0])
    np.testing.assert_allclose(bonferroni([[0.01, 0.02]]), [[0.02, 0.04]])
    assert bonferroni([0.5]).tolist() == [0.5]


def test_bad_inputs():
    with pytest.raises(AnalysisError, match=r"M must be at least 2 x 2, got 1 x 5"):
        diagonal_test(np.ones((1, 5)))
    with pytest.raises(AnalysisError, match=r"zero variance"):
        diagonal_test(np.eye(4))
    M = np.ones((4, 4))
    M[1, 2] = np.nan
    with pytest.raises(AnalysisError, match=r"M contains a non-finite value \(nan\) at row 1, column 2"):
        diagonal_test(M)
    with pytest.raises(AnalysisError, match=r"M contains a non-finite value"):
        argmax_path(M)
    with pytest.raises(AnalysisError, match=r"M must be 2-D, got shape \(4,\)"):
        argmax_path(np.ones(4))
    with pytest.raises(AnalysisError, match=r"p_values must be in \[0, 1\], got 1.5"):
        bonferroni([0.1, 1.5])
    with pytest.raises(AnalysisError, match=r"p_values must be in \[0, 1\], got nan"):
        bonferroni([np.nan])
    with pytest.raises(AnalysisError, match=r"p_values is empty"):
        bonferroni([])


# ------------------------------------------------------------ underflowing p (issue 13)
def direct_log10_t_sf(t, df):
    """log10 of the integral of Student's t density from t to infinity, in mpmath (50 digits)."""
    import mpmath

    with mpmath.workdps(50):
        t, df = mpmath.mpf(t), mpmath.mpf(df)
        c = mpmath.gamma((df + 1) / 2) / (mpmath.sqrt(df * mpmath.pi) * mpmath.gamma(df / 2))
        # s = t u: the density falls like u^-(df+1), so most of the mass is just above u = 1
        return float(
            mpmath.log10(
                mpmath.quad(
                    lambda u: t * c * (1 + (t * u) ** 2 / df) ** (-(df + 1) / 2), [1, 1.001, 1.01, 1.1, 2, mpmath.inf]
                )
            )
        )


def test_underflowing_welch_p_is_reported_as_a_bound_with_exact_log10():
    rng = np.random.default_rng(0)
    M = np.where(np.eye(300, dtype=bool), 1.0, 0.0) + 1e-3 * rng.standard_normal((300, 300))
    res = diagonal_test(M)
    assert stats.t.sf(res.t_statistic, res.df) == 0.0  # a double p would be 0.0
    assert res.p_value == 2.2250738585072014e-308 and res.p_value_is_bound is True
    assert res.log10_p < -308
    assert res.log10_p == pytest.approx(direct_log10_t_sf(res.t_statistic, res.df), rel=1e-9)


def test_ordinary_welch_p_carries_its_log10_and_no_bound():
    M = np.array([[0.9, 0.2, 0.1], [0.3, 0.8, 0.2], [0.1, 0.4, 0.7]])
    res = diagonal_test(M)
    assert res.p_value_is_bound is False
    assert res.p_value == pytest.approx(stats.t.sf(res.t_statistic, res.df), rel=1e-12)
    assert res.log10_p == pytest.approx(np.log10(res.p_value), rel=1e-12)
    assert res.log10_p == pytest.approx(direct_log10_t_sf(res.t_statistic, res.df), rel=1e-9)
