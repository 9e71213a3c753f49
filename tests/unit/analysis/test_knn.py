"""k-NN graphs, mutual k-NN and affinity matrices against brute force / set loops."""

from __future__ import annotations

import numpy as np
import pytest

from actstore.analysis import (
    AnalysisError,
    affinity_matrix,
    knn_graph,
    mutual_knn,
    null_mean,
)


def brute_knn(X, k):
    """float64 cosine, self excluded, ties by smaller index."""
    X = np.asarray(X, dtype=np.float64)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = Xn @ Xn.T
    np.fill_diagonal(S, -np.inf)
    out = []
    for i in range(len(X)):
        order = sorted(range(len(X)), key=lambda j: (-S[i, j], j))
        out.append(order[:k])
    return np.array(out, dtype=np.int64)


def ref_mutual(ga, gb):
    n, k = ga.shape
    return sum(len(set(ga[i]) & set(gb[i])) for i in range(n)) / (k * n)


@pytest.mark.parametrize("backend", ["torch", "faiss"])
@pytest.mark.parametrize("n,d,k", [(2, 3, 1), (5, 4, 4), (60, 8, 5), (301, 16, 10)])
def test_knn_graph_matches_brute_force(backend, n, d, k):
    rng = np.random.default_rng(n + d)
    X = rng.standard_normal((n, d)) + 0.3
    g = knn_graph(X, k, backend=backend, device="cpu")
    assert g.dtype == np.int64 and g.shape == (n, k)
    np.testing.assert_array_equal(g, brute_knn(X, k))
    assert not np.any(g == np.arange(n)[:, None])  # self excluded


def test_multi_block_self_join_and_float16(monkeypatch):
    import actstore.analysis.knn as knn_mod

    rng = np.random.default_rng(1)
    X = (rng.standard_normal((700, 12)) + 1).astype(np.float16)
    monkeypatch.setattr(knn_mod, "_BLOCK_BYTES", 4 * 128 * 128)  # 128-row blocks
    g = knn_graph(X, 7, backend="torch")
    np.testing.assert_array_equal(g, brute_knn(X.astype(np.float64), 7))
    np.testing.assert_array_equal(g, knn_graph(X, 7, backend="faiss"))


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_ties_break_by_smaller_index(backend):
    rng = np.random.default_rng(2)
    base = rng.standard_normal((15, 6))
    X = np.repeat(base, 5, axis=0)  # exact duplicates: exact ties
    g = knn_graph(X, 6, backend=backend)
    np.testing.assert_array_equal(g, brute_knn(X, 6))
    # prompt 7's four exact duplicates (5, 6, 8, 9) come first, in index order
    assert list(g[7, :4]) == [5, 6, 8, 9]


def test_mutual_knn_against_sets_and_identity():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((80, 10))
    Y = X + 0.5 * rng.standard_normal((80, 10))
    ga, gb = knn_graph(X, 6), knn_graph(Y, 6)
    assert mutual_knn(ga, gb) == pytest.approx(ref_mutual(ga, gb), abs=1e-15)
    assert mutual_knn(ga, ga) == 1.0
    assert mutual_knn(ga, gb) > 3 * null_mean(6, 80)
    # order within rows does not matter
    assert mutual_knn(ga[:, ::-1], gb) == mutual_knn(ga, gb)


def test_random_graphs_are_near_the_null_mean():
    rng = np.random.default_rng(4)
    n, k = 400, 10

    def random_graph():
        g = np.empty((n, k), dtype=np.int64)
        for i in range(n):
            others = np.delete(np.arange(n), i)
            g[i] = rng.choice(others, k, replace=False)
        return g

    vals = [mutual_knn(random_graph(), random_graph()) for _ in range(20)]
    assert null_mean(k, n) == pytest.approx(k / (n - 1))
    # mean of 20 draws: sd of one draw ~ sqrt(k/(n-1) / (k n)) ~ 0.0079
    assert np.mean(vals) == pytest.approx(k / (n - 1), abs=0.006)
    # and k-NN graphs of independent random layers too
    g1 = knn_graph(rng.standard_normal((n, 20)), k)
    g2 = knn_graph(rng.standard_normal((n, 20)), k)
    assert abs(mutual_knn(g1, g2) - k / (n - 1)) < 0.02


def test_affinity_matrix_equals_pairwise_mutual_knn():
    rng = np.random.default_rng(5)
    n = 90
    z = rng.standard_normal((n, 4))
    A = [z @ rng.standard_normal((4, 8)) + s * rng.standard_normal((n, 8)) for s in (0.1, 1, 3)]
    B = [z @ rng.standard_normal((4, 5)) + s * rng.standard_normal((n, 5)) for s in (0.2, 5)]
    ga = [knn_graph(x, 5) for x in A]
    gb = [knn_graph(y, 5) for y in B]
    M = affinity_matrix(ga, gb)
    ref = np.array([[ref_mutual(a, b) for b in gb] for a in ga])
    assert M.shape == (3, 2) and M.dtype == np.float64
    np.testing.assert_allclose(M, ref, atol=1e-15)
    assert M[0, 0] > M[2, 1]


def test_bad_inputs():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((10, 4))
    with pytest.raises(AnalysisError, match=r"k must be >= 1 and <= 9, got 0"):
        knn_graph(X, 0)
    with pytest.raises(AnalysisError, match=r"k must be <= 9 and >= 1, got 10"):
        knn_graph(X, 10)
    with pytest.raises(AnalysisError, match=r"k must be an integer, got 2.0"):
        knn_graph(X, 2.0)
    bad = X.copy()
    bad[3, 2] = -np.inf
    with pytest.raises(AnalysisError, match=r"X contains a non-finite value \(-inf\) at row 3, column 2"):
        knn_graph(bad, 3)
    zero = X.copy()
    zero[4] = 0
    with pytest.raises(AnalysisError, match=r"X row 4 is all zeros; cosine similarity is undefined"):
        knn_graph(zero, 3)
    with pytest.raises(AnalysisError, match=r"backend must be one of .*got 'annoy'"):
        knn_graph(X, 3, backend="annoy")
    with pytest.raises(AnalysisError, match=r"X has n = 1 rows"):
        knn_graph(X[:1], 1)
    g = knn_graph(X, 3)
    with pytest.raises(AnalysisError, match=r"graph shapes differ: graph_a is \(10, 3\), graph_b is \(10, 2\)"):
        mutual_knn(g, g[:, :2])
    with pytest.raises(AnalysisError, match=r"graph_b holds neighbour index 10 outside \[0, 9\]"):
        mutual_knn(g, np.where(g == 9, 10, g))
    dup = g.copy()
    dup[2, 1] = dup[2, 0]
    with pytest.raises(AnalysisError, match=r"graph_a row 2 lists a neighbour twice"):
        mutual_knn(dup, g)
    with pytest.raises(AnalysisError, match=r"graph_a must be an integer array \[n, k\], got dtype float64"):
        mutual_knn(g.astype(float), g)
    with pytest.raises(AnalysisError, match=r"graphs_b must be a non-empty sequence"):
        affinity_matrix([g], [])
    with pytest.raises(AnalysisError, match=r"graphs_a\[1\] has shape \(10, 2\) but graphs_a\[0\] has \(10, 3\)"):
        affinity_matrix([g, g[:, :2]], [g])
    with pytest.raises(AnalysisError, match=r"k must be <= 9 and >= 1, got 10"):
        null_mean(10, 10)
    with pytest.raises(AnalysisError, match=r"k must be >= 1 and <= 9, got 0"):
        null_mean(0, 10)
