"""Benchmark: the k = 10 mutual k-NN affinity matrix of two models vs the naive per-pair way.

Synthetic activations shaped like two real models (A: 16 layers x 2,048; B: 28 layers x
3,072), n = 4,096 prompts (10,000 with --full). Prints, in one run:
  * affinity matrix the intended way: one k-NN graph per layer (knn_graph), then
    affinity_matrix over the graphs;
  * naive: for every pair, recompute both k-NN graphs and their mutual k-NN -- timed on a
    few pairs and extrapolated to all pairs (marked as such) -- with two graph builders:
    plain FAISS (IndexFlatIP on normalised float32, search k + 1, drop self) and
    actstore's own knn_graph; ratios against both;
  * the generalized-diagonal test and argmax path of the matrix; peak memory.

Usage: python bench/affinity.py [--full] [--n N] [--k 10] [--naive-pairs 3]
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np
from _common import peak_rss_gb, synthetic_models, timed

from actstore.analysis import (
    affinity_matrix,
    argmax_path,
    diagonal_test,
    knn_graph,
    mutual_knn,
    null_mean,
)


def faiss_graph(x: np.ndarray, k: int) -> np.ndarray:
    """The plain FAISS way: normalise a float32 copy, IndexFlatIP, k + 1, drop self."""
    xn = np.array(x, dtype=np.float32, order="C", copy=True)
    faiss.normalize_L2(xn)
    index = faiss.IndexFlatIP(xn.shape[1])
    index.add(xn)
    _, idx = index.search(xn, k + 1)
    n = xn.shape[0]
    keep = idx != np.arange(n)[:, None]
    out = np.empty((n, k), dtype=np.int64)
    for i in range(n):  # self is normally first; drop it wherever it is
        out[i] = idx[i][keep[i]][:k]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="n = 10,000 prompts")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--naive-pairs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n = args.n or (10_000 if args.full else 4_096)
    k = args.k

    t0 = time.perf_counter()
    A, B = synthetic_models(n, seed=args.seed)
    print(
        f"data: n = {n}; A {len(A)} layers x d = {A[0].shape[1]}, B {len(B)} layers x "
        f"d = {B[0].shape[1]} ({A[0].dtype}), generated in {time.perf_counter() - t0:.1f} s;"
        f" k = {k}, faiss {faiss.__version__}, threads {faiss.omp_get_max_threads()}"
    )

    t0 = time.perf_counter()
    ga = [knn_graph(x, k) for x in A]
    gb = [knn_graph(y, k) for y in B]
    t_graphs = time.perf_counter() - t0
    t_aff, M = timed(affinity_matrix, ga, gb)
    t_fast = t_graphs + t_aff
    print(
        f"affinity matrix {M.shape[0]} x {M.shape[1]}: {len(ga) + len(gb)} graphs "
        f"{t_graphs:.1f} s + matrix {t_aff:.2f} s = {t_fast:.1f} s"
    )

    rng = np.random.default_rng(1)
    pairs = [(0, 0), (len(A) - 1, len(B) - 1)] + [
        (int(rng.integers(len(A))), int(rng.integers(len(B)))) for _ in range(max(0, args.naive_pairs - 2))
    ]
    pairs = pairs[: max(1, args.naive_pairs)]
    t_own, t_fa = [], []
    for i, j in pairs:
        t, v = timed(lambda: mutual_knn(knn_graph(A[i], k), knn_graph(B[j], k)))
        t_own.append(t)
        assert v == M[i, j]
        t, v2 = timed(lambda: mutual_knn(faiss_graph(A[i], k), faiss_graph(B[j], k)))
        t_fa.append(t)
        assert abs(v2 - M[i, j]) < 0.01, (v2, M[i, j])  # float32 near-ties only
    tot_own, tot_fa = np.mean(t_own) * M.size, np.mean(t_fa) * M.size
    print(
        f"naive, both graphs per pair, timed on {len(pairs)} pairs {pairs}, EXTRAPOLATED "
        f"to {M.size} pairs: plain FAISS {np.mean(t_fa):.2f} s/pair -> {tot_fa:.0f} s; "
        f"actstore knn_graph {np.mean(t_own):.2f} s/pair -> {tot_own:.0f} s"
    )
    print(f"RATIO affinity_matrix vs naive (plain FAISS graphs): {tot_fa / t_fast:.1f} x  (target >= 20 x)")
    print(
        f"RATIO affinity_matrix vs naive (same graph builder):  {tot_own / t_fast:.1f} x  "
        f"(reuse alone; bound sum_ij (t_i + t_j) / sum t)"
    )

    res = diagonal_test(M)
    print(
        f"null mean k/(n-1) = {null_mean(k, n):.4f}; matrix range [{M.min():.4f}, "
        f"{M.max():.4f}]; diagonal test: on {res.on_diagonal_mean:.4f} vs off "
        f"{res.off_diagonal_mean:.4f}, t = {res.t_statistic:.2f}, p = {res.p_value:.2e}"
    )
    print(f"argmax path (B layer for each A layer): {argmax_path(M)}")
    print(f"peak memory (ru_maxrss): {peak_rss_gb():.2f} GiB")


if __name__ == "__main__":
    main()
