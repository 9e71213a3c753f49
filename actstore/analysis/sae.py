"""Sparse autoencoders: parameters, batched encoding, feature statistics, keyword subspaces.

Definitions are METHODS.md's ("SAE feature correlation") and SAELens' inference code:

    x'  = norm(x)                                   normalize_activations (see below)
    x'' = x' - b_dec   if apply_b_dec_to_input else x'
    pre = x'' W_enc + b_enc                         W_enc [d_in, d_sae], b_enc [d_sae]
    standard (ReLU; "relu" is accepted as an older name):  f = max(pre, 0)
    jumprelu:                   f = max(pre, 0) * (pre > threshold)
    topk:                       f = the k largest entries of max(pre, 0), the rest 0

``jumprelu`` is SAELens' form; it equals METHODS.md's ``pre * (pre > threshold)`` whenever
threshold >= 0 (every trained JumpReLU SAE: SAELens stores exp(log_threshold)). For topk,
ties at the k-th value are broken by torch.topk (an arbitrary but fixed choice).

``normalize_activations`` (SAELens names):
  "none"                      x' = x
  "constant_norm_rescale"     x' = x * sqrt(d_in) / ||x||   per prompt (a zero row stays zero)
  "layer_norm"                x' = (x - mean(x)) / (std(x) + 1e-5), std with n - 1 (as SAELens)
  "expected_average_only_in"  x' = x * norm_scaling_factor when the config gives one; without
                              it SAELens itself encodes without scaling (and warns), and so
                              does this module (the registry records a note).

Encoding runs in torch (CUDA when present) in row batches sized so that one batch of
pre-activations [batch, d_sae] stays under ``memory_budget_bytes``; the answer is a
``scipy.sparse.csr_matrix`` [n, d_sae] float32, because SAE features are sparse (a few
dozen to a few hundred active of 16k-65k) and a dense [10,000 x 65,536] matrix would take
2.6 GB.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from . import validation as V
from .devices import from_numpy, resolve_device
from .errors import AnalysisError

__all__ = [
    "ARCHITECTURES",
    "NORMALIZATIONS",
    "SaeParams",
    "encode",
    "feature_stats",
    "keyword_features",
    "keyword_hits",
    "top_activating",
]

ARCHITECTURES = ("standard", "relu", "jumprelu", "topk")  # SAELens' names; "relu" = standard (older name)
NORMALIZATIONS = ("none", "constant_norm_rescale", "layer_norm", "expected_average_only_in")
DEFAULT_ENCODE_BUDGET = 256 << 20  # bytes of pre-activations per batch


@dataclass(frozen=True, eq=False)
class SaeParams:
    """The inference parameters of one SAE (float32 numpy arrays).

    W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]; threshold [d_sae]
    for jumprelu; k for topk. ``norm_scaling_factor`` is used only with
    normalize_activations == "expected_average_only_in".
    """

    W_enc: np.ndarray
    b_enc: np.ndarray
    W_dec: np.ndarray
    b_dec: np.ndarray
    architecture: str = "standard"
    threshold: np.ndarray | None = None
    k: int | None = None
    apply_b_dec_to_input: bool = True
    normalize_activations: str = "none"
    norm_scaling_factor: float | None = None

    def __post_init__(self) -> None:
        check_params(self)

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])


def check_params(p: SaeParams) -> None:
    """Shapes and options of an SaeParams; AnalysisError naming the bad one."""
    if p.architecture not in ARCHITECTURES:
        raise AnalysisError(f"architecture must be one of {ARCHITECTURES}, got {p.architecture!r}")
    if p.normalize_activations not in NORMALIZATIONS:
        raise AnalysisError(f"normalize_activations must be one of {NORMALIZATIONS}, got {p.normalize_activations!r}")
    W = np.asarray(p.W_enc)
    if W.ndim != 2:
        raise AnalysisError(f"W_enc must be 2-D [d_in, d_sae], got shape {W.shape}")
    d_in, d_sae = W.shape
    want = {"b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if p.architecture == "jumprelu":
        if p.threshold is None:
            raise AnalysisError("a jumprelu SAE needs threshold [d_sae]")
        want["threshold"] = (d_sae,)
    for name, shape in want.items():
        got = np.shape(getattr(p, name))
        if got != shape:
            raise AnalysisError(
                f"{name} must have shape {list(shape)} for W_enc of shape [{d_in}, {d_sae}], got {list(got)}"
            )
    if p.architecture == "topk":
        V.check_int(p.k, "k (topk SAE)", minimum=1, maximum=d_sae)
    if p.norm_scaling_factor is not None and not (np.isfinite(p.norm_scaling_factor) and p.norm_scaling_factor > 0):
        raise AnalysisError(f"norm_scaling_factor must be a positive number, got {p.norm_scaling_factor!r}")


def _normalize(x: torch.Tensor, p: SaeParams) -> torch.Tensor:
    mode = p.normalize_activations
    if mode == "constant_norm_rescale":
        norm = x.norm(dim=-1, keepdim=True)
        scale = torch.where(norm > 0, (p.d_in**0.5) / norm.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(norm))
        return x * scale
    if mode == "layer_norm":
        mu = x.mean(dim=-1, keepdim=True)
        xc = x - mu
        std = xc.std(dim=-1, keepdim=True) if x.shape[-1] > 1 else torch.zeros_like(mu)
        return xc / (std + 1e-5)
    if mode == "expected_average_only_in" and p.norm_scaling_factor is not None:
        return x * p.norm_scaling_factor
    return x


def _activate(pre: torch.Tensor, p: SaeParams, thr: torch.Tensor | None) -> torch.Tensor:
    f = torch.relu(pre)
    if p.architecture == "jumprelu":
        assert thr is not None  # encode passes the threshold check_params requires of a jumprelu SAE
        f = f * (pre > thr)
    elif p.architecture == "topk":
        assert p.k is not None  # check_params requires k of a topk SAE
        vals, idx = torch.topk(f, int(p.k), dim=-1)
        f = torch.zeros_like(f).scatter_(-1, idx, vals)
    return f


def encode(
    X: np.ndarray,
    sae: SaeParams,
    *,
    device: str = "auto",
    dense: bool = False,
    precision: str = "float32",
    memory_budget_bytes: int = DEFAULT_ENCODE_BUDGET,
) -> sp.csr_matrix | np.ndarray:
    """Feature activations of the SAE for activations X.

    Args:
        X: [n, d_in] activations (float16/32/64), one row per prompt; not modified.
        sae: the SAE's parameters.
        device: "auto" (CUDA when torch sees one) | "cpu" | "cuda".
        dense: return a dense ndarray instead of a CSR matrix (small problems, tests).
        precision: "float32" (default) or "float64" for the encoder arithmetic.
        memory_budget_bytes: bound on one batch of pre-activations [batch, d_sae].

    Returns:
        scipy.sparse.csr_matrix [n, d_sae] float32 (explicit zeros removed, column indices
        sorted), or float32/float64 ndarray [n, d_sae] when ``dense``. Units: the SAE's
        feature activations (non-negative).
    """
    X = V.activations(X, "X")
    if X.shape[1] != sae.d_in:
        raise AnalysisError(f"X has {X.shape[1]} columns but the SAE has d_in = {sae.d_in}")
    if precision not in ("float32", "float64"):
        raise AnalysisError(f"precision must be 'float32' or 'float64', got {precision!r}")
    dev = resolve_device(device)
    dt = torch.float64 if precision == "float64" else torch.float32
    W = from_numpy(sae.W_enc).to(dev, dt)
    b = from_numpy(sae.b_enc).to(dev, dt)
    bd = from_numpy(sae.b_dec).to(dev, dt)
    thr = (
        from_numpy(sae.threshold).to(dev, dt) if sae.architecture == "jumprelu" and sae.threshold is not None else None
    )
    n = X.shape[0]
    rows = int(max(1, min(n, memory_budget_bytes // max(1, 4 * sae.d_sae * (2 if dense else 3)))))
    out_dense = np.empty((n, sae.d_sae), np.float64 if dt == torch.float64 else np.float32) if dense else None
    parts: list[sp.csr_matrix] = []
    with torch.no_grad():
        for s in range(0, n, rows):
            x = from_numpy(X[s : s + rows]).to(dev, dt)
            x = _normalize(x, sae)
            if sae.apply_b_dec_to_input:
                x = x - bd
            f = _activate(x @ W + b, sae, thr)
            if out_dense is not None:
                out_dense[s : s + rows] = f.cpu().numpy()
                continue
            nz = f.nonzero(as_tuple=False)
            vals = f[nz[:, 0], nz[:, 1]].to(torch.float32).cpu().numpy()
            ij = nz.cpu().numpy()
            parts.append(sp.csr_matrix((vals, (ij[:, 0], ij[:, 1])), shape=(f.shape[0], sae.d_sae)))
    if out_dense is not None:
        return out_dense
    F = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, sae.d_sae), dtype=np.float32)
    F.sort_indices()
    return F


# ---------------------------------------------------------------- statistics
@dataclass(frozen=True, eq=False)
class FeatureStats:
    """Per-feature statistics of activations F [n, d] over n prompts (float64 [d] each).

    mean, std (population, divides by n), nnz (prompts where the feature is non-zero),
    varies (max != min over the prompts: False for dead or constant features).
    """

    n: int
    mean: np.ndarray
    std: np.ndarray
    nnz: np.ndarray
    varies: np.ndarray


def as_csr(F: object, name: str) -> sp.csr_matrix:
    """A float CSR copy/view of F (dense or sparse [n, d]); AnalysisError on bad input."""
    if sp.issparse(F):
        M = sp.csr_matrix(F)
    else:
        M = sp.csr_matrix(V.activations(F, name))
    if M.ndim != 2 or M.shape[1] < 1:
        raise AnalysisError(f"{name} must be 2-D [n_prompts, d_sae], got shape {M.shape}")
    if M.dtype.kind not in "f":
        M = M.astype(np.float64)
    if M.nnz and not np.isfinite(M.data).all():
        raise AnalysisError(f"{name} contains NaN or inf; feature activations must be finite")
    M.sum_duplicates()
    M.sort_indices()
    return M


def feature_stats(F: object, name: str = "F") -> FeatureStats:
    """Mean, population std, nnz and 'varies' of each column of F [n, d] (sparse or dense)."""
    M = as_csr(F, name)
    n, d = M.shape
    if n < 1:
        raise AnalysisError(f"{name} has no rows (prompts)")
    C = M.tocsc()
    data = C.data.astype(np.float64)
    nnz = np.diff(C.indptr)
    s1 = np.add.reduceat(data, C.indptr[:-1]) if len(data) else np.zeros(d)
    s1 = np.where(nnz > 0, s1, 0.0)
    mean = s1 / n
    # Two-pass variance over the stored entries; the n - nnz zeros add nnz-free terms.
    col = np.repeat(np.arange(d), nnz)
    dev2 = (data - mean[col]) ** 2
    ss = np.add.reduceat(dev2, C.indptr[:-1]) if len(data) else np.zeros(d)
    ss = np.where(nnz > 0, ss, 0.0) + (n - nnz) * mean**2
    std = np.sqrt(ss / n)
    if len(data):
        mx = np.maximum.reduceat(data, C.indptr[:-1])
        mn = np.minimum.reduceat(data, C.indptr[:-1])
    else:
        mx = mn = np.zeros(d)
    mx = np.where(nnz > 0, mx, 0.0)
    mn = np.where(nnz > 0, mn, 0.0)
    mx = np.where(nnz < n, np.maximum(mx, 0.0), mx)
    mn = np.where(nnz < n, np.minimum(mn, 0.0), mn)
    varies = (mx != mn) & (std > 0)
    return FeatureStats(n=n, mean=mean, std=std, nnz=nnz.astype(np.int64), varies=varies)


def top_activating(
    F: object, top: int, features: Sequence[int] | np.ndarray | None = None, name: str = "F"
) -> np.ndarray:
    """Rows (prompt positions) of each feature's ``top`` largest positive activations.

    Returns int64 [len(features), top], best first, padded with -1 where a feature is
    positive on fewer than ``top`` prompts. Ties are broken by the lower row.
    """
    top = V.check_int(top, "top", minimum=1)
    M = as_csr(F, name)
    n, d = M.shape
    feats = np.arange(d) if features is None else np.asarray(features, dtype=np.int64).reshape(-1)
    if len(feats) and (feats.min() < 0 or feats.max() >= d):
        raise AnalysisError(f"features must be column indices in 0..{d - 1}")
    C = M[:, feats].tocsc() if features is not None else M.tocsc()
    C.sort_indices()
    nnz = np.diff(C.indptr)
    col = np.repeat(np.arange(C.shape[1]), nnz)
    keep = C.data > 0
    rows, vals, col = C.indices[keep], C.data[keep], col[keep]
    order = np.lexsort((rows, -vals, col))
    rows, col = rows[order], col[order]
    out = np.full((C.shape[1], top), -1, np.int64)
    if len(col):
        starts = np.searchsorted(col, np.arange(C.shape[1]))
        rank = np.arange(len(col)) - starts[col]
        sel = rank < top
        out[col[sel], rank[sel]] = rows[sel]
    return out


def keyword_hits(texts: Sequence[str], keywords: Sequence[str]) -> np.ndarray:
    """bool [len(texts)]: the text contains one of the keywords as a whole word or phrase
    (case-insensitive; a keyword may hold several words, matched with any whitespace)."""
    words = [k.strip() for k in keywords if isinstance(k, str) and k.strip()]
    if not words:
        raise AnalysisError("keywords must hold at least one non-empty word")
    alts = [r"\s+".join(re.escape(w) for w in k.split()) for k in words]
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(sorted(alts, key=len, reverse=True)) + r")(?!\w)", re.IGNORECASE)
    return np.array([bool(pattern.search(t)) for t in texts], dtype=bool)


def keyword_features(
    F: object,
    hits: np.ndarray,
    *,
    top: int = 10,
    min_share: float = 0.5,
    features: Sequence[int] | np.ndarray | None = None,
    name: str = "F",
) -> np.ndarray:
    """Features (column indices, ascending) of a semantic subspace.

    A feature belongs when at least ``min_share`` of its ``top`` top-activating prompts
    (only prompts where it is positive count; a feature positive nowhere never belongs)
    are keyword hits (``hits`` bool [n], from :func:`keyword_hits`).
    """
    M = as_csr(F, name)
    hits = np.asarray(hits, dtype=bool).reshape(-1)
    if len(hits) != M.shape[0]:
        raise AnalysisError(f"hits has {len(hits)} entries for {M.shape[0]} prompts")
    if not 0.0 < float(min_share) <= 1.0:
        raise AnalysisError(f"min_share must be in (0, 1], got {min_share}")
    feats = np.arange(M.shape[1]) if features is None else np.asarray(features, dtype=np.int64).reshape(-1)
    tops = top_activating(M, top, feats, name)
    valid = tops >= 0
    count = valid.sum(axis=1)
    hit = (hits[np.where(valid, tops, 0)] & valid).sum(axis=1)
    share = np.divide(hit, count, out=np.zeros(len(feats)), where=count > 0)
    return np.sort(feats[(count > 0) & (share >= float(min_share) - 1e-12)])
