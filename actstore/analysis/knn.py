"""Cosine k-NN graphs of one layer, mutual k-NN of two layers, affinity matrices.

Definitions (METHODS.md, after Huh et al. 2024): N_k(x; f) is the k prompts other than x with
the largest cosine similarity to x under layer f (raw activations, not centred). Ties are
broken by the smaller prompt index, so graphs are deterministic. M_k(f, g) =
1/(k n) sum_x |N_k(x; f) & N_k(x; g)|; its mean under random neighbour sets is k / (n - 1).

k-NN backends (both exact, both return the same graph up to float32 near-ties):
* "torch" (default): blocked self-join. The similarity matrix of a layer with itself is
  symmetric, so only the blocks on and above the diagonal are computed (n^2 d flops instead
  of 2 n^2 d) and each block updates the running top-k of its rows and of its columns. Runs
  on CUDA when present (also the route on Hopper GPUs, which the faiss-gpu wheels do not
  target).
* "faiss": IndexFlatIP on an L2-normalised float32 copy (faiss.normalize_L2 needs a
  C-contiguous float32 array), on GPU when faiss.get_num_gpus() > 0 and device is CUDA.
Both search k + pad candidates in float32 and sort them by (-similarity, index); a row whose
candidate list might have cut a tie at rank k is redone against all prompts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from . import validation as V
from .devices import from_numpy, resolve_device
from .errors import AnalysisError, StopCheck, check_stop

__all__ = [
    "check_graphs",
    "knn_graph",
    "knn_graph_recall",
    "mutual_knn",
    "affinity_matrix",
    "null_mean",
    "normalized_rows",
]

_BACKENDS = ("auto", "torch", "faiss")
_PAD = 4  # extra candidates searched beyond k
_BLOCK_BYTES = 4 << 20  # bytes of one similarity block (1024 x 1024 float32)


def null_mean(k: int, n: int) -> float:
    """Expected mutual k-NN under random neighbour sets: k / (n - 1) (needs 1 <= k < n)."""
    n_ = V.check_int(n, "n", minimum=2)
    k_ = V.check_int(k, "k", minimum=1, maximum=n_ - 1)
    return k_ / (n_ - 1)


def normalized_rows(X: np.ndarray, name: str = "X") -> np.ndarray:
    """C-contiguous float32 copy of X [n, d] with unit rows (norms taken in float64).

    Raises AnalysisError for a zero row (its cosine similarity is undefined).
    """
    n, d = X.shape
    out = np.empty((n, d), dtype=np.float32)
    rows = max(1, (1 << 22) // max(1, d))
    for s in range(0, n, rows):
        x = X[s : s + rows].astype(np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))
        zero = np.flatnonzero(norms == 0)
        if zero.size:
            raise AnalysisError(
                f"{name} row {s + zero[0]} is all zeros; cosine similarity is undefined for a zero vector"
            )
        out[s : s + rows] = x / norms[:, None]
    return out


def knn_graph(
    X: np.ndarray, k: int, *, device: str = "auto", backend: str = "auto", should_stop: StopCheck | None = None
) -> np.ndarray:
    """Cosine k-NN graph of one layer.

    Args:
        X: activations [n, d] (any float dtype), rows are prompts.
        k: neighbours per prompt, 1 <= k <= n - 1.
        device: "auto" | "cpu" | "cuda"; backend: "auto" (= "torch") | "torch" | "faiss".
        should_stop: asked before every row block of the torch self-join; True stops the
            work with AnalysisCancelled (the faiss backend is one call and is not interrupted).

    Returns:
        int64 [n, k]: row i lists the k prompts j != i most cosine-similar to i, most similar
        first, ties by smaller index.
    """
    if backend not in _BACKENDS:
        raise AnalysisError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    x = V.activations(X, "X", min_rows=2)
    n = x.shape[0]
    k_ = V.check_int(k, "k", minimum=1, maximum=n - 1)
    dev = resolve_device(device)
    xn = normalized_rows(x)
    c = min(n - 1, k_ + _PAD)
    if backend == "faiss":
        vals, idx = _faiss_candidates(xn, c, dev)
    else:
        vals, idx = _torch_candidates(xn, c, dev, should_stop)
    return _finish(xn, vals, idx, k_, dev)


def knn_graph_recall(
    X: np.ndarray, graph: np.ndarray, *, sample: int = 256, seed: int = 0, device: str = "auto"
) -> float:
    """Recall of an (approximate) cosine k-NN graph against exact search, on sampled rows.

    Args:
        X: activations [n, d] the graph was built from (rows in the graph's order).
        graph: int64 [n, k] neighbour indices into X (-1 = missing, counted as a miss).
        sample: rows checked (all rows when n <= sample); seed: their random choice.

    Returns:
        mean over the sampled rows of |graph row & exact k-NN row| / k, in [0, 1]. The exact
        rows are the k largest cosine similarities, self excluded (cost: sample x n x d).
    """
    x = V.activations(X, "X", min_rows=2)
    g = np.asarray(graph)
    n = x.shape[0]
    if g.ndim != 2 or g.shape[0] != n or not 1 <= g.shape[1] <= n - 1:
        raise AnalysisError(f"graph must be [n, k] with n = {n} rows and 1 <= k <= n - 1, got shape {g.shape}")
    k: int = g.shape[1]
    s_ = V.check_int(sample, "sample", minimum=1)
    rows = np.arange(n) if n <= s_ else np.sort(np.random.default_rng(seed).choice(n, s_, replace=False))
    dev = resolve_device(device)
    xn = from_numpy(normalized_rows(x)).to(dev)
    hits = 0
    for s0 in range(0, len(rows), 256):
        r = rows[s0 : s0 + 256]
        sims = xn[torch.as_tensor(r, device=dev)] @ xn.T
        sims[torch.arange(len(r), device=dev), torch.as_tensor(r, device=dev)] = -torch.inf
        exact = torch.topk(sims, k, dim=1).indices.cpu().numpy()
        for a, b in zip(exact, g[r]):
            hits += len(np.intersect1d(a, b[b >= 0]))
    return hits / (len(rows) * k)


def _torch_candidates(
    xn: np.ndarray,
    c: int,
    dev: torch.device,
    should_stop: StopCheck | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-c (similarity, index) per row, self excluded, by a symmetric blocked self-join."""
    n = xn.shape[0]
    x = from_numpy(xn).to(dev)
    b = max(c + 1, min(n, int((_BLOCK_BYTES // 4) ** 0.5)))
    best_v = torch.full((n, c), -torch.inf, device=dev)
    best_i = torch.full((n, c), -1, dtype=torch.int64, device=dev)

    def merge(r0: int, r1: int, s: torch.Tensor, col0: int) -> None:
        kk = min(c, s.shape[1])
        v, i = torch.topk(s, kk, dim=1, sorted=False)
        v = torch.cat([best_v[r0:r1], v], dim=1)
        i = torch.cat([best_i[r0:r1], i + col0], dim=1)
        v2, pos = torch.topk(v, c, dim=1, sorted=False)
        best_v[r0:r1] = v2
        best_i[r0:r1] = torch.gather(i, 1, pos)

    for i0 in range(0, n, b):
        check_stop(should_stop, i0, n, "rows of the k-NN self-join")
        i1 = min(n, i0 + b)
        xi = x[i0:i1]
        for j0 in range(i0, n, b):
            j1 = min(n, j0 + b)
            s = xi @ x[j0:j1].T
            if j0 == i0:
                s.fill_diagonal_(-torch.inf)
            merge(i0, i1, s, j0)
            if j0 != i0:
                merge(j0, j1, s.T.contiguous(), i0)
    return best_v.cpu().numpy(), best_i.cpu().numpy()


def _faiss_candidates(xn: np.ndarray, c: int, dev: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Top-c (similarity, index) per row, self excluded, from a faiss IndexFlatIP."""
    import faiss

    n, d = xn.shape
    index: faiss.Index = faiss.IndexFlatIP(d)
    if dev.type == "cuda" and faiss.get_num_gpus() > 0:  # pragma: no cover - needs a GPU
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(xn)
    vals, idx = index.search(xn, c + 1)
    vals = vals.astype(np.float32, copy=False)
    drop = (idx == np.arange(n)[:, None]) | (idx < 0)
    vals = np.where(drop, -np.inf, vals).astype(np.float32)
    # keep the c best non-self candidates of the c + 1 returned
    order = np.argsort(-vals, axis=1, kind="stable")[:, :c]
    return np.take_along_axis(vals, order, 1), np.take_along_axis(idx, order, 1)


def _finish(xn: np.ndarray, vals: np.ndarray, idx: np.ndarray, k: int, dev: torch.device) -> np.ndarray:
    """Sort candidates by (-similarity, index); redo rows whose tie at rank k may be cut."""
    n, c = idx.shape
    order = np.lexsort((idx, -vals), axis=-1)
    vals = np.take_along_axis(vals, order, 1)
    idx = np.take_along_axis(idx, order, 1)
    redo = np.flatnonzero(vals[:, c - 1] >= vals[:, k - 1]) if c > k else np.empty(0, int)
    if c == n - 1:  # every other prompt is a candidate: nothing can be cut
        redo = np.empty(0, int)
    graph = np.ascontiguousarray(idx[:, :k], dtype=np.int64)
    if redo.size:
        x = from_numpy(xn).to(dev)
        for s0 in range(0, redo.size, 256):
            rows = redo[s0 : s0 + 256]
            sims = (x[torch.as_tensor(rows, device=dev)] @ x.T).cpu().numpy()
            sims[np.arange(rows.size), rows] = -np.inf
            cols = np.broadcast_to(np.arange(n), sims.shape)
            o = np.lexsort((cols, -sims), axis=-1)[:, :k]
            graph[rows] = o
    return graph


def _check_graph(g: object, name: str) -> np.ndarray:
    a = np.asarray(g)
    if a.dtype.kind not in "iu" or a.ndim != 2:
        raise AnalysisError(f"{name} must be an integer array [n, k], got dtype {a.dtype} and shape {tuple(a.shape)}")
    n, k = a.shape
    if n < 2 or not 1 <= k <= n - 1:
        raise AnalysisError(
            f"{name} has shape {tuple(a.shape)}; a k-NN graph needs n >= 2 rows and 1 <= k <= n - 1 columns"
        )
    if a.min() < 0 or a.max() >= n:
        raise AnalysisError(f"{name} holds neighbour index {a.min() if a.min() < 0 else a.max()} outside [0, {n - 1}]")
    srt = np.sort(a, axis=1)
    if k > 1 and (srt[:, 1:] == srt[:, :-1]).any():
        row = int(np.flatnonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1))[0])
        raise AnalysisError(f"{name} row {row} lists a neighbour twice; rows must hold k distinct prompts")
    return a.astype(np.int64, copy=False)


def _keys(g: np.ndarray) -> np.ndarray:
    """Sorted int64 keys row * n + neighbour of a graph [n, k]."""
    n = g.shape[0]
    return np.sort((np.arange(n, dtype=np.int64)[:, None] * n + g).ravel())


def _shared(keys_a: np.ndarray, keys_b: np.ndarray) -> int:
    pos = np.searchsorted(keys_b, keys_a)
    pos[pos == keys_b.size] = keys_b.size - 1
    return int(np.count_nonzero(keys_b[pos] == keys_a))


def mutual_knn(graph_a: np.ndarray, graph_b: np.ndarray) -> float:
    """Mutual k-NN of two graphs [n, k] over the same prompts: mean shared neighbours / k.

    Returns M_k in [0, 1]; its mean under random graphs is k / (n - 1) (:func:`null_mean`).
    """
    a = _check_graph(graph_a, "graph_a")
    b = _check_graph(graph_b, "graph_b")
    if a.shape != b.shape:
        raise AnalysisError(
            f"graph shapes differ: graph_a is {a.shape}, graph_b is "
            f"{b.shape}; both need the same prompts (n) and the same k"
        )
    n, k = a.shape
    return float(_shared(_keys(a), _keys(b)) / (k * n))


def affinity_matrix(graphs_a: Sequence[np.ndarray], graphs_b: Sequence[np.ndarray]) -> np.ndarray:
    """Mutual k-NN of every graph in ``graphs_a`` with every graph in ``graphs_b``.

    Takes one k-NN graph per layer (from :func:`knn_graph`; never recomputed per pair), all
    [n, k] over the same prompts. Returns float64 [len(graphs_a), len(graphs_b)]. Each graph
    is turned into sorted (row, neighbour) keys once; a pair then costs one binary search of
    n k keys.
    """
    ga = check_graphs(graphs_a, "graphs_a")
    gb = check_graphs(graphs_b, "graphs_b")
    if ga[0].shape != gb[0].shape:
        raise AnalysisError(
            f"graph shapes differ: graphs_a are {ga[0].shape}, graphs_b are "
            f"{gb[0].shape}; all need the same prompts (n) and the same k"
        )
    n, k = ga[0].shape
    ka = [_keys(g) for g in ga]
    kb = [_keys(g) for g in gb]
    out = np.empty((len(ka), len(kb)))
    for i, x in enumerate(ka):
        for j, y in enumerate(kb):
            out[i, j] = _shared(x, y) / (k * n)
    return out


def check_graphs(graphs: object, name: str) -> list[np.ndarray]:
    """Validate a non-empty sequence of k-NN graphs (int [n, k] each, k distinct neighbours in
    0..n-1 per row, all the same shape); returns them as int64 arrays. AnalysisError naming
    the first bad graph otherwise."""
    if isinstance(graphs, np.ndarray) and graphs.ndim == 2:
        raise AnalysisError(f"{name} must be a sequence of [n, k] graphs, got one 2-D array; wrap it in a list")
    if not isinstance(graphs, (Sequence, np.ndarray)) or len(graphs) == 0:
        raise AnalysisError(f"{name} must be a non-empty sequence of [n, k] graphs")
    out = [_check_graph(g, f"{name}[{i}]") for i, g in enumerate(graphs)]
    for i, g in enumerate(out):
        if g.shape != out[0].shape:
            raise AnalysisError(
                f"{name}[{i}] has shape {g.shape} but {name}[0] has {out[0].shape}; all graphs need the same n and k"
            )
    return out
