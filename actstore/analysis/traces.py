"""The expensive part of CKA: off-diagonal traces T = tr(K~ L~) for many layer pairs (used by cka).

Two forms (see :func:`actstore.analysis.cka.plan_cka_matrix` for how one is chosen):

* Gram form, :func:`gram_traces`: rows are processed in blocks of ``b`` prompts. For a block
  [s, e) every layer's strip K[s:e, s:] = X_c[s:e] X_c[s:]^T is computed (upper triangle only;
  the diagonal and the lower part of the diagonal sub-block are zeroed, so each strip holds
  K~'s strictly upper entries), laid out as one row of a matrix V_A [m_a, b (n - s)] (resp.
  V_B). Then T_AB += 2 V_A V_B^T, one GEMM for all pairs, since
  tr(K~ L~) = <K~, L~>_F = 2 sum_{i<j} K_ij L_ij. Cost ~ n^2 p per layer (half a full Gram)
  plus m_a m_b n^2 for the pair GEMMs; memory (m_a + m_b) b n values, never n x n per layer.
  No diagonal is subtracted, so no cancellation: float32 is safe here (errors ~1e-7 relative).
* Feature form, :func:`feature_traces`: T = ||X_c^T Y_c||_F^2 - d_K . d_L in float64, cost
  2 n p q per pair, memory p q. The subtraction cancels (the diagonal part of ||X^T Y||^2 is
  large when layers are weakly related), hence float64 always.

All inputs are centred on the fly (raw rows minus the float64 column mean) one layer at a
time, so no centred copy of all layers is ever held.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .devices import from_numpy, torch_dtype
from .errors import StopCheck, check_stop
from .hsic import LayerStats

__all__ = ["gram_traces", "gram_trace_matrix", "feature_traces", "self_trace", "full_gram", "block_rows_for"]

_F64_CHUNK_ELEMS = 1 << 23


def block_rows_for(n: int, n_layers: int, itemsize: int, budget_bytes: int) -> int:
    """Rows per block: the strips of all layers must fit in ``budget_bytes``, and blocks are
    at most ~n/8 so that the wasted lower half of the diagonal sub-blocks (n b / 2 of the
    n^2 / 2 entries per layer) stays small."""
    b = int(budget_bytes // max(1, n_layers * n * itemsize))
    return max(1, min(n, b, max(512, -(-n // 8))))


def _centred(x: np.ndarray, mean: torch.Tensor, dtype: np.dtype, device: torch.device) -> torch.Tensor:
    """x - mean as a new tensor in ``dtype`` on ``device`` (the caller's array is untouched)."""
    src = from_numpy(x)
    t = src.to(device=device, dtype=torch_dtype(dtype))
    if t.data_ptr() == src.data_ptr():
        return t - mean  # shares the caller's memory: not in place
    return t.sub_(mean)


_SQRT2 = 2.0**0.5
_GEMM_COLS = 1 << 18  # columns per pair GEMM; each partial result is added in float64


def gram_traces(
    layers_a: Sequence[np.ndarray],
    stats_a: Sequence[LayerStats],
    layers_b: Sequence[np.ndarray],
    stats_b: Sequence[LayerStats],
    *,
    dtype: np.dtype,
    device: torch.device,
    block_rows: int,
    should_stop: StopCheck | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T_AB [m_a, m_b], T_AA [m_a], T_BB [m_b]) in float64 by the blocked Gram form.

    Layout of one layer's row in the block matrix V for rows [s, e) (bs = e - s):
    [K~[s:e, s:e] (diagonal zeroed, both triangles) | sqrt(2) K[s:e, e:]], so that
    <V_K, V_L> = 2 sum_{s<=i<e, i<j} K_ij L_ij exactly and the sum over blocks is tr(K~ L~).
    One GEMM V V^T per block (split into <= 2^18 columns, each partial sum added in float64)
    gives every pair and every self term at once. ``should_stop`` is asked before every block
    (AnalysisCancelled when it returns True).
    """
    m_a = len(layers_a)
    g = gram_trace_matrix(
        list(layers_a) + list(layers_b),
        list(stats_a) + list(stats_b),
        dtype=dtype,
        device=device,
        block_rows=block_rows,
        should_stop=should_stop,
    )
    diag_g = np.diag(g).copy()
    return g[:m_a, m_a:].copy(), diag_g[:m_a], diag_g[m_a:]


def gram_trace_matrix(
    layers: Sequence[np.ndarray],
    stats: Sequence[LayerStats],
    *,
    dtype: np.dtype,
    device: torch.device,
    block_rows: int,
    should_stop: StopCheck | None = None,
) -> np.ndarray:
    """float64 [m, m] of tr(K~_i K~_j) for every pair of the m layers (diagonal: self traces),
    by the blocked Gram form of :func:`gram_traces`: one GEMM per row block gives every pair,
    so each layer's strip is computed once however many pairs it is in. Memory: the block
    matrix m x (block_rows n) in ``dtype`` plus one [n, max p] work buffer."""
    layers = list(layers)
    stats = list(stats)
    m = len(layers)
    n = layers[0].shape[0]
    b = max(1, min(n, block_rows))
    tdt = torch_dtype(dtype)
    means = [torch.as_tensor(st.mean, dtype=tdt, device=device) for st in stats]
    buf = torch.empty((m, b * n), dtype=tdt, device=device)
    p_max = max(x.shape[1] for x in layers)
    on_cpu = device.type == "cpu"
    if on_cpu:  # numpy's elementwise ops are much faster than torch's on a busy CPU
        work_np = np.empty((n, p_max), dtype=dtype)
        means_np = [st.mean.astype(dtype) for st in stats]
        work = torch.from_numpy(work_np)
    else:
        work = torch.empty((n, p_max), dtype=tdt, device=device)
    gram = torch.zeros((m, m), dtype=torch.float64, device=device)
    for s in range(0, n, b):
        check_stop(should_stop, s, n, "rows of Gram blocks")
        e = min(n, s + b)
        bs, w = e - s, n - s
        for li, x in enumerate(layers):
            xr = work[:w, : x.shape[1]]
            if on_cpu:
                np.subtract(x[s:], means_np[li], out=work_np[:w, : x.shape[1]], casting="unsafe")
            else:
                xr.copy_(torch.from_numpy(x[s:]))
                xr.sub_(means[li])
            row = buf[li]
            diag = row[: bs * bs].view(bs, bs)
            torch.matmul(xr[:bs], xr[:bs].T, out=diag)
            diag.fill_diagonal_(0.0)
            if w > bs:
                torch.matmul(xr[:bs] * _SQRT2, xr[bs:].T, out=row[bs * bs : bs * w].view(bs, w - bs))
        v = buf[:, : bs * w]
        for c0 in range(0, bs * w, _GEMM_COLS):
            vc = v[:, c0 : c0 + _GEMM_COLS]
            gram += (vc @ vc.T).to(torch.float64)
    return gram.cpu().numpy()


def _f64_chunks(n: int, width: int) -> range:
    return range(0, n, max(1, _F64_CHUNK_ELEMS // max(1, width)))


def feature_traces(
    layers_a: Sequence[np.ndarray],
    stats_a: Sequence[LayerStats],
    layers_b: Sequence[np.ndarray],
    stats_b: Sequence[LayerStats],
    *,
    device: torch.device,
    should_stop: StopCheck | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T_AB, T_AA, T_BB) in float64 by the feature form (no n x n matrix); ``should_stop``
    is asked before every layer pair (AnalysisCancelled when it returns True)."""
    n = layers_a[0].shape[0]
    t_ab = np.empty((len(layers_a), len(layers_b)))
    f64 = np.dtype(np.float64)
    for i, (x, sx) in enumerate(zip(layers_a, stats_a)):
        mx = torch.as_tensor(sx.mean, device=device)
        for j, (y, sy) in enumerate(zip(layers_b, stats_b)):
            check_stop(should_stop, i * len(layers_b) + j, len(layers_a) * len(layers_b), "layer pairs")
            my = torch.as_tensor(sy.mean, device=device)
            c = torch.zeros((x.shape[1], y.shape[1]), dtype=torch.float64, device=device)
            step = _f64_chunks(n, x.shape[1] + y.shape[1]).step
            for s in range(0, n, step):
                xc = _centred(x[s : s + step], mx, f64, device)
                yc = _centred(y[s : s + step], my, f64, device)
                c.addmm_(xc.T, yc)
            t_ab[i, j] = float(torch.sum(c * c)) - float(sx.d @ sy.d)
    t_aa = np.array([self_trace(x, st, device=device) for x, st in zip(layers_a, stats_a)])
    t_bb = np.array([self_trace(y, st, device=device) for y, st in zip(layers_b, stats_b)])
    return t_ab, t_aa, t_bb


def self_trace(x: np.ndarray, st: LayerStats, *, device: torch.device) -> float:
    """tr(K~ K~) in float64: ||X_c^T X_c||^2 - |d|^2 (p <= n) or 2 sum_{i<j} K_ij^2 (p > n)."""
    n, p = x.shape
    f64 = np.dtype(np.float64)
    mean = torch.as_tensor(st.mean, device=device)
    if p <= n:
        c = torch.zeros((p, p), dtype=torch.float64, device=device)
        step = _f64_chunks(n, p).step
        for s in range(0, n, step):
            xc = _centred(x[s : s + step], mean, f64, device)
            c.addmm_(xc.T, xc)
        return float(torch.sum(c * c)) - float(st.d @ st.d)
    k = full_gram(x, st, dtype=f64, device=device)
    return float(torch.sum(k * k))


def full_gram(x: np.ndarray, st: LayerStats, *, dtype: np.dtype, device: torch.device) -> torch.Tensor:
    """K~ [n, n] of the centred layer (zero diagonal) in ``dtype`` on ``device``."""
    mean = torch.as_tensor(st.mean, dtype=torch_dtype(dtype), device=device)
    xc = _centred(x, mean, dtype, device)
    k = xc @ xc.T
    k.fill_diagonal_(0.0)
    return k
