"""Permutation tests for linear CKA: one pair, and a whole matrix with the max statistic.

Null hypothesis: the two sides are unrelated, so any re-pairing of prompts is as likely as
the observed one. Each of the ``permutations`` draws permutes the prompt order of side B
(all of B's layers together) with ``numpy.random.default_rng(seed).permutation(n)``;
p = (1 + #{null >= observed}) / (1 + P), never 0. Values within rounding of the observed
one (1e-12 in float64, 1e-6 in float32, absolute, in CKA units) count as >= (conservative).

What is reused: permuting the rows of Y by pi maps L~ to L~[pi][:, pi], r_L to r_L[pi],
d_L to d_L[pi], and leaves s_L and every self term unchanged. So the centred Gram matrices
K~ are built once (n^2 p flops per layer) and each permutation costs one gather of n^2
values per layer of the smaller side plus a GEMM over vectorised Grams (m_a m_b n^2 flops):
O(n^2) per pair instead of the O(n^2 (p + q)) or O(n p q) of a fresh CKA. Permuting side B by
pi is the same as permuting side A by pi^-1 (tr(K~ P L~ P^T) = tr(P^T K~ P L~)), so the side
with fewer layers is the one gathered.

Max statistic (:func:`cka_matrix_permutation_test`): for each draw the largest CKA over all
cells; ``p_max`` tests the best observed pair against that null, and ``p_adjusted[i, j]``
compares every cell with it (family-wise error control over all m_a m_b cells, no p-hacking
by picking the best pair after the fact).

Memory: the Grams of the smaller side (m_s n^2 values) stay resident; the other side's are
built in chunks that fit ``memory_budget_bytes``. float64 when everything fits the budget in
float64 (``precision="auto"``), else float32.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from . import validation as V
from .devices import resolve_device, resolve_precision
from .errors import AnalysisError, StopCheck, check_stop
from .hsic import cka_table
from .inputs import prepare_layers
from .traces import full_gram

__all__ = [
    "CkaTest",
    "CkaMatrixTest",
    "cka_permutation_test",
    "cka_matrix_permutation_test",
    "permutation_p_value",
    "stratified_permutations",
]

DEFAULT_PERM_MEMORY_BUDGET = 4 << 30  # bytes for cached Gram matrices
_GATHER_BYTES = 64 << 20  # temporary per gather block


@dataclass(frozen=True, eq=False)
class CkaTest:
    """Permutation test of one CKA value.

    value: observed CKA; p_value: (1 + #{null >= value}) / (1 + permutations);
    null: [permutations] float64 CKA values under permuted prompt order.
    """

    value: float
    p_value: float
    permutations: int
    null: np.ndarray
    seed: int
    debiased: bool


@dataclass(frozen=True, eq=False)
class CkaMatrixTest:
    """Permutation test of a CKA matrix [m_a, m_b] with the max statistic.

    values: observed CKA [m_a, m_b]; best: (i, j) of the largest value; p_max: p-value of that
    largest value against null_max [permutations] (the largest CKA over all cells per draw);
    p_adjusted: every cell against null_max (family-wise); p_values: every cell against its
    own null (unadjusted); null: [permutations, m_a, m_b].
    """

    values: np.ndarray
    p_max: float
    best: tuple[int, int]
    null_max: np.ndarray
    p_adjusted: np.ndarray
    p_values: np.ndarray
    null: np.ndarray
    permutations: int
    seed: int
    debiased: bool


def permutation_p_value(
    null: np.ndarray,
    observed: np.ndarray | float,
    tol: float = 0.0,
) -> np.ndarray | float:
    """(1 + #{null >= observed - tol}) / (1 + P) along axis 0 of ``null`` [P, ...]."""
    null = np.asarray(null, dtype=np.float64)
    count = np.sum(null >= np.asarray(observed) - tol, axis=0)
    p = (1.0 + count) / (1.0 + null.shape[0])
    return float(p) if np.ndim(p) == 0 else p


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _permuted_traces(ks: torch.Tensor, kl: torch.Tensor, sigma: np.ndarray, rows: int) -> np.ndarray:
    """T[s, l] = <K~_s[sigma][:, sigma], L~_l>_F for stacks ks [m_s, n, n], kl [m_l, n, n].

    Gathers ``rows`` permuted rows of every K~_s at a time (numpy's take on CPU, which is
    much faster there than torch's index_select; torch on CUDA) and multiplies them with the
    matching rows of every L~_l in one GEMM.
    """
    m_s, n, _ = ks.shape
    m_l = kl.shape[0]
    out = torch.zeros((m_s, m_l), dtype=torch.float64, device=ks.device)
    if ks.device.type == "cpu":
        ks_np = ks.numpy()
        tmp = np.empty((m_s, min(rows, n), n), dtype=ks_np.dtype)
        g_np = np.empty_like(tmp)
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            t_ = tmp[:, : r1 - r0]
            g_ = g_np[:, : r1 - r0]
            np.take(ks_np, sigma[r0:r1], axis=1, out=t_)
            np.take(t_, sigma, axis=2, out=g_)
            g = torch.from_numpy(g_)
            out += (g.reshape(m_s, -1) @ kl[:, r0:r1, :].reshape(m_l, -1).T).to(torch.float64)
        return out.numpy()
    sig = torch.as_tensor(sigma, device=ks.device)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        g = ks.index_select(1, sig[r0:r1]).index_select(2, sig)
        out += (g.reshape(m_s, -1) @ kl[:, r0:r1, :].reshape(m_l, -1).T).to(torch.float64)
    return out.cpu().numpy()


def cka_matrix_permutation_test(
    layers_a: Sequence[np.ndarray],
    layers_b: Sequence[np.ndarray],
    *,
    permutations: int,
    seed: int = 0,
    debiased: bool = True,
    device: str = "auto",
    precision: str = "auto",
    memory_budget_bytes: int = DEFAULT_PERM_MEMORY_BUDGET,
    should_stop: StopCheck | None = None,
    strata: Sequence[object] | np.ndarray | None = None,
) -> CkaMatrixTest:
    """CKA matrix [m_a, m_b] with per-cell and max-statistic permutation p-values.

    Args:
        layers_a, layers_b: arrays [n, p_i] / [n, q_j], same prompts in the same order.
        permutations: P >= 0 draws (P = 0 gives p = 1).
        seed: seed of numpy's default_rng that draws the permutations (reproducible).
        debiased, device, precision: as in :func:`actstore.analysis.cka.cka_matrix`.
        memory_budget_bytes: bytes for cached n x n Gram matrices.
        should_stop: asked before every permutation; when it returns True the test stops
            with AnalysisCancelled (a caller's time limit passed or its client left).
        strata: optional label per prompt [n] (e.g. its dataset): the null is stratified,
            each draw permutes rows only within a stratum (see :func:`stratified_permutations`).
    """
    return _matrix_test(
        layers_a,
        layers_b,
        permutations=permutations,
        seed=seed,
        debiased=debiased,
        device=device,
        precision=precision,
        memory_budget_bytes=memory_budget_bytes,
        should_stop=should_stop,
        strata=strata,
    )


def _matrix_test(
    layers_a: object,
    layers_b: object,
    *,
    permutations: int,
    seed: int,
    debiased: bool,
    device: str,
    precision: str,
    memory_budget_bytes: int,
    names: tuple[str, str] = ("layers_a", "layers_b"),
    indexed: bool = True,
    should_stop: StopCheck | None = None,
    strata: Sequence[object] | np.ndarray | None = None,
) -> CkaMatrixTest:
    P = V.check_int(permutations, "permutations", minimum=0)
    seed = V.check_int(seed, "seed", minimum=0)
    a, b, sa, sb, n = prepare_layers(
        layers_a, layers_b, debiased=debiased, name_a=names[0], name_b=names[1], indexed=indexed
    )
    groups = _strata_groups(strata, n)
    dev = resolve_device(device)
    m_a, m_b = len(a), len(b)
    perm_a = m_a <= m_b  # gather the side with fewer layers
    s_layers, s_stats, l_layers, l_stats = (a, sa, b, sb) if perm_a else (b, sb, a, sa)
    m_s, m_l = len(s_layers), len(l_layers)
    dt = resolve_precision(precision, small=(m_s + m_l) * n * n * 8 + _GATHER_BYTES <= memory_budget_bytes)
    it = dt.itemsize
    cache = m_s * n * n * it
    chunk = int((memory_budget_bytes - cache - _GATHER_BYTES) // (n * n * it))
    if chunk < 1:
        need = (m_s + 1) * n * n * it + _GATHER_BYTES
        raise AnalysisError(
            f"a permutation test on n = {n} prompts with {m_s} + {m_l} layers needs at least "
            f"{need / 2**30:.2f} GiB of Gram matrices ({dt.name}) but memory_budget_bytes is "
            f"{memory_budget_bytes / 2**30:.2f} GiB; use fewer prompts or layers, or raise "
            f"the budget"
        )
    rows = max(1, _GATHER_BYTES // (2 * m_s * n * it))

    ks = torch.stack([full_gram(x, st, dtype=dt, device=dev) for x, st in zip(s_layers, s_stats)])
    t_ss = np.array([float(torch.linalg.vector_norm(k, dtype=torch.float64)) ** 2 for k in ks])
    t = np.empty((P + 1, m_s, m_l))
    t_ll = np.empty(m_l)
    for c0 in range(0, m_l, chunk):
        c1 = min(m_l, c0 + chunk)
        kl = torch.stack([full_gram(l_layers[j], l_stats[j], dtype=dt, device=dev) for j in range(c0, c1)])
        t_ll[c0:c1] = [float(torch.linalg.vector_norm(k, dtype=torch.float64)) ** 2 for k in kl]
        for k_, sigma in enumerate(_sigmas(n, P, seed, perm_a, groups)):
            check_stop(should_stop, k_, P, "permutations")
            t[k_, :, c0:c1] = _permuted_traces(ks, kl, sigma, rows)
        del kl
    # Vector terms under each permutation (cheap: n m_s m_l per draw).
    rs = np.stack([st.r for st in s_stats])
    rl = np.stack([st.r for st in l_stats])
    ds = np.stack([st.d for st in s_stats])
    dl = np.stack([st.d for st in l_stats])
    vec = np.empty((P + 1, m_s, m_l))
    for k_, sigma in enumerate(_sigmas(n, P, seed, perm_a, groups)):
        vec[k_] = (rs[:, sigma] @ rl.T) if debiased else (ds[:, sigma] @ dl.T)
    kw = {"r_dot": vec} if debiased else {"d_dot": vec}
    nm = (names[0], names[1]) if perm_a else (names[1], names[0])
    vals = cka_table(debiased, t, t_ss, t_ll, s_stats, l_stats, names=nm, indexed=indexed, **kw)
    if not perm_a:
        vals = np.swapaxes(vals, 1, 2)
    observed, null = vals[0].copy(), vals[1:].copy()
    tol = 1e-12 if dt == np.float64 else 1e-6
    bi, bj = np.unravel_index(np.argmax(observed), observed.shape)
    best = (int(bi), int(bj))
    null_max = null.reshape(P, -1).max(axis=1) if P else np.empty(0)
    p_max = permutation_p_value(null_max, observed[best], tol)
    p_adj = np.asarray(permutation_p_value(null_max[:, None, None] if P else np.empty((0, 1, 1)), observed, tol))
    p_vals = np.asarray(permutation_p_value(null, observed, tol))
    return CkaMatrixTest(
        values=_readonly(observed),
        p_max=float(p_max),
        best=best,
        null_max=_readonly(null_max),
        p_adjusted=_readonly(p_adj),
        p_values=_readonly(p_vals),
        null=_readonly(null),
        permutations=P,
        seed=seed,
        debiased=bool(debiased),
    )


def _strata_groups(strata: Sequence[object] | np.ndarray | None, n: int) -> list[np.ndarray] | None:
    """Row indices of each stratum (in order of first appearance), None without strata."""
    if strata is None:
        return None
    labels = np.asarray(strata, dtype=object).reshape(-1)
    if len(labels) != n:
        raise AnalysisError(f"strata has {len(labels)} labels but there are n = {n} prompts; give one label per prompt")
    first: dict[object, list[int]] = {}
    for i, lab in enumerate(labels.tolist()):
        first.setdefault(lab, []).append(i)
    return [np.asarray(v, dtype=np.int64) for v in first.values()]


def stratified_permutations(
    n: int, permutations: int, seed: int, strata: Sequence[object] | np.ndarray | None = None
) -> Iterator[np.ndarray]:
    """The P permutations pi [n] of a test's null, in draw order (Y's row i -> Y[pi[i]]).

    Without strata: ``default_rng(seed).permutation(n)`` per draw. With strata (one label per
    row): per draw, for each stratum in order of first appearance, its row indices idx get
    ``pi[idx] = idx[rng.permutation(len(idx))]``, so a row only ever moves within its stratum.
    """
    groups = _strata_groups(strata, n)
    rng = np.random.default_rng(seed)
    for _ in range(permutations):
        yield _draw(rng, n, groups)


def _draw(rng: np.random.Generator, n: int, groups: list[np.ndarray] | None) -> np.ndarray:
    if groups is None:
        return rng.permutation(n)
    pi = np.arange(n)
    for idx in groups:
        pi[idx] = idx[rng.permutation(len(idx))]
    return pi


def _sigmas(
    n: int,
    P: int,
    seed: int,
    perm_a: bool,
    groups: list[np.ndarray] | None = None,
) -> Iterator[np.ndarray]:
    """Identity, then the P draws; as applied to the gathered side (pi^-1 when that is A)."""
    yield np.arange(n)
    rng = np.random.default_rng(seed)
    for _ in range(P):
        pi = _draw(rng, n, groups)
        yield np.argsort(pi) if perm_a else pi


def cka_permutation_test(
    X: np.ndarray,
    Y: np.ndarray,
    *,
    permutations: int,
    seed: int = 0,
    debiased: bool = True,
    device: str = "auto",
    precision: str = "auto",
    memory_budget_bytes: int = DEFAULT_PERM_MEMORY_BUDGET,
    should_stop: StopCheck | None = None,
    strata: Sequence[object] | np.ndarray | None = None,
) -> CkaTest:
    """Permutation test of CKA(X, Y) for X [n, p], Y [n, q] (rows = same prompts).

    Permutes the rows of Y ``permutations`` times (numpy default_rng(seed)); returns the
    observed value, p = (1 + #{null >= observed}) / (1 + P) and the null [P]. The same seed
    gives the same p-value, and the same null as a 1 x 1 :func:`cka_matrix_permutation_test`.
    ``should_stop`` is asked before every permutation (AnalysisCancelled when it says True).
    ``strata`` (one label per row, e.g. the prompt's dataset) stratifies the null: rows of Y
    are permuted within each stratum only (:func:`stratified_permutations` gives the draws).
    """
    res = _matrix_test(
        [X],
        [Y],
        permutations=permutations,
        seed=seed,
        debiased=debiased,
        device=device,
        precision=precision,
        memory_budget_bytes=memory_budget_bytes,
        names=("X", "Y"),
        indexed=False,
        should_stop=should_stop,
        strata=strata,
    )
    return CkaTest(
        value=float(res.values[0, 0]),
        p_value=float(res.p_values[0, 0]),
        permutations=res.permutations,
        null=_readonly(res.null[:, 0, 0].copy()),
        seed=res.seed,
        debiased=bool(debiased),
    )
