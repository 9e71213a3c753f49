"""Linear CKA from sums over rows: the feature form split into per-shard statistics.

Every term of the debiased HSIC estimator (METHODS.md) is a function of sums over the rows
(prompts), so a matrix of CKA values can be computed from statistics of disjoint row ranges
(shards) added together -- on many machines, without ever holding all rows in one place.

Notation: layer i is X_i [n, p_i]; rows are centred by a reference vector c_i [p_i] common to
every shard (any fixed vector: the debiased estimator is exactly invariant to subtracting a
constant from every row; choose c_i near the column means, e.g. the mean of a sample of rows,
so that float64 sums do not cancel), x~ = x - c_i, d_i = ||x~||^2 (one value per row). Per
layer and per layer pair (i, j), with sums over the rows of a shard:

  u_i = sum x~_i               [p_i]         D_i = sum d_i            (scalar)
  C_ij = sum x~_i x~_j^T       [p_i, p_j]    E_ij = sum d_i d_j       (scalar)
  g_ij = sum d_i x~_j          [p_j]         h_ij = sum d_j x~_i      [p_i]

The sums of all shards give, with K~ = K with zero diagonal (K = X~ X~^T):

  tr(K~_i K~_j)        = ||C_ij||_F^2 - E_ij
  1^T K~_i 1           = ||u_i||^2 - D_i
  1^T K~_i K~_j 1      = u_i^T C_ij u_j - g_ij . u_j - h_ij . u_i + E_ij
  HSIC1_ij = [tr(K~_i K~_j) + (1^T K~_i 1)(1^T K~_j 1) / ((n-1)(n-2))
              - 2/(n-2) 1^T K~_i K~_j 1] / (n (n-3))
  biased HSIC_ij (columns centred exactly) = ||C_ij - u_i u_j^T / n||_F^2

and CKA_ij = HSIC_ij / sqrt(HSIC_ii HSIC_jj). Costs: 2 n p_i p_j flops per pair; memory
p_i p_j float64 per pair (C_ij), independent of n. Everything is float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import AnalysisError

__all__ = ["FeatureSums", "add_feature_sums", "cka_from_sums", "feature_sums", "sums_bytes"]

_CHUNK_ELEMS = 1 << 22  # float64 elements per row chunk (32 MiB)


@dataclass(frozen=True)
class FeatureSums:
    """Sums over some rows of the statistics above, for layers ``0..m-1`` and some pairs.

    ``n``: rows summed. ``u[i]`` [p_i], ``dsum[i]``: per layer. ``pairs``: the (i, j) pairs
    held, i <= j or not (each as given); ``C[k]`` [p_i, p_j], ``E[k]``, ``g[k]`` [p_j],
    ``h[k]`` [p_i] of ``pairs[k]``."""

    n: int
    u: tuple[np.ndarray, ...]
    dsum: tuple[float, ...]
    pairs: tuple[tuple[int, int], ...]
    C: tuple[np.ndarray, ...]
    E: tuple[float, ...]
    g: tuple[np.ndarray, ...]
    h: tuple[np.ndarray, ...]


def sums_bytes(dims: Sequence[int], pairs: Sequence[tuple[int, int]]) -> int:
    """Bytes of the FeatureSums of layers of widths ``dims`` and ``pairs`` (float64)."""
    return 8 * (sum(dims) + sum(dims[i] * dims[j] + dims[i] + dims[j] for i, j in pairs))


def feature_sums(
    layers: Sequence[np.ndarray], centres: Sequence[np.ndarray], pairs: Sequence[tuple[int, int]]
) -> FeatureSums:
    """The sums of one shard: ``layers`` m arrays [n_s, p_i] (the same rows in the same order;
    float16/32/64), ``centres`` m float64 vectors [p_i] (the same for every shard),
    ``pairs`` the (i, j) layer pairs wanted (self pairs (i, i) included when wanted)."""
    if len(layers) != len(centres):
        raise AnalysisError(f"got {len(layers)} layers and {len(centres)} centres")
    n = layers[0].shape[0] if layers else 0
    for i, (x, c) in enumerate(zip(layers, centres)):
        if x.ndim != 2 or x.shape[0] != n:
            raise AnalysisError(f"layer {i} has shape {x.shape}; every layer needs [{n}, p] rows")
        if np.shape(c) != (x.shape[1],):
            raise AnalysisError(f"centre {i} has shape {np.shape(c)}, layer {i} has {x.shape[1]} columns")
    pairs = tuple((int(i), int(j)) for i, j in pairs)
    dims = [x.shape[1] for x in layers]
    u = [np.zeros(p) for p in dims]
    dsum = [0.0] * len(layers)
    C = [np.zeros((dims[i], dims[j])) for i, j in pairs]
    E = [0.0] * len(pairs)
    g = [np.zeros(dims[j]) for _, j in pairs]
    h = [np.zeros(dims[i]) for i, _ in pairs]
    step = max(1, _CHUNK_ELEMS // max(1, sum(dims)))
    for s in range(0, n, step):
        xs = [np.subtract(x[s : s + step], c, dtype=np.float64) for x, c in zip(layers, centres)]
        if not all(np.isfinite(x).all() for x in xs):
            raise AnalysisError("non-finite values (NaN or inf) in the layers")
        ds = [np.einsum("ij,ij->i", x, x) for x in xs]
        for i, x in enumerate(xs):
            u[i] += x.sum(axis=0)
            dsum[i] += float(ds[i].sum())
        for k, (i, j) in enumerate(pairs):
            C[k] += xs[i].T @ xs[j]
            E[k] += float(ds[i] @ ds[j])
            g[k] += ds[i] @ xs[j]
            h[k] += ds[j] @ xs[i]
    return FeatureSums(n=n, u=tuple(u), dsum=tuple(dsum), pairs=pairs, C=tuple(C), E=tuple(E), g=tuple(g), h=tuple(h))


def add_feature_sums(parts: Sequence[FeatureSums]) -> FeatureSums:
    """The sums of several shards (disjoint rows; the same layers, centres and pairs)."""
    if not parts:
        raise AnalysisError("no shard sums to add")
    first = parts[0]
    for p in parts[1:]:
        if p.pairs != first.pairs or len(p.u) != len(first.u):
            raise AnalysisError("shard sums of different layers or pairs cannot be added")
    return FeatureSums(
        n=sum(p.n for p in parts),
        u=tuple(np.sum([p.u[i] for p in parts], axis=0) for i in range(len(first.u))),
        dsum=tuple(float(sum(p.dsum[i] for p in parts)) for i in range(len(first.dsum))),
        pairs=first.pairs,
        C=tuple(np.sum([p.C[k] for p in parts], axis=0) for k in range(len(first.pairs))),
        E=tuple(float(sum(p.E[k] for p in parts)) for k in range(len(first.pairs))),
        g=tuple(np.sum([p.g[k] for p in parts], axis=0) for k in range(len(first.pairs))),
        h=tuple(np.sum([p.h[k] for p in parts], axis=0) for k in range(len(first.pairs))),
    )


def _hsic(s: FeatureSums, k: int, debiased: bool) -> float:
    i, j = s.pairs[k]
    n, C, ui, uj = s.n, s.C[k], s.u[i], s.u[j]
    if not debiased:
        Cc = C - np.outer(ui, uj) / n
        return float(np.sum(Cc * Cc))
    t = float(np.sum(C * C)) - s.E[k]
    si = float(ui @ ui) - s.dsum[i]
    sj = float(uj @ uj) - s.dsum[j]
    rr = float(ui @ C @ uj) - float(s.g[k] @ uj) - float(s.h[k] @ ui) + s.E[k]
    return (t + si * sj / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * rr) / (n * (n - 3))


def cka_from_sums(
    sums: FeatureSums | Sequence[FeatureSums], index_a: Sequence[int], index_b: Sequence[int], *, debiased: bool = True
) -> np.ndarray:
    """CKA [len(index_a), len(index_b)] float64 of layers ``index_a`` against ``index_b``
    from the summed statistics (one FeatureSums, or several holding disjoint pairs of the
    same rows, e.g. computed in groups to bound memory). Needs the pairs (a, b) and the self
    pairs (a, a), (b, b). Raises AnalysisError for n too small or a layer whose HSIC with
    itself is not positive (constant over the prompts)."""
    parts = [sums] if isinstance(sums, FeatureSums) else list(sums)
    n = parts[0].n
    if any(p.n != n for p in parts):
        raise AnalysisError("sums of different rows cannot be combined")
    if n < (4 if debiased else 2):
        raise AnalysisError(
            f"n = {n} prompts is too few: "
            + ("debiased CKA needs n >= 4 prompts" if debiased else "biased CKA needs n >= 2 prompts")
        )
    where = {pair: (p, k) for p in parts for k, pair in enumerate(p.pairs)}

    def hsic(i: int, j: int) -> float:
        if (i, j) not in where:
            raise AnalysisError(f"the sums hold no statistics of layer pair ({i}, {j})")
        p, k = where[(i, j)]
        return _hsic(p, k, debiased)

    selves = {i: hsic(i, i) for i in {*index_a, *index_b}}
    for i, v in selves.items():
        if not v > 0:
            kind = "debiased HSIC1" if debiased else "HSIC"
            raise AnalysisError(
                f"the {kind} of layer {i} with itself is {v:.3g} (not positive) over n = {n} "
                "prompts, so CKA is undefined (a constant layer, or too few prompts)"
            )
    out = np.empty((len(index_a), len(index_b)))
    for r, i in enumerate(index_a):
        for c, j in enumerate(index_b):
            out[r, c] = hsic(i, j) / np.sqrt(selves[i] * selves[j])
    return out
