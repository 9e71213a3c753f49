"""Exact k-NN over one activation table with FAISS, built lazily and kept per table version.

An index is a flat FAISS index over the table's vectors in ascending prompt_id order, so a
FAISS position maps to a prompt id through the sorted id array saved beside it. Indices are
kept per table token (``"<table id>:<version>"``, see :func:`actstore.store.activations.table_token`:
it never repeats, not even for a table dropped and created again), persisted next to a local
database (``<db>/_faiss/<table>.<metric>.exact.<table id>.v<version>.{faiss,ids.npy,sha256}``)
with a SHA-256 digest of each file that is checked on load (a mismatch is logged and the
index rebuilt; see :mod:`.files`), and rebuilt when the token changes; on GPU when
``faiss.get_num_gpus() > 0``. Persisting is best effort: on a full disk the index is kept in
memory only, with a warning.

Metrics (scores are what the metric says, in its own units):
- ``cosine``: inner product of L2-normalised vectors, in [-1, 1], larger is nearer.
- ``dot``: raw inner product, larger is nearer.
- ``l2``: Euclidean distance, smaller is nearer.

Above a size threshold (``Knn.ann_threshold`` rows, from ``Settings.ann_threshold``: env
``ACTSTORE_ANN_THRESHOLD``, default 50,000) a table gets an approximate index instead
(:class:`actstore.store.knn.ann.AnnIndex`: IVF-PQ candidates, exact re-ranking; see that
module for the choice and its measurements). It is persisted as ``<table>.<metric>.ann.<table id>.v<version>.*``
and, when the rows of a new version are the old rows plus new prompt ids, extended rather
than rebuilt. ``search`` and ``vectors_at`` take either kind of entry. Exact search stays
the default below the threshold and can be forced (``approximate=False``).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from . import files
from .ann import AnnIndex, Tuning
from .tuning import tune

__all__ = ["TUNING_SUFFIX", "ExactIndex", "KnnIndexes", "build_flat", "search", "vectors_at"]

log = logging.getLogger(__name__)

TUNING_SUFFIX = ".tuning.json"  # the measured recall and chosen parameters of an approximate index


@dataclass
class ExactIndex:
    """A flat FAISS index of one table at one version; ``ids[p]`` is the prompt at position p."""

    version: str  # the table token, "<table id>:<version>"
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
    index: faiss.Index
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
        """Folder the indices are persisted in (``<db>/_faiss``, or the local index cache of a
        store on object storage), None for memory only."""
        return self._dir

    def ann_entries(self) -> dict[tuple[str, str], AnnIndex]:
        """The approximate indices held in memory, by (table, metric) (a copy of the map)."""
        with self._lock:
            return dict(self._ann)

    def get_ann(
        self,
        table: str,
        version: str,
        metric: str,
        load: Callable[[], tuple[np.ndarray, np.ndarray]],
        recall: float = 0.98,
        latency_ms: float = 5.0,
    ) -> AnnIndex:
        """The approximate index of ``table`` at ``version`` (a table token, ``"<id>:<n>"``):
        cached, persisted, extended or built, and tuned to recall@10 >= ``recall`` within
        ``latency_ms`` per query (:mod:`.tuning`; ``entry.tuning.exact``: search the table
        exactly instead).

        ``load()`` returns (ids int64 [n] ascending, X [n, d]) of the current version. An index
        of an older version of the same table (same id) is extended when its rows are all
        still there unchanged and the table has at most doubled since training; otherwise the
        index is rebuilt. An extended index keeps its tuning until the table has grown by a
        tenth since it was measured; a changed target or budget tunes it again.
        """
        key = (table, metric)
        with self._lock:
            prev = self._ann.get(key)
            if (
                prev is not None
                and prev.version == version
                and prev.tuning is not None
                and prev.tuning.fits(recall, latency_ms, prev.ntotal)
            ):
                return prev
            current = Path(f"{self.stem(table, metric, version, 'ann')}{files.DIGEST_SUFFIX}")
            if prev is None or current.exists():  # another process may have persisted this version
                prev = self._load_ann(table, metric, version) or prev
            if prev is not None and prev.version == version:
                if prev.tuning is None or not prev.tuning.fits(recall, latency_ms, prev.ntotal):
                    prev = tune(prev, recall, latency_ms)
                    self._persist_ann(table, metric, prev)
                self._ann[key] = prev
                return prev
            if prev is not None and not _same_table(prev.version, version):
                prev = None  # another table under the same name (dropped and created again)
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
            del X
            if entry.tuning is None or not entry.tuning.fits(recall, latency_ms, entry.ntotal):
                entry = tune(entry, recall, latency_ms)
            log.info(
                "approximate index of %s (%s, n=%d) %s in %.1f s",
                table,
                metric,
                len(ids),
                how,
                time.perf_counter() - t0,
            )
            self._persist_ann(table, metric, entry)
            self._ann[key] = entry
            return entry

    def tuning(self, table: str, metric: str, version: str) -> Tuning | None:
        """The tuning of the approximate index of ``table`` / ``metric``: the one in memory,
        else the newest persisted one of the same table id (``version`` a table token; it may
        be older than ``version`` when the index was not searched since the last write);
        None when no approximate index was built. Reads no index."""
        with self._lock:
            entry = self._ann.get((table, metric))
        if entry is not None and _same_table(entry.version, version) and entry.tuning is not None:
            return entry.tuning
        if self._dir is None or not self._dir.exists():
            return None
        pattern = self.stem(table, metric, version, "ann").name.rsplit(".v", 1)[0] + ".v*" + TUNING_SUFFIX
        for path in sorted(self._dir.glob(pattern), key=lambda p: _number(p.name[: -len(TUNING_SUFFIX)]), reverse=True):
            try:
                return Tuning.from_json(path.read_bytes())
            except (OSError, ValueError, TypeError) as exc:
                log.warning("ignoring unreadable %s: %s", path.name, exc)
        return None

    def stem(self, table: str, metric: str, version: str, kind: str = "exact") -> Path:
        """File stem of the persisted index of ``table`` at ``version`` (a table token) for
        ``metric``; ``kind`` is ``exact`` or ``ann``. Files: ``<stem>.faiss``, the id array
        (``.ids.npy`` / ``.npz``) and the digest ``<stem>.sha256``."""
        uid, _, number = str(version).rpartition(":")
        return (self._dir or Path(".")) / f"{table}.{metric}.{kind}.{uid or 'legacy'}.v{number}"

    def _load_ann(self, table: str, metric: str, version: str) -> AnnIndex | None:
        """The newest persisted approximate index of this table (same id) and metric, any version."""
        if self._dir is None or not self._dir.exists():
            return None
        pattern = self.stem(table, metric, version, "ann").name.rsplit(".v", 1)[0] + ".v*" + files.DIGEST_SUFFIX
        stems = sorted(
            (Path(str(p)[: -len(files.DIGEST_SUFFIX)]) for p in self._dir.glob(pattern)),
            key=lambda p: _number(p.name),
            reverse=True,
        )
        for stem in stems:
            try:
                parts = files.load(stem, (".faiss", ".npz"))
                if parts is None:
                    continue
                return AnnIndex.from_bytes(parts[".faiss"], parts[".npz"])
            except files.ChecksumMismatch as exc:
                log.warning("rebuilding approximate index %s: %s", stem, exc)
            except Exception as exc:  # noqa: BLE001 - an unreadable cache file: try older, then rebuild
                log.warning("ignoring unreadable approximate index %s: %s", stem, exc)
        return None

    def _persist_ann(self, table: str, metric: str, entry: AnnIndex) -> None:
        if self._dir is None:
            return
        stem = self.stem(table, metric, entry.version, "ann")
        index_bytes, arrays = entry.to_bytes()
        parts: dict[str, bytes | memoryview] = {".faiss": index_bytes, ".npz": arrays}
        if entry.tuning is not None:  # readable without loading the index (``actstore info``)
            parts[TUNING_SUFFIX] = entry.tuning.to_json().encode()
        if files.save(stem, parts):
            self._remove_others(f"{table}.{metric}.ann.*", stem)

    def _remove_others(self, pattern: str, keep: Path) -> None:
        """Remove the files matching ``pattern`` in the index folder but those of stem ``keep``
        (older versions, other table ids, files named by the older scheme)."""
        assert self._dir is not None
        prefix = keep.name + "."
        for old in self._dir.glob(pattern):
            if not old.name.startswith(prefix):
                old.unlink(missing_ok=True)

    def forget(self, table: str) -> int:
        """Drop the indices of ``table`` held in memory and persisted (every metric, kind and
        version); returns the files removed. For a table that is being dropped."""
        with self._lock:
            for cache in (self._cache, self._ann):
                for key in [k for k in cache if k[0] == table]:
                    del cache[key]
            if self._dir is None or not self._dir.exists():
                return 0
            removed = 0
            for path in self._dir.glob(f"{table}.*"):
                path.unlink(missing_ok=True)
                removed += 1
            return removed

    def digest_files(self) -> list[Path]:
        """The digest files of every persisted index (``verify`` checks them)."""
        if self._dir is None or not self._dir.exists():
            return []
        return sorted(self._dir.glob(f"*{files.DIGEST_SUFFIX}"))

    def get(
        self,
        table: str,
        version: str,
        metric: str,
        load: Callable[[], tuple[np.ndarray, np.ndarray]],
    ) -> ExactIndex:
        """The index of ``table`` at ``version`` (a table token); ``load()`` returns (ids, X
        float32) if a build is needed. A persisted index whose files do not match their
        digests is rebuilt (with a warning)."""
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

    def _load_persisted(self, table: str, metric: str, version: str) -> ExactIndex | None:
        if self._dir is None:
            return None
        stem = self.stem(table, metric, version)
        try:
            parts = files.load(stem, (".faiss", ".ids.npy"))
            if parts is None:
                return None
            ids = np.load(io.BytesIO(parts[".ids.npy"]), allow_pickle=False)
            index = faiss.deserialize_index(np.frombuffer(parts[".faiss"], dtype=np.uint8))
            if (
                ids.dtype != np.int64
                or ids.ndim != 1
                or len(ids) != index.ntotal
                or (len(ids) > 1 and not (np.diff(ids) > 0).all())
            ):
                raise files.ChecksumMismatch(f"{stem}.ids.npy does not match its index")
            return ExactIndex(version, ids, index)
        except files.ChecksumMismatch as exc:
            log.warning("rebuilding FAISS index %s: %s", stem, exc)
            return None
        except Exception as exc:  # noqa: BLE001 - an unreadable cache file: rebuild
            log.warning("ignoring unreadable FAISS index %s: %s", stem, exc)
            return None

    def _persist(self, table: str, metric: str, entry: ExactIndex) -> None:
        if self._dir is None:
            return
        stem = self.stem(table, metric, entry.version)
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(entry.ids, dtype=np.int64))
        if files.save(stem, {".faiss": faiss.serialize_index(entry.index).data, ".ids.npy": buf.getbuffer()}):
            self._remove_others(f"{table}.{metric}.exact.*", stem)
            for old in self._dir.glob(f"{table}.{metric}.v*"):  # files of the older naming scheme
                old.unlink(missing_ok=True)


def _same_table(a: str, b: str) -> bool:
    """Whether two table tokens name versions of the same table (same id)."""
    return str(a).rpartition(":")[0] == str(b).rpartition(":")[0]


def _number(stem_name: str) -> int:
    tail = stem_name.rsplit(".v", 1)[-1]
    return int(tail) if tail.isdigit() else -1


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
        # faiss's SWIG signature omits the keyword arguments its Python wrapper accepts
        params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(pos.astype(np.int64)))  # type: ignore[call-arg]
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
