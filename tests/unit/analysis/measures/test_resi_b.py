"""ReSi part B measures (rsm.py, neighborhoods.py, statistics.py) against direct float64
formulas from the papers (reference_resi_b.DIRECT), closed forms, both behaviours where ReSi's
code and the paper differ, the all-pairs matrix, and their errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from reference_resi_b import DIRECT

from actstore.analysis.errors import AnalysisError
from actstore.analysis.measures import get, similarity, similarity_matrix
from actstore.analysis.measures.neighborhoods import jaccard_values, rank_values

NAMES = list(DIRECT)
SIMILARITIES = [
    "rsa",
    "distance_correlation",
    "jaccard_similarity",
    "rank_similarity",
    "joint_rank_jaccard_similarity",
    "second_order_cosine_similarity",
]
DISTANCES = ["rsm_norm_difference", "magnitude_difference", "concentricity_difference", "uniformity_difference"]
KNN = ["jaccard_similarity", "rank_similarity", "joint_rank_jaccard_similarity", "second_order_cosine_similarity"]


def _pair(seed: int, n: int = 60, p: int = 12, q: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Two related layers with an offset (so centring matters) and of moderate scale (so the
    uniformity exps do not underflow)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) * 0.4 + rng.normal(size=p) * 0.3
    Y = np.tanh(X @ rng.normal(size=(p, q)) / 2) + 0.2 * rng.normal(size=(n, q))
    return X, Y


def _opts(name: str, **given) -> dict:
    """Small k for the k-NN measures (n = 60 in these tests)."""
    return {"k": 5, **given} if name in KNN else dict(given)


CASES = [(name, {}) for name in NAMES] + [
    ("rsa", {"inner": "euclidean"}),
    ("rsa", {"outer": "pearson"}),
    ("rsa", {"inner": "euclidean", "outer": "pearson"}),
    ("rsm_norm_difference", {"norm": "spectral"}),  # ReSi's code
    ("rsm_norm_difference", {"inner": "cosine"}),
    ("rsm_norm_difference", {"inner": "cosine", "norm": "spectral"}),
    ("second_order_cosine_similarity", {"values": "distance"}),  # ReSi's code
    ("jaccard_similarity", {"k": 1}),
    ("rank_similarity", {"k": 12}),
    ("joint_rank_jaccard_similarity", {"k": 12}),
    ("uniformity_difference", {"pairs": "distinct"}),  # Wang & Isola's code
    ("uniformity_difference", {"t": 0.5, "pairs": "distinct"}),
]


@pytest.mark.parametrize("name, given", CASES, ids=lambda v: str(v))
def test_matches_direct_formula(name, given):
    opts = _opts(name, **given)
    for seed in (0, 1):
        X, Y = _pair(seed)
        full = get(name).options_for(opts)
        assert similarity(X, Y, name, opts) == pytest.approx(DIRECT[name](X, Y, **full), abs=1e-9)


def test_resi_and_paper_behaviours_differ_where_documented():
    X, Y = _pair(3)
    fro = similarity(X, Y, "rsm_norm_difference")
    spec = similarity(X, Y, "rsm_norm_difference", {"norm": "spectral"})
    assert spec < fro  # the spectral norm never exceeds the Frobenius norm, equal only at rank 1
    assert (
        abs(
            similarity(X, Y, "second_order_cosine_similarity", {"k": 5})
            - similarity(X, Y, "second_order_cosine_similarity", {"k": 5, "values": "distance"})
        )
        > 1e-3
    )
    assert (
        abs(
            similarity(X, Y, "uniformity_difference") - similarity(X, Y, "uniformity_difference", {"pairs": "distinct"})
        )
        > 1e-3
    )


# --- closed forms ---------------------------------------------------------------------------


def _rotation(d: int, seed: int) -> np.ndarray:
    Q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return Q


@pytest.mark.parametrize("name", NAMES)
def test_identical_inputs(name):
    X, _ = _pair(4)
    expected = 1.0 if name in SIMILARITIES else 0.0
    assert similarity(X, X.copy(), name, _opts(name)) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_rotated_inputs(name):
    # invariant to an orthogonal map of the features: all but rsa with correlation RSMs
    # (ReSi: invariant_to_ortho False for RSA), whose rows are centred over their features
    X, _ = _pair(5)
    Z = X @ _rotation(X.shape[1], 6)
    value = similarity(X, Z, name, _opts(name))
    if name == "rsa":
        # Pearson correlations between rows are not rotation invariant (row centring over
        # features); the euclidean RSM is
        assert similarity(X, Z, name, {"inner": "euclidean"}) == pytest.approx(1.0, abs=1e-12)
        assert value == pytest.approx(DIRECT["rsa"](X, Z), abs=1e-9)
        assert value < 1.0
    else:
        expected = 1.0 if name in SIMILARITIES else 0.0
        assert value == pytest.approx(expected, abs=1e-9)


def test_isotropic_scaling():
    X, _ = _pair(7)
    c = 2.5
    for name in (
        "rsa",
        "distance_correlation",
        "jaccard_similarity",
        "rank_similarity",
        "joint_rank_jaccard_similarity",
        "second_order_cosine_similarity",
    ):
        assert similarity(X, c * X, name, _opts(name)) == pytest.approx(1.0, abs=1e-12), name
    assert similarity(X, c * X, "concentricity_difference") == pytest.approx(0.0, abs=1e-12)
    # distances scale by c: ||c D - D||_F = (c - 1) ||D||_F; the mean's norm by c
    D = DIRECT["rsm_norm_difference"](X, np.zeros_like(X))
    assert similarity(X, c * X, "rsm_norm_difference") == pytest.approx((c - 1) * D, rel=1e-12)
    mag = float(np.linalg.norm(X.mean(axis=0)))
    assert similarity(X, c * X, "magnitude_difference") == pytest.approx((c - 1) * mag, rel=1e-12)


def test_translation():
    X, _ = _pair(8)
    T = X + 3.0
    assert similarity(X, T, "rsm_norm_difference") == pytest.approx(0.0, abs=1e-9)
    assert similarity(X, T, "distance_correlation") == pytest.approx(1.0, abs=1e-12)
    assert similarity(X, T, "rsa", {"inner": "euclidean"}) == pytest.approx(1.0, abs=1e-12)
    assert similarity(X, T, "uniformity_difference") == pytest.approx(0.0, abs=1e-12)
    # the cosine neighbourhoods move with the origin
    assert similarity(X, T, "jaccard_similarity", {"k": 5}) < 1.0


def test_permuted_prompts_break_similarity_but_not_statistics():
    X, _ = _pair(9)
    P = X[np.random.default_rng(10).permutation(X.shape[0])]
    for name in DISTANCES[1:]:
        assert similarity(X, P, name) == pytest.approx(0.0, abs=1e-12), name
    # the V-statistic dCor of unrelated rows is far from 0 at small n / d (see its definition)
    assert 0.3 < similarity(X, P, "distance_correlation") < 0.8
    assert abs(similarity(X, P, "rsa")) < 0.2


def test_hand_computed_literals():
    X2, Y2 = np.array([[0.0], [1.0]]), np.array([[0.0], [3.0]])
    # D_X - D_Y = [[0, -2], [-2, 0]]: Frobenius sqrt(8) (paper), spectral 2 (ReSi's code)
    assert similarity(X2, Y2, "rsm_norm_difference") == pytest.approx(math.sqrt(8.0), abs=1e-12)
    assert similarity(X2, Y2, "rsm_norm_difference", {"norm": "spectral"}) == pytest.approx(2.0, abs=1e-12)
    # magnitude: |(2, 0)| - |(0, 0)|
    assert similarity(
        np.array([[1.0, 0], [3, 0]]), np.array([[0.0, 1], [0, -1]]), "magnitude_difference"
    ) == pytest.approx(2.0, abs=1e-12)
    # concentricity: both rows at 45 degrees to their mean vs rows along their mean
    assert similarity(
        np.array([[1.0, 0], [0, 1]]), np.array([[1.0, 0], [2, 0]]), "concentricity_difference"
    ) == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-12)
    # uniformity, t = 2, two points at distance 1 vs two equal points:
    # all pairs: |log((2 + 2 e^-2) / 4) - 0|; distinct pairs: |log(e^-2) - 0| = 2
    assert similarity(X2, np.zeros((2, 1)), "uniformity_difference") == pytest.approx(
        math.log(2 / (1 + math.exp(-2))), abs=1e-12
    )
    assert similarity(X2, np.zeros((2, 1)), "uniformity_difference", {"pairs": "distinct"}) == pytest.approx(
        2.0, abs=1e-12
    )
    # distance correlation of a 1-D variable with an affine function of it is 1
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    assert similarity(x, -2 * x + 5, "distance_correlation") == pytest.approx(1.0, abs=1e-12)


def test_rank_and_jaccard_terms_literals():
    ga = np.array([[1, 2, 3], [1, 2, 3], [1, 2, 3]])
    gb = np.array([[3, 2, 1], [1, 5, 6], [4, 5, 6]])
    # row 0: shared {1, 2, 3}; ranks (1, 3), (2, 2), (3, 1): 1/6 + 1/2 + 1/6 = 5/6 over
    # v_max = 1 + 1/2 + 1/3 = 11/6 -> 5/11. Row 1: shared {1} at ranks (1, 1): 1 / 1.
    # Row 2: nothing shared -> 0.
    np.testing.assert_allclose(rank_values(ga, gb), [5 / 11, 1.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(jaccard_values(ga, gb), [1.0, 1 / 5, 0.0], atol=1e-15)


# --- matrix form, symmetry ------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_matrix_equals_loop_of_similarity(name):
    rng = np.random.default_rng(11)
    base = rng.normal(size=(40, 8)) * 0.4
    la = [base, np.tanh(base @ rng.normal(size=(8, 10)))]
    lb = [base @ rng.normal(size=(8, 6)) + 0.1 * rng.normal(size=(40, 6)), rng.normal(size=(40, 5)) * 0.4, np.abs(base)]
    opts = _opts(name)
    M = similarity_matrix(la, lb, name, opts)
    loop = np.array([[similarity(a, b, name, opts) for b in lb] for a in la])
    assert M.shape == (2, 3)
    np.testing.assert_allclose(M, loop, rtol=0, atol=1e-12)
    assert similarity(lb[0], la[1], name, opts) == pytest.approx(loop[1, 0], abs=1e-12)
    assert get(name).symmetric


def test_registry_entries():
    for name in NAMES:
        m = get(name)
        assert m.direction == ("similarity" if name in SIMILARITIES else "distance")
        assert "24ab9e5055c71527445b0b196f5872f3cbe9a020" in m.reference
        assert m.cost(200, [64], [48], m.options_for({})) > 0
    assert get("jaccard_similarity").options_for({})["k"] == 10  # ReSi's default
    assert get("rsa").options_for({}) == {"inner": "correlation", "outer": "spearman"}


# --- errors ---------------------------------------------------------------------------------


def test_errors_name_the_bad_value():
    X, Y = _pair(12, n=8)
    with pytest.raises(AnalysisError, match="needs at least 11 rows with these options, got 8"):
        similarity(X, Y, "rank_similarity")
    with pytest.raises(
        AnalysisError, match="option 'inner' of measure 'rsa' must be one of correlation, euclidean, got 'cosine'"
    ):
        similarity(X, Y, "rsa", {"inner": "cosine"})
    with pytest.raises(
        AnalysisError, match="option 'pairs' of measure 'uniformity_difference' must be one of all, distinct"
    ):
        similarity(X, Y, "uniformity_difference", {"pairs": "some"})
    Xc = X.copy()
    Xc[3] = 1.5
    with pytest.raises(AnalysisError, match="row 3 is constant; its Pearson correlation"):
        similarity(Xc, Y, "rsa")
    Xz = X.copy()
    Xz[2] = 0.0
    with pytest.raises(AnalysisError, match="row 2 is all zeros"):
        similarity(Xz, Y, "rsm_norm_difference", {"inner": "cosine"})
    with pytest.raises(AnalysisError, match="row 2 is all zeros"):
        similarity(Xz, Y, "concentricity_difference")
    same = np.ones((5, 3))
    with pytest.raises(AnalysisError, match="distance variance is 0"):
        similarity(same, Y[:5], "distance_correlation")
