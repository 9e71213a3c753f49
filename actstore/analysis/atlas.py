"""Atlas numerics: many models compared in one job, at a cost that grows with layers.

An atlas over models with m_1 .. m_M layers needs every layer-pair value of every model pair.
Done pair by pair, each layer's statistics (its k-NN graph, its centred Gram) would be redone
for every pair the model is in (M - 1 times). Here they are computed once per layer for the
whole atlas, and all layer pairs of all model pairs come out of one blocked product over the
m = sum m_i layers; the caller slices each model pair's block out of the m x m result.

* Mutual k-NN, :func:`graph_overlaps`. A k-NN graph g [n, k] is the sparse indicator vector
  S_g of its n k (prompt, neighbour) keys; the shared-neighbour count of two graphs is the
  inner product <S_g, S_h>, so all counts are the Gram matrix S S^T of the m x n^2 indicator
  matrix S (m n k nonzeros), and M_k = count / (k n) exactly as :func:`.knn.affinity_matrix`.
  The columns of each prompt block are the distinct keys only (U of them), so the product
  shrinks as graphs agree. Backends: "dense" (torch float32 GEMM of 0/1 blocks, m_a m_b U
  multiply-adds, exact: 0/1 products and float32 sums of integers below 2^24) and "sparse"
  (scipy CSR SpGEMM, sum over keys of c_a c_b updates, c = graphs holding the key). "auto":
  dense on CUDA, sparse on a CPU (3x faster there at an atlas's size, see graph_overlaps).
* CKA, :func:`gram_cka`: the Gram form of :mod:`.cka` over all layers at once (each layer's
  centred Gram strip once per row block, one GEMM for all pairs), or its feature form.

The per-pair results (:func:`pair_summary`), the resizing to a square (:func:`resize`, with
row choice by :func:`actstore.layers.resize_rows` outside this package) and the models x
models maximum (:func:`max_similarity`) are small and pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy import sparse

from . import validation as V
from .cka import DEFAULT_MEMORY_BUDGET, plan_cka_matrix
from .devices import resolve_device
from .diagonal import argmax_path, diagonal_test
from .errors import AnalysisError, StopCheck, check_stop
from .hsic import cka_table, layer_stats
from .knn import check_graphs
from .results import DiagonalTest, PairSummary
from .traces import block_rows_for, feature_traces, gram_trace_matrix

__all__ = [
    "DEFAULT_OVERLAP_BUDGET",
    "PairSummary",
    "gram_cka",
    "graph_overlaps",
    "max_similarity",
    "overlap_block_rows",
    "pair_summary",
    "resize",
]

DEFAULT_OVERLAP_BUDGET = 1 << 30  # bytes for one prompt block's neighbour indicators
_BACKENDS = ("auto", "sparse", "dense")
_SPARSE_BYTES_PER_KEY = 24  # int32 index + int32 value, the CSR and the transposed copy, slack
_FP32_EXACT = 1 << 24  # integers up to here are exact in float32
_SYM_TILES = 8  # at most this many graph tiles of a symmetric overlap: (T + 1) / 2T of the product
_TILE_MIN = 256  # graphs per tile at least (smaller GEMMs run far below the machine's rate)


def overlap_block_rows(n: int, k: int, n_graphs: int, memory_budget_bytes: int) -> int:
    """Prompts per block of :func:`graph_overlaps` so that one block's indicators fit:

        b = budget / (n_graphs max(4 n, 24 k)),  1 <= b <= n,  b k < 2^24

    (dense: float32 0/1 rows of at most b n distinct keys per graph; sparse: CSR of
    n_graphs b k keys + its transposed copy; b k < 2^24 keeps each block's counts exact in
    float32).
    """
    b = memory_budget_bytes // max(1, n_graphs * max(4 * n, _SPARSE_BYTES_PER_KEY * k))
    b = min(b, (_FP32_EXACT - 1) // k)
    return int(max(1, min(n, b)))


def _tiles(m: int, count: int) -> list[tuple[int, int]]:
    step = -(-m // max(1, min(count, m)))
    return [(s, min(m, s + step)) for s in range(0, m, step)]


def graph_overlaps(
    graphs_a: Sequence[np.ndarray],
    graphs_b: Sequence[np.ndarray] | None = None,
    *,
    device: str = "auto",
    backend: str = "auto",
    memory_budget_bytes: int = DEFAULT_OVERLAP_BUDGET,
    should_stop: StopCheck | None = None,
) -> np.ndarray:
    """Mutual k-NN M_k of every pair of k-NN graphs, from one blocked indicator product.

    Per block of b prompts, the (prompt, neighbour) keys of all graphs are numbered by their
    distinct values (U of them; U is small when graphs share neighbours, as layers of related
    models do), each graph becomes a 0/1 row over the U keys, and one product of the
    [m_a, U] and [m_b, U] indicator matrices adds every pair's shared-key count.

    Args:
        graphs_a: m_a k-NN graphs, int [n, k] each (from :func:`.knn.knn_graph`), all over the
            same n prompts with the same k.
        graphs_b: m_b more such graphs, or None for ``graphs_a`` against itself (then only
            the tiles on and above the diagonal of a T x T tiling, T = min(8, m_a / 256)
            rounded up, are multiplied and the result is mirrored: symmetric).
        device: "auto" | "cpu" | "cuda" for the dense product (the sparse one runs on the CPU).
        backend: "dense" (torch float32 GEMM of the 0/1 blocks, m_a m_b U multiply-adds per
            block; exact: 0/1 products, float32 sums of integers below 2^24), "sparse" (scipy
            CSR SpGEMM, sum over keys of c_a c_b updates, c = graphs holding the key) or
            "auto": dense on CUDA, sparse on a CPU (measured on 2 cores, bench/atlas.py:
            1,010 graphs of 24 models, n = 2,048: sparse 9.6 s, dense 30.3 s; at 114 and 342
            graphs the two were within 10% either way).
        memory_budget_bytes: bound on one block's indicators; the block size b follows from
            it by :func:`overlap_block_rows`: b = budget / ((m_a + m_b) max(4 n, 24 k)),
            plus the [m_a, m_b] int64 result.
        should_stop: asked before every prompt block; True stops with AnalysisCancelled.

    Returns:
        float64 [m_a, m_b] (or [m_a, m_a]): shared (prompt, neighbour) keys / (k n), equal bit
        for bit to :func:`.knn.affinity_matrix` on the same graphs.
    """
    if backend not in _BACKENDS:
        raise AnalysisError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    V.check_int(memory_budget_bytes, "memory_budget_bytes", minimum=1)
    ga = check_graphs(graphs_a, "graphs_a")
    symmetric = graphs_b is None
    gb = ga if symmetric else check_graphs(graphs_b, "graphs_b")
    if ga[0].shape != gb[0].shape:
        raise AnalysisError(
            f"graph shapes differ: graphs_a are {ga[0].shape}, graphs_b are "
            f"{gb[0].shape}; all need the same prompts (n) and the same k"
        )
    n, k = ga[0].shape
    dev = resolve_device(device)
    chosen = backend if backend != "auto" else ("dense" if dev.type == "cuda" else "sparse")
    a = np.stack(ga)  # [m_a, n, k]
    b = a if symmetric else np.stack(gb)
    m_a, m_b = a.shape[0], b.shape[0]
    rows = overlap_block_rows(n, k, m_a + (0 if symmetric else m_b), memory_budget_bytes)
    if symmetric:
        ta = tb = _tiles(m_a, min(_SYM_TILES, -(-m_a // _TILE_MIN)))
        pairs = [(i, j) for i in range(len(ta)) for j in range(i, len(ta))]
    else:
        ta, tb, pairs = [(0, m_a)], [(0, m_b)], [(0, 0)]
    counts = np.zeros((m_a, m_b), dtype=np.int64)
    for s in range(0, n, rows):
        check_stop(should_stop, s, n, "prompts of the graph overlaps")
        e = min(n, s + rows)
        ka = _keys_block(a, s, e)
        kb = ka if symmetric else _keys_block(b, s, e)
        # number the distinct keys of this block (a presence mask over its (e - s) n keys)
        present = np.zeros((e - s) * n, dtype=bool)
        present[ka] = True
        if not symmetric:
            present[kb] = True
        width = int(np.count_nonzero(present))
        column = np.cumsum(present, dtype=np.int64) - 1
        ca = column[ka]
        cb = ca if symmetric else column[kb]
        del present, column
        if chosen == "sparse":
            sa = _sparse_block(ca, width)
            sb = sa if symmetric else _sparse_block(cb, width)
            for i, j in pairs:
                (a0, a1), (b0, b1) = ta[i], tb[j]
                counts[a0:a1, b0:b1] += (sa[a0:a1] @ sb[b0:b1].T).toarray()
        else:
            da = _dense_block(ca, width, dev)
            db = da if symmetric else _dense_block(cb, width, dev)
            for i, j in pairs:
                (a0, a1), (b0, b1) = ta[i], tb[j]
                prod = da[a0:a1] @ db[b0:b1].T
                counts[a0:a1, b0:b1] += prod.round().to(torch.int64).cpu().numpy()
    if symmetric:
        iu = np.triu_indices(m_a, 1)
        counts[(iu[1], iu[0])] = counts[iu]
    share: np.ndarray = counts / (k * n)
    return share


def _keys_block(g: np.ndarray, s: int, e: int) -> np.ndarray:
    """int64 [m, (e - s) k]: key (row - s) n + neighbour of rows [s, e) of every graph."""
    n = g.shape[1]
    base = (np.arange(e - s, dtype=np.int64) * n)[None, :, None]
    keys: np.ndarray = (g[:, s:e, :] + base).reshape(g.shape[0], -1)
    return keys


def _sparse_block(cols: np.ndarray, width: int) -> sparse.csr_matrix:
    """CSR [m, width] with a 1 at each graph's key columns ``cols`` [m, keys per graph]."""
    m, per = cols.shape
    idx_dtype = np.int32 if width < 2**31 and m * per < 2**31 else np.int64
    indptr = (np.arange(m + 1, dtype=np.int64) * per).astype(idx_dtype)
    return sparse.csr_matrix(
        (np.ones(m * per, dtype=np.int32), cols.ravel().astype(idx_dtype), indptr), shape=(m, width)
    )


