"""Benchmark: the debiased CKA matrix of two models against the naive per-pair method.

Synthetic activations shaped like two real models (A: 16 layers x 2,048; B: 28 layers x
3,072), n = 4,096 prompts (10,000 with --full). Prints, in one run:
  * the whole matrix (actstore.analysis.cka_matrix) vs the naive method -- for every pair,
    rebuild both n x n Gram matrices and evaluate the HSIC1 estimator directly -- timed on a
    few pairs and extrapolated to all pairs (marked as such), as a ratio;
  * achieved GFLOP/s (counted flops of the chosen form / time) vs a plain torch matmul
    timed in the same run;
  * the cost of one permutation (cka_permutation_test) vs one fresh linear_cka;
  * accuracy of the matrix against float64 linear_cka on a few pairs; peak memory.

Usage: python bench/cka_matrix.py [--full] [--n N] [--naive-pairs 3] [--permutations 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import matmul_gflops, peak_rss_gb, synthetic_models, timed

from actstore.analysis import cka_matrix, cka_permutation_test, linear_cka, plan_cka_matrix


def naive_pair(x: np.ndarray, y: np.ndarray, dtype=torch.float32, device: str = "cpu") -> float:
    """Debiased CKA the direct way: both n x n Grams, then the estimator on K~, L~.

    Columns are centred first (in float64) so that float32 Grams stay accurate; the estimator
    is METHODS.md's HSIC1 evaluated on the matrices (O(n^2) terms, no n^3 product).
    """
    n = x.shape[0]

    def gram(a):
        a = torch.from_numpy(a).to(device)
        a = (a - a.to(torch.float64).mean(0).to(a.dtype)).to(dtype)
        k = a @ a.T
        k.fill_diagonal_(0)
        return k

    def hsic(k, l_):
        t = torch.sum(k * l_, dtype=torch.float64)
        k1, l1 = k.sum(1, dtype=torch.float64), l_.sum(1, dtype=torch.float64)
        return float((t + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * (k1 @ l1)) / (n * (n - 3)))

    k, l_ = gram(x), gram(y)
    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="n = 10,000 prompts")
    ap.add_argument("--n", type=int, default=None, help="prompts (default 4,096)")
    ap.add_argument("--naive-pairs", type=int, default=3)
    ap.add_argument("--permutations", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where cka_matrix and the reference matmul run (auto: cuda when available)",
    )
    args = ap.parse_args()
    n = args.n or (10_000 if args.full else 4_096)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}"
        + (f" ({torch.cuda.get_device_name(0)})" if device == "cuda" else "")
    )

    t0 = time.perf_counter()
    A, B = synthetic_models(n, seed=args.seed)
    print(
        f"data: n = {n}; A {len(A)} layers x d = {A[0].shape[1]}, B {len(B)} layers x "
        f"d = {B[0].shape[1]} ({A[0].dtype}, "
        f"{(sum(a.nbytes for a in A) + sum(b.nbytes for b in B)) / 2**30:.2f} GiB), "
        f"generated in {time.perf_counter() - t0:.1f} s"
    )

    mm32 = matmul_gflops(n, 2048, torch.float32, device)
    mm64 = matmul_gflops(n, 2048, torch.float64, device)
    print(f"plain torch matmul [{n} x 2048] @ [2048 x {n}]: float32 {mm32:.0f} GFLOP/s, float64 {mm64:.0f} GFLOP/s")

    plan = plan_cka_matrix(n, [a.shape[1] for a in A], [b.shape[1] for b in B])
    print(
        f"plan: form = {plan.form}, precision = {plan.precision}, block_rows = "
        f"{plan.block_rows}; gram form {plan.gram_flops / 1e12:.2f} TFLOP, feature form "
        f"{plan.feature_flops / 1e12:.2f} TFLOP"
    )

    t_fast, M = timed(cka_matrix, A, B, debiased=True, device=device)
    flops = plan.gram_flops if plan.form == "gram" else plan.feature_flops
    rate = flops / t_fast / 1e9
    ref_rate = mm32 if plan.precision == "float32" else mm64
    print(
        f"cka_matrix (debiased, {len(A)} x {len(B)} = {M.size} pairs): {t_fast:.1f} s, "
        f"{rate:.0f} GFLOP/s = {rate / ref_rate:.2f} x the {plan.precision} matmul rate"
    )

    rng = np.random.default_rng(1)
    pairs = [(0, 0), (len(A) - 1, len(B) - 1)] + [
        (int(rng.integers(len(A))), int(rng.integers(len(B)))) for _ in range(max(0, args.naive_pairs - 2))
    ]
    pairs = pairs[: max(1, args.naive_pairs)]
    t_naive, errs, errs64 = [], [], []
    for i, j in pairs:
        t, v = timed(naive_pair, A[i], B[j], device=device)
        t_naive.append(t)
        ref = linear_cka(A[i], B[j], precision="float64", form="feature", device=device)
        errs.append(abs(M[i, j] - ref))
        errs64.append(abs(v - ref))
    per_pair = float(np.mean(t_naive))
    naive_total = per_pair * M.size
    print(
        f"naive (rebuild both Grams per pair): {per_pair:.2f} s/pair on {len(pairs)} pairs "
        f"{pairs}; EXTRAPOLATED to {M.size} pairs: {naive_total:.0f} s"
    )
    print(f"RATIO cka_matrix vs naive: {naive_total / t_fast:.1f} x  (target >= 15 x)")
    print(
        f"accuracy vs float64 linear_cka on those pairs: max |diff| matrix "
        f"{max(errs):.1e}, naive float32 {max(errs64):.1e}; "
        f"CKA range [{M.min():.3f}, {M.max():.3f}]"
    )

    X, Y = A[len(A) // 2], B[len(B) // 2]
    t_fresh, _ = timed(linear_cka, X, Y, repeat=2)
    t_p0, _ = timed(cka_permutation_test, X, Y, permutations=0)
    P = args.permutations
    t_pp, res = timed(cka_permutation_test, X, Y, permutations=P, seed=args.seed)
    per_perm = (t_pp - t_p0) / max(1, P)
    print(
        f"permutation test (middle layers, {P} permutations): setup {t_p0:.2f} s, "
        f"{per_perm * 1e3:.0f} ms/permutation vs fresh linear_cka {t_fresh * 1e3:.0f} ms "
        f"-> one permutation costs {per_perm / t_fresh:.3f} of a fresh CKA "
        f"({t_fresh / per_perm:.0f} x cheaper); value {res.value:.4f}, p = {res.p_value:.4f}"
    )
    print(f"peak memory (ru_maxrss): {peak_rss_gb():.2f} GiB")


if __name__ == "__main__":
    main()
