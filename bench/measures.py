"""Benchmark: every registered similarity measure, its all-pairs matrix vs per-pair calls.

For each measure of actstore.analysis.measures (a loop over ``measures()``, so every family
registered later is included), on synthetic activations of two models with 6 layers each
(A: d = 256, B: d = 512; bench/_common.synthetic_models) and n = 2,048 prompts:
  * ``similarity_matrix`` over the 6 x 6 layer pairs (each layer prepared once, or the
    measure's own all-pairs form);
  * the naive way: one ``similarity`` call per pair (both layers prepared again every time);
    pairs are timed until ``--pair-budget`` seconds are spent and the rest is EXTRAPOLATED
    from the mean time per pair (marked as such);
and prints the ratio naive / matrix and the largest |matrix - per-pair| over the timed pairs.
Neighbourhood measures get k = 10; a measure with another required option is skipped (named).

Usage: python bench/measures.py [--n 2048] [--quick] [--k 10] [--pair-budget 20]
       [--only name,name]
"""

from __future__ import annotations

import argparse
import time

from _common import peak_rss_gb, synthetic_models, timed

from actstore.analysis.errors import AnalysisError
from actstore.analysis.measures import measures, similarity, similarity_matrix

LAYERS = 6


def options_for(m, k: int) -> dict | None:
    """Options to run ``m`` with, or None when it needs an option this bench cannot choose."""
    opts = {}
    for o in m.options:
        if o.name == "k":
            opts["k"] = k
        elif o.required:
            return None
    return opts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=None, help="prompts (default 2,048; 256 with --quick)")
    ap.add_argument("--quick", action="store_true", help="n = 256 and a 2 s pair budget")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument(
        "--pair-budget",
        type=float,
        default=None,
        help="seconds of per-pair calls per measure before extrapolating (default 20)",
    )
    ap.add_argument("--only", default="", help="comma-separated measure names")
    args = ap.parse_args()
    n = args.n or (256 if args.quick else 2048)
    budget = args.pair_budget if args.pair_budget is not None else (2.0 if args.quick else 20.0)
    only = {s for s in args.only.split(",") if s}

    A, B = synthetic_models(n, seed=0, model_a=(LAYERS, 256), model_b=(LAYERS, 512))
    pairs = [(i, j) for i in range(LAYERS) for j in range(LAYERS)]
    print(
        f"data: n = {n}; A {LAYERS} layers x d = 256, B {LAYERS} layers x d = 512 (float32); "
        f"{len(pairs)} pairs; k = {args.k} for neighbourhood measures; per-pair budget {budget:g} s"
    )
    print(
        f"{'measure':22s} {'matrix s':>9s} {'per-pair s':>11s} {'pairs timed':>11s} {'ratio':>7s} {'max |diff|':>10s}"
    )
    for m in measures():
        if only and m.name not in only:
            continue
        opts = options_for(m, args.k)
        if opts is None:
            print(
                f"{m.name:22s} skipped: needs an option without a default "
                f"({', '.join(o.name for o in m.options if o.required)})"
            )
            continue
        try:
            t_mat, M = timed(similarity_matrix, A, B, m.name, opts)
        except AnalysisError as e:
            print(f"{m.name:22s} error: {e}")
            continue
        spent, diffs = 0.0, []
        for i, j in pairs:
            t0 = time.perf_counter()
            v = similarity(A[i], B[j], m.name, opts)
            spent += time.perf_counter() - t0
            diffs.append(abs(v - M[i, j]))
            if spent >= budget:
                break
        done = len(diffs)
        naive = spent / done * len(pairs)
        mark = "" if done == len(pairs) else " (EXTRAPOLATED)"
        print(f"{m.name:22s} {t_mat:9.2f} {naive:11.2f} {done:>11d} {naive / t_mat:6.1f}x {max(diffs):10.1e}{mark}")
    print(f"peak memory (ru_maxrss): {peak_rss_gb():.2f} GiB")


if __name__ == "__main__":
    main()
