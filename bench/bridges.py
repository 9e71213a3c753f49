"""Benchmark linear bridges (issue 6). Prints ratios against references measured in the same run.

1. Ridge with GCV over a 12-alpha grid (actstore: one eigendecomposition, O(r q) per alpha)
   against scikit-learn's RidgeCV (efficient leave-one-out) on the same data: time ratio and
   the alpha each chooses (GCV approximates leave-one-out, so they may differ by a grid step).
2. LASSO at the same size: wall time (scikit-learn coordinate descent on a shared Gram
   matrix, target dimensions in parallel threads), sparsity and held-out r2.
3. A reduced-rank ridge sweep of 8 ranks (one ridge fit, one SVD) against 8 separate
   ``LinearBridge("low_rank", rank=r)`` fits (same GCV alpha); values checked equal.

    python bench/bridges.py                       # n=10,000, p=2,048, q=3,072
    python bench/bridges.py --n 2000 --p 256 --q 384 --skip-lasso
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from actstore.analysis.bridges import LinearBridge, bridge_rank_sweep  # noqa: E402


def make(n: int, p: int, q: int, seed: int, rank: int = 256):
    """Source and target sharing a rank-``rank`` latent, plus independent noise (float32)."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, rank), dtype=np.float32)
    S = Z @ rng.standard_normal((rank, p), dtype=np.float32) / np.sqrt(rank) + 0.7 * rng.standard_normal(
        (n, p), dtype=np.float32
    )
    T = Z @ rng.standard_normal((rank, q), dtype=np.float32) / np.sqrt(rank) + 0.7 * rng.standard_normal(
        (n, q), dtype=np.float32
    )
    return S, T


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--p", type=int, default=2_048)
    ap.add_argument("--q", type=int, default=3_072)
    ap.add_argument("--alphas", type=int, default=12, help="grid size for GCV / RidgeCV")
    ap.add_argument("--ranks", type=str, default="4,8,16,32,64,128,256,512")
    ap.add_argument("--test", type=int, default=2_000, help="held-out prompts (rows beyond --n)")
    ap.add_argument("--lasso-alpha", type=float, default=None, help="default: 0.05 alpha_max")
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--skip-lasso", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    import torch

    print(
        f"sizes: n={a.n} (train) + {a.test} (test), p={a.p}, q={a.q}; threads={torch.get_num_threads()}; "
        f"cuda={torch.cuda.is_available()}; device={a.device}"
    )
    S, T = make(a.n + a.test, a.p, a.q, a.seed)
    Str, Ttr, Ste, Tte = S[: a.n], T[: a.n], S[a.n :], T[a.n :]
    Sc = Str.astype(np.float64) - Str.mean(0, dtype=np.float64)
    scale = float((Sc**2).sum()) / a.p
    grid = scale * np.logspace(-4, 2, a.alphas)
    del Sc

    # 1. ridge + GCV vs RidgeCV
    t0 = time.perf_counter()
    ours = LinearBridge("ridge", alphas=grid, device=a.device).fit(Str, Ttr)
    t_ours = time.perf_counter() - t0
    r2_ours = ours.score(Ste, Tte)
    print(
        f"\n[ridge + GCV, {a.alphas} alphas] actstore: {t_ours:.2f} s, alpha index {ours.gcv_.index} "
        f"({ours.alpha_:.4g}), held-out r2 {r2_ours:.4f}"
    )
    if not a.skip_sklearn:
        from sklearn.linear_model import RidgeCV

        t0 = time.perf_counter()
        ref = RidgeCV(alphas=grid, fit_intercept=True).fit(Str.astype(np.float64), Ttr.astype(np.float64))
        t_ref = time.perf_counter() - t0
        i_ref = int(np.argmin(np.abs(grid - ref.alpha_)))
        r2_ref = 1 - ((Tte - ref.predict(Ste)) ** 2).sum() / ((Tte - Ttr.mean(0)) ** 2).sum()
        print(
            f"  sklearn RidgeCV (LOO): {t_ref:.2f} s, alpha index {i_ref} ({ref.alpha_:.4g}), held-out r2 {r2_ref:.4f}"
        )
        same = (
            "same alpha"
            if i_ref == ours.gcv_.index
            else f"alphas differ by {abs(i_ref - ours.gcv_.index)} grid step(s)"
        )
        print(f"  speed-up vs RidgeCV: x{t_ref / t_ours:.1f}; {same}")
        if i_ref == ours.gcv_.index:
            dw = np.abs(ref.coef_.T - ours.W_).max() / np.abs(ref.coef_).max()
            print(f"  max |W_sklearn - W_actstore| / max|W| = {dw:.2e}")

    # 3. rank sweep vs separate fits (before lasso: quicker feedback)
    ranks = [int(x) for x in a.ranks.split(",")]
    t0 = time.perf_counter()
    sw = bridge_rank_sweep(Str, Ttr, Ste, Tte, ranks, alphas=grid, device=a.device)
    t_sweep = time.perf_counter() - t0
    t0 = time.perf_counter()
    sep = [
        LinearBridge("low_rank", rank=r, alphas=grid, device=a.device).fit(Str, Ttr).evaluate(Ste, Tte) for r in ranks
    ]
    t_sep = time.perf_counter() - t0
    dmax = max(abs(x - y.r2) for x, y in zip(sw.r2, sep))
    print(
        f"\n[rank sweep, ranks {ranks}] one call: {t_sweep:.2f} s; {len(ranks)} separate fits: {t_sep:.2f} s; "
        f"speed-up x{t_sep / t_sweep:.1f}; max |r2 difference| {dmax:.1e}"
    )
    print("  r2 by rank: " + ", ".join(f"{r}:{v:.3f}" for r, v in zip(ranks, sw.r2)) + f", ridge:{sw.ridge_r2:.3f}")

    # 2. lasso
    if not a.skip_lasso:
        t0 = time.perf_counter()
        las = LinearBridge("lasso", alpha=a.lasso_alpha).fit(Str, Ttr)
        t_las = time.perf_counter() - t0
        nnz = float((las.W_ != 0).mean())
        print(
            f"\n[lasso] {t_las:.1f} s at n={a.n}, p={a.p}, q={a.q} (alpha {las.alpha_:.4g}, "
            f"{las.alpha_ / las.lasso_alpha_max_:.3g} alpha_max); nonzero share {nnz:.3f}; "
            f"held-out r2 {las.score(Ste, Tte):.4f}; max CD iterations {las.lasso_n_iter_}; "
            f"x{t_las / t_ours:.1f} the ridge+GCV time"
        )


if __name__ == "__main__":
    main()
