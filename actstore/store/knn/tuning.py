"""Recall promise of an approximate index: measured at build time, search parameters raised
until it holds, exact search when it cannot hold within a latency budget.

Fixed nprobe / re-ranking budgets hold on well-separated clusters (recall@10 ~0.998) but not
on near-ties (isotropic noise around each centre, the true 10 nearest separated by small
margins: recall@10 ~0.74 at n = 100,000, d = 256 with the defaults of
:meth:`AnnParams.choose`), so every approximate index is tuned on its own rows (:func:`tune`):

1. Two disjoint samples of stored rows are drawn: a *tuning* sample (``TUNE_QUERIES``) and a
   *held-out* one (``HELD_OUT_QUERIES``). Their exact k = 10 nearest rows (each row left out of
   its own answer, as a promptId look-up does) come from brute force over the index's own copy
   of the vectors, in the same float32 arithmetic as the re-ranking.
2. On the tuning sample, for nprobe = p0, 2 p0, 4 p0, ... (up to nlist) the rank of every
   true neighbour among the IVF-PQ candidates is found in one search of ``MAX_CANDIDATES``
   candidates; since re-ranking is exact, recall at (nprobe, c) is the share of true
   neighbours ranked below c. The smallest c of the ladder c0, 2 c0, ... that reaches
   ``target + (1 - target) / 2`` (a margin for queries outside the sample) is taken, and the
   single-query latency of that setting is timed. The first feasible nprobe and the next one
   are compared; the faster wins.
3. When no setting meets the target within ``latency_ms`` (single-query p50), the product
   quantizer gets twice the sub-quantizers (1 bit per dimension instead of 0.5; a rebuild of
   the codes) and step 2 runs again; when that fails too, the table is searched exactly
   (``Tuning.exact``).
4. The recall of the chosen setting is measured on the held-out sample with the real search
   (``Tuning.recall``: what is reported). Below the target, the candidates double (at most
   twice) and the held-out recall is measured again; still below: exact search.

Recall counts ties: a returned row whose exact score equals the k-th best (float16 copies of
one prompt stored twice) is a hit. The measured values and parameters are persisted with the
index (``<stem>.tuning.json``) and reported by ``Model.indexes`` and ``actstore info``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import faiss
import numpy as np

from .ann import AnnIndex, AnnParams, K, Tuning

__all__ = [
    "HELD_OUT_QUERIES",
    "K",
    "MAX_CANDIDATES",
    "TUNE_QUERIES",
    "Tuning",
    "exact_neighbours",
    "recall_at_k",
    "tune",
]

log = logging.getLogger(__name__)

TUNE_QUERIES = 256
HELD_OUT_QUERIES = 256
MAX_CANDIDATES = 8192  # largest re-ranking budget tried
LATENCY_QUERIES = 24  # single queries timed per setting


def _queries(entry: AnnIndex, pos: np.ndarray) -> np.ndarray:
    """Stored rows at insertion positions ``pos`` as float32 queries (unit rows for cosine)."""
    q = entry.vectors[pos].astype(np.float32)
    if entry.metric == "cosine":
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), np.float32(1e-30))
    return np.ascontiguousarray(q)


def exact_neighbours(
    entry: AnnIndex, q: np.ndarray, k: int, self_pos: np.ndarray | None = None, chunk: int = 16384
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force k nearest rows of the index's copy for queries q float32 [m, d] (unit rows
    for cosine), each ``self_pos`` (insertion positions, int64 [m]) left out.

    Returns (positions int64 [m, k], scores float32 [m, k]) best first, scored like the
    re-ranking (cosine / dot larger is nearer, l2 distance smaller is nearer).
    """
    m = len(q)
    best_key = np.full((m, k), np.inf, np.float32)
    best_pos = np.full((m, k), -1, np.int64)
    qq = np.einsum("md,md->m", q, q)
    rows = np.arange(m)
    for s in range(0, entry.ntotal, chunk):
        V = entry.vectors[s : s + chunk].astype(np.float32)
        ip = q @ V.T
        nrm = entry.norms[s : s + chunk]
        if entry.metric == "cosine":
            key = -(ip / np.maximum(nrm, np.float32(1e-30)))
        elif entry.metric == "dot":
            key = -ip
        else:
            key = np.sqrt(np.maximum(qq[:, None] - 2 * ip + nrm * nrm, 0))
        if self_pos is not None:
            inside = (self_pos >= s) & (self_pos < s + len(V))
            key[rows[inside], self_pos[inside] - s] = np.inf
        kk = min(k, key.shape[1])
        part = np.argpartition(key, kk - 1, axis=1)[:, :kk]
        keys = np.concatenate([best_key, np.take_along_axis(key, part, 1)], axis=1)
        poss = np.concatenate([best_pos, part + s], axis=1)
        top = np.argsort(keys, axis=1, kind="stable")[:, :k]
        best_key, best_pos = np.take_along_axis(keys, top, 1), np.take_along_axis(poss, top, 1)
    scores = -best_key if entry.metric != "l2" else best_key
    return best_pos, scores.astype(np.float32)


