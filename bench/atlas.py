"""Benchmark: a mutual k-NN atlas of 24 models (all 276 pairs) vs per-pair affinity matrices.

The models stand for the study's 24 LLMs (Wolfram & Schein, "Layers at similar depths generate
similar activations across LLM architectures", Appendix C: Gemma, Gemma 2, Llama 3.1/3.2/3.3,
Mistral, Mixtral, Phi 3/3.5, Falcon, Falcon Mamba): their real layer counts (16 to 80, 1,010
layers in all), k = 10, n = 2,048 prompts, but synthetic activations of smaller widths
(256..1,024, growing with the layer count) generated one layer at a time.

Prints, in one run:
  * the atlas the intended way (measured): one k-NN graph per layer of every model
    (analysis.knn_graph), then analysis.atlas.graph_overlaps over all graphs at once, then
    per pair the block, pair_summary, resize_rows/resize and the mean resized matrix and
    max_similarity;
  * the naive way, what the service's affinityMatrix does for one pair: both models' k-NN
    graphs + analysis.affinity_matrix, timed on a few pairs (checked equal to the atlas'
    block) and EXTRAPOLATED to all pairs; the ratio (target >= 20 x), and also the ratio with
    the k-NN graphs cached (affinity_matrix alone per pair vs graph_overlaps);
  * peak memory (ru_maxrss);
  * a PROJECTION to one H200 from the measured CPU rates, kept apart from the measured figures.

Usage: python bench/atlas.py [--quick] [--models 24] [--n 2048] [--k 10] [--naive-pairs 3]
                             [--device auto|cpu|cuda]
  --quick: 6 models (every 4th of the list), n = 512. --device: where knn_graph and
  graph_overlaps run (on CUDA graph_overlaps takes its dense backend); the naive way always
  uses the same knn_graph device, and affinity_matrix is numpy on the CPU.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import matmul_gflops, peak_rss_gb

from actstore.analysis import affinity_matrix, knn_graph
from actstore.analysis.atlas import graph_overlaps, max_similarity, pair_summary, resize
from actstore.layers import resize_rows

# (name, layers) from the study's Appendix C, Table 1
STUDY_MODELS = [
    ("gemma-2b", 18),
    ("gemma-7b", 28),
    ("gemma-2-2b", 26),
    ("gemma-2-9b", 42),
    ("gemma-2-9b-it", 42),
    ("gemma-2-27b", 46),
    ("llama-3.1-8b", 32),
    ("llama-3.1-8b-it", 32),
    ("llama-3.2-1b", 16),
    ("llama-3.2-3b", 28),
    ("llama-3.2-3b-it", 28),
    ("llama-3.2-11b-vision", 40),
    ("llama-3.1-70b", 80),
    ("llama-3.1-70b-it", 80),
    ("llama-3.3-70b-it", 80),
    ("mistral-7b-v0.3", 32),
    ("mistral-nemo", 40),
    ("mixtral-8x7b", 32),
    ("phi-3-mini-it", 32),
    ("phi-3-medium-it", 40),
    ("phi-3.5-mini-it", 32),
    ("falcon-40b", 60),
    ("falcon-11b", 60),
    ("falcon-mamba-7b", 64),
]
H200_FP32_TFLOPS = 67.0  # spec sheet, dense FP32 without tensor cores (an assumption, not measured)
RANK = 64


def width(layers: int) -> int:
    """256 for 16 layers .. 1,024 for 80, in steps of 64."""
    return int(256 + 64 * round(12 * (layers - 16) / 64))


def layer_stream(model: int, layers: int, d: int, n: int, seed: int):
    """Yield the model's layers [n, d] float32 one at a time (never a whole model in memory).

    Shared latent factors Z0, Z1 [n, 64]; a layer at relative depth t sees
    cos(t pi/2) Z0 + sin(t pi/2) Z1 through a random map of this model, plus noise and a mean
    offset: matched depths of two models share the most neighbours.
    """
    zr = np.random.default_rng(seed)
    z0 = zr.standard_normal((n, RANK), dtype=np.float32)
    z1 = zr.standard_normal((n, RANK), dtype=np.float32)
    rng = np.random.default_rng([seed, model])
    for l_ in range(layers):
        t = l_ / (layers - 1)
        z = np.cos(t * np.pi / 2) * z0 + np.sin(t * np.pi / 2) * z1
        x = z @ (rng.standard_normal((RANK, d), dtype=np.float32) * (1.5 / np.sqrt(RANK)))
        x += rng.standard_normal((n, d), dtype=np.float32)
        x += rng.standard_normal(d, dtype=np.float32) * 0.5
        yield x


def graphs_of(
    model: int, layers: int, d: int, n: int, k: int, seed: int, device: str
) -> tuple[list[np.ndarray], float, float]:
    """(k-NN graphs, seconds in knn_graph, seconds generating data)."""
    out, t_knn, t_gen = [], 0.0, 0.0
    t0 = time.perf_counter()
    for x in layer_stream(model, layers, d, n, seed):
        t1 = time.perf_counter()
        t_gen += t1 - t0
        out.append(knn_graph(x, k, device=device))
        t0 = time.perf_counter()
        t_knn += t0 - t1
    return out, t_knn, t_gen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="6 models, n = 512")
    ap.add_argument("--models", type=int, default=None, help="first M models of the list")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--resize", type=int, default=50)
    ap.add_argument("--naive-pairs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument(
        "--backend", default="auto", choices=["auto", "sparse", "dense"], help="graph_overlaps backend for the atlas"
    )
    ap.add_argument(
        "--compare-backends", action="store_true", help="also time graph_overlaps with the sparse and the dense backend"
    )
    args = ap.parse_args()
    import torch

    dev = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    models = STUDY_MODELS[::4] if args.quick else STUDY_MODELS
    if args.models:
        models = models[: args.models]
    n = args.n or (512 if args.quick else 2048)
    k = args.k
    L = [ly for _, ly in models]
    D = [width(ly) for ly in L]
    M = len(models)
    pairs = [(i, j) for i in range(M) for j in range(i + 1, M)]
    print(
        f"atlas: {M} models (the study's layer counts {min(L)}..{max(L)}, {sum(L)} layers), "
        f"widths {min(D)}..{max(D)}, n = {n} prompts, k = {k}, {len(pairs)} pairs, "
        f"{sum(L[i] * L[j] for i, j in pairs):,} layer pairs; device {dev}, float32 activations"
    )

    # ---- the atlas (measured) -------------------------------------------------------------
    graphs, t_model, t_gen = [], [], 0.0
    for i, (name, ly) in enumerate(models):
        print(f"  k-NN graphs of {name} ({ly} layers, d = {D[i]})", flush=True)
        g, tk, tg = graphs_of(i, ly, D[i], n, k, args.seed, args.device)
        graphs.append(g)
        t_model.append(tk)
        t_gen += tg
    t_graphs = sum(t_model)
    flat = [g for gs in graphs for g in gs]
    off = np.concatenate([[0], np.cumsum(L)])
    t0 = time.perf_counter()
    big = graph_overlaps(flat, device=args.device, backend=args.backend)
    t_over = time.perf_counter() - t0
    if args.compare_backends:
        for be in ("sparse", "dense"):
            t1 = time.perf_counter()
            other = graph_overlaps(flat, device=args.device, backend=be)
            print(
                f"  graph_overlaps backend={be}: {time.perf_counter() - t1:.1f} s "
                f"(equal: {np.array_equal(other, big)})",
                flush=True,
            )
    t0 = time.perf_counter()
    rows = [resize_rows(range(ly), ly, args.resize) for ly in L]
    summaries, resized = {}, []
    for i, j in pairs:
        block = big[off[i] : off[i + 1], off[j] : off[j + 1]]
        summaries[(i, j)] = pair_summary(
            block, [x / (L[i] - 1) for x in range(L[i])], [x / (L[j] - 1) for x in range(L[j])]
        )
        resized.append(resize(block, rows[i], rows[j]))
    mean_resized = np.mean(resized, axis=0)
    maxsim = max_similarity(M, {p: s.max_value for p, s in summaries.items()})
    t_post = time.perf_counter() - t0
    t_atlas = t_graphs + t_over + t_post
    print(
        f"MEASURED atlas: {sum(L)} k-NN graphs {t_graphs:.1f} s + graph_overlaps "
        f"({args.backend}) {sum(L)} x {sum(L)} {t_over:.1f} s + per-pair summaries/resize/max {t_post:.1f} s "
        f"= {t_atlas:.1f} s   (data generation, not counted: {t_gen:.1f} s)"
    )
    on_higher = sum(s.diagonal.on_diagonal_mean > s.diagonal.off_diagonal_mean for s in summaries.values())
    print(
        f"  on-diagonal mean > off-diagonal in {on_higher}/{len(pairs)} pairs; mean resized "
        f"{args.resize} x {args.resize}: diagonal mean {np.diag(mean_resized).mean():.3f}, "
        f"corner [0, -1] {mean_resized[0, -1]:.3f}; max similarity range "
        f"[{np.nanmin(maxsim):.3f}, {np.nanmax(maxsim):.3f}]"
    )

    # ---- naive per pair (sample measured, total extrapolated) -----------------------------
    order = np.argsort(L, kind="stable")
    sample = [(int(min(order[0], order[-1])), int(max(order[0], order[-1])))]
    rng = np.random.default_rng(1)
    while len(sample) < min(args.naive_pairs, len(pairs)):
        p = pairs[int(rng.integers(len(pairs)))]
        if p not in sample:
            sample.append(p)
    s_graph = s_graph_atlas = s_aff = 0.0
    cells = 0
    for i, j in sample:
        ga, ta, _ = graphs_of(i, L[i], D[i], n, k, args.seed, args.device)
        gb, tb, _ = graphs_of(j, L[j], D[j], n, k, args.seed, args.device)
        t0 = time.perf_counter()
        A = affinity_matrix(ga, gb)
        s_aff += time.perf_counter() - t0
        assert np.array_equal(A, big[off[i] : off[i + 1], off[j] : off[j + 1]]), (i, j)
        s_graph += ta + tb
        s_graph_atlas += t_model[i] + t_model[j]
        cells += L[i] * L[j]
    rho = s_graph / s_graph_atlas  # naive graph time / atlas graph time of the same models
    r_aff = s_aff / cells  # affinity_matrix seconds per layer pair
    naive_graphs = rho * sum(t_model[i] + t_model[j] for i, j in pairs)
    all_cells = sum(L[i] * L[j] for i, j in pairs)
    naive_aff = r_aff * all_cells
    naive = naive_graphs + naive_aff
    print(
        f"naive per pair (both models' k-NN graphs + affinity_matrix), MEASURED on "
        f"{len(sample)} pairs {sample} ({s_graph + s_aff:.1f} s, equal to the atlas' blocks), "
        f"EXTRAPOLATED to {len(pairs)} pairs: graphs {naive_graphs:.0f} s (per-model graph "
        f"times x {rho:.2f}) + affinity_matrix {naive_aff:.0f} s ({r_aff * 1e3:.2f} ms per "
        f"layer pair x {all_cells:,}) = {naive:.0f} s"
    )
    print(f"RATIO atlas vs naive per pair: {naive / t_atlas:.1f} x  (target >= 20 x)")
    print(
        f"RATIO with every k-NN graph cached (affinity_matrix per pair vs one graph_overlaps):"
        f" {naive_aff / t_over:.1f} x"
    )
    print(
        f"peak memory (ru_maxrss): {peak_rss_gb():.2f} GiB  (the {sum(L)} graphs: {sum(L) * n * k * 8 / 2**20:.0f} MiB)"
    )

    # ---- projection (not measured) ----------------------------------------------------------
    knn_flops = sum(L[i] * n * n * D[i] for i in range(M))  # symmetric self-join: n^2 d each
    cpu_knn = knn_flops / t_graphs / 1e9
    if dev == "cuda":
        print("(no H200 projection: this run was on a GPU; its figures above are measured)")
        return
    cpu_mm = matmul_gflops(n, 512, dtype=torch.float32)
    eff = cpu_knn / cpu_mm
    m = sum(L)
    present = np.zeros(n * n, dtype=bool)  # distinct (prompt, neighbour) keys of all graphs
    for g in flat:
        present[(np.arange(n)[:, None] * n + g).ravel()] = True
    n_keys = int(present.sum())
    tiles = min(8, -(-m // 256))
    dense_flops = 2.0 * m * m * n_keys * (tiles + 1) / (2 * tiles)  # tiles on/above the diagonal
    h200 = H200_FP32_TFLOPS * 1e3 * eff
    p_graphs, p_over = knn_flops / h200 / 1e9, dense_flops / h200 / 1e9
    p_naive = (M - 1) * p_graphs + naive_aff  # affinity_matrix is numpy on the host CPU
    print(
        f"PROJECTED one H200 (assumption: {H200_FP32_TFLOPS:.0f} TFLOP/s FP32 x the "
        f"efficiency measured here, knn_graph {cpu_knn:.0f} GFLOP/s / torch matmul "
        f"{cpu_mm:.0f} GFLOP/s = {eff:.3f}): graphs {p_graphs:.2f} s + dense graph_overlaps "
        f"({n_keys:,} distinct keys) {dense_flops / 1e12:.2f} TFLOP {p_over:.2f} s = {p_graphs + p_over:.2f} s; naive "
        f"per pair {p_naive:.0f} s (its affinity_matrix stays on the CPU) -> "
        f"{p_naive / (p_graphs + p_over):.0f} x"
    )


if __name__ == "__main__":
    main()
