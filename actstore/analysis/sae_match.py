"""Matching SAE features of two models by activation correlation, and comparing the matched
feature spaces (SVCCA, RSA) against random pairings. Definitions: METHODS.md.

Correlation (:func:`match_features`). F_A [n, dA], F_B [n, dB] are feature activations of the
same n prompts (rows in the same order), sparse (CSR) or dense. Features that never vary
over these prompts (max == min: dead, or constant) are dropped and counted. The Pearson
matrix C [kA, kB] of the kept features is never held whole: it is built one block of A
features at a time, from raw cross-products S = F_A^T F_B,

    C[a, b] = (S[a, b] - n mu_a mu_b) / (n sd_a sd_b)         (population sd)

and each block keeps only its rows' ``candidates`` best B features (values and indices).
Two ways to get S (chosen by counting operations, ``method="auto"``):

* sparse: scipy sparse x sparse product, cost ~ sum over prompts of nnz_A(i) nnz_B(i)
  multiply-adds (a few hundred thousand x L0_A x L0_B, nothing like n dA dB), in float64;
* dense: torch GEMM of centred, densified column blocks (2 n dA dB flops), float32 on the
  device (CUDA when present); chosen when activations are not sparse or a GPU is there.

Working memory is ~ ``memory_budget_bytes`` (block of C plus the sparse product), whatever dA.

Matching. MANY_TO_ONE pairs every kept A feature with its best B feature (the first
candidate: exact). ONE_TO_ONE is the greedy of METHODS.md (pairs in descending correlation,
each feature at most once), made exact without the full matrix by lazy evaluation: a heap
holds each unmatched A feature's best still-free candidate; when all of a feature's
candidates are taken, every other B feature correlates with it no more than its last
candidate (an upper bound), so it waits in the heap under that bound and is recomputed
against the free B features only when the bound reaches the top (all such features are
recomputed together, in blocks). The result is the same pair list as the greedy on the
full matrix (up to ties).

Paired spaces (:func:`paired_space_test`). X = W_dec_A[matched a], Y = W_dec_B[matched b]
(K rows each). SVCCA: centre columns, thin SVD, keep the r leading directions whose
cumulative variance (squared singular values) first reaches 99% of the total -- the
smallest r with sum_{i<r} s_i^2 >= 0.99 sum s_i^2 (not a comparison of a normalised sum
with threshold x total, which keeps one direction); CCA of the reduced spaces; the mean of
the min(r_A, r_B) canonical correlations. The canonical correlations are the singular
values of U_A^T U_B (orthonormal bases of the reduced spaces), so a random pairing --
permuting Y's rows -- costs one K x r_A x r_B product, no new SVD. RSA: RDM = 1 - Pearson
correlation between rows; Spearman correlation (average ranks for ties) of the two RDMs'
upper triangles; K x K is quadratic, so RSA uses a seeded subset of at most
``rsa_max_pairs`` pairs (all when K is smaller), and its random pairings permute within it
(ranks of a permuted RDM are the permuted ranks, so ranking happens once).
Random baseline: ``random_pairs`` permutations from ``numpy.random.default_rng(seed)``;
p = (1 + #{random >= matched}) / (1 + random_pairs).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from scipy.stats import rankdata

from . import validation as V
from .devices import from_numpy, resolve_device
from .errors import AnalysisError, StopCheck, check_stop
from .sae import FeatureStats, as_csr, feature_stats

__all__ = [
    "FeatureMatch",
    "PairedSpaceTest",
    "match_features",
    "paired_space_test",
    "rsa",
    "svcca",
    "svcca_components",
    "plan_correlation",
]

MATCHINGS = ("one_to_one", "many_to_one")
METHODS_ = ("auto", "sparse", "dense")
DEFAULT_CORR_BUDGET = 512 << 20  # bytes of working memory for a block of C
DEFAULT_RSA_MAX_PAIRS = 2000
SVCCA_THRESHOLD = 0.99


# ------------------------------------------------------------------ correlation
@dataclass(frozen=True)
class CorrelationPlan:
    """How the blocks of C are computed: method, rows of A per block, and the counted costs
    (multiply-adds of the sparse product, flops of the dense GEMMs)."""

    method: str
    block_rows: int
    sparse_ops: float
    dense_flops: float


def plan_correlation(
    nnz_per_row_a: np.ndarray,
    nnz_per_row_b: np.ndarray,
    n: int,
    ka: int,
    kb: int,
    *,
    device: torch.device,
    method: str = "auto",
    memory_budget_bytes: int = DEFAULT_CORR_BUDGET,
) -> CorrelationPlan:
    """Choose sparse or dense by counting: sparse ~ sum_i nnz_A(i) nnz_B(i) multiply-adds at
    ~20x the cost of a GEMM flop on CPU; dense = 2 n kA kB flops (/50 on CUDA)."""
    if method not in METHODS_:
        raise AnalysisError(f"method must be one of {METHODS_}, got {method!r}")
    sparse_ops = float(np.dot(nnz_per_row_a.astype(np.float64), nnz_per_row_b.astype(np.float64)))
    dense_flops = 2.0 * n * ka * kb
    if method == "auto":
        w_dense = 1.0 / 50.0 if device.type == "cuda" else 1.0
        method = "sparse" if 20.0 * sparse_ops <= w_dense * dense_flops else "dense"
    # per C entry: float64 block + float32 copy + up to 16 bytes of sparse product (CSR)
    per_row = max(1, kb) * (8 + 4 + 16)
    if method == "dense":
        per_row = max(1, kb) * (4 + 4) + 4 * n
    rows = int(max(1, min(ka, memory_budget_bytes // per_row)))
    return CorrelationPlan(method, rows, sparse_ops, dense_flops)


class _Correlator:
    """Blocks of the Pearson matrix of kept A features (rows) with kept B features."""

    def __init__(
        self,
        A: sp.csr_matrix,
        B: sp.csr_matrix,
        keep_a: np.ndarray,
        keep_b: np.ndarray,
        stats_a: FeatureStats,
        stats_b: FeatureStats,
        plan: CorrelationPlan,
        device: torch.device,
    ) -> None:
        self.n = A.shape[0]
        self.plan = plan
        self.device = device
        self.mu_a = stats_a.mean[keep_a]
        self.mu_b = stats_b.mean[keep_b]
        self.inv_a = 1.0 / (self.n * stats_a.std[keep_a])
        self.inv_b = 1.0 / stats_b.std[keep_b]
        self.At = A[:, keep_a].T.tocsr().astype(np.float64)  # [kA, n]
        self.B = B[:, keep_b].tocsr().astype(np.float64)  # [n, kB]
        self.kb = len(keep_b)
        self._zb: torch.Tensor | None = None

    def _dense_b(self) -> torch.Tensor:
        if self._zb is None:
            zb = self.B.toarray().astype(np.float32)
            zb -= self.mu_b.astype(np.float32)
            zb *= self.inv_b.astype(np.float32)
            self._zb = torch.from_numpy(zb).to(self.device)
        return self._zb

    def block(self, rows: np.ndarray) -> torch.Tensor:
        """C[rows, :] as a float32 tensor [len(rows), kB] on the device."""
        if self.plan.method == "sparse":
            S = (self.At[rows] @ self.B).toarray()
            S -= self.n * np.outer(self.mu_a[rows], self.mu_b)
            S *= self.inv_a[rows, None]
            S *= self.inv_b[None, :]
            return torch.from_numpy(S.astype(np.float32)).to(self.device)
        za = self.At[rows].toarray().astype(np.float32)
        za -= self.mu_a[rows, None].astype(np.float32)
        za *= self.inv_a[rows, None].astype(np.float32)
        return torch.from_numpy(za).to(self.device) @ self._dense_b()


def _topk_rows(C: torch.Tensor, c: int, free: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
    if free is not None:
        C = C.masked_fill(~free[None, :], float("-inf"))
    vals, idx = torch.topk(C, c, dim=1)
    return vals.cpu().numpy().astype(np.float64), idx.cpu().numpy().astype(np.int64)


@dataclass(frozen=True, eq=False)
class FeatureMatch:
    """Matched features of two SAEs.

    pairs_a, pairs_b: int64 [K] original feature indices (columns of F_A, F_B);
    correlation: float64 [K] Pearson r of each pair, descending. n: prompts.
    n_features_a/b: features considered (after any subset); dropped_a/b: of those, how many
    never varied and were left out; kept_a/b = n_features - dropped. ``recomputed_rows``:
    A features whose candidates ran out during ONE_TO_ONE and were recomputed (work done).
    """

    matching: str
    pairs_a: np.ndarray
    pairs_b: np.ndarray
    correlation: np.ndarray
    n: int
    n_features_a: int
    n_features_b: int
    dropped_a: int
    dropped_b: int
    method: str
    candidates: int
    recomputed_rows: int

    @property
    def kept_a(self) -> int:
        return self.n_features_a - self.dropped_a

    @property
    def kept_b(self) -> int:
        return self.n_features_b - self.dropped_b


def match_features(
    F_A: object,
    F_B: object,
    *,
    matching: str = "one_to_one",
    features_a: np.ndarray | None = None,
    features_b: np.ndarray | None = None,
    min_correlation: float | None = None,
    candidates: int = 16,
    method: str = "auto",
    device: str = "auto",
    memory_budget_bytes: int = DEFAULT_CORR_BUDGET,
) -> FeatureMatch:
    """Match the features of F_A [n, dA] to those of F_B [n, dB] by Pearson correlation.

    Args:
        F_A, F_B: feature activations of the same n prompts (scipy sparse or dense).
        matching: "one_to_one" (greedy, each feature at most once) or "many_to_one" (every
            A feature to its most correlated B feature).
        features_a, features_b: optional subsets (column indices) to match within, e.g. a
            semantic subspace; default all features.
        min_correlation: drop matched pairs whose correlation is below this floor (applied
            after matching, so a feature is never re-matched to a weaker partner).
        candidates: best B features kept per A feature per block (more = fewer recomputations).
        method: "auto" | "sparse" | "dense" (see module doc); device: "auto" | "cpu" | "cuda".
        memory_budget_bytes: working memory for one block of the correlation matrix.

    Returns: FeatureMatch (pairs in descending correlation).
    """
    if matching not in MATCHINGS:
        raise AnalysisError(f"matching must be one of {MATCHINGS}, got {matching!r}")
    candidates = V.check_int(candidates, "candidates", minimum=1)
    A = as_csr(F_A, "F_A")
    B = as_csr(F_B, "F_B")
    if A.shape[0] != B.shape[0]:
        raise AnalysisError(
            f"row counts differ: F_A has {A.shape[0]} rows but F_B has {B.shape[0]}; "
            "both sides must hold the same prompts in the same order"
        )
    n = A.shape[0]
    if n < 3:
        raise AnalysisError(f"n = {n} prompts is too few: feature correlation needs n >= 3")
    fa = _subset(features_a, A.shape[1], "features_a")
    fb = _subset(features_b, B.shape[1], "features_b")
    sa, sb = feature_stats(A, "F_A"), feature_stats(B, "F_B")
    keep_a = fa[sa.varies[fa]]
    keep_b = fb[sb.varies[fb]]
    dropped_a, dropped_b = len(fa) - len(keep_a), len(fb) - len(keep_b)
    if len(keep_a) == 0 or len(keep_b) == 0:
        side = "A" if len(keep_a) == 0 else "B"
        raise AnalysisError(
            f"no feature of SAE {side} varies over these {n} prompts "
            f"({len(fa) if side == 'A' else len(fb)} considered, all dead or constant); "
            "nothing to correlate"
        )
    dev = resolve_device(device)
    nnz_a = np.diff(A[:, keep_a].tocsr().indptr)
    nnz_b = np.diff(B[:, keep_b].tocsr().indptr)
    plan = plan_correlation(
        nnz_a, nnz_b, n, len(keep_a), len(keep_b), device=dev, method=method, memory_budget_bytes=memory_budget_bytes
    )
    corr = _Correlator(A, B, keep_a, keep_b, sa, sb, plan, dev)
    ka, kb = len(keep_a), len(keep_b)
    c = min(candidates, kb)
    cand_v = np.empty((ka, c), np.float64)
    cand_i = np.empty((ka, c), np.int64)
    with torch.no_grad():
        for s in range(0, ka, plan.block_rows):
            rows = np.arange(s, min(ka, s + plan.block_rows))
            cand_v[rows], cand_i[rows] = _topk_rows(corr.block(rows), c, None)
        if matching == "many_to_one":
            ia, ib, r = np.arange(ka), cand_i[:, 0], cand_v[:, 0]
            recomputed = 0
        else:
            ia, ib, r, recomputed = _greedy(cand_v, cand_i, kb, candidates, corr)
    pa, pb, r = keep_a[ia], keep_b[ib], np.asarray(r, np.float64)
    order = np.lexsort((pb, pa, -r))
    pa, pb, r = pa[order], pb[order], r[order]
    if min_correlation is not None:
        floor = float(min_correlation)
        if not np.isfinite(floor):
            raise AnalysisError(f"min_correlation must be a finite number, got {min_correlation!r}")
        sel = r >= floor
        pa, pb, r = pa[sel], pb[sel], r[sel]
    return FeatureMatch(
        matching=matching,
        pairs_a=pa.astype(np.int64),
        pairs_b=pb.astype(np.int64),
        correlation=r,
        n=n,
        n_features_a=len(fa),
        n_features_b=len(fb),
        dropped_a=int(dropped_a),
        dropped_b=int(dropped_b),
        method=plan.method,
        candidates=c,
        recomputed_rows=int(recomputed),
    )


def _subset(features: np.ndarray | None, d: int, name: str) -> np.ndarray:
    if features is None:
        return np.arange(d, dtype=np.int64)
    f = np.unique(np.asarray(features).reshape(-1))
    if len(f) and (not np.issubdtype(f.dtype, np.integer) or f.min() < 0 or f.max() >= d):
        raise AnalysisError(f"{name} must be feature indices in 0..{d - 1}")
    if len(f) == 0:
        raise AnalysisError(f"{name} is empty: no features to match")
    return f.astype(np.int64)


def _greedy(
    cand_v: np.ndarray, cand_i: np.ndarray, kb: int, candidates: int, corr: _Correlator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Exact greedy ONE_TO_ONE over kept indices with lazily recomputed candidate lists."""
    ka, c = cand_i.shape
    cand_v = cand_v.copy()
    cand_i = cand_i.copy()
    length = np.full(ka, c, np.int64)  # valid entries of each list
    complete = np.full(ka, c >= kb, bool)  # list covers every free B feature
    pos = np.zeros(ka, np.int64)
    gen = np.zeros(ka, np.int64)
    used_b = np.zeros(kb, bool)
    done_a = np.zeros(ka, bool)
    heap = [(-cand_v[a, 0], 0, a, 0) for a in range(ka)]  # (-value, is_bound, a, generation)
    heapq.heapify(heap)
    waiting: set[int] = set()
    out_a: list[int] = []
    out_b: list[int] = []
    out_r: list[float] = []
    target = min(ka, kb)
    recomputed = 0
    while heap and len(out_a) < target:
        negv, is_bound, a, g = heapq.heappop(heap)
        if done_a[a] or g != gen[a]:
            continue
        if is_bound:
            rows = np.fromiter(sorted(waiting), np.int64)
            waiting.clear()
            recomputed += len(rows)
            free = ~used_b
            n_free = int(free.sum())
            cc = min(candidates, n_free)
            free_t = torch.from_numpy(free).to(corr.device)
            for s in range(0, len(rows), corr.plan.block_rows):
                blk = rows[s : s + corr.plan.block_rows]
                v, i = _topk_rows(corr.block(blk), cc, free_t)
                cand_v[blk, :cc], cand_i[blk, :cc] = v[:, :c], i[:, :c]
                length[blk] = min(cc, c)
                complete[blk] = cc >= n_free
                pos[blk] = 0
                gen[blk] += 1
                for j, r in enumerate(blk):
                    heapq.heappush(heap, (-v[j, 0], 0, int(r), int(gen[r])))
            continue
        p = pos[a]
        b = cand_i[a, p]
        if not used_b[b]:
            used_b[b] = True
            done_a[a] = True
            out_a.append(a)
            out_b.append(int(b))
            out_r.append(-negv)
            continue
        p += 1
        while p < length[a] and used_b[cand_i[a, p]]:
            p += 1
        if p < length[a]:
            pos[a] = p
            heapq.heappush(heap, (-cand_v[a, p], 0, a, g))
        elif not complete[a]:
            waiting.add(a)
            heapq.heappush(heap, (-cand_v[a, length[a] - 1], 1, a, g))
    return (np.asarray(out_a, np.int64), np.asarray(out_b, np.int64), np.asarray(out_r, np.float64), recomputed)