def recall_at_k(got_scores: np.ndarray, true_scores: np.ndarray, metric: str) -> float:
    """Tie-aware recall@k: share of returned rows at least as near as the k-th true one.

    got_scores / true_scores: float32 [m, k] exact scores of the returned / true neighbours
    (NaN for missing). A float32 tolerance of 1e-5 relative absorbs summation order.
    """
    kth = true_scores[:, -1:]
    tol = 1e-5 * np.maximum(np.abs(kth), 1e-6)
    with np.errstate(invalid="ignore"):
        hit = got_scores <= kth + tol if metric == "l2" else got_scores >= kth - tol
    hit &= ~np.isnan(got_scores)
    return float(np.minimum(hit.sum(1), true_scores.shape[1]).mean() / true_scores.shape[1])


def _latency_ms(entry: AnnIndex, q: np.ndarray, nprobe: int, candidates: int, repeat: int = 3) -> float:
    """Single-query search time (ms) at this setting: the median over ``LATENCY_QUERIES``
    queries of each one's fastest of ``repeat`` runs (the fastest run is what the search
    costs; the rest is other load on the machine, which would otherwise decide the choice)."""
    qs = q[:LATENCY_QUERIES]
    entry.search(qs[:1], K, nprobe=nprobe, candidates=candidates)  # warm-up
    ts = []
    for i in range(len(qs)):
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            entry.search(qs[i : i + 1], K, nprobe=nprobe, candidates=candidates)
            best = min(best, time.perf_counter() - t0)
        ts.append(best)
    return float(np.median(ts) * 1e3)


def _ladder(start: int, stop: int) -> list[int]:
    out, v = [], max(1, start)
    while v < stop:
        out.append(v)
        v *= 2
    return out + [stop]


def _choose(
    entry: AnnIndex, q: np.ndarray, truth: np.ndarray, goal: float, latency_ms: float
) -> tuple[int, int, float] | None:
    """(nprobe, candidates, latency ms) reaching recall ``goal`` on the tuning queries within
    the latency budget, or None (see the module docstring, step 2)."""
    p = entry.params
    kmax = min(MAX_CANDIDATES, entry.ntotal)
    c_ladder = [c for c in _ladder(p.candidates(K), kmax) if c <= kmax]
    found: list[tuple[float, int, int]] = []
    for probe in _ladder(p.nprobe, p.nlist) if p.nprobe < p.nlist else [p.nlist]:
        # faiss's SWIG signature omits the keyword arguments its Python wrapper accepts
        _, cand = entry.index.search(q, kmax, params=faiss.SearchParametersIVF(nprobe=probe))  # type: ignore[call-arg]
        # rank of each true neighbour among the candidates (kmax when absent)
        rank = np.full(truth.shape, kmax, np.int64)
        for i in range(len(q)):
            hit = np.nonzero(cand[i][:, None] == truth[i][None, :])
            rank[i, hit[1]] = hit[0]
        # the query's own row takes a candidate slot and is then dropped: c candidates re-rank
        # c - 1 others, so a true neighbour at rank r needs c > r
        feasible = [c for c in c_ladder if (rank < c).mean() >= goal]
        if feasible:
            c = feasible[0]
            lat = _latency_ms(entry, q, probe, c)
            log.debug(
                "tuning %s: nprobe %d, candidates %d reach %.4f in %.2f ms",
                entry.version,
                probe,
                c,
                float((rank < c).mean()),
                lat,
            )
            found.append((lat, probe, c))
            if len(found) == 2 or lat > latency_ms:
                break
    ok = [f for f in found if f[0] <= latency_ms]
    if not ok:
        return None
    lat, probe, c = min(ok)
    return probe, c, lat


