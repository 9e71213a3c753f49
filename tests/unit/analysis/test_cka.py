"""linear CKA and CKA matrices against a slow, direct implementation of METHODS.md."""

from __future__ import annotations

import numpy as np
import pytest

from actstore.analysis import AnalysisError, cka_matrix, linear_cka, plan_cka_matrix

# ---------------------------------------------------------------- reference (slow, direct)


def ref_hsic1(K: np.ndarray, L: np.ndarray) -> float:
    """HSIC1 exactly as METHODS.md, on explicit Gram matrices (any float dtype)."""
    n = K.shape[0]
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0)
    np.fill_diagonal(Lt, 0)
    one = np.ones(n, dtype=K.dtype)
    return (
        np.trace(Kt @ Lt)
        + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ Kt @ Lt @ one)
    ) / (n * (n - 3))


def ref_cka(X, Y, debiased=True, dtype=np.longdouble) -> float:
    """Direct CKA; extended precision by default so that uncentred data stays exact."""
    X = np.asarray(X, dtype=dtype)
    Y = np.asarray(Y, dtype=dtype)
    if not debiased:
        X = X - X.mean(0)
        Y = Y - Y.mean(0)
        num = np.sum((Y.T @ X) ** 2)
        return float(num / (np.sqrt(np.sum((X.T @ X) ** 2)) * np.sqrt(np.sum((Y.T @ Y) ** 2))))
    K, L = X @ X.T, Y @ Y.T  # uncentred, as the definition reads
    return float(ref_hsic1(K, L) / np.sqrt(ref_hsic1(K, K) * ref_hsic1(L, L)))


def related(rng, n, p, q, rank=3, noise=1.0):
    z = rng.standard_normal((n, rank))
    X = z @ rng.standard_normal((rank, p)) + noise * rng.standard_normal((n, p))
    Y = z @ rng.standard_normal((rank, q)) + noise * rng.standard_normal((n, q))
    return X, Y


def llm_like(rng, n, p, q):
    """Mean 100 and a few outlier dimensions of magnitude 1e3 (with some variance)."""
    X, Y = related(rng, n, p, q)
    X += 100.0
    Y += 100.0 + rng.standard_normal(q)
    a, b = min(2, p), min(3, q)
    X[:, :a] = 1e3 + 5.0 * rng.standard_normal((n, a)) + (X[:, -a:] - 100.0)
    Y[:, -b:] = -1e3 + 5.0 * rng.standard_normal((n, b))
    return X, Y


CASES = [(4, 3, 5), (5, 7, 2), (6, 1, 9), (8, 20, 3), (10, 50, 40), (40, 12, 30), (120, 25, 7)]


# ---------------------------------------------------------------- agreement with the formula


@pytest.mark.parametrize("n,p,q", CASES)
@pytest.mark.parametrize("debiased", [True, False])
@pytest.mark.parametrize("kind", ["random", "llm_like"])
def test_linear_cka_matches_reference(n, p, q, debiased, kind):
    rng = np.random.default_rng(n * 1000 + p * 10 + q)
    X, Y = related(rng, n, p, q) if kind == "random" else llm_like(rng, n, p, q)
    ref = ref_cka(X, Y, debiased)
    for form in ("gram", "feature"):
        got = linear_cka(X, Y, debiased=debiased, form=form, precision="float64")
        assert got == pytest.approx(ref, abs=1e-6), (form, got, ref)
    assert linear_cka(X, Y, debiased=debiased) == pytest.approx(ref, abs=1e-6)


def exact_cka(X, Y) -> float:
    """Debiased CKA of integer-valued data in exact rational arithmetic (Python ints)."""
    from fractions import Fraction

    X = np.asarray(X).astype(np.int64).astype(object)
    Y = np.asarray(Y).astype(np.int64).astype(object)
    n = X.shape[0]

    def h(K, L):
        K, L = K.copy(), L.copy()
        for i in range(n):
            K[i, i] = 0
            L[i, i] = 0
        k1, l1 = K.sum(axis=1), L.sum(axis=1)
        t = int((K * L).sum())
        return (
            Fraction(t) + Fraction(int(k1.sum()) * int(l1.sum()), (n - 1) * (n - 2)) - Fraction(2 * int(k1 @ l1), n - 2)
        ) / (n * (n - 3))

    K, L = X @ X.T, Y @ Y.T
    num, hk, hl = h(K, L), h(K, K), h(L, L)
    return float(num) / float(np.sqrt(float(hk) * float(hl)))


