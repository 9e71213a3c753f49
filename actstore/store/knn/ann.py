"""Approximate k-NN over one large activation table: IVF-PQ (4-bit fast scan) candidates,
exact re-ranking from a float16 copy of the stored vectors.

Why this index (measured with ``bench/knn.py``-style clustered data, n = 100,000, d = 1,024,
float16 storage, cosine, 200 held-out queries, this 2-core machine, single-query latency):

=====================================  =========  =========  ============  =========
index                                  build (s)  recall@10  p50 (ms)      memory*
=====================================  =========  =========  ============  =========
FAISS IVF1264-SQfp16, nprobe 16        20         0.998      0.22          1.03x
FAISS HNSW32-SQfp16, efSearch 64       24         0.993      0.34          1.13x
FAISS IVF1264-PQ128x4fs + re-rank 200  11         0.995      0.60          1.07x
  (nprobe 32)
LanceDB IVF_PQ + refine (see bench)    slower build, ms-scale Python-side latency per query
FAISS flat (exact, float32)            0.4        1.0        ~30 (single)  2.0x
=====================================  =========  =========  ============  =========

*bytes held / bytes of the float16 vectors (n d 2).

All FAISS variants meet the targets (recall >= 0.98, p50 <= 5 ms, <= 1.2x). IVF-PQ fast scan
plus re-ranking was chosen because it is the only one whose returned *scores* are exact for
every metric: the PQ codes (64 bytes a row) only pick candidates, and the answer is
re-scored in float32 against a copy of the stored values (float16 when the table stores
float16, so the copy is bit-identical to the table; float32 otherwise), with the exact
norms. An SQfp16 index over unit vectors (the cosine case) would return cosines of the
float16-rounded unit vectors instead. It also builds fastest (k-means on a sample is most of
the cost), IVF lists take appended rows without retraining (HNSW inserts cost as much as a
build), FAISS IVF filters by id cheaply (dataset / labelled restrictions), and IVF training is
the part that moves to a GPU (HNSW has no FAISS GPU build). LanceDB's own IVF indices were
measured through its Python search API on the same data (``bench/knn.py``): every query pays
a plan/execute round trip of milliseconds, well above FAISS's sub-millisecond in-process
search, and an index over a float16 vector column still needs the table scan for refinement.

Parameters from n and d (:meth:`AnnParams.choose`): nlist = 4 sqrt(n) (at most n / 39, the
FAISS minimum of training points per centroid), nprobe = max(16, nlist / 40), PQ with d / 8
sub-quantizers of 4 bits (0.5 bit per dimension; the largest divisor of d not above d / 8
when 8 does not divide d), k-means on max(10,000, 40 nlist) sampled rows, 10 iterations;
re-ranking max(256, 16 (k + 1)) candidates. With a restriction to a fraction f of the rows,
nprobe grows to nprobe / f (the allowed rows in the probed lists stay as many); when at most
the re-ranking budget of rows is allowed the answer is exact over them.

These are the starting point only: every index is then tuned on its own rows
(:mod:`.tuning`): nprobe and the re-ranking budget (and, where that is what it takes, twice
the PQ sub-quantizers) are raised until recall@10 measured on held-out stored rows reaches
``ACTSTORE_ANN_RECALL``, or the table is searched exactly. On near ties (isotropic noise
around each centre, n = 100,000, d = 256) these defaults reach recall@10 ~0.74 only.

Appends (rows with new prompt ids, every existing row unchanged, checked against the copy)
are added to the trained index; replaced rows, or a table grown past twice the rows the index
was trained on (nlist would no longer fit n), rebuild it.

GPU: when CUDA is present the coarse k-means runs there: FAISS GPU k-means when FAISS has GPUs
and the card is older than Hopper (the faiss-gpu wheels target compute capability 7.0-8.9),
torch k-means (matmul + argmax) otherwise. Searching stays on the CPU, where one query takes
well under a millisecond. (Written against those APIs; not run on a GPU here.)
"""

from __future__ import annotations

import io
import json
import logging
import math
from dataclasses import asdict, dataclass
from typing import cast