def _with(entry: AnnIndex, nprobe: int, candidates: int) -> AnnParams:
    per_k = max(1, candidates // (K + 1))  # so that candidates(K) == candidates
    return replace(entry.params, nprobe=nprobe, rerank_min=candidates, rerank_per_k=per_k)


def tune(entry: AnnIndex, target: float, latency_ms: float, *, seed: int = 0) -> AnnIndex:
    """Tune ``entry`` to recall@10 >= ``target`` within ``latency_ms`` per query (module
    docstring); returns it (or a rebuild with more PQ sub-quantizers) with ``params`` and
    ``tuning`` set. ``tuning.exact`` means the table is to be searched exactly."""
    t0 = time.perf_counter()
    n = entry.ntotal
    rng = np.random.default_rng(seed)
    n_tune = min(TUNE_QUERIES, max(1, n // 4))
    n_held = min(HELD_OUT_QUERIES, max(1, n // 4))
    pos = rng.choice(n, n_tune + n_held, replace=False).astype(np.int64)
    q = _queries(entry, pos)
    truth, true_scores = exact_neighbours(entry, q, K, pos)
    tq, tt = q[:n_tune], truth[:n_tune]
    hq, hp, hs = q[n_tune:], pos[n_tune:], true_scores[n_tune:]
    goal = target + (1.0 - target) / 2
    d = entry.vectors.shape[1]

    def exact(why: str) -> AnnIndex:
        entry.tuning = Tuning(
            target,
            latency_ms,
            1.0,
            True,
            entry.params.nprobe,
            entry.params.candidates(K),
            entry.params.m,
            0.0,
            n,
            K,
            len(hp),
            time.perf_counter() - t0,
        )
        log.warning(
            "approximate index %s cannot reach recall@%d %.3f within %.1f ms per query (%s); "
            "the table is searched exactly",
            entry.version,
            K,
            target,
            latency_ms,
            why,
        )
        return entry

    choice = _choose(entry, tq, tt, goal, latency_ms)
    if choice is None:
        m2 = max([x for x in range(1, 2 * entry.params.m + 1) if d % x == 0 and x <= d // 2] or [entry.params.m])
        if m2 > entry.params.m:  # finer codes: 1 bit per dimension
            log.info("approximate index %s: rebuilding with %d PQ sub-quantizers", entry.version, m2)
            rebuilt = AnnIndex.build(
                entry.version, entry.metric, entry.ids_by_pos, entry.vectors, replace(entry.params, m=m2)
            )
            rebuilt.n_trained = entry.n_trained
            entry = rebuilt
            choice = _choose(entry, tq, tt, goal, latency_ms)
    if choice is None:
        return exact(
            f"no setting within the budget, up to nprobe {entry.params.nlist}, {MAX_CANDIDATES} "
            f"candidates and {entry.params.m} PQ sub-quantizers"
        )
    probe, c, lat = choice
    recall = 0.0
    for _ in range(3):
        ids, scores = entry.search(hq, K, entry.ids_by_pos[hp], nprobe=probe, candidates=c)
        recall = recall_at_k(scores, hs, entry.metric)
        if recall >= target:
            break
        c = min(2 * c, entry.ntotal)
    if recall < target:
        return exact(f"held-out recall {recall:.4f}")
    if c != choice[1]:
        lat = _latency_ms(entry, tq, probe, c)
        if lat > latency_ms:
            return exact(f"{lat:.2f} ms per query")
    entry.params = _with(entry, probe, c)
    entry.index.nprobe = probe
    entry.tuning = Tuning(
        target, latency_ms, recall, False, probe, c, entry.params.m, lat, n, K, len(hp), time.perf_counter() - t0
    )
    log.info(
        "approximate index %s tuned: recall@%d %.4f on %d held-out rows with nprobe %d, %d candidates, "
        "%.2f ms per query",
        entry.version,
        K,
        recall,
        len(hp),
        probe,
        c,
        lat,
    )
    return entry