def _dense_block(cols: np.ndarray, width: int, dev: torch.device) -> torch.Tensor:
    """float32 [m, width] on ``dev`` with a 1 at each graph's key columns."""
    idx = torch.from_numpy(np.ascontiguousarray(cols)).to(dev)
    out = torch.zeros((cols.shape[0], width), dtype=torch.float32, device=dev)
    out.scatter_(1, idx, 1.0)
    return out


def gram_cka(
    layers_a: Sequence[np.ndarray],
    layers_b: Sequence[np.ndarray] | None = None,
    *,
    debiased: bool = True,
    device: str = "auto",
    precision: str = "auto",
    form: str = "auto",
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    should_stop: StopCheck | None = None,
) -> np.ndarray:
    """Linear CKA of every pair of many layers, each layer's statistics computed once.

    Same definitions, forms and precision rules as :func:`.cka.cka_matrix` (whose value it
    equals to 1e-6); the difference is that all layers (of all models of an atlas) go through
    one computation: per-layer float64 stats once, then either the Gram form over all m
    layers together (each layer's centred Gram strip once per row block, one GEMM V V^T per
    block for all m (m + 1) / 2 pairs; memory m b n values with b from
    :func:`.traces.block_rows_for`: b = memory_budget_bytes / (m n itemsize), at most
    max(512, n / 8)) or the feature form (||X_c^T Y_c||^2 per pair in float64; with
    ``layers_b`` None it evaluates both orders of each pair).

    Args:
        layers_a: m_a arrays [n, p_i]; layers_b: m_b arrays [n, q_j] or None (layers_a with
            itself: a symmetric [m_a, m_a] result with 1 on the diagonal up to rounding).

    Returns:
        float64 [m_a, m_b] (or [m_a, m_a]) of CKA values (unitless).
    """
    if not isinstance(debiased, (bool, np.bool_)):
        raise AnalysisError(f"debiased must be True or False, got {debiased!r}")
    min_rows = 4 if debiased else 2
    a = V.activation_list(layers_a, "layers_a")
    symmetric = layers_b is None
    b = a if symmetric else V.activation_list(layers_b, "layers_b")
    n = V.check_same_rows([a[0], b[0]], ["layers_a[0]", "layers_b[0]"])
    if n < min_rows:
        what = "debiased CKA needs n >= 4 prompts" if debiased else "biased CKA needs n >= 2 prompts"
        raise AnalysisError(f"n = {n} prompts is too few: {what}")
    sa = [layer_stats(x, f"layers_a[{i}]") for i, x in enumerate(a)]
    sb = sa if symmetric else [layer_stats(y, f"layers_b[{j}]") for j, y in enumerate(b)]
    dev = resolve_device(device)
    plan = plan_cka_matrix(
        n,
        [x.shape[1] for x in a],
        [y.shape[1] for y in b],
        precision=precision,
        form=form,
        memory_budget_bytes=memory_budget_bytes,
    )
    m_a = len(a)
    if plan.form == "gram":
        layers = a if symmetric else a + b
        stats = sa if symmetric else sa + sb
        dt = np.dtype(plan.precision)
        rows = block_rows_for(n, len(layers), dt.itemsize, memory_budget_bytes)
        g = gram_trace_matrix(layers, stats, dtype=dt, device=dev, block_rows=rows, should_stop=should_stop)
        diag = np.diag(g).copy()
        if symmetric:
            t_ab, t_aa, t_bb = (g + g.T) / 2, diag, diag
        else:
            t_ab, t_aa, t_bb = g[:m_a, m_a:], diag[:m_a], diag[m_a:]
    else:
        t_ab, t_aa, t_bb = feature_traces(a, sa, b, sb, device=dev, should_stop=should_stop)
        if symmetric:
            t_ab = (t_ab + t_ab.T) / 2
    out = cka_table(debiased, t_ab, t_aa, t_bb, sa, sb)
    if symmetric:
        out = (out + out.T) / 2
    return out


