"""CKA from per-shard sums (actstore.analysis.feature_sums) against direct Gram-matrix formulas."""

from __future__ import annotations

import numpy as np
import pytest

from actstore.analysis import AnalysisError
from actstore.analysis.feature_sums import add_feature_sums, cka_from_sums, feature_sums


def _hsic1(K: np.ndarray, L: np.ndarray) -> float:
    """METHODS.md's unbiased HSIC1, written out with n x n matrices."""
    n = len(K)
    K, L = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    return (
        np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * (one @ K @ L @ one)
    ) / (n * (n - 3))


def _cka(X: np.ndarray, Y: np.ndarray, debiased: bool) -> float:
    if debiased:
        K, L = X @ X.T, Y @ Y.T
        return _hsic1(K, L) / np.sqrt(_hsic1(K, K) * _hsic1(L, L))
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    return np.linalg.norm(Xc.T @ Yc) ** 2 / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))


@pytest.fixture
def layers() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    n = 30
    x0 = rng.normal(size=(n, 5)) + 40.0
    x1 = rng.normal(size=(n, 3)) * 2.0 - 7.0
    y0 = x0[:, :3] @ rng.normal(size=(3, 4)) + 0.2 * rng.normal(size=(n, 4))
    return [x0, x1, y0]


@pytest.mark.parametrize("debiased", [True, False])
def test_sums_of_shards_give_the_direct_cka(layers, debiased):
    pairs = [(0, 2), (1, 2), (0, 0), (1, 1), (2, 2)]
    centres = [x[:4].mean(0) for x in layers]  # any common centre: the sample mean of 4 rows
    parts = [feature_sums([x[a:b] for x in layers], centres, pairs) for a, b in ((0, 7), (7, 8), (8, 30))]
    got = cka_from_sums(add_feature_sums(parts), [0, 1], [2], debiased=debiased)
    want = np.array([[_cka(layers[0], layers[2], debiased)], [_cka(layers[1], layers[2], debiased)]])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)
    # one shard, another centre (the exact column means): the same values to rounding
    whole = cka_from_sums(feature_sums(layers, [x.mean(0) for x in layers], pairs), [0, 1], [2], debiased=debiased)
    np.testing.assert_allclose(whole, got, rtol=1e-9)


def test_groups_of_pairs_combine_and_errors_name_the_problem(layers):
    c = [x.mean(0) for x in layers]
    g1 = feature_sums(layers, c, [(0, 2), (0, 0)])
    g2 = feature_sums(layers, c, [(2, 2)])
    assert cka_from_sums([g1, g2], [0], [2])[0, 0] == pytest.approx(_cka(layers[0], layers[2], True), rel=1e-6)
    with pytest.raises(AnalysisError, match=r"no statistics of layer pair \(1, 1\)"):
        cka_from_sums([g1, g2], [1], [2])
    const = [np.ones((30, 2)), layers[2]]
    s = feature_sums(const, [np.zeros(2), c[2]], [(0, 1), (0, 0), (1, 1)])
    with pytest.raises(AnalysisError, match=r"HSIC1 of layer 0 with itself is 0 \(not positive\)"):
        cka_from_sums(s, [0], [1])
    small = feature_sums([x[:3] for x in layers], c, [(0, 2), (0, 0), (2, 2)])
    with pytest.raises(AnalysisError, match="n = 3 prompts is too few: debiased CKA needs n >= 4"):
        cka_from_sums(small, [0], [2])
    with pytest.raises(AnalysisError, match="different layers or pairs"):
        add_feature_sums([g1, g2])
