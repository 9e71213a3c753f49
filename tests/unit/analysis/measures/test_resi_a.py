"""ReSi measures, part A (cca.py, alignment.py, spectral.py) against direct float64 formulas
from their papers (reference_resi_a.py), closed-form values, the reference projects'
documented differences, and similarity_matrix == a loop of similarity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from actstore.analysis.errors import AnalysisError
from actstore.analysis.measures import get, similarity, similarity_matrix

try:
    from tests.unit.analysis.measures.reference_resi_a import (
        DIRECT,
        pwcca_resi_recipe,
        resi_svcca_components,
    )
except ImportError:  # pytest run without the repository root on sys.path
    from reference_resi_a import DIRECT, pwcca_resi_recipe, resi_svcca_components

NAMES = sorted(DIRECT)
ASYMMETRIC = {"pwcca", "linear_regression"}


def correlated(n: int, p: int, q: int, seed: int, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """X [n, p] with unequal column scales and an offset; Y [n, q] partly a linear map of X."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) @ rng.normal(size=(p, p)) + rng.normal(size=p) * 3.0
    k = min(p, q)
    Y = X[:, :k] @ rng.normal(size=(k, q)) + noise * rng.normal(size=(n, q)) + 1.0
    return X, Y


def orthonormal_centred(n: int, d: int, seed: int) -> np.ndarray:
    """[n, d] with centred, orthonormal columns."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, d))
    Q, _ = np.linalg.qr(A - A.mean(axis=0))
    return Q


def random_rotation(d: int, seed: int) -> np.ndarray:
    Q, R = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return Q * np.sign(np.diag(R))


# ----------------------------------------------------------------- against direct formulas


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(80, 5, 6), (60, 6, 4), (40, 5, 5)])
def test_matches_direct_formula(name: str, shape: tuple[int, int, int]) -> None:
    n, p, q = shape
    X, Y = correlated(n, p, q, seed=n + p + q)
    assert similarity(X, Y, name) == pytest.approx(DIRECT[name](X, Y), abs=1e-6)


@pytest.mark.parametrize("opts", [{"lmbda": 0.0}, {"lmbda": 0.05}, {"lmbda": 1.0, "squared": False}])
def test_gulp_options_match_direct_formula(opts: dict) -> None:
    X, Y = correlated(70, 12, 9, seed=3)
    assert similarity(X, Y, "gulp", opts) == pytest.approx(DIRECT["gulp"](X, Y, **opts), abs=1e-6)


@pytest.mark.parametrize(
    "opts",
    [
        {"keep_variance": 0.5},
        {"keep_variance": 0.9},
        {"dims": 3},
        {"dims": 10, "standardize": True},
        {"keep_variance": 1.0},
    ],
)
def test_svcca_options_match_direct_formula(opts: dict) -> None:
    X, Y = correlated(150, 14, 18, seed=4, noise=3.0)
    assert similarity(X, Y, "svcca", opts) == pytest.approx(DIRECT["svcca"](X, Y, **opts), abs=1e-6)


def test_wide_layers_match_direct_formula_where_defined() -> None:
    # p, q > n: centred layers are rank-deficient; the subspace forms must use numerical rank
    X, Y = correlated(30, 45, 40, seed=5)
    for name in [
        "orthogonal_procrustes_centered_and_normalized",
        "procrustes_size_and_shape_distance",
        "orthogonal_angular_shape_metric_centered",
        "aligned_cosine_similarity",
        "eigenspace_overlap_score",
        "gulp",
        "soft_correlation_match",
    ]:
        assert similarity(X, Y, name) == pytest.approx(DIRECT[name](X, Y), abs=1e-6), name


# ----------------------------------------------------------------------- closed forms


def test_identical_inputs() -> None:
    X, _ = correlated(50, 6, 6, seed=6)
    expected = {
        "svcca": 1.0,
        "pwcca": 1.0,
        "orthogonal_procrustes_centered_and_normalized": 0.0,
        "procrustes_size_and_shape_distance": 0.0,
        "orthogonal_angular_shape_metric_centered": 0.0,
        "aligned_cosine_similarity": 1.0,
        "permutation_procrustes": 0.0,
        "linear_regression": 1.0,
        "hard_correlation_match": 1.0,
        "soft_correlation_match": 1.0,
        "eigenspace_overlap_score": 1.0,
        "gulp": 0.0,
    }
    assert set(expected) == set(NAMES)
    # sqrt(||X||^2 + ||Y||^2 - 2 c) near 0 is accurate to about sqrt(eps) * ||X||_F only
    unscaled = {"procrustes_size_and_shape_distance", "permutation_procrustes"}
    for name, value in expected.items():
        tol = 1e-7 * np.linalg.norm(X) if name in unscaled else 1e-6
        assert similarity(X, X, name) == pytest.approx(value, abs=tol), name


def test_rotation_invariant_measures_ignore_a_rotation() -> None:
    X, _ = correlated(60, 7, 7, seed=7)
    Y = X @ random_rotation(7, seed=8)
    assert similarity(X, Y, "procrustes_size_and_shape_distance") == pytest.approx(0.0, abs=1e-7 * np.linalg.norm(X))
    for name, value in {
        "svcca": 1.0,
        "pwcca": 1.0,
        "orthogonal_procrustes_centered_and_normalized": 0.0,
        "orthogonal_angular_shape_metric_centered": 0.0,
        "aligned_cosine_similarity": 1.0,
        "linear_regression": 1.0,
        "eigenspace_overlap_score": 1.0,
        "gulp": 0.0,
    }.items():
        assert similarity(X, Y, name) == pytest.approx(value, abs=1e-6), name
    # neuron-wise measures do see it
    assert similarity(X, Y, "permutation_procrustes") > 1.0
    assert similarity(X, Y, "hard_correlation_match") < 0.99


def test_permuted_neurons() -> None:
    X, _ = correlated(60, 6, 6, seed=9)
    Y = X[:, [3, 0, 5, 1, 4, 2]]
    assert similarity(X, Y, "permutation_procrustes") == pytest.approx(0.0, abs=1e-7 * np.linalg.norm(X))
    assert similarity(X, Y, "hard_correlation_match") == pytest.approx(1.0, abs=1e-12)
    assert similarity(X, Y, "soft_correlation_match") == pytest.approx(1.0, abs=1e-12)


def test_isotropic_scaling() -> None:
    X = orthonormal_centred(40, 5, seed=10) + 2.0  # centred part has ||X_c||_F^2 = 5
    Y = 3.0 * X
    assert similarity(X, Y, "orthogonal_procrustes_centered_and_normalized") == pytest.approx(0.0, abs=1e-6)
    assert similarity(X, Y, "orthogonal_angular_shape_metric_centered") == pytest.approx(0.0, abs=1e-6)
    # sqrt(5 + 45 - 2 * 15) = sqrt(20)
    assert similarity(X, Y, "procrustes_size_and_shape_distance") == pytest.approx(math.sqrt(20.0), abs=1e-12)
    assert similarity(X, Y, "aligned_cosine_similarity") == pytest.approx(1.0, abs=1e-12)
    assert similarity(X, Y, "gulp", {"lmbda": 0.3}) == pytest.approx(0.0, abs=1e-12)


def test_orthogonal_subspaces() -> None:
    Q = orthonormal_centred(50, 7, seed=11)
    X, Y = Q[:, :3], Q[:, 3:]  # centred, mutually orthogonal column spaces
    assert similarity(X, Y, "svcca") == pytest.approx(0.0, abs=1e-12)
    assert similarity(X, Y, "pwcca") == pytest.approx(0.0, abs=1e-12)
    assert similarity(X, Y, "linear_regression") == pytest.approx(0.0, abs=1e-12)
    assert similarity(X, Y, "eigenspace_overlap_score") == pytest.approx(0.0, abs=1e-12)
    assert similarity(X, Y, "orthogonal_procrustes_centered_and_normalized") == pytest.approx(math.sqrt(2), abs=1e-12)
    assert similarity(X, Y, "orthogonal_angular_shape_metric_centered") == pytest.approx(math.pi / 2, abs=1e-12)
    # lmbda = 0: ||P_X - P_Y||_F^2 = rank X + rank Y = 3 + 4
    assert similarity(X, Y, "gulp") == pytest.approx(7.0, abs=1e-10)
    assert similarity(X, Y, "gulp", {"squared": False}) == pytest.approx(math.sqrt(7.0), abs=1e-10)


def test_eigenspace_overlap_of_nested_subspaces() -> None:
    Q = orthonormal_centred(40, 6, seed=12)
    # span(Y) contains span(X): ||U_x^T U_y||^2 = 4, divided by max(p, q) = 6
    assert similarity(Q[:, :4], Q, "eigenspace_overlap_score") == pytest.approx(4 / 6, abs=1e-12)


def test_linear_regression_is_one_when_y_spans_every_centred_direction() -> None:
    # q >= n - 1: ReSi's (Y^T Y)^(-1/2) does not exist; the projection form gives R^2 = 1
    X, Y = correlated(20, 4, 25, seed=13)
    assert similarity(X, Y, "linear_regression") == pytest.approx(1.0, abs=1e-10)
    assert similarity(Y, X, "linear_regression") == pytest.approx(DIRECT["linear_regression"](Y, X), abs=1e-6)


def test_asymmetric_measures_depend_on_the_order() -> None:
    X, Y = correlated(80, 4, 8, seed=14)
    for name in ASYMMETRIC:
        assert not get(name).symmetric
        ab, ba = similarity(X, Y, name), similarity(Y, X, name)
        assert abs(ab - ba) > 1e-3, name
        assert ba == pytest.approx(DIRECT[name](Y, X), abs=1e-6), name
    for name in set(NAMES) - ASYMMETRIC:
        assert get(name).symmetric
        assert similarity(X, Y, name) == pytest.approx(similarity(Y, X, name), abs=1e-9), name


# ------------------------------------------------------ the reference projects' behaviours


def test_svcca_follows_the_paper_not_resis_one_component_rule() -> None:
    X, Y = correlated(120, 10, 12, seed=15, noise=3.0)
    # ReSi's rule compares a normalised cumulative share with 0.99 * total variance: one component
    assert resi_svcca_components(X) == 1 and resi_svcca_components(Y) == 1
    # with one component, SVCCA is |Pearson r| of the first principal component scores (closed form)
    pcx = (X - X.mean(0)) @ np.linalg.svd(X - X.mean(0))[2][0]
    pcy = (Y - Y.mean(0)) @ np.linalg.svd(Y - Y.mean(0))[2][0]
    resi_value = abs(np.corrcoef(pcx, pcy)[0, 1])
    assert similarity(X, Y, "svcca", {"dims": 1}) == pytest.approx(resi_value, abs=1e-9)
    paper_value = similarity(X, Y, "svcca")
    assert paper_value == pytest.approx(DIRECT["svcca"](X, Y, keep_variance=0.99), abs=1e-6)
    assert abs(paper_value - resi_value) > 0.05


def test_svcca_platonic_settings_standardise_the_columns() -> None:
    X, Y = correlated(150, 14, 18, seed=16, noise=3.0)
    # one loud neuron unrelated to Y: unstandardised, it takes one of the few kept directions
    X[:, 0] = 500.0 * np.random.default_rng(16).normal(size=150)
    platonic = similarity(X, Y, "svcca", {"dims": 3, "standardize": True})
    assert platonic == pytest.approx(DIRECT["svcca"](X, Y, dims=3, standardize=True), abs=1e-6)
    assert platonic - similarity(X, Y, "svcca", {"dims": 3}) > 0.05


def test_pwcca_agrees_with_the_svcca_recipe_only_for_whitened_x() -> None:
    rng = np.random.default_rng(17)
    X = 3.0 * orthonormal_centred(100, 5, seed=18)  # Sigma_xx proportional to I
    Y = X @ rng.normal(size=(5, 7)) + rng.normal(size=(100, 7))
    assert similarity(X, Y, "pwcca") == pytest.approx(pwcca_resi_recipe(X, Y), abs=1e-9)
    X2, Y2 = correlated(100, 5, 7, seed=19)  # general X: the recipe skips the whitening
    ours = similarity(X2, Y2, "pwcca")
    assert ours == pytest.approx(DIRECT["pwcca"](X2, Y2), abs=1e-6)
    assert abs(ours - pwcca_resi_recipe(X2, Y2)) > 1e-3


def test_aligned_cosine_skips_all_zero_rows() -> None:
    X, Y = correlated(40, 5, 5, seed=20)
    X[3] = 0.0
    expected = DIRECT["aligned_cosine_similarity"](X, Y)
    assert similarity(X, Y, "aligned_cosine_similarity") == pytest.approx(expected, abs=1e-6)


# ----------------------------------------------------------------- matrix form and errors


@pytest.mark.parametrize("name", NAMES)
def test_similarity_matrix_equals_loop(name: str) -> None:
    rng = np.random.default_rng(21)
    base = rng.normal(size=(40, 5))
    layers_a = [base @ rng.normal(size=(5, 5)) + 0.5 * rng.normal(size=(40, 5)) for _ in range(3)]
    layers_b = [base[:, :4] @ rng.normal(size=(4, 6)) + rng.normal(size=(40, 6)) for _ in range(2)]
    M = similarity_matrix(layers_a, layers_b, name)
    loop = np.array([[similarity(a, b, name) for b in layers_b] for a in layers_a])
    assert M.shape == (3, 2)
    np.testing.assert_allclose(M, loop, rtol=0, atol=1e-12)


def test_registry_entries_are_complete() -> None:
    for name in NAMES:
        m = get(name)
        assert m.direction == (
            "distance"
            if name
            in {
                "orthogonal_procrustes_centered_and_normalized",
                "procrustes_size_and_shape_distance",
                "orthogonal_angular_shape_metric_centered",
                "permutation_procrustes",
                "gulp",
            }
            else "similarity"
        )
        assert "mklabunde/resi@24ab9e5055c71527445b0b196f5872f3cbe9a020" in m.reference
        assert m.definition and m.sensitive_to
        assert m.cost(1000, [768], [512], m.options_for()) > 0


def test_bad_options_and_inputs_are_named() -> None:
    X, Y = correlated(30, 4, 4, seed=22)
    with pytest.raises(
        AnalysisError, match=r"option 'keep_variance' of measure 'svcca' must be in \[1e-06, 1\], got 1.5"
    ):
        similarity(X, Y, "svcca", {"keep_variance": 1.5})
    with pytest.raises(AnalysisError, match=r"option 'lmbda' of measure 'gulp' must be in \[0, inf\], got -1"):
        similarity(X, Y, "gulp", {"lmbda": -1})
    with pytest.raises(AnalysisError, match=r"measure 'gulp' has no option 'lambda' \(its options: lmbda, squared\)"):
        similarity(X, Y, "gulp", {"lambda": 0.1})
    const = np.ones((30, 4))
    with pytest.raises(AnalysisError, match="measure 'svcca' is undefined for a layer whose activations do not vary"):
        similarity(const, Y, "svcca")
    with pytest.raises(AnalysisError, match="measure 'orthogonal_procrustes_centered_and_normalized' is undefined"):
        similarity(X, const, "orthogonal_procrustes_centered_and_normalized")
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(AnalysisError, match="measure 'gulp' needs finite activations, got NaN or inf values"):
        similarity(bad, Y, "gulp")


SVD_BASED = [
    "svcca",
    "pwcca",
    "orthogonal_procrustes_centered_and_normalized",
    "procrustes_size_and_shape_distance",
    "orthogonal_angular_shape_metric_centered",
    "aligned_cosine_similarity",
    "linear_regression",
    "eigenspace_overlap_score",
    "gulp",
]


@pytest.mark.parametrize("name", SVD_BASED)
def test_matrix_decomposes_each_layer_once(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from actstore.analysis.measures import alignment, cca, spectral, subspaces

    calls = []

    def counting(X: np.ndarray) -> subspaces.ThinSVD:
        calls.append(X.shape)
        return subspaces.thin_svd(X)

    for module in (alignment, cca, spectral):
        monkeypatch.setattr(module, "thin_svd", counting)
    rng = np.random.default_rng(23)
    layers = [rng.normal(size=(30, 4)) for _ in range(4)]
    similarity_matrix(layers[:3], layers[1:], name)
    assert len(calls) == 6  # 3 + 3 layers, not 9 pairs x 2


def test_float32_input_is_computed_in_float64() -> None:
    X, Y = correlated(50, 5, 6, seed=24)
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    for name in NAMES:
        expected = DIRECT[name](X32.astype(np.float64), Y32.astype(np.float64))
        assert similarity(X32, Y32, name) == pytest.approx(expected, abs=1e-6), name