import faiss
import numpy as np

log = logging.getLogger(__name__)

KIND = "ivfpq4fs+rerank"
K = 10  # the k the recall promise is made at (see :mod:`.tuning`)


@dataclass(frozen=True)
class Tuning:
    """What :func:`actstore.store.knn.tuning.tune` measured and chose for one index (persisted as JSON beside it).

    ``recall``: recall@``k`` on ``held_out`` stored rows not used for tuning (1.0 when
    ``exact``); ``nprobe`` / ``candidates``: the search parameters chosen (candidates re-ranked
    for k = 10; larger k scale it); ``m``: PQ sub-quantizers; ``latency_ms``: single-query p50
    of the chosen setting at build time (ms); ``rows``: rows of the table when measured.
    """

    target: float
    latency_budget_ms: float
    recall: float
    exact: bool
    nprobe: int
    candidates: int
    m: int
    latency_ms: float
    rows: int
    k: int = K
    held_out: int = 0
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Tuning:
        raw = json.loads(text)
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})

    def fits(self, target: float, latency_ms: float, rows: int) -> bool:
        """Whether this tuning still answers for ``target`` / ``latency_ms`` at ``rows`` rows
        (re-tuned when the table has grown by a tenth since it was measured)."""
        return (
            math.isclose(self.target, target)
            and math.isclose(self.latency_budget_ms, latency_ms)
            and rows <= self.rows * 1.1
        )


