"""The platonic-representation measures of the registry (knn.py, kernels.py), the platonic
preprocessing and the generic permutation test, against direct float64 formulas
(reference_platonic.py) and literal values."""

from __future__ import annotations

import numpy as np
import pytest
from reference_platonic import DIRECT, platonic_rows
from reference_platonic import mutual_knn as direct_mutual_knn

from actstore.analysis.errors import AnalysisError
from actstore.analysis.knn import knn_graph
from actstore.analysis.knn import mutual_knn as graph_mutual_knn
from actstore.analysis.measures import (
    Measure,
    get,
    measure_permutation_test,
    names,
    similarity,
    similarity_matrix,
)
from actstore.analysis.measures import permutation as perm_module
from actstore.analysis.permutation import stratified_permutations
from actstore.analysis.preprocess import fit_preprocess, platonic_clip, preprocess

PLATONIC = ["mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn", "cknna", "cka", "unbiased_cka"]
KNN = PLATONIC[:5]


def _opts(name: str, k: int = 4) -> dict:
    return {"k": k} if name in KNN else {}


def _layers(n=36, seed=0):
    """Three related layers with cluster structure (neighbours are informative)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 5))
    out = []
    for d, noise in ((12, 0.4), (9, 0.8), (15, 1.5)):
        out.append(z @ rng.standard_normal((5, d)) + noise * rng.standard_normal((n, d)) + rng.standard_normal(d))
    return out


def test_registered_in_order():
    assert names()[:7] == PLATONIC
    for nm in PLATONIC:
        assert get(nm).direction == "similarity"
        assert "dcd76ba3c950c1b197a2ae8b1c6713535c94ecf9" in get(nm).reference
    assert not get("cycle_knn").symmetric


@pytest.mark.parametrize("name", PLATONIC)
def test_matches_direct_formula(name):
    A, B, C = _layers()
    for X, Y in ((A, B), (B, C), (C, A)):
        assert similarity(X, Y, name, _opts(name)) == pytest.approx(DIRECT[name](X, Y, **_opts(name)), abs=1e-6)


@pytest.mark.parametrize(
    "opts", [{"k": 3, "unbiased": True}, {"k": 3, "unbiased": False}, {"k": 6, "unbiased": False, "eps": 1e-3}]
)
def test_cknna_options_match_direct(opts):
    A, B, _ = _layers(seed=1)
    assert similarity(A, B, "cknna", opts) == pytest.approx(DIRECT["cknna"](A, B, **opts), abs=1e-6)


@pytest.mark.parametrize("name", ["cka", "unbiased_cka"])
def test_kernel_eps_option(name):
    A, B, _ = _layers(seed=2)
    eps = 0.05
    got = similarity(A, B, name, {"eps": eps})
    assert got == pytest.approx(DIRECT[name](A, B, eps=eps), abs=1e-9)
    assert got < similarity(A, B, name)
    assert similarity_matrix([A], [B], name, {"eps": eps})[0, 0] == pytest.approx(got, abs=1e-9)


@pytest.mark.parametrize("name", PLATONIC)
def test_matrix_equals_loop(name):
    la, lb = _layers(seed=3)[:2], _layers(seed=4)
    m = similarity_matrix(la, lb, name, _opts(name))
    loop = np.array([[similarity(x, y, name, _opts(name)) for y in lb] for x in la])
    assert m.shape == (2, 3)
    np.testing.assert_allclose(m, loop, atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", [n for n in PLATONIC if n != "cycle_knn"])
def test_identical_layers_give_the_maximum(name):
    A = _layers(seed=5)[0]
    assert similarity(A, A, name, _opts(name)) == pytest.approx(4.0 if name == "lcs_knn" else 1.0, abs=1e-12)


def test_cycle_knn_of_a_layer_with_itself_can_be_below_one():
    # j being i's neighbour does not make i one of j's: 34 of these 36 prompts get back
    A = _layers(seed=5)[0]
    assert similarity(A, A, "cycle_knn", {"k": 4}) == 34 / 36 == DIRECT["cycle_knn"](A, A, k=4)


def test_cknna_without_mutual_neighbours_is_zero():
    # 9 points on a circle; Y puts point i at position 2i mod 9, so i's two neighbours are
    # i +- 1 in X and i + 4, i + 5 in Y: no pair is a neighbour in both, CKNNA = 0
    ang = 2 * np.pi * np.arange(9) / 9
    X = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    Y = X[(2 * np.arange(9)) % 9]
    for unbiased in (True, False):
        got = similarity(X, Y, "cknna", {"k": 2, "unbiased": unbiased})
        assert got == pytest.approx(DIRECT["cknna"](X, Y, k=2, unbiased=unbiased), abs=1e-12)
    assert similarity(X, Y, "cknna", {"k": 2}) == 0.0
    assert similarity(X, Y, "mutual_knn", {"k": 2}) == 0.0


def test_mutual_knn_is_the_graph_function():
    A, B, _ = _layers(seed=6)
    for k in (1, 5):
        assert similarity(A, B, "mutual_knn", {"k": k}) == graph_mutual_knn(knn_graph(A, k), knn_graph(B, k))


# Z has exact ties (duplicate rows); W agrees with Z's graph when ties go to the smaller index.
Z = np.array([[1.0, 0], [1, 0], [1, 0], [0, 1]])
W = np.array([[1.0, 0], [1, 0], [0, 1], [0, 1]])


def test_ties_go_to_the_smaller_index_literal():
    # graphs (k = 1): Z -> [1, 0, 0, 0], W -> [1, 0, 3, 2]
    np.testing.assert_array_equal(knn_graph(Z, 1).ravel(), [1, 0, 0, 0])
    assert similarity(Z, W, "mutual_knn", {"k": 1}) == 0.5
    assert similarity(Z, W, "cycle_knn", {"k": 1}) == 0.5
    assert similarity(W, Z, "cycle_knn", {"k": 1}) == 0.5
    assert similarity(Z, W, "lcs_knn", {"k": 1}) == 0.5
    assert similarity(Z, W, "edit_distance_knn", {"k": 1}) == 0.5
    # platonic-rep's unstable argsort may break these ties either way; ties to the larger index
    # give Z -> [2, 2, 1, 2] (W unchanged) and a value of 1/4
    assert direct_mutual_knn(Z, W, 1, tie="larger") == 0.25
    assert direct_mutual_knn(Z, W, 1) == 0.5


def test_knn_measures_use_cosine_not_inner_product():
    # platonic-rep ranks by feats @ feats.T (cosine only on its unit-length rows); here any
    # positive row scaling leaves every k-NN measure unchanged
    A, B, _ = _layers(seed=7)
    scale = np.random.default_rng(0).uniform(0.01, 100.0, size=(A.shape[0], 1))
    for name in KNN:
        assert similarity(A * scale, B, name, {"k": 4}) == similarity(A, B, name, {"k": 4})


def test_cka_literal_squared_correlation():
    # one feature each: biased linear CKA is the squared Pearson correlation, here 125/129
    x = np.arange(1.0, 5.0)[:, None]
    assert similarity(x, x**2, "cka") == pytest.approx(125 / 129, abs=1e-12)


def test_dynamic_programmes_literal():
    from actstore.analysis.measures.knn import edit_distances, lcs_lengths

    a = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [1, 2, 3, 4]])
    b = np.array([[2, 1, 3, 4], [8, 7, 6, 5], [9, 9, 9, 9]])
    np.testing.assert_array_equal(lcs_lengths(a, b), [3, 1, 0])
    np.testing.assert_array_equal(edit_distances(a, b), [2, 4, 4])


def test_option_errors():
    A = _layers()[0]
    with pytest.raises(AnalysisError, match="measure 'mutual_knn' needs option 'k'"):
        similarity(A, A, "mutual_knn")
    with pytest.raises(AnalysisError, match=r"option 'k' of measure 'cknna' must be in \[2, inf\], got 1"):
        similarity(A, A, "cknna", {"k": 1})
    with pytest.raises(AnalysisError, match="measure 'lcs_knn' needs at least 37 rows with these options, got 36"):
        similarity(A, A, "lcs_knn", {"k": 36})
    with pytest.raises(AnalysisError, match="measure 'cka' has no option 'k'"):
        similarity(A, A, "cka", {"k": 3})


# --- platonic preprocessing ------------------------------------------------------------------


def test_platonic_literal():
    X = np.array([[3.0, -4.0, 0.0], [1.0, 2.0, 2.0]])
    # exact: sorted |X| = [0, 1, 2, 2, 3, 4], rank int(0.5 * 6) = 3 -> c = 2
    p = fit_preprocess(X, "platonic", quantile=0.5, exact_quantile=True)
    assert p.clip == 2.0 and p.dropped == ()
    np.testing.assert_allclose(p.apply(X), [[2**-0.5, -(2**-0.5), 0], [1 / 3, 2 / 3, 2 / 3]], atol=1e-15)
    # default (mean of per-row quantiles): medians 3 and 2 -> c = 2.5
    assert fit_preprocess(X, "platonic", quantile=0.5).clip == 2.5
    # q = 1: no clipping, unit rows only
    out, dropped = preprocess(X, "platonic", quantile=1.0)
    np.testing.assert_allclose(out, [[0.6, -0.8, 0.0], [1 / 3, 2 / 3, 2 / 3]], atol=1e-15)
    assert dropped == ()


def test_platonic_matches_direct_and_zero_rows_stay_zero():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((20, 7)) * rng.uniform(0.1, 10, 7)
    X[3] = 0.0
    for exact in (False, True):
        got, _ = preprocess(X, "platonic", exact_quantile=exact)
        np.testing.assert_allclose(got, platonic_rows(X, 0.95, exact), atol=1e-12)
        assert not got[3].any()


def test_platonic_clip_over_all_layers_is_that_of_the_stacked_rows():
    layers = [np.array([[1.0, -8.0], [2.0, 3.0]]), np.array([[5.0], [-6.0]])]
    # rows [1, 8, 5] and [2, 3, 6]: exact q = 0.5 -> sorted [1, 2, 3, 5, 6, 8][3] = 5
    assert platonic_clip(layers, 0.5, exact_quantile=True) == 5.0
    # per-row medians 5 and 3 -> 4
    assert platonic_clip(layers, 0.5) == 4.0
    p = fit_preprocess(layers[0], "platonic", clip=4.0)
    np.testing.assert_allclose(
        p.apply(layers[0]),
        [[0.24253562503633297, -0.9701425001453319], [0.5547001962252291, 0.8320502943378437]],
        atol=1e-15,
    )


def test_platonic_errors():
    X = np.ones((3, 2))
    with pytest.raises(AnalysisError, match=r"platonic quantile must be a number in \(0, 1\], got 1.5"):
        preprocess(X, "platonic", quantile=1.5)
    with pytest.raises(AnalysisError, match="platonic clip must be a finite number >= 0, got -1.0"):
        preprocess(X, "platonic", clip=-1.0)


def test_platonic_pipeline_mutual_knn_and_cka():
    # platonic-rep's pipeline: clip, unit rows, then its metric on those rows
    A, B, _ = _layers(seed=9)
    pa, pb = preprocess(A, "platonic")[0], preprocess(B, "platonic")[0]
    ra, rb = platonic_rows(A), platonic_rows(B)
    assert similarity(pa, pb, "mutual_knn", {"k": 5}) == DIRECT["mutual_knn"](ra, rb, k=5)
    assert similarity(pa, pb, "cka", {"eps": 1e-6}) == pytest.approx(DIRECT["cka"](ra, rb, eps=1e-6), abs=1e-9)


# --- permutation test ------------------------------------------------------------------------


def test_permutation_literal_p_values():
    A = _layers(seed=10)[0]
    res = measure_permutation_test(A, A, "mutual_knn", {"k": 3}, permutations=9, seed=0)
    assert res.value == 1.0 and res.p_value == 0.1 and res.null.shape == (9,)
    # one stratum per row: every draw is the identity, every null value equals the observed one
    one = measure_permutation_test(A, A * 2, "cka", permutations=4, strata=np.arange(A.shape[0]))
    assert one.p_value == 1.0 and np.all(one.null == one.value)
    assert measure_permutation_test(A, A, "cka", permutations=0).p_value == 1.0


def test_permutation_null_is_the_direct_formula_on_permuted_rows():
    A, B, _ = _layers(n=24, seed=11)
    strata = np.repeat(["a", "b", "c"], 8)
    res = measure_permutation_test(A, B, "cknna", {"k": 3}, permutations=6, seed=3, strata=strata)
    expect = [DIRECT["cknna"](A, B[pi], k=3) for pi in stratified_permutations(24, 6, 3, strata)]
    np.testing.assert_allclose(res.null, expect, atol=1e-9)
    count = sum(v >= res.value for v in expect)
    assert res.p_value == (1 + count) / 7
    assert res.measure == "cknna" and res.permutations == 6 and res.seed == 3


def test_permutation_distance_counts_smaller_values(monkeypatch):
    cka = get("cka")
    dist = Measure(
        name="one_minus_cka",
        family="test",
        direction="distance",
        definition="1 - cka",
        sensitive_to="",
        reference="",
        prepare=cka.prepare,
        compare=lambda a, b, o: 1.0 - cka.compare(a, b, o),
        prepare_cost=cka.prepare_cost,
        compare_cost=cka.compare_cost,
        options=cka.options,
    )
    monkeypatch.setattr(perm_module, "get", lambda name: dist)
    A, B, _ = _layers(n=20, seed=12)
    res = measure_permutation_test(A, B, "one_minus_cka", permutations=7, seed=1)
    count = int(np.sum(res.null <= res.value))
    assert res.p_value == (1 + count) / 8 and res.direction == "distance"
    assert res.value == pytest.approx(1.0 - DIRECT["cka"](A, B), abs=1e-12)


def test_permutation_errors():
    A = _layers()[0]
    with pytest.raises(AnalysisError, match="permutations"):
        measure_permutation_test(A, A, "cka", permutations=-1)
    with pytest.raises(AnalysisError, match="strata has 2 labels but there are n = 36 prompts"):
        measure_permutation_test(A, A, "cka", permutations=2, strata=[0, 1])
