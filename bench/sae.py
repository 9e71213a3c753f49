"""Benchmark: SAE feature correlation and ONE_TO_ONE matching at real SAE sizes, against a
dense all-at-once computation extrapolated from a slice.

Synthetic sparse feature activations, n = 10,000 prompts x d_sae = 16,384 for both SAEs
(default). Feature firing rates are log-uniform between 1e-4 and 3e-2 (mean L0 ~ 60 active
features per prompt, ~0.4% density, like trained SAEs); half of B's features are noisy,
permuted copies of A's, the rest independent. Prints, in one run:
  * ours: actstore.analysis.sae_match.match_features (blocked correlation, per-feature
    candidates, exact lazy greedy), wall time and peak resident memory of the call;
  * dense: standardise both [n, d] matrices densely, C = Z_A^T Z_B / n all at once (GEMM),
    then greedy over all dA x dB values sorted -- timed on a slice of A's features and
    extrapolated (GEMM linearly, the sort as m log m), memory computed from the sizes;
  * the time ratio, and accuracy: our matched correlations against the dense slice, and the
    share of planted pairs recovered.

Usage: python bench/sae.py [--n 10000] [--d-sae 16384] [--slice 512] [--l0 60] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import _common  # noqa: F401  (puts the repository on sys.path)
import numpy as np
import scipy.sparse as sp
import torch

from actstore.analysis.sae_match import match_features


def _rss_gb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (peak RSS) on Linux
    except OSError:
        pass


def synthetic(n: int, d: int, l0: float, seed: int):
    """(F_A, F_B as CSR float32 [n, d], perm: A feature i planted as B feature perm[i] or -1)."""
    rng = np.random.default_rng(seed)
    rates = np.exp(rng.uniform(np.log(1e-4), np.log(3e-2), d))
    rates *= l0 / rates.sum()

    def draw(rate_vec):
        counts = rng.binomial(n, np.clip(rate_vec, 0, 1))
        cols = np.repeat(np.arange(len(rate_vec)), counts)
        rows = np.concatenate([rng.choice(n, c, replace=False) for c in counts]) if counts.sum() else np.empty(0, int)
        vals = rng.exponential(1.0, len(rows)).astype(np.float32)
        return sp.csc_matrix((vals, (rows, cols)), shape=(n, len(rate_vec)), dtype=np.float32)

    A = draw(rates)
    perm = rng.permutation(d)
    planted = rng.random(d) < 0.5
    # B column perm[i] = A column i (80% of its firings kept, values jittered) + own noise, for planted i
    Ac = A.tocsc()
    rows_b, cols_b, vals_b = [], [], []
    for i in np.flatnonzero(planted):
        s, e = Ac.indptr[i], Ac.indptr[i + 1]
        keep = rng.random(e - s) < 0.8
        rows_b.append(Ac.indices[s:e][keep])
        cols_b.append(np.full(keep.sum(), perm[i]))
        vals_b.append(Ac.data[s:e][keep] * rng.uniform(0.7, 1.3, keep.sum()).astype(np.float32))
    noise = draw(rates[rng.permutation(d)] * np.where(np.isin(np.arange(d), perm[planted]), 0.25, 1.0)).tocoo()
    rows_b.append(noise.row)
    cols_b.append(noise.col)
    vals_b.append(noise.data)
    B = sp.csr_matrix(
        (np.concatenate(vals_b), (np.concatenate(rows_b), np.concatenate(cols_b))), shape=(n, d), dtype=np.float32
    )
    B.sum_duplicates()
    return A.tocsr(), B, np.where(planted, perm, -1)


def dense_slice(A: sp.csr_matrix, B: sp.csr_matrix, cols: np.ndarray):
    """Dense reference on A columns ``cols``: (C_slice [len(cols), d], seconds to densify and
    standardise B (paid once), seconds to standardise the A slice and multiply (scales with
    the slice), seconds to sort the slice's values for the greedy)."""
    n = A.shape[0]
    t0 = time.perf_counter()
    Zb = B.toarray()
    Zb -= Zb.mean(0)
    sd = Zb.std(0)
    Zb /= np.where(sd > 0, sd, np.inf)
    t_fixed = time.perf_counter() - t0
    t0 = time.perf_counter()
    Za = A[:, cols].toarray()
    Za -= Za.mean(0)
    sa = Za.std(0)
    Za /= np.where(sa > 0, sa, np.inf)
    C = (torch.from_numpy(Za).T @ torch.from_numpy(Zb)).numpy() / n
    t_gemm = time.perf_counter() - t0
    del Zb
    t0 = time.perf_counter()
    np.argsort(-C, axis=None, kind="quicksort")
    t_sort = time.perf_counter() - t0
    return C, t_fixed, t_gemm, t_sort


def _pearson64(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    return float(x @ y / np.sqrt((x @ x) * (y @ y)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d-sae", type=int, default=16_384)
    ap.add_argument("--slice", type=int, default=512, help="A features in the dense reference slice")
    ap.add_argument("--l0", type=float, default=60.0, help="mean active features per prompt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    n, d = args.n, args.d_sae

    t0 = time.perf_counter()
    A, B, planted = synthetic(n, d, args.l0, args.seed)
    print(
        f"sizes: n={n} prompts, d_sae={d} (A) x {d} (B); nnz A={A.nnz:,} ({A.nnz / n:.1f}/prompt, "
        f"density {A.nnz / (n * d):.3%}), nnz B={B.nnz:,}; generated in {time.perf_counter() - t0:.1f} s"
    )
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()}")

    base = _rss_gb("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    m = match_features(A, B, matching="one_to_one", device=args.device)
    t_ours = time.perf_counter() - t0
    peak = _rss_gb("VmHWM")
    print(
        f"ours  : match_features ONE_TO_ONE  {t_ours:8.2f} s   peak RSS {peak:.2f} GB "
        f"(+{peak - base:.2f} GB over the {base:.2f} GB before the call)   method={m.method}, "
        f"pairs={len(m.pairs_a):,}, dropped A/B={m.dropped_a}/{m.dropped_b}, "
        f"recomputed rows={m.recomputed_rows:,}"
    )

    rng = np.random.default_rng(args.seed + 1)
    cols = np.sort(rng.choice(d, min(args.slice, d), replace=False))
    C, t_fixed, t_gemm, t_sort = dense_slice(A, B, cols)
    frac = len(cols) / d
    cells = float(d) * d
    slice_cells = float(C.size)
    t_dense = t_fixed + t_gemm / frac + t_sort * (cells * np.log2(cells)) / (slice_cells * np.log2(slice_cells))
    mem_dense = (2 * n * d * 4 + cells * 4 + cells * 8) / 2**30  # dense Z_A, Z_B, C float32, argsort int64
    print(
        f"dense : all-at-once (extrapolated from {len(cols)} of {d} A features) {t_dense:8.2f} s "
        f"(standardise B {t_fixed:.2f} s + A and GEMM {t_gemm / frac:.2f} s + full sort "
        f"{t_dense - t_fixed - t_gemm / frac:.2f} s)   memory ~{mem_dense:.1f} GB "
        f"(Z_A, Z_B, C float32, sort indices)"
    )
    print(
        f"ratio : dense / ours = {t_dense / t_ours:.1f}x faster; peak {peak:.2f} GB vs ~{mem_dense:.1f} GB "
        f"(target < 4 GB: {'met' if peak < 4 else 'NOT met'})"
    )

    # accuracy: our pair correlations against the dense slice; planted pairs recovered
    pos = {int(c): i for i, c in enumerate(cols)}
    in_slice = [(int(a), int(b), r) for a, b, r in zip(m.pairs_a, m.pairs_b, m.correlation) if int(a) in pos]
    errs = [abs(r - C[pos[a], b]) for a, b, r in in_slice]
    Ac, Bc = A.tocsc(), B.tocsc()
    err64 = max(
        abs(
            r - _pearson64(Ac[:, a].toarray().ravel().astype(np.float64), Bc[:, b].toarray().ravel().astype(np.float64))
        )
        for a, b, r in in_slice[:200]
    )
    got = dict(zip(m.pairs_a.tolist(), m.pairs_b.tolist()))
    pl = np.flatnonzero(planted >= 0)
    rec = np.mean([got.get(int(i), -2) == planted[i] for i in pl])
    print(
        f"check : max |r_ours - r_dense| over {len(errs)} pairs in the slice = {max(errs):.2e}, "
        f"|r_ours - float64 Pearson| over {min(200, len(errs))} = {err64:.1e}; "
        f"planted pairs recovered {rec:.1%} of {len(pl):,}; mean r of matched pairs {m.correlation.mean():.3f}"
    )


if __name__ == "__main__":
    main()