@dataclass(frozen=True)
class AnnParams:
    """Index parameters; :meth:`choose` derives them from n (rows) and d (dimension)."""

    nlist: int  # IVF lists (coarse centroids)
    nprobe: int  # lists probed per query
    m: int  # PQ sub-quantizers (4 bits each)
    train_size: int  # rows sampled for k-means
    rerank_min: int = 256  # candidates re-ranked exactly, at least
    rerank_per_k: int = 16  # ... and at least this many per requested neighbour

    @classmethod
    def choose(cls, n: int, d: int) -> AnnParams:
        """Parameters for n rows of dimension d (see the module docstring)."""
        nlist = max(1, min(int(round(4 * math.sqrt(n))), n // 39))
        nprobe = min(nlist, max(16, math.ceil(nlist / 40)))
        m = max(x for x in range(1, max(1, d // 8) + 1) if d % x == 0)
        train = min(n, max(10_000, 40 * nlist))
        return cls(nlist=nlist, nprobe=nprobe, m=m, train_size=train)

    def candidates(self, k: int) -> int:
        """Candidates re-ranked for a k-neighbour answer."""
        return max(self.rerank_min, self.rerank_per_k * (k + 1))


def _normalized(X: np.ndarray) -> np.ndarray:
    """C-contiguous float32 unit rows (faiss.normalize_L2 needs exactly that)."""
    x = np.array(X, dtype=np.float32, order="C", copy=True)
    faiss.normalize_L2(x)
    return x


def _indexed(X: np.ndarray, metric: str) -> np.ndarray:
    """What the IVF-PQ sees: unit rows for cosine, the raw rows otherwise (float32, C order)."""
    return _normalized(X) if metric == "cosine" else np.ascontiguousarray(X, dtype=np.float32)


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - torch is installed with actstore
        return False


def _train_centroids_gpu(
    sample: np.ndarray, nlist: int, metric: str, niter: int = 10, seed: int = 0
) -> np.ndarray | None:  # pragma: no cover - needs a GPU
    """Coarse centroids [nlist, d] float32 trained on CUDA, or None without CUDA.

    FAISS GPU k-means where the faiss build has GPUs and the card is pre-Hopper; torch k-means
    (batched matmul + argmax, empty clusters re-seeded from random rows) otherwise.
    """
    if not _cuda_available():
        return None
    import torch

    spherical = metric == "cosine"
    major = torch.cuda.get_device_capability(0)[0]
    get = getattr(faiss, "get_num_gpus", None)
    if get is not None and get() > 0 and major < 9:
        km = faiss.Kmeans(sample.shape[1], nlist, niter=niter, gpu=True, spherical=spherical, seed=seed)
        km.train(sample)
        return np.ascontiguousarray(km.centroids, dtype=np.float32)
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.from_numpy(sample).cuda()
    C = x[torch.randperm(len(x), generator=g)[:nlist].cuda()].clone()
    sq = (x * x).sum(1)
    for _ in range(niter):
        assign = torch.empty(len(x), dtype=torch.int64, device=x.device)
        for s in range(0, len(x), 65536):
            xb = x[s : s + 65536]
            if metric == "l2":
                dist = sq[s : s + 65536, None] - 2 * xb @ C.T + (C * C).sum(1)[None]
                assign[s : s + 65536] = dist.argmin(1)
            else:
                assign[s : s + 65536] = (xb @ C.T).argmax(1)
        sums = torch.zeros_like(C).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=nlist).to(x.dtype)
        empty = counts == 0
        C = sums / counts.clamp(min=1)[:, None]
        if empty.any():
            C[empty] = x[torch.randint(len(x), (int(empty.sum()),), generator=g).cuda()]
        if spherical:
            C = torch.nn.functional.normalize(C, dim=1)
    return C.cpu().numpy().astype(np.float32)


class AnnIndex:
    """Approximate index of one table for one metric, at one table version.

    Positions are insertion order: row ``p`` of the copy and FAISS id ``p`` are prompt
    ``ids_by_pos[p]``. ``ids`` is the sorted id array (the interface of the exact index).
    """

    kind = KIND

    def __init__(
        self,
        version: str,
        metric: str,
        ids_by_pos: np.ndarray,
        index: faiss.IndexIVF,
        vectors: np.ndarray,
        norms: np.ndarray,
        params: AnnParams,
        n_trained: int,
    ):
        self.version = version
        self.metric = metric
        self.ids_by_pos = ids_by_pos
        self.index = index
        self.vectors = vectors  # [n, d] float16 (or float32) copy of the stored rows
        self.norms = norms  # float32 [n], ||x|| in float64 then rounded
        self.params = params
        self.n_trained = n_trained
        #: recall measured at build time and the parameters chosen (:mod:`.tuning`); None untuned
        self.tuning: Tuning | None = None
        self._order = np.argsort(ids_by_pos, kind="stable")
        self.ids = ids_by_pos[self._order]

    # ------------------------------------------------------------------ build
    @classmethod
    def build(
        cls,
        version: str,
        metric: str,
        ids: np.ndarray,
        X: np.ndarray,
        params: AnnParams | None = None,
        seed: int = 0,
        device: str = "auto",
    ) -> AnnIndex:
        """Train and fill an index over ids int64 [n] and X [n, d] (any float dtype).
        ``device``: "auto" trains the coarse k-means on CUDA when present, "cpu" never."""
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
        n, d = X.shape
        params = params or AnnParams.choose(n, d)
        fmetric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        quantizer = faiss.IndexFlatL2(d) if metric == "l2" else faiss.IndexFlatIP(d)
        index = faiss.IndexIVFPQFastScan(quantizer, d, params.nlist, params.m, 4, fmetric)
        rng = np.random.default_rng(seed)
        take = np.sort(rng.choice(n, params.train_size, replace=False)) if params.train_size < n else slice(None)
        sample = _indexed(X[take], metric)
        centroids = None if device == "cpu" else _train_centroids_gpu(sample, params.nlist, metric, seed=seed)
        if centroids is None:
            km = faiss.Kmeans(d, params.nlist, niter=10, seed=seed, spherical=metric != "l2")
            km.train(sample)
            centroids = km.centroids
        quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))  # FAISS then skips its k-means
        # The PQ step trains d/8 tiny k-means (16 centroids in 8-D); OpenMP threads only spin on
        # them, badly so on a loaded machine (measured 0.9-2.5 s with 1 thread vs 5-28 s with 2
        # at n = 5,000, d = 1,024), so it runs on one thread.
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            index.train(sample)
        finally:
            faiss.omp_set_num_threads(threads)
        del sample
        index.nprobe = params.nprobe
        copy_dtype = _copy_dtype(X)
        vectors: np.ndarray = np.empty((n, d), copy_dtype)
        norms = np.empty(n, np.float32)
        out = cls(version, metric, np.asarray(ids, np.int64).copy(), index, vectors, norms, params, n)
        _fill(out, 0, X)
        return out

    def extended(self, version: str, ids: np.ndarray, X: np.ndarray) -> AnnIndex:
        """A new index at ``version``: this one plus rows ids int64 [m] / X [m, d] (new ids)."""
        n0, d = self.vectors.shape
        m = len(ids)
        vectors = np.empty((n0 + m, d), self.vectors.dtype)
        vectors[:n0] = self.vectors
        norms = np.concatenate([self.norms, np.empty(m, np.float32)])
        index = cast(faiss.IndexIVF, faiss.clone_index(self.index))  # faiss returns it downcast
        out = AnnIndex(
            version,
            self.metric,
            np.concatenate([self.ids_by_pos, np.asarray(ids, np.int64)]),
            index,
            vectors,
            norms,
            self.params,
            self.n_trained,
        )
        out.tuning = self.tuning
        _fill(out, n0, X)
        return out

    def unchanged(self, ids: np.ndarray, X: np.ndarray) -> bool:
        """Whether rows (ids int64 [m] ascending, X [m, d]) equal what this index holds for them."""
        pos = self._order[np.searchsorted(self.ids, ids)]
        for s in range(0, len(ids), 16384):
            held = self.vectors[pos[s : s + 16384]].astype(np.float32)
            if not np.array_equal(held, np.asarray(X[s : s + 16384], dtype=np.float32)):
                return False
        return True

    # ----------------------------------------------------------------- access
    @property
    def ntotal(self) -> int:
        return len(self.ids_by_pos)

    def nbytes(self) -> int:
        """Bytes held: FAISS index (codes, ids, centroids) + the vector copy + norms + id maps."""
        return (
            int(faiss.serialize_index(self.index).nbytes)
            + self.vectors.nbytes
            + self.norms.nbytes
            + self.ids_by_pos.nbytes
            + self.ids.nbytes
            + self._order.nbytes
        )

    def positions(self, sorted_positions: np.ndarray) -> np.ndarray:
        """Insertion positions of the rows at ``sorted_positions`` of ``ids``."""
        return self._order[np.asarray(sorted_positions, dtype=np.int64)]

    def vectors_at(self, sorted_positions: np.ndarray) -> np.ndarray:
        """Stored vectors float32 [m, d] (raw, not normalised) at positions of ``ids``."""
        out: np.ndarray = self.vectors[self.positions(sorted_positions)].astype(np.float32)
        return out

    # ----------------------------------------------------------------- search
    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude_self_ids: np.ndarray | None = None,
        allowed_ids: np.ndarray | None = None,
        nprobe: int | None = None,
        candidates: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """k nearest stored prompts of each query row (same contract as ``knn.search``).

        queries: [m, d] floats. exclude_self_ids: int64 [m]. allowed_ids: sorted int64 ids
        the answer is restricted to. Returns (ids int64 [m, k], scores float32 [m, k]) padded
        with -1 / NaN; scores are exact for the stored values (float32 arithmetic).
        """
        q = np.array(queries, dtype=np.float32, order="C", copy=True)
        if self.metric == "cosine":
            faiss.normalize_L2(q)
        mq = len(q)
        kc = candidates or self.params.candidates(k)
        allowed_pos = None
        frac = 1.0
        if allowed_ids is not None:
            sp = np.clip(np.searchsorted(self.ids, allowed_ids), 0, len(self.ids) - 1)
            allowed_pos = np.sort(self._order[sp[self.ids[sp] == allowed_ids]])
            frac = len(allowed_pos) / max(1, self.ntotal)
        if allowed_pos is not None and len(allowed_pos) <= kc:
            cand = np.broadcast_to(allowed_pos, (mq, len(allowed_pos)))  # every allowed row: exact
        else:
            kc = min(kc, self.ntotal if allowed_pos is None else len(allowed_pos))
            probe = nprobe or self.params.nprobe
            probe = min(self.params.nlist, math.ceil(probe / max(frac, 1e-9)))
            sel = None if allowed_pos is None else faiss.IDSelectorBatch(allowed_pos.astype(np.int64))
            # faiss's SWIG signatures omit the keyword arguments its Python wrapper accepts
            if sel is not None:
                params = faiss.SearchParametersIVF(nprobe=probe, sel=sel)  # type: ignore[call-arg]
            else:
                params = faiss.SearchParametersIVF(nprobe=probe)  # type: ignore[call-arg]
            _, cand = self.index.search(q, kc, params=params)
        return self._rerank(q, np.asarray(cand), k, exclude_self_ids)

    def _rerank(
        self, q: np.ndarray, cand: np.ndarray, k: int, exclude_self_ids: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        mq, c = cand.shape
        ids_out = np.full((mq, k), -1, np.int64)
        scores_out = np.full((mq, k), np.nan, np.float32)
        excl_pos = None
        if exclude_self_ids is not None:
            ex = np.asarray(exclude_self_ids, dtype=np.int64)
            sp = np.clip(np.searchsorted(self.ids, ex), 0, len(self.ids) - 1)
            excl_pos = np.where(self.ids[sp] == ex, self._order[sp], -2)
        rows = max(1, (1 << 24) // max(1, c * self.vectors.shape[1]))  # ~64 MB of float32 per chunk
        for s in range(0, mq, rows):
            cb = cand[s : s + rows]
            valid = cb >= 0
            if excl_pos is not None:
                valid &= cb != excl_pos[s : s + rows, None]
            safe = np.where(valid, cb, 0)
            V = self.vectors[safe.ravel()].astype(np.float32).reshape(len(cb), c, -1)
            ip = np.einsum("mcd,md->mc", V, q[s : s + rows], optimize=False)
            nrm = self.norms[safe]
            if self.metric == "cosine":
                sc = ip / np.maximum(nrm, np.float32(1e-30))
                key = -sc
            elif self.metric == "dot":
                sc = ip
                key = -sc
            else:
                qq = np.einsum("md,md->m", q[s : s + rows], q[s : s + rows])
                sc = np.sqrt(np.maximum(qq[:, None] - 2 * ip + nrm * nrm, 0))
                key = sc
            key = np.where(valid, key, np.inf)
            # best first; ties by prompt id (deterministic)
            pid = self.ids_by_pos[safe]
            order = np.lexsort((pid, key), axis=-1)[:, :k]
            got = np.take_along_axis(valid, order, 1)
            kk = order.shape[1]
            ids_out[s : s + rows, :kk] = np.where(got, np.take_along_axis(pid, order, 1), -1)
            scores_out[s : s + rows, :kk] = np.where(got, np.take_along_axis(sc, order, 1), np.nan)
        return ids_out, scores_out

    # ------------------------------------------------------------ persistence
    def to_bytes(self) -> tuple[memoryview, memoryview]:
        """(serialised FAISS index, ``.npz`` of the id map, vector copy, norms and parameters):
        what :class:`actstore.store.knn.exact.KnnIndexes` persists (with their digests)."""
        buf = io.BytesIO()
        np.savez(
            buf,
            ids_by_pos=self.ids_by_pos,
            vectors=self.vectors,
            norms=self.norms,
            params=np.array(list(asdict(self.params).values()), np.int64),
            meta=np.array([self.n_trained], np.int64),
            version=np.array(str(self.version)),
            metric=np.array(self.metric),
            tuning=np.array(self.tuning.to_json() if self.tuning is not None else ""),
        )
        return faiss.serialize_index(self.index).data, buf.getbuffer()

    @classmethod
    def from_bytes(cls, index_bytes: bytes, arrays: bytes) -> AnnIndex:
        """Inverse of :meth:`to_bytes`."""
        # an IVF-PQ index (faiss returns it downcast to its class)
        index = cast(faiss.IndexIVF, faiss.deserialize_index(np.frombuffer(index_bytes, dtype=np.uint8)))
        with np.load(io.BytesIO(arrays), allow_pickle=False) as z:
            params = AnnParams(*[int(v) for v in z["params"]])
            (n_trained,) = (int(v) for v in z["meta"])
            out = cls(
                str(z["version"]), str(z["metric"]), z["ids_by_pos"], index, z["vectors"], z["norms"], params, n_trained
            )
            text = str(z["tuning"]) if "tuning" in z.files else ""
            out.tuning = Tuning.from_json(text) if text else None  # older files: tuned after loading
        if index.ntotal != out.ntotal or len(out.vectors) != out.ntotal or len(out.norms) != out.ntotal:
            raise ValueError(f"approximate index parts disagree: {index.ntotal} codes, {out.ntotal} ids")
        index.nprobe = params.nprobe
        return out


def _fill(entry: AnnIndex, start: int, X: np.ndarray, chunk: int = 16384) -> None:
    """Rows ``start..start + len(X)`` of a new index: the vector copy, the norms, the IVF-PQ codes."""
    for s in range(0, len(X), chunk):
        x = np.asarray(X[s : s + chunk])
        entry.vectors[start + s : start + s + len(x)] = x
        x64 = x.astype(np.float64)
        entry.norms[start + s : start + s + len(x)] = np.sqrt(np.einsum("ij,ij->i", x64, x64))
        entry.index.add(_indexed(x, entry.metric))


def _copy_dtype(X: np.ndarray) -> type:
    """float16 when every value survives a float16 round trip (float16 storage), else float32."""
    if X.dtype == np.float16:
        return np.float16
    for s in range(0, len(X), 16384):
        x = X[s : s + 16384]
        if not np.array_equal(x.astype(np.float16).astype(x.dtype), x):
            return np.float32
    return np.float16


def synthetic_clustered(
    n: int, d: int, *, seed: int = 0, n_clusters: int = 100, rank: int = 64, spread: float = 1.0, noise: float = 0.5
) -> np.ndarray:
    """Clustered test vectors float16 [n, d] (for tests and ``bench/knn.py``).

    Each row is a cluster centre (N(0, 1) per dimension, ``n_clusters`` of them) plus a
    low-rank part shared by all clusters (``rank`` factors, variance ``spread`` per
    dimension) plus isotropic noise (standard deviation ``noise``): neighbourhoods are
    clusters with structure inside, overlapping enough that a few IVF lists do not hold a
    query's neighbours.
    """
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, d), dtype=np.float32)
    W = rng.standard_normal((rank, d), dtype=np.float32) * np.float32(np.sqrt(spread / rank))
    out = np.empty((n, d), np.float16)
    labels = rng.integers(0, n_clusters, n)
    for s in range(0, n, 8192):
        e = min(n, s + 8192)
        z = rng.standard_normal((e - s, rank), dtype=np.float32)
        x = centers[labels[s:e]] + z @ W + np.float32(noise) * rng.standard_normal((e - s, d), dtype=np.float32)
        out[s:e] = x
    return out


def synthetic_near_ties(
    n: int, d: int, *, seed: int = 0, n_clusters: int | None = None, noise: float = 1.0
) -> np.ndarray:
    """Near-tie test vectors float16 [n, d] (for tests and ``bench/knn.py``): isotropic noise
    (standard deviation ``noise``) around ``n_clusters`` centres (N(0, 1) per dimension;
    default n / 1,000), as many members per cluster as rows allow.

    Within a cluster every pair is at nearly the same distance (the relative spread of the
    squared distances is ~sqrt(8 / d)), so the true 10 nearest are separated by small margins
    and a 4-bit PQ ranks them badly: recall@10 ~0.74 with the untuned defaults at n = 100,000,
    d = 256 (what last-token activations of similar prompts look like).
    """
    rng = np.random.default_rng(seed)
    n_clusters = n_clusters or max(1, n // 1000)
    centers = rng.standard_normal((n_clusters, d), dtype=np.float32)
    labels = rng.integers(0, n_clusters, n)
    out = np.empty((n, d), np.float16)
    for s in range(0, n, 8192):
        e = min(n, s + 8192)
        out[s:e] = centers[labels[s:e]] + np.float32(noise) * rng.standard_normal((e - s, d), dtype=np.float32)
    return out