def _nan_diagonal(shape: tuple[int, int]) -> DiagonalTest:
    nan = float("nan")
    return DiagonalTest(nan, nan, nan, nan, nan, 0, 0, shape[0] < shape[1])


def _depths(depths: object, m: int, name: str) -> tuple[float, ...]:
    if isinstance(depths, (str, bytes)) or not hasattr(depths, "__len__"):
        raise AnalysisError(f"{name} must be {m} relative depths (one per layer on that axis), got {depths!r}")
    d = np.asarray(depths)
    if d.ndim != 1 or d.shape[0] != m or d.dtype.kind not in "fiu":
        raise AnalysisError(f"{name} must be {m} relative depths (one per layer on that axis), got {depths!r}")
    d = d.astype(np.float64)
    bad = ~np.isfinite(d) | (d < 0) | (d > 1)
    if bad.any():
        raise AnalysisError(
            f"{name} must lie in [0, 1], got {float(d[bad][0])!r} at position {int(np.flatnonzero(bad)[0])}"
        )
    return tuple(float(x) for x in d)


def pair_summary(values: np.ndarray, depths_a: Sequence[float], depths_b: Sequence[float]) -> PairSummary:
    """Argmax path, its depths, the diagonal test and the maximum of one pair's matrix.

    Args:
        values: [m_a, m_b] layer-by-layer similarities of model A's layers (rows) with model
            B's (columns), finite.
        depths_a: m_a relative depths in [0, 1] of the rows' layers (checked, not used beyond
            that); depths_b: m_b relative depths of the columns' layers.

    Returns:
        PairSummary: argmax per row (first column on ties), the depth of that column, the
        generalized-diagonal test (NaN fields where undefined: fewer than 2 rows or columns,
        or no variance within either group) and the largest value.
    """
    M = V.finite_matrix(values, "values")
    _depths(depths_a, M.shape[0], "depths_a")
    db = _depths(depths_b, M.shape[1], "depths_b")
    path = argmax_path(M)
    if min(M.shape) < 2:
        diag = _nan_diagonal(M.shape)
    else:
        try:
            diag = diagonal_test(M)
        except AnalysisError:  # constant within both groups: the t statistic is undefined
            diag = _nan_diagonal(M.shape)
    return PairSummary(
        argmax=tuple(path), argmax_depths=tuple(db[j] for j in path), diagonal=diag, max_value=float(M.max())
    )