# ------------------------------------------------------------------ SVCCA / RSA
def svcca_components(s: np.ndarray, threshold: float = SVCCA_THRESHOLD) -> int:
    """Number r of leading singular values (descending) whose squares first reach
    ``threshold`` of the total: the smallest r with sum_{i<r} s_i^2 >= threshold * sum s_i^2."""
    if not 0.0 < threshold <= 1.0:
        raise AnalysisError(f"threshold must be in (0, 1], got {threshold}")
    var = np.asarray(s, dtype=np.float64) ** 2
    total = var.sum()
    if not total > 0:
        raise AnalysisError("the matched decoder rows have zero variance: SVCCA is undefined")
    frac = np.cumsum(var) / total
    r = int(np.searchsorted(frac, threshold - 1e-12, side="left")) + 1
    return min(r, len(var))


def _reduced_basis(X: np.ndarray, threshold: float, name: str) -> np.ndarray:
    Xc = X - X.mean(axis=0, keepdims=True)
    U, s, _ = np.linalg.svd(Xc, full_matrices=False)
    tol = s[0] * max(Xc.shape) * np.finfo(np.float64).eps if len(s) else 0.0
    s = np.where(s > tol, s, 0.0)
    if not (s > 0).any():
        raise AnalysisError(f"{name} has zero variance over the matched pairs: SVCCA is undefined")
    r = svcca_components(s, threshold)
    return U[:, :r]


