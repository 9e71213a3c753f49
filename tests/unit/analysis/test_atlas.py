"""Atlas numerics (analysis.atlas): one blocked product over all layers of six small models
must give, pair by pair, what the per-pair functions give (mutual k-NN bit for bit, CKA at
1e-6), and the per-pair summaries / resizing / maximum matrix must match direct loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from actstore.analysis import AnalysisError, PairSummary
from actstore.analysis.atlas import (
    gram_cka,
    graph_overlaps,
    max_similarity,
    overlap_block_rows,
    pair_summary,
    resize,
)
from actstore.analysis.cka import cka_matrix
from actstore.analysis.knn import affinity_matrix, knn_graph, mutual_knn

N, K = 120, 5
LAYERS = [3, 5, 4, 6, 2, 5]  # six "models" with different layer counts
WIDTHS = [8, 12, 10, 16, 6, 9]


def _models(seed: int = 0) -> list[list[np.ndarray]]:
    """Layers [N, d] whose shared latent drifts with relative depth (diagonal structure)."""
    rng = np.random.default_rng(seed)
    z0, z1 = rng.standard_normal((N, 4)), rng.standard_normal((N, 4))
    out = []
    for L, d in zip(LAYERS, WIDTHS):
        layers = []
        for l_ in range(L):
            t = l_ / (L - 1)
            z = np.cos(t * np.pi / 2) * z0 + np.sin(t * np.pi / 2) * z1
            x = z @ rng.standard_normal((4, d)) + 0.7 * rng.standard_normal((N, d)) + 3.0
            layers.append(x.astype(np.float32))
        out.append(layers)
    return out


MODELS = _models()
OFFSETS = np.concatenate([[0], np.cumsum(LAYERS)])
GRAPHS = [[knn_graph(x, K, device="cpu") for x in m] for m in MODELS]
ALL_GRAPHS = [g for m in GRAPHS for g in m]
ALL_LAYERS = [x for m in MODELS for x in m]
PAIRS = [(i, j) for i in range(6) for j in range(i + 1, 6)]


def _block(big: np.ndarray, i: int, j: int) -> np.ndarray:
    return big[OFFSETS[i] : OFFSETS[i + 1], OFFSETS[j] : OFFSETS[j + 1]]


@pytest.mark.parametrize(
    "backend, budget",
    [("sparse", 1 << 30), ("sparse", 2000), ("dense", 1 << 30), ("dense", 50_000), ("auto", 1 << 30), ("auto", 20_000)],
)
def test_graph_overlaps_equal_mutual_knn_loops_exactly(backend, budget):
    big = graph_overlaps(ALL_GRAPHS, backend=backend, device="cpu", memory_budget_bytes=budget)
    m = len(ALL_GRAPHS)
    assert big.shape == (m, m) and big.dtype == np.float64
    loop = np.array([[mutual_knn(a, b) for b in ALL_GRAPHS] for a in ALL_GRAPHS])
    assert np.array_equal(big, loop)
    assert np.array_equal(np.diag(big), np.ones(m))  # a graph shares all n k keys with itself
    for i, j in PAIRS:  # what affinityMatrix returns for that model pair
        assert np.array_equal(_block(big, i, j), affinity_matrix(GRAPHS[i], GRAPHS[j]))


def test_graph_overlaps_two_sets_and_block_rows():
    a, b = GRAPHS[1], GRAPHS[3] + GRAPHS[4]
    for backend in ("sparse", "dense"):
        got = graph_overlaps(a, b, backend=backend, device="cpu", memory_budget_bytes=3000)
        assert np.array_equal(got, affinity_matrix(a, b))
    # b = budget // (graphs * max(4 n, 24 k)): 30_000 // (11 * 480) = 5; at least 1, at most n
    assert overlap_block_rows(N, K, 11, 30_000) == 5
    assert overlap_block_rows(N, K, 11, 3000) == 1
    assert overlap_block_rows(N, K, 11, 1 << 30) == N
    assert overlap_block_rows(4096, 100, 1, 1 << 40) == 4096
    assert overlap_block_rows(1 << 20, 100, 1, 1 << 45) == (2**24 - 1) // 100  # exact float32 counts
    # a hand-made pair: 2 of the 3 x 2 = 6 keys shared -> 1/3
    g1 = np.array([[1, 2], [0, 2], [0, 1]])
    g2 = np.array([[1, 2], [2, 0], [1, 0]])  # rows 0, 1 equal as sets; row 2 {1, 0} = {0, 1}
    g3 = np.array([[2, 1], [2, 0], [0, 1]])
    g4 = np.array([[1, 2], [0, 2], [0, 1]])
    assert graph_overlaps([g1], [g2])[0, 0] == 1.0
    g5 = np.array([[1, 2], [0, 2], [0, 1]])
    g6 = np.array([[2, 1], [2, 1], [2, 0]])  # row 0: 2 shared, row 1: 1 (2), row 2: 1 (0)
    assert graph_overlaps([g5], [g6])[0, 0] == 4 / 6
    assert np.array_equal(graph_overlaps([g1, g3, g4]), np.ones((3, 3)))


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"graphs_a": [np.zeros((4, 2), int)], "backend": "gpu"}, "backend must be one of"),
        ({"graphs_a": [np.array([[1, 1], [0, 2], [0, 1]])]}, r"graphs_a\[0\] row 0 lists a neighbour twice"),
        ({"graphs_a": [np.array([[1, 2], [0, 2], [0, 3]])]}, r"graphs_a\[0\] holds neighbour index 3 outside \[0, 2\]"),
        (
            {"graphs_a": [np.array([[1, 2], [0, 2], [0, 1]])], "graphs_b": [np.array([[1], [0], [0]])]},
            "graph shapes differ",
        ),
        (
            {"graphs_a": [np.array([[1, 2], [0, 2], [0, 1]])], "memory_budget_bytes": 0},
            "memory_budget_bytes must be >= 1",
        ),
    ],
)
def test_graph_overlaps_errors(kwargs, msg):
    with pytest.raises(AnalysisError, match=msg):
        graph_overlaps(**kwargs)


def _debiased_cka_direct(x: np.ndarray, y: np.ndarray) -> float:
    """Debiased CKA from METHODS.md's HSIC1 on full n x n Grams in float64."""

    def hsic(k_, l_):
        n = k_.shape[0]
        k_, l_ = k_.copy(), l_.copy()
        np.fill_diagonal(k_, 0.0)
        np.fill_diagonal(l_, 0.0)
        one = np.ones(n)
        return (
            np.trace(k_ @ l_)
            + (one @ k_ @ one) * (one @ l_ @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ k_ @ l_ @ one)
        ) / (n * (n - 3))

    x, y = x.astype(np.float64), y.astype(np.float64)
    kx, ky = x @ x.T, y @ y.T
    return hsic(kx, ky) / math.sqrt(hsic(kx, kx) * hsic(ky, ky))


