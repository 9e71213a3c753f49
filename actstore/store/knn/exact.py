"""Exact k-NN over one activation table with FAISS, built lazily and kept per table version.

An index is a flat FAISS index over the table's vectors in ascending prompt_id order, so a
FAISS position maps to a prompt id through the sorted id array saved beside it. Indices are
persisted next to a local database (``<db>/_faiss``) and rebuilt when the table's version
changes; on GPU when ``faiss.get_num_gpus() > 0``.

Metrics (scores are what the metric says, in its own units):
- ``cosine``: inner product of L2-normalised vectors, in [-1, 1], larger is nearer.
- ``dot``: raw inner product, larger is nearer.
- ``l2``: Euclidean distance, smaller is nearer.

Above a size threshold (``Knn.ann_threshold`` rows, from ``Settings.ann_threshold``: env
``ACTSTORE_ANN_THRESHOLD``, default 50,000) a table gets an approximate index instead
(:class:`actstore.store.knn.ann.AnnIndex`: IVF-PQ candidates, exact re-ranking; see that
module for the choice and its measurements). It is persisted as ``<table>.<metric>.ann.v<version>``
and, when the rows of a new version are the old rows plus new prompt ids, extended rather
than rebuilt. ``search`` and ``vectors_at`` take either kind of entry. Exact search stays
the default below the threshold and can be forced (``approximate=False``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import faiss
import numpy as np

from .metrics import METRICS

from .ann import AnnIndex

__all__ = ["ExactIndex", "KnnIndexes", "build_flat", "search", "vectors_at"]

log = logging.getLogger(__name__)



@dataclass
class ExactIndex:
    """A flat FAISS index of one table at one version; ``ids[p]`` is the prompt at position p."""

    version: int
    ids: np.ndarray  # int64 [n], ascending
    index: faiss.Index


def _to_gpu(index: faiss.Index) -> faiss.Index:
    """The index on every GPU FAISS sees, or the CPU index when FAISS cannot use them.

    faiss-gpu-cu12 wheels target compute capability 7.0-8.9; on newer cards (Hopper) the
    copy or the first search can fail, and exact search then stays on the CPU.
    """
    try:
        gpu = faiss.index_cpu_to_all_gpus(index)
        gpu.search(np.zeros((1, index.d), dtype=np.float32), 1)
        return gpu
    except Exception as exc:  # noqa: BLE001 - any FAISS GPU failure means "use the CPU"
        log.warning("FAISS GPU unavailable for exact k-NN (%s); searching on the CPU", exc)
        return index


def _gpu_count() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get else 0


def build_flat(X: np.ndarray, metric: str) -> faiss.Index:
    """Flat FAISS index over X float32 [n, d] (C-contiguous; normalised in place for cosine)."""
    d = X.shape[1]
    if metric == "l2":
        index = faiss.IndexFlatL2(d)
    else:
        index = faiss.IndexFlatIP(d)
        if metric == "cosine":
            faiss.normalize_L2(X)  # in place; X is our own C-contiguous float32 copy
    index.add(X)
    return index


class KnnIndexes:
    """Per-table exact and approximate indices, cached in memory and persisted in
    ``persist_dir`` (None: memory only). Thread-safe; one build per (table, metric, version)."""

    def __init__(self, persist_dir: Path | None):
        self._dir = persist_dir
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], ExactIndex] = {}
        self._ann: dict[tuple[str, str], AnnIndex] = {}

    @property
    def persist_dir(self) -> Path | None:
        """Folder the indices are persisted in (``<db>/_faiss``), None for object storage."""
        return self._dir

    def ann_entries(self) -> dict[tuple[str, str], AnnIndex]:
        """The approximate indices held in memory, by (table, metric) (a copy of the map)."""
        with self._lock:
            return dict(self._ann)

    def get_ann(
        self,
        table: str,
        version: int,
        metric: str,
        load: Callable[[], tuple[np.ndarray, np.ndarray]],
    ) -> AnnIndex:
        """The approximate index of ``table`` at ``version``: cached, persisted, extended or built.

        ``load()`` returns (ids int64 [n] ascending, X [n, d]) of the current version. An index
        of an older version is extended when its rows are all still there unchanged and the
        table has at most doubled since training; otherwise the index is rebuilt.
        """
        key = (table, metric)
        with self._lock:
            prev = self._ann.get(key)
            if prev is not None and prev.version == version:
                return prev
            if prev is None or self._ann_stem(table, metric, version).with_suffix(".npz").exists():
                prev = self._load_ann(table, metric) or prev
            if prev is not None and prev.version == version:
                self._ann[key] = prev
                return prev
            t0 = time.perf_counter()
            ids, X = load()
            entry, how = None, "built"
            if prev is not None and len(ids) <= 2 * prev.n_trained:
                new = ~np.isin(ids, prev.ids, assume_unique=True)
                old_ids = ids[~new]
                if len(old_ids) == prev.ntotal and prev.unchanged(old_ids, X[~new]):
                    entry, how = prev.extended(version, ids[new], X[new]), f"extended by {int(new.sum())} rows"
            if entry is None:
                entry = AnnIndex.build(version, metric, ids, X)
            log.info("approximate index of %s (%s, n=%d) %s in %.1f s", table, metric, len(ids), how,
                     time.perf_counter() - t0)
            self._persist_ann(table, metric, entry)
            self._ann[key] = entry
            return entry

    def _ann_stem(self, table: str, metric: str, version: int) -> Path:
        return (self._dir or Path(".")) / f"{table}.{metric}.ann.v{version}"

    def _load_ann(self, table: str, metric: str) -> AnnIndex | None:
        """The newest persisted approximate index of this table and metric, any version."""
        if self._dir is None or not self._dir.exists():
            return None
        stems = sorted(self._dir.glob(f"{table}.{metric}.ann.v*.npz"),
                       key=lambda p: int(p.name.rsplit(".v", 1)[1].split(".")[0]), reverse=True)
        for path in stems:
            stem = path.with_suffix("")
            if not Path(f"{stem}.faiss").exists():
                continue
            try:
                return AnnIndex.load(stem)
            except Exception as exc:  # a torn file from a killed process: try older, then rebuild
                log.warning("ignoring unreadable approximate index %s: %s", stem, exc)
        return None

    def _persist_ann(self, table: str, metric: str, entry: AnnIndex) -> None:
        if self._dir is None:
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        stem = self._ann_stem(table, metric, entry.version)
        entry.save(stem)
        keep = {Path(f"{stem}.faiss"), Path(f"{stem}.npz")}
        for old in self._dir.glob(f"{table}.{metric}.ann.v*"):
            if old not in keep:
                old.unlink(missing_ok=True)

    def get(
        self,
        table: str,
        version: int,
        metric: str,
        load: Callable[[], tuple[np.ndarray, np.ndarray]],
    ) -> ExactIndex:
        """The index of ``table`` at ``version``; ``load()`` returns (ids, X float32) if a build is needed."""
        key = (table, metric)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached.version == version:
                return cached
            entry = self._load_persisted(table, metric, version)
            if entry is None:
                ids, X = load()
                X = np.ascontiguousarray(X, dtype=np.float32)  # load() returns a fresh array
                entry = ExactIndex(version, ids, build_flat(X, metric))
                self._persist(table, metric, entry)
            if _gpu_count() > 0:
                entry = ExactIndex(entry.version, entry.ids, _to_gpu(entry.index))
            self._cache[key] = entry
            return entry

    def _paths(self, table: str, metric: str, version: int) -> tuple[Path, Path]:
        assert self._dir is not None
        stem = f"{table}.{metric}.v{version}"
        return self._dir / f"{stem}.faiss", self._dir / f"{stem}.ids.npy"

    def _load_persisted(self, table: str, metric: str, version: int) -> ExactIndex | None:
        if self._dir is None:
            return None
        index_path, ids_path = self._paths(table, metric, version)
        if not (index_path.exists() and ids_path.exists()):
            return None
        try:
            return ExactIndex(version, np.load(ids_path), faiss.read_index(str(index_path)))
        except Exception as exc:  # a torn file from a killed process: rebuild
            log.warning("ignoring unreadable FAISS index %s: %s", index_path, exc)
            return None

    def _persist(self, table: str, metric: str, entry: ExactIndex) -> None:
        if self._dir is None:
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        index_path, ids_path = self._paths(table, metric, entry.version)
        # Write to temporary names and rename, so a reader never sees half a file.
        tmp_index = index_path.with_suffix(".faiss.tmp")
        tmp_ids = ids_path.with_name(ids_path.name + ".tmp")
        faiss.write_index(entry.index, str(tmp_index))
        with open(tmp_ids, "wb") as fh:
            np.save(fh, entry.ids)
        tmp_ids.replace(ids_path)
        tmp_index.replace(index_path)
        for old in self._dir.glob(f"{table}.{metric}.v*"):
            if old not in (index_path, ids_path):
                old.unlink(missing_ok=True)


def vectors_at(entry: ExactIndex | AnnIndex, positions: np.ndarray) -> np.ndarray:
    """Stored vectors [m, d] at positions of ``entry.ids``, as the index holds them
    (L2-normalised for cosine in an exact index; raw in an approximate one)."""
    if isinstance(entry, AnnIndex):
        return entry.vectors_at(positions)
    return entry.index.reconstruct_batch(np.asarray(positions, dtype=np.int64))


def search(
    entry: ExactIndex | AnnIndex,
    queries: np.ndarray,
    k: int,
    metric: str,
    exclude_self_ids: np.ndarray | None = None,
    allowed_ids: np.ndarray | None = None,
    normalized: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest stored prompts of each query row.

    queries: float32 [m, d]. exclude_self_ids: int64 [m], the prompt id to leave out of each
    row's answer (a prompt is not its own neighbour). allowed_ids: sorted int64 prompt ids
    the answer is restricted to. Returns (ids int64 [m, k], scores float32 [m, k]); rows
    with fewer than k candidates are padded with id -1 and a NaN score. ``normalized``: the
    queries are already L2-normalised (vectors taken from a cosine index). An approximate
    entry answers from its re-ranked candidates (exact scores, approximate membership).
    """
    if isinstance(entry, AnnIndex):
        return entry.search(queries, k, exclude_self_ids, allowed_ids)
    q = np.array(queries, dtype=np.float32, order="C", copy=True)
    if metric == "cosine" and not normalized:
        faiss.normalize_L2(q)
    extra = 1 if exclude_self_ids is not None else 0
    kk = min(k + extra, entry.index.ntotal)
    if allowed_ids is not None:
        pos = np.clip(np.searchsorted(entry.ids, allowed_ids), 0, len(entry.ids) - 1)
        pos = pos[entry.ids[pos] == allowed_ids]
        params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(pos.astype(np.int64)))
        scores, pos = entry.index.search(q, kk, params=params)
    else:
        scores, pos = entry.index.search(q, kk)
    ids = np.where(pos >= 0, entry.ids[np.clip(pos, 0, None)], -1)
    scores = scores.astype(np.float32)
    if metric == "l2":
        scores = np.sqrt(np.maximum(scores, 0))
    scores[ids < 0] = np.nan
    if exclude_self_ids is not None:
        # At most one self match per row: a stable sort moves it to the end; rows without
        # one lose their (k+1)-th candidate instead.
        is_self = ids == np.asarray(exclude_self_ids, dtype=np.int64)[:, None]
        order = np.argsort(is_self, axis=1, kind="stable")
        ids = np.take_along_axis(ids, order, axis=1)[:, :k]
        scores = np.take_along_axis(scores, order, axis=1)[:, :k]
        kk = ids.shape[1]
        if is_self.any():
            still = np.take_along_axis(is_self, order, axis=1)[:, :k]
            ids[still], scores[still] = -1, np.nan
    if kk < k:
        ids = np.pad(ids, ((0, 0), (0, k - kk)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, k - kk)), constant_values=np.nan)
    return ids, scores