def _check_pair_rows(X: object, Y: object) -> tuple[np.ndarray, np.ndarray]:
    X = V.finite_matrix(X, "X")
    Y = V.finite_matrix(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise AnalysisError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}: give one row per matched pair")
    if X.shape[0] < 3:
        raise AnalysisError(f"{X.shape[0]} matched pairs are too few: SVCCA and RSA need at least 3")
    return X, Y


def svcca(X: np.ndarray, Y: np.ndarray, threshold: float = SVCCA_THRESHOLD) -> float:
    """SVCCA of paired rows X [K, p], Y [K, q] (float64): mean canonical correlation of the
    99%-variance SVD reductions. Returns a float in [0, 1]."""
    X, Y = _check_pair_rows(X, Y)
    ux, uy = _reduced_basis(X, threshold, "X"), _reduced_basis(Y, threshold, "Y")
    rho = np.linalg.svd(ux.T @ uy, compute_uv=False)
    return float(np.clip(rho, 0.0, 1.0).mean())


def _rank_matrix(X: np.ndarray, name: str) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """(centred average-rank matrix of the RDM's off-diagonal entries [m, m] with zero diagonal,
    upper-triangle indices)."""
    Xc = X - X.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(Xc, axis=1)
    if (norm == 0).any():
        i = int(np.flatnonzero(norm == 0)[0])
        raise AnalysisError(f"row {i} of {name} is constant: its Pearson correlation (RSA) is undefined")
    Z = Xc / norm[:, None]
    rdm = 1.0 - Z @ Z.T
    m = len(X)
    iu = np.triu_indices(m, 1)
    ranks = rankdata(rdm[iu])
    ranks -= ranks.mean()
    R = np.zeros((m, m))
    R[iu] = ranks
    R += R.T
    return R, iu


