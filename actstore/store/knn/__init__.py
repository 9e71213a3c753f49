"""k-NN over the activation tables: the :class:`Knn` repository.

Exact search (:mod:`.exact`, flat FAISS indices) below ``ann_threshold`` rows per table,
approximate search (:mod:`.ann`, IVF-PQ candidates re-ranked exactly) from it on;
``approximate=`` forces either. Every approximate index is tuned at build time to the recall
promise ``recall_target`` (``ACTSTORE_ANN_RECALL``) on held-out stored rows, or the table is
searched exactly when that cannot be met within ``latency_budget_ms`` (:mod:`.tuning`);
:meth:`Knn.layer_indexes` reports what each layer got. Indices are built lazily per table
token (id and version) and persisted, with checksums, beside a local database
(``<db>/_faiss``; :mod:`.files`) or, for a database on object storage, in a local cache
folder (``Settings.index_cache``, one sub-folder per store URI): built from the remote
table's rows, keyed by its id and version, so a new commit anywhere makes the next search
build a new index. See :mod:`.exact` for the score of each metric.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
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

__all__ = ["METRICS", "Knn", "LayerIndex"]

KIND = "ivfpq4fs+rerank"  # the approximate index (:data:`actstore.store.knn.ann.KIND`, without importing FAISS)


@dataclass(frozen=True)
class LayerIndex:
    """How k-NN searches one stored layer: ``kind`` "flat" (exact) or "ivfpq4fs+rerank"
    (approximate, tuned); ``metric`` None when every metric is searched the same way (exact
    tables); ``recall`` recall@10 measured at build time on held-out stored rows (1.0 when
    exact; None while the approximate index is not built yet); ``exact`` True when answers
    are exact (a small table, or an approximate index that could not reach ``target`` within
    the latency budget); ``rows`` rows of the table; ``nprobe`` / ``candidates`` the tuned
    search parameters; ``measured_rows`` rows when the recall was measured."""

    layer: int
    metric: str | None
    kind: str
    recall: float | None
    exact: bool
    rows: int
    target: float | None = None
    nprobe: int | None = None
    candidates: int | None = None
    measured_rows: int | None = None


class Knn:
    """Nearest stored prompts of query vectors or of stored prompts, per model and layer."""

    def __init__(
        self,
        activations: Activations,
        prompts: Prompts,
        persist_dir: Path | None,
        ann_threshold: int,
        recall_target: float = 0.98,
        latency_budget_ms: float = 5.0,
    ):
        self._activations = activations
        self._prompts = prompts
        self._persist_dir = persist_dir
        self._indexes: KnnIndexes | None = None
        self._indexes_lock = threading.Lock()
        self.ann_threshold = ann_threshold
        #: recall@10 every approximate index is tuned to (``Settings.ann_recall``)
        self.recall_target = float(recall_target)
        #: single-query latency (ms) the tuned search must keep, else exact (``Settings.ann_latency_ms``)
        self.latency_budget_ms = float(latency_budget_ms)
        if not 0.0 < self.recall_target <= 1.0:
            raise InvalidInput(f"ACTSTORE_ANN_RECALL must be in (0, 1], got {recall_target}")
        if not self.latency_budget_ms > 0:
            raise InvalidInput(f"ACTSTORE_ANN_LATENCY_MS must be > 0, got {latency_budget_ms}")

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
        if len(missing):  # perhaps written by another process since the last version check
            info, layer, entry = self._entry(model_key, layer, metric, approximate, fresh=True)
            pos = np.clip(np.searchsorted(entry.ids, pids), 0, max(len(entry.ids) - 1, 0))
            missing = pids[entry.ids[pos] != pids] if len(entry.ids) else pids
        if len(missing):
            raise NotFound(f"prompt id(s) {preview(missing)} have no activations for model {model_key!r} layer {layer}")
        k, allowed = self._k(entry, k, dataset, labelled)
        from .exact import search, vectors_at

        q = vectors_at(entry, pos)
        return search(entry, q, k, metric, pids, allowed, normalized=True)

    def graph(
        self,
        model_key: str,
        layer: int,
        prompt_ids: Sequence[int] | np.ndarray,
        k: int,
        *,
        approximate: bool | None = None,
        batch: int = 4096,
    ) -> np.ndarray:
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
            raise NotFound(f"prompt id(s) {preview(missing)} have no activations for model {model_key!r} layer {layer}")
        k = as_int(k, "k")
        if not 1 <= k < len(pids):
            raise InvalidInput(f"k must be between 1 and n - 1 = {len(pids) - 1}, got k={k}")
        from .exact import search, vectors_at

        allowed = None if len(sorted_ids) == len(entry.ids) else sorted_ids
        out = np.empty((len(pids), k), np.int64)
        for s in range(0, len(pids), batch):
            q = vectors_at(entry, np.searchsorted(entry.ids, pids[s : s + batch]))
            nb, _ = search(entry, q, k, "cosine", pids[s : s + batch], allowed, normalized=True)
            where = np.searchsorted(sorted_ids, np.clip(nb, 0, None))
            out[s : s + batch] = np.where(nb >= 0, order[np.clip(where, 0, len(order) - 1)], -1)
        return out

    def use_ann(self, n_rows: int, approximate: bool | None = None) -> bool:
        """Whether a table of ``n_rows`` is searched approximately (``approximate`` forces it)."""
        return bool(approximate) if approximate is not None else n_rows >= self.ann_threshold

    def _entry(
        self, model_key: str, layer: int, metric: str, approximate: bool | None = None, fresh: bool = False
    ) -> tuple[ModelInfo, int, ExactIndex | AnnIndex]:
        """(info, layer, index entry) of one table. The table's token and size are checked at
        most every ``Tables.version_check_s`` (and after every write through this process),
        not per look-up; ``fresh=True`` checks them now."""
        if metric not in METRICS:
            raise InvalidInput(f"metric must be one of {list(METRICS)}, got {metric!r}")
        info, layer, _ = self._activations.locate(model_key, layer, recent=not fresh)
        name = acts_table(model_key, layer)
        load = lambda: self._activations.read(model_key, layer)  # noqa: E731
        # token "<table id>:<version>": never repeats (see activations)
        token, rows = self._activations.recent_state(model_key, layer, fresh=fresh)
        if self.use_ann(rows, approximate):
            entry = self.indexes.get_ann(name, token, metric, load, self.recall_target, self.latency_budget_ms)
            if entry.tuning is None or not entry.tuning.exact:
                return info, layer, entry
            # the approximate index cannot keep the recall promise within the latency budget
        return info, layer, self.indexes.get(name, token, metric, load)

    def layer_indexes(self, model_key: str, layers: Sequence[int]) -> list[LayerIndex]:
        """How each of these stored layers of a model is searched, per metric with an
        approximate index (reads table sizes and persisted tuning records, builds nothing):
        exact below ``ann_threshold`` rows; above, the measured recall of the tuned index, or
        ``recall`` None while no index was built yet (it is built on the first search)."""
        out: list[LayerIndex] = []
        for layer in layers:
            _, layer, tbl = self._activations.locate(model_key, layer)
            rows, token = int(tbl.count_rows()), table_token(tbl)
            if not self.use_ann(rows):
                out.append(LayerIndex(layer, None, "flat", 1.0, True, rows))
                continue
            name = acts_table(model_key, layer)
            found = False
            for metric in METRICS:
                t = self.indexes.tuning(name, metric, token)
                if t is None:
                    continue
                found = True
                out.append(
                    LayerIndex(
                        layer,
                        metric,
                        "flat" if t.exact else KIND,
                        t.recall,
                        t.exact,
                        rows,
                        self.recall_target,
                        None if t.exact else t.nprobe,
                        None if t.exact else t.candidates,
                        t.rows,
                    )
                )
            if not found:
                out.append(LayerIndex(layer, "cosine", KIND, None, False, rows, self.recall_target))
        return out

    def _k(
        self, entry: ExactIndex | AnnIndex, k: int, dataset: str | None, labelled: bool | None = None
    ) -> tuple[int, np.ndarray | None]:
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