def _index_list(idx: object, size: int, name: str) -> np.ndarray:
    a = np.asarray(idx)
    if a.ndim != 1 or a.size == 0 or a.dtype.kind not in "iu":
        raise AnalysisError(f"{name} must be a non-empty list of integer positions, got {idx!r}")
    bad = (a < 0) | (a >= size)
    if bad.any():
        raise AnalysisError(
            f"{name} holds position {int(a[bad][0])} outside 0..{size - 1} "
            f"(the matrix has {size} {'rows' if name == 'rows' else 'columns'})"
        )
    return a.astype(np.int64)


def resize(values: np.ndarray, rows: Sequence[int], cols: Sequence[int]) -> np.ndarray:
    """values[rows][:, cols]: float64 [len(rows), len(cols)] (positions may repeat).

    The positions come from :func:`actstore.layers.resize_rows` (the one rounding rule lives
    there, not in this package).
    """
    M = V.finite_matrix(values, "values")
    r = _index_list(rows, M.shape[0], "rows")
    c = _index_list(cols, M.shape[1], "cols")
    out: np.ndarray = M[np.ix_(r, c)]
    return out


def max_similarity(n_models: int, pair_max: Mapping[tuple[int, int], float]) -> np.ndarray:
    """The models x models matrix of each pair's largest similarity.

    Args:
        n_models: number of models M >= 2.
        pair_max: (i, j) -> the largest cell of pair (i, j)'s matrix, for every unordered
            pair i != j of 0..M-1, given once in either order.

    Returns:
        float64 [M, M], symmetric, NaN on the diagonal.
    """
    m = V.check_int(n_models, "n_models", minimum=2)
    out = np.full((m, m), np.nan)
    seen: set[tuple[int, int]] = set()
    for key, value in pair_max.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise AnalysisError(f"pair_max keys must be (i, j) model positions, got {key!r}")
        i = V.check_int(key[0], "model position i", minimum=0, maximum=m - 1)
        j = V.check_int(key[1], "model position j", minimum=0, maximum=m - 1)
        if i == j:
            raise AnalysisError(
                f"pair_max has the pair ({i}, {j}) of a model with itself; the diagonal is left empty (NaN)"
            )
        u = (min(i, j), max(i, j))
        if u in seen:
            raise AnalysisError(f"pair_max gives the pair {u} twice; give each unordered pair once")
        v = float(value)
        if not math.isfinite(v):
            raise AnalysisError(f"pair_max[{key!r}] is {v}; values must be finite")
        seen.add(u)
        out[i, j] = out[j, i] = v
    missing = [(i, j) for i in range(m) for j in range(i + 1, m) if (i, j) not in seen]
    if missing:
        raise AnalysisError(
            f"pair_max lacks {len(missing)} of the {m * (m - 1) // 2} model "
            f"pairs, first {missing[0]}; every unordered pair is needed"
        )
    return out