def rsa(X: np.ndarray, Y: np.ndarray) -> float:
    """RSA of paired rows X [K, p], Y [K, q]: Spearman correlation of the upper triangles of
    RDM = 1 - Pearson correlation between rows. Float in [-1, 1]."""
    X, Y = _check_pair_rows(X, Y)
    Rx, iu = _rank_matrix(X, "X")
    Ry, _ = _rank_matrix(Y, "Y")
    return _spearman_from_ranks(Rx[iu], Ry[iu])


def _spearman_from_ranks(rx: np.ndarray, ry: np.ndarray) -> float:
    den = np.sqrt((rx @ rx) * (ry @ ry))
    if den == 0:
        raise AnalysisError("an RDM is constant (all pairs equally dissimilar): RSA is undefined")
    return float(rx @ ry / den)


@dataclass(frozen=True, eq=False)
class PairedSpaceTest:
    """SVCCA and RSA of matched decoder rows with random-pairing baselines.

    svcca, rsa: matched values; random_svcca, random_rsa: float64 [random_pairs];
    p_value / rsa_p_value: (1 + #{random >= matched}) / (1 + random_pairs);
    dims_a, dims_b: SVD directions kept (99% of variance); pairs: K; rsa_pairs: rows used
    for RSA (<= rsa_max_pairs).
    """

    svcca: float
    rsa: float
    random_svcca: np.ndarray
    random_rsa: np.ndarray
    p_value: float
    rsa_p_value: float
    dims_a: int
    dims_b: int
    pairs: int
    rsa_pairs: int
    random_pairs: int
    seed: int