@pytest.mark.parametrize("debiased", [True, False])
def test_gram_cka_equals_cka_matrix_per_pair(debiased):
    big = gram_cka(ALL_LAYERS, debiased=debiased, device="cpu", form="gram")
    m = len(ALL_LAYERS)
    assert big.shape == (m, m)
    assert np.array_equal(big, big.T)
    assert np.allclose(np.diag(big), 1.0, atol=1e-9)
    for i, j in PAIRS:
        ref = cka_matrix(MODELS[i], MODELS[j], debiased=debiased, device="cpu")
        assert np.abs(_block(big, i, j) - ref).max() < 1e-6
    feat = gram_cka(ALL_LAYERS, debiased=debiased, device="cpu", form="feature")
    assert np.abs(feat - big).max() < 1e-6


def test_gram_cka_direct_formula_and_two_sets():
    x, y = MODELS[1][2], MODELS[3][4]
    direct = _debiased_cka_direct(x, y)
    big = gram_cka(ALL_LAYERS, device="cpu")
    assert abs(big[OFFSETS[1] + 2, OFFSETS[3] + 4] - direct) < 1e-6
    two = gram_cka(MODELS[1], MODELS[3], device="cpu", precision="float32", form="gram")
    assert two.shape == (5, 6)
    assert abs(two[2, 4] - direct) < 1e-6
    assert np.abs(two - _block(big, 1, 3)).max() < 1e-6


