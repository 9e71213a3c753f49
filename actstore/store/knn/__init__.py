"""k-NN over the activation tables: the :class:`Knn` repository.

Exact search (:mod:`.exact`, flat FAISS indices) below ``ann_threshold`` rows per table,
approximate search (:mod:`.ann`, IVF-PQ candidates re-ranked exactly) from it on;
``approximate=`` forces either. Indices are built lazily per table token (id and version)
and persisted, with checksums, beside a local database (``<db>/_faiss``; :mod:`.files`) or, for a
database on object storage, in a local cache folder (``Settings.index_cache``, one sub-folder
per store URI): built from the remote table's rows, keyed by its id and version, so a new
commit anywhere makes the next search build a new index. See :mod:`.exact` for the score of
each metric.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from actstore.errors import InvalidInput, NotFound
from ..activations import Activations, table_token
from ..checks import as_int, preview
from ..models import ModelInfo
from ..prompts import Prompts
from ..tables import acts_table
from .metrics import METRICS

if TYPE_CHECKING:  # FAISS (~0.1 s to import) is loaded on the first search, not with the store
    from .ann import AnnIndex
    from .exact import ExactIndex, KnnIndexes

__all__ = ["METRICS", "Knn"]


class Knn:
    """Nearest stored prompts of query vectors or of stored prompts, per model and layer."""

    def __init__(self, activations: Activations, prompts: Prompts, persist_dir: Path | None,
                 ann_threshold: int):
        self._activations = activations
        self._prompts = prompts
        self._persist_dir = persist_dir
        self._indexes: KnnIndexes | None = None
        self._indexes_lock = threading.Lock()
        self.ann_threshold = ann_threshold

    @property
    def indexes(self) -> KnnIndexes:
        """The in-memory / persisted indices of every table (created on first use)."""
        with self._indexes_lock:
            if self._indexes is None:
                from .exact import KnnIndexes

                self._indexes = KnnIndexes(self._persist_dir)
            return self._indexes

    @property
    def ann_threshold(self) -> int:
        """Rows from which a layer's k-NN search is approximate (``Settings.ann_threshold``)."""
        return self._ann_threshold

    @ann_threshold.setter
    def ann_threshold(self, rows: int) -> None:
        self._ann_threshold = as_int(rows, "ann_threshold")

    def search(
        self,
        model_key: str,
        layer: int,
        queries: np.ndarray,
        k: int,
        exclude_self_ids: Sequence[int] | np.ndarray | None = None,
        *,
        metric: str = "cosine",
        dataset: str | None = None,
        labelled: bool | None = None,
        approximate: bool | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest stored prompts of each query vector at one layer.

        queries: [m, d_model] (or [d_model]). exclude_self_ids: [m] prompt ids to leave out
        of their own row (a prompt is not its own neighbour). dataset: restrict the answer
        to that dataset's prompts; labelled: True for labelled prompts only, False for
        unlabelled only. Returns (ids int64 [m, k], scores float32 [m, k]), best first; see
        :mod:`actstore.store.knn.exact` for the score of each metric. Exact search below
        ``ann_threshold`` rows, approximate (exact scores of re-ranked candidates) from it on;
        ``approximate`` forces either.
        """
        info, layer, entry = self._entry(model_key, layer, metric, approximate)
        q = np.asarray(queries)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != info.d_model:
            raise InvalidInput(
                f"query vectors must have dimension d_model={info.d_model} of model {model_key!r}, got shape {np.shape(queries)}"
            )
        if not np.issubdtype(q.dtype, np.number) or not np.isfinite(q).all():
            raise InvalidInput("query vectors contain NaN or inf (or are not numeric)")
        if metric == "cosine" and (np.linalg.norm(q.astype(np.float64), axis=1) == 0).any():
            raise InvalidInput("a zero query vector has no cosine similarity: give a non-zero vector")
        excl = None
        if exclude_self_ids is not None:
            excl = np.asarray(exclude_self_ids, dtype=np.int64).reshape(-1)
            if len(excl) != len(q):
                raise InvalidInput(f"exclude_self_ids has {len(excl)} ids for {len(q)} queries")
        k, allowed = self._k(entry, k, dataset, labelled)
        from .exact import search

        return search(entry, q, k, metric, excl, allowed)

    def of_prompts(
        self,
        model_key: str,
        layer: int,
        prompt_ids: Sequence[int] | np.ndarray,
        k: int,
        *,
        metric: str = "cosine",
        dataset: str | None = None,
        labelled: bool | None = None,
        approximate: bool | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` for stored prompts, each left out of its own answer.

        The query vectors come from the index itself (no table read), which keeps a
        single look-up at the cost of one index search.
        """
        info, layer, entry = self._entry(model_key, layer, metric, approximate)
        pids = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        pos = np.clip(np.searchsorted(entry.ids, pids), 0, max(len(entry.ids) - 1, 0))
        missing = pids[entry.ids[pos] != pids] if len(entry.ids) else pids
        if len(missing):
            raise NotFound(
                f"prompt id(s) {preview(missing)} have no activations for model {model_key!r} layer {layer}"
            )
        k, allowed = self._k(entry, k, dataset, labelled)
        from .exact import search, vectors_at

        q = vectors_at(entry, pos)
        return search(entry, q, k, metric, pids, allowed, normalized=True)

    def graph(self, model_key: str, layer: int, prompt_ids: Sequence[int] | np.ndarray, k: int,
              *, approximate: bool | None = None, batch: int = 4096) -> np.ndarray:
        """Cosine k-NN graph of the given stored prompts at one layer, by batched index search.

        prompt_ids: [n] distinct stored ids. Returns int64 [n, k]: row i holds positions into
        ``prompt_ids`` of the k prompts nearest to prompt i among ``prompt_ids`` (itself
        left out), best first; -1 where fewer than k exist. Uses the layer's approximate
        index when the table is at least ``ann_threshold`` rows (measure the recall of the
        answer against exact search, e.g. with ``analysis.knn_graph_recall``).
        """
        info, layer, entry = self._entry(model_key, layer, "cosine", approximate)
        pids = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        order = np.argsort(pids, kind="stable")
        sorted_ids = pids[order]
        if len(sorted_ids) > 1 and not (np.diff(sorted_ids) > 0).all():
            raise InvalidInput("prompt_ids must be distinct")
        pos = np.clip(np.searchsorted(entry.ids, sorted_ids), 0, max(len(entry.ids) - 1, 0))
        if len(entry.ids) == 0 or (entry.ids[pos] != sorted_ids).any():
            missing = sorted_ids if len(entry.ids) == 0 else sorted_ids[entry.ids[pos] != sorted_ids]
            raise NotFound(
                f"prompt id(s) {preview(missing)} have no activations for model {model_key!r} layer {layer}"
            )
        k = as_int(k, "k")
        if not 1 <= k < len(pids):
            raise InvalidInput(f"k must be between 1 and n - 1 = {len(pids) - 1}, got k={k}")
        from .exact import search, vectors_at

        allowed = None if len(sorted_ids) == len(entry.ids) else sorted_ids
        out = np.empty((len(pids), k), np.int64)
        for s in range(0, len(pids), batch):
            q = vectors_at(entry, np.searchsorted(entry.ids, pids[s:s + batch]))
            nb, _ = search(entry, q, k, "cosine", pids[s:s + batch], allowed, normalized=True)
            where = np.searchsorted(sorted_ids, np.clip(nb, 0, None))
            out[s:s + batch] = np.where(nb >= 0, order[np.clip(where, 0, len(order) - 1)], -1)
        return out

    def use_ann(self, n_rows: int, approximate: bool | None = None) -> bool:
        """Whether a table of ``n_rows`` is searched approximately (``approximate`` forces it)."""
        return bool(approximate) if approximate is not None else n_rows >= self.ann_threshold

    def _entry(self, model_key: str, layer: int, metric: str,
               approximate: bool | None = None) -> tuple[ModelInfo, int, ExactIndex | AnnIndex]:
        if metric not in METRICS:
            raise InvalidInput(f"metric must be one of {list(METRICS)}, got {metric!r}")
        info, layer, tbl = self._activations.locate(model_key, layer)
        name = acts_table(model_key, layer)
        load = lambda: self._activations.read(model_key, layer)  # noqa: E731
        token = table_token(tbl)  # "<table id>:<version>": never repeats (see activations)
        if self.use_ann(int(tbl.count_rows()), approximate):
            return info, layer, self.indexes.get_ann(name, token, metric, load)
        return info, layer, self.indexes.get(name, token, metric, load)

    def _k(self, entry: ExactIndex | AnnIndex, k: int, dataset: str | None,
           labelled: bool | None = None) -> tuple[int, np.ndarray | None]:
        k = as_int(k, "k")
        allowed, n = None, len(entry.ids)
        if dataset is not None:
            allowed = np.intersect1d(entry.ids, self._prompts.ids(dataset), assume_unique=True)
            n = len(allowed)
        if labelled is not None:
            pool = entry.ids if allowed is None else allowed
            has = ~np.isnan(self._prompts.labels(pool)) if len(pool) else np.zeros(0, bool)
            allowed = pool[has if labelled else ~has]
            n = len(allowed)
        if not 1 <= k < n:
            raise InvalidInput(f"k must be between 1 and n - 1 = {n - 1} (n = {n} stored prompts), got k={k}")
        return k, allowed