def paired_space_test(
    X: np.ndarray,
    Y: np.ndarray,
    *,
    random_pairs: int = 100,
    seed: int = 0,
    threshold: float = SVCCA_THRESHOLD,
    rsa_max_pairs: int = DEFAULT_RSA_MAX_PAIRS,
    device: str = "auto",
    should_stop: StopCheck | None = None,
) -> PairedSpaceTest:
    """SVCCA and RSA of X [K, p] with Y [K, q] (row i of each = matched pair i), and the same
    for ``random_pairs`` random re-pairings (rows of Y permuted) from ``default_rng(seed)``.

    Permutation j uses the j-th draw of ``rng.permutation(K)`` for SVCCA; RSA uses the
    first ``rsa_max_pairs`` positions of a seeded subset and permutes within it.
    ``should_stop`` is asked before the random SVCCAs and every random RSA (AnalysisCancelled).
    """
    X, Y = _check_pair_rows(X, Y)
    random_pairs = V.check_int(random_pairs, "random_pairs", minimum=0)
    seed = V.check_int(seed, "seed", minimum=0)
    rsa_max_pairs = V.check_int(rsa_max_pairs, "rsa_max_pairs", minimum=3)
    K = X.shape[0]
    ux, uy = _reduced_basis(X, threshold, "X"), _reduced_basis(Y, threshold, "Y")
    value = float(np.clip(np.linalg.svd(ux.T @ uy, compute_uv=False), 0.0, 1.0).mean())

    rng = np.random.default_rng(seed)
    sub = np.arange(K) if K <= rsa_max_pairs else np.sort(rng.choice(K, rsa_max_pairs, replace=False))
    Rx, iu = _rank_matrix(X[sub], "X")
    Ry, _ = _rank_matrix(Y[sub], "Y")
    rsa_value = _spearman_from_ranks(Rx[iu], Ry[iu])

    perms = [rng.permutation(K) for _ in range(random_pairs)]
    check_stop(should_stop, 0, random_pairs, "random pairs")
    rand_svcca = _random_svcca(ux, uy, perms, device)
    m = len(sub)
    rand_rsa = np.empty(random_pairs)
    denom = np.sqrt((Rx[iu] @ Rx[iu]) * (Ry[iu] @ Ry[iu]))
    for j in range(random_pairs):
        check_stop(should_stop, j, random_pairs, "random pairs")
        q = rng.permutation(m)
        # sum over all off-diagonal (i, l) counts each unordered pair twice in both terms
        rand_rsa[j] = 0.5 * float(np.einsum("ij,ij->", Rx, Ry[np.ix_(q, q)])) / denom
    p = (1.0 + np.count_nonzero(rand_svcca >= value - 1e-12)) / (1.0 + random_pairs)
    p_rsa = (1.0 + np.count_nonzero(rand_rsa >= rsa_value - 1e-12)) / (1.0 + random_pairs)
    return PairedSpaceTest(
        svcca=value,
        rsa=rsa_value,
        random_svcca=rand_svcca,
        random_rsa=rand_rsa,
        p_value=float(p),
        rsa_p_value=float(p_rsa),
        dims_a=ux.shape[1],
        dims_b=uy.shape[1],
        pairs=K,
        rsa_pairs=m,
        random_pairs=random_pairs,
        seed=seed,
    )


def _random_svcca(ux: np.ndarray, uy: np.ndarray, perms: list[np.ndarray], device: str) -> np.ndarray:
    """Mean canonical correlation of U_X with U_Y's rows permuted, for each permutation."""
    if not perms:
        return np.empty(0)
    dev = resolve_device(device)
    K, rx = ux.shape
    ry = uy.shape[1]
    big = K * rx * ry * len(perms) > 5e10
    dt = torch.float32 if big else torch.float64
    tx = from_numpy(ux).to(dev, dt)
    ty = from_numpy(uy).to(dev, dt)
    out = np.empty(len(perms))
    with torch.no_grad():
        for j, perm in enumerate(perms):
            M = tx.T @ ty[torch.from_numpy(perm).to(dev)]
            rho = torch.linalg.svdvals(M.to(torch.float64) if dt == torch.float32 and dev.type == "cpu" else M)
            out[j] = float(rho.clamp(0.0, 1.0).mean())
    return out