def test_gram_cka_errors():
    with pytest.raises(AnalysisError, match="n = 3 prompts is too few: debiased CKA needs n >= 4"):
        gram_cka([np.arange(6.0).reshape(3, 2) ** 2])
    with pytest.raises(AnalysisError, match=r"layers_a\[1\] is constant over the 120 prompts"):
        gram_cka([MODELS[0][0], np.ones((N, 3))])
    with pytest.raises(AnalysisError, match="debiased must be True or False"):
        gram_cka(MODELS[0], debiased="yes")


def _welch_direct(M: np.ndarray) -> tuple[float, float, float, float]:
    """(on mean, off mean, t, p) by a loop over cells of the generalized diagonal."""
    if M.shape[0] < M.shape[1]:
        M = M.T
    n1, n2 = M.shape
    on, off = [], []
    for i in range(n1):
        for j in range(n2):
            (on if j <= i <= j + n1 - n2 else off).append(float(M[i, j]))
    on, off = np.array(on), np.array(off)
    v1, v0 = on.var(ddof=1) / on.size, off.var(ddof=1) / off.size
    t = (on.mean() - off.mean()) / math.sqrt(v1 + v0)
    df = (v1 + v0) ** 2 / (v1**2 / (on.size - 1) + v0**2 / (off.size - 1))
    return on.mean(), off.mean(), t, float(stats.t.sf(t, df))


def test_pair_summary_against_direct_loop():
    big = graph_overlaps(ALL_GRAPHS)
    for i, j in PAIRS:
        M = _block(big, i, j)
        da = [l_ / (LAYERS[i] - 1) for l_ in range(LAYERS[i])]
        db = [l_ / (LAYERS[j] - 1) for l_ in range(LAYERS[j])]
        s = pair_summary(M, da, db)
        assert isinstance(s, PairSummary)
        path = []
        for r in range(M.shape[0]):
            best = 0
            for c in range(M.shape[1]):
                if M[r, c] > M[r, best]:
                    best = c
            path.append(best)
        assert s.argmax == tuple(path)
        assert s.argmax_depths == tuple(db[c] for c in path)
        assert s.max_value == max(float(v) for v in M.ravel())
        on, off, t, p = _welch_direct(M)
        d = s.diagonal
        assert abs(d.on_diagonal_mean - on) < 1e-12 and abs(d.off_diagonal_mean - off) < 1e-12
        assert abs(d.t_statistic - t) < 1e-9 and abs(d.p_value - p) < 1e-9 * max(p, 1e-300) + 1e-300