def test_float64_reference_on_raw_data_is_itself_inaccurate():
    """Why we centre: the direct formula on uncentred float64 data loses every digit."""
    rng = np.random.default_rng(3)
    X, Y = llm_like(rng, 40, 12, 9)
    X = np.round(X * 10) + 10**5  # integers: exact arithmetic is possible
    Y = np.round(Y * 10) - 10**5
    exact = exact_cka(X, Y)
    with np.errstate(invalid="ignore"):
        naive64 = ref_cka(X, Y, dtype=np.float64)
    assert not abs(naive64 - exact) <= 1e-3  # the direct float64 formula is off (or NaN) ...
    assert linear_cka(X, Y) == pytest.approx(exact, abs=1e-9)  # ... ours is not
    assert linear_cka(X, Y, form="feature") == pytest.approx(exact, abs=1e-9)
    assert linear_cka(X.astype(np.float32), Y.astype(np.float32), precision="float32", form="gram") == pytest.approx(
        exact, abs=1e-5
    )


def test_debiased_hsic_is_invariant_to_centring_columns():
    """The claim the fast path relies on: HSIC1 does not change when columns are centred."""
    rng = np.random.default_rng(4)
    for n, p, q in [(4, 3, 2), (9, 5, 11), (30, 8, 6)]:
        X, Y = related(rng, n, p, q)
        X, Y = X + rng.standard_normal(p) * 5, Y - rng.standard_normal(q) * 5
        X, Y = X.astype(np.longdouble), Y.astype(np.longdouble)
        Xc, Yc = X - X.mean(0), Y - Y.mean(0)
        raw = ref_hsic1(X @ X.T, Y @ Y.T)
        cen = ref_hsic1(Xc @ Xc.T, Yc @ Yc.T)
        assert float(abs(raw - cen)) <= 1e-12 * float(abs(raw) + 1)
        # and the biased HSIC is NOT invariant without centring (sanity: the claim is real)
        Kr, Lr = X @ X.T, Y @ Y.T
        H = np.eye(n) - 1.0 / n
        assert abs(float(np.trace(Kr @ Lr) - np.trace(H @ Kr @ H @ Lr))) > 1e-3


@pytest.mark.parametrize("debiased", [True, False])
def test_matrix_matches_pairwise_reference(debiased):
    rng = np.random.default_rng(5)
    n = 37
    A = [related(rng, n, p, 4)[0] + 50 for p in (6, 11, 3)]
    B = [related(rng, n, 5, q)[1] * 3 - 20 for q in (9, 2)]
    A.append(B[0] @ rng.standard_normal((9, 9)) + rng.standard_normal((n, 9)))  # related
    ref = np.array([[ref_cka(a, b, debiased) for b in B] for a in A])
    for form in ("gram", "feature"):
        for prec in ("float64", "float32", "auto"):
            M = cka_matrix(A, B, debiased=debiased, form=form, precision=prec)
            assert M.shape == (4, 2) and M.dtype == np.float64
            tol = 1e-6 if (prec != "float32" or form == "feature") else 1e-5
            np.testing.assert_allclose(M, ref, atol=tol, rtol=0)
    assert ref[3, 0] > 0.5  # the planted relation is visible


def test_gram_blocks_smaller_than_n_agree():
    """Several row blocks (the streamed path) give the same matrix as one block."""
    rng = np.random.default_rng(6)
    n = 1100
    A = [llm_like(rng, n, 16, 8)[0] for _ in range(2)]
    B = [llm_like(rng, n, 8, 24)[1] for _ in range(3)]
    plan = plan_cka_matrix(n, [16, 16], [24] * 3, form="gram", precision="float64", memory_budget_bytes=5 * n * 8 * 300)
    assert plan.block_rows == 300
    M = cka_matrix(A, B, form="gram", precision="float64", memory_budget_bytes=5 * n * 8 * 300)
    ref = cka_matrix(A, B, form="feature")
    np.testing.assert_allclose(M, ref, atol=1e-9)
    slow = ref_cka(A[1], B[2], dtype=np.float64)
    assert M[1, 2] == pytest.approx(slow, abs=1e-6)


def test_float32_path_on_llm_like_data():
    """float32 Gram GEMMs (used for large problems) stay within 1e-5 of float64."""
    rng = np.random.default_rng(7)
    n = 600
    A = [llm_like(rng, n, 64, 8)[0].astype(np.float32) for _ in range(2)]
    B = [llm_like(rng, n, 8, 96)[1].astype(np.float32) for _ in range(2)]
    M32 = cka_matrix(A, B, form="gram", precision="float32")
    M64 = cka_matrix(A, B, form="feature")
    np.testing.assert_allclose(M32, M64, atol=1e-5)


def test_float16_input_matches_float64_of_the_same_values():
    rng = np.random.default_rng(8)
    X, Y = related(rng, 50, 10, 12)
    X16, Y16 = X.astype(np.float16), Y.astype(np.float16)
    assert linear_cka(X16, Y16) == pytest.approx(ref_cka(X16.astype(np.float64), Y16.astype(np.float64)), abs=1e-6)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(9)
    X, Y = llm_like(rng, 30, 6, 5)
    X32 = X.astype(np.float32)
    Xc, Yc, X32c = X.copy(), Y.copy(), X32.copy()
    linear_cka(X, Y, form="gram")
    linear_cka(X, Y, form="feature")
    cka_matrix([X32, X], [Y], precision="float32")
    assert np.array_equal(X, Xc) and np.array_equal(Y, Yc) and np.array_equal(X32, X32c)


