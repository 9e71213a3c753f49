"""Shared helpers for the analysis benchmarks: synthetic activations, timers, memory.

Not a benchmark itself (``make bench`` runs every bench/*.py; this one does nothing).
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL_A = (16, 2048)  # layers, d_model
MODEL_B = (28, 3072)


def synthetic_models(n: int, *, seed: int = 0, rank: int = 64, dtype=np.float32, model_a=MODEL_A, model_b=MODEL_B):
    """Two models' activations: lists of [n, d] arrays, cheap to generate.

    Each prompt has latent factors Z0, Z1 [n, rank]; a layer at relative depth t sees
    cos(t pi/2) Z0 + sin(t pi/2) Z1 through a random map (shared low-rank structure that
    drifts with depth, so matched depths are most similar), plus isotropic noise, a mean offset
    per dimension (|mean| up to ~100) and 4 outlier dimensions of magnitude ~1e3.
    """
    rng = np.random.default_rng(seed)
    z0 = rng.standard_normal((n, rank), dtype=np.float32)
    z1 = rng.standard_normal((n, rank), dtype=np.float32)
    out = []
    for m, (layers, d) in enumerate((model_a, model_b)):
        mats = []
        for l_ in range(layers):
            t = l_ / (layers - 1)
            z = np.cos(t * np.pi / 2) * z0 + np.sin(t * np.pi / 2) * z1
            w = rng.standard_normal((rank, d), dtype=np.float32) * (1.5 / np.sqrt(rank))
            x = z @ w
            x += rng.standard_normal((n, d), dtype=np.float32)
            x += rng.standard_normal(d, dtype=np.float32) * 30.0 + 50.0
            out_dims = rng.choice(d, 4, replace=False)
            x[:, out_dims] = 1000.0 + 5.0 * rng.standard_normal((n, 4), dtype=np.float32) + 10.0 * z[:, :4]
            mats.append(np.ascontiguousarray(x, dtype=dtype))
        out.append(mats)
    return out[0], out[1]


def timed(fn, *args, repeat: int = 1, **kw):
    """(best seconds over ``repeat`` calls, last result)."""
    best, res = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn(*args, **kw)
        best = min(best, time.perf_counter() - t0)
    return best, res


def peak_rss_gb() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def matmul_gflops(n: int, d: int, dtype, device: str = "cpu") -> float:
    """Rate of a plain torch matmul [n, d] @ [d, n] (2 n^2 d flops) on ``device``, best of 3."""
    import torch

    x = torch.randn(n, d, dtype=dtype, device=device)
    y = torch.randn(n, d, dtype=dtype, device=device)

    def mm():
        out = x @ y.T
        if out.is_cuda:
            torch.cuda.synchronize()
        return out

    mm()
    t, _ = timed(mm, repeat=3)
    return 2.0 * n * n * d / t / 1e9


if __name__ == "__main__":
    pass