def test_pair_summary_literal_and_undefined_diagonal():
    M = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.8], [0.1, 0.4, 0.7]])
    s = pair_summary(M, [0.0, 0.5, 1.0], [0.0, 0.5, 1.0])
    assert s.argmax == (0, 1, 2) and s.argmax_depths == (0.0, 0.5, 1.0) and s.max_value == 0.9
    assert s.diagonal.on_diagonal_mean == pytest.approx(0.8)  # (0.9 + 0.8 + 0.7) / 3
    assert s.diagonal.off_diagonal_mean == pytest.approx(1.9 / 6)
    one_row = pair_summary(np.array([[0.2, 0.5, 0.5]]), [0.0], [0.0, 0.5, 1.0])
    assert one_row.argmax == (1,) and one_row.argmax_depths == (0.5,)
    assert math.isnan(one_row.diagonal.t_statistic) and one_row.diagonal.n_on == 0
    assert one_row.diagonal.transposed is True
    const = pair_summary(np.full((3, 3), 0.25), [0, 0.5, 1], [0, 0.5, 1])
    assert math.isnan(const.diagonal.p_value) and const.max_value == 0.25
    with pytest.raises(AnalysisError, match="depths_b must be 3 relative depths"):
        pair_summary(M, [0.0, 0.5, 1.0], [0.0, 1.0])
    with pytest.raises(AnalysisError, match=r"depths_a must lie in \[0, 1\], got 1.5 at position 2"):
        pair_summary(M, [0.0, 0.5, 1.5], [0.0, 0.5, 1.0])
    with pytest.raises(AnalysisError, match="values contains a non-finite value"):
        pair_summary(np.array([[np.nan, 1.0], [0.0, 1.0]]), [0, 1], [0, 1])


def test_resize_and_mean_of_resized_against_direct_loop():
    big = graph_overlaps(ALL_GRAPHS)
    # resize_rows(range(L), L, 3) for L = 3, 5, 4, 6, 2, 5 (actstore.layers; literals here):
    # positions 0, (L-1)/2, L-1 rounded half up
    rows3 = {3: [0, 1, 2], 5: [0, 2, 4], 4: [0, 2, 3], 6: [0, 3, 5], 2: [0, 1, 1]}
    mats = []
    for i, j in PAIRS:
        M = _block(big, i, j)
        r, c = rows3[LAYERS[i]], rows3[LAYERS[j]]
        got = resize(M, r, c)
        want = np.empty((3, 3))
        for a in range(3):
            for b in range(3):
                want[a, b] = M[r[a], c[b]]
        assert np.array_equal(got, want)
        mats.append(got)
    mean = np.mean(mats, axis=0)
    direct = np.zeros((3, 3))
    for i, j in PAIRS:
        for a in range(3):
            for b in range(3):
                direct[a, b] += _block(big, i, j)[rows3[LAYERS[i]][a], rows3[LAYERS[j]][b]]
    assert np.allclose(mean, direct / len(PAIRS), rtol=0, atol=1e-15)
    M = np.arange(12.0).reshape(3, 4)
    assert resize(M, [0, 2], [3, 3, 0]).tolist() == [[3.0, 3.0, 0.0], [11.0, 11.0, 8.0]]
    with pytest.raises(AnalysisError, match=r"cols holds position 4 outside 0..3 \(the matrix has 4 columns\)"):
        resize(M, [0], [4])
    with pytest.raises(AnalysisError, match="rows must be a non-empty list of integer positions"):
        resize(M, [], [0])


def test_max_similarity_literal():
    got = max_similarity(3, {(0, 1): 0.5, (2, 0): 0.25, (1, 2): 0.75})
    want = np.array([[np.nan, 0.5, 0.25], [0.5, np.nan, 0.75], [0.25, 0.75, np.nan]])
    assert np.array_equal(got, want, equal_nan=True)
    with pytest.raises(AnalysisError, match=r"pair_max lacks 1 of the 3 model pairs, first \(1, 2\)"):
        max_similarity(3, {(0, 1): 0.5, (0, 2): 0.25})
    with pytest.raises(AnalysisError, match=r"pair_max gives the pair \(0, 1\) twice"):
        max_similarity(2, {(0, 1): 0.5, (1, 0): 0.5})
    with pytest.raises(AnalysisError, match=r"pair_max has the pair \(1, 1\) of a model with itself"):
        max_similarity(2, {(1, 1): 0.5})
    with pytest.raises(AnalysisError, match="model position j must be <= 1"):
        max_similarity(2, {(0, 2): 0.5})
    with pytest.raises(AnalysisError, match="n_models must be >= 2"):
        max_similarity(1, {})