# ---------------------------------------------------------------- properties


@pytest.mark.parametrize("debiased", [True, False])
def test_invariances(debiased):
    rng = np.random.default_rng(10)
    X, Y = related(rng, 45, 8, 6)
    base = linear_cka(X, Y, debiased=debiased)
    Q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    assert linear_cka(X @ Q, Y, debiased=debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(X * 37.5, Y * 1e-3, debiased=debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(X + 1e3, Y - 7, debiased=debiased) == pytest.approx(base, abs=1e-8)
    assert linear_cka(Y, X, debiased=debiased) == pytest.approx(base, abs=1e-12)
    # a non-isotropic scaling does change it
    S = np.diag(np.linspace(0.1, 10, 8))
    assert abs(linear_cka(X @ S, Y, debiased=debiased) - base) > 1e-3


@pytest.mark.parametrize("debiased", [True, False])
def test_identical_inputs_give_one(debiased):
    rng = np.random.default_rng(11)
    X = rng.standard_normal((20, 7)) + 100
    assert linear_cka(X, X, debiased=debiased) == pytest.approx(1.0, abs=1e-12)
    M = cka_matrix([X, X * 2], [X], debiased=debiased)
    np.testing.assert_allclose(M, 1.0, atol=1e-12)


def test_debiased_is_near_zero_for_independent_layers_and_biased_is_not():
    rng = np.random.default_rng(12)
    X, Y = rng.standard_normal((64, 200)), rng.standard_normal((64, 300))
    assert abs(linear_cka(X, Y)) < 0.05
    assert linear_cka(X, Y, debiased=False) > 0.5  # the known small-n bias


def test_plan_counts_and_choice():
    p = plan_cka_matrix(4096, [2048] * 16, [3072] * 28)
    assert p.form == "gram" and p.precision == "float32"
    assert p.gram_flops == pytest.approx(4096.0**2 * (16 * 2048 + 28 * 3072 + 448 + 44))
    assert p.feature_flops >= 2 * 4096 * (16 * 2048) * (28 * 3072)
    q = plan_cka_matrix(200_000, [64], [32])  # many prompts, narrow layers: feature form
    assert q.form == "feature" and q.precision == "float64"
    small = plan_cka_matrix(50, [10], [10])
    assert small.precision == "float64"


# ---------------------------------------------------------------- bad input


def test_bad_inputs():
    rng = np.random.default_rng(13)
    X, Y = rng.standard_normal((10, 3)), rng.standard_normal((10, 4))
    with pytest.raises(AnalysisError, match=r"n = 3 prompts is too few: debiased CKA needs n >= 4"):
        linear_cka(X[:3], Y[:3])
    assert np.isfinite(linear_cka(X[:3], Y[:3], debiased=False))
    with pytest.raises(AnalysisError, match=r"row counts differ: X has 10 rows but Y has 9"):
        linear_cka(X, Y[:9])
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(AnalysisError, match=r"X contains a non-finite value \(nan\) at row 2, column 1"):
        linear_cka(bad, Y)
    bad[2, 1] = np.inf
    with pytest.raises(AnalysisError, match=r"layers_b\[0\] contains a non-finite value \(inf\)"):
        cka_matrix([X], [bad])
    const = np.ones((10, 4)) * 3.0
    with pytest.raises(AnalysisError, match=r"Y is constant over the 10 prompts.*CKA is undefined"):
        linear_cka(X, const)
    with pytest.raises(AnalysisError, match=r"layers_a\[1\] is constant"):
        cka_matrix([X, const], [Y])
    with pytest.raises(AnalysisError, match=r"row counts differ: layers_a\[0\] has 10 rows but layers_a\[1\] has 8"):
        cka_matrix([X, X[:8]], [Y])
    with pytest.raises(AnalysisError, match=r"X must be 2-D \[n_prompts, d\], got shape \(10,\)"):
        linear_cka(X[:, 0], Y)
    with pytest.raises(AnalysisError, match=r"layers_a must be a non-empty sequence"):
        cka_matrix([], [Y])
    with pytest.raises(AnalysisError, match=r"device must be one of .*got 'tpu'"):
        cka_matrix([X], [Y], device="tpu")
    with pytest.raises(AnalysisError, match=r"precision must be one of .*got 'half'"):
        cka_matrix([X], [Y], precision="half")
    with pytest.raises(AnalysisError, match=r"form must be one of .*got 'kernel'"):
        linear_cka(X, Y, form="kernel")
    with pytest.raises(AnalysisError, match=r"must be a real numeric array, got dtype <U1"):
        linear_cka(np.array([["a"] * 3] * 10), Y)
    assert issubclass(AnalysisError, ValueError)
