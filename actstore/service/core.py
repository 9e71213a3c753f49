"""The service layer: the one place that resolves layer references, joins models on their
shared prompts, reads arrays from the store, calls :mod:`actstore.analysis` and caches.

API resolvers, the CLI and Python users all call :class:`Service`; its method names mirror
the GraphQL fields in snake_case. Every method validates its inputs and raises
``InvalidInput`` / ``NotFound`` (from the store) or ``AnalysisError`` with a
message naming the bad value and what is allowed.

Caching, from the bottom up:
- whole layers read from the store live in a bounded LRU keyed by (model, layer, table
  version): a new write changes the version, so nothing stale is ever served;
- k-NN graphs are cached per (layer version, prompt set, k), so an affinity matrix builds
  one graph per layer and a later mutual-k-NN query of two of those layers builds none;
- finished answers of heavy queries (CKA, matrices, mutual k-NN) are stored in the
  ``results`` table under a hash of the canonical query plus the versions of every table it
  read, so they survive restarts and a new ingest invalidates them;
- identical heavy queries arriving together compute once (single flight).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from actstore import analysis
from actstore.store import DatasetInfo, ModelInfo, PromptRecord, Store
from actstore.errors import InvalidInput, NotFound

from .cache import LayerCache, SingleFlight
from .jobs import Job, JobRunner
from .bridges import BridgeQueries
from .saes import SaeQueries
from actstore.config import Settings
from actstore.layers import LayerRef, depth_grid, format_layers, relative_depth
from .types import (
    AffinityMatrixResult,
    CkaResult,
    DiagonalTestResult,
    MutualKnnResult,
    Neighbor,
    SimilarityMatrixResult,
    from_jsonable,
    to_jsonable,
)

log = logging.getLogger(__name__)

METRICS = {"cosine", "l2", "dot"}


@dataclass(frozen=True)
class ModelSummary:
    """A stored model with the datasets and the number of prompts it has at every stored layer."""

    info: ModelInfo
    datasets: list[str]
    prompt_count: int


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _digest(ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()[:16]




def _worst(recalls: Sequence[float | None]) -> float | None:
    """Smallest of the measured recalls (None entries are exact graphs); None if all exact."""
    measured = [r for r in recalls if r is not None]
    return min(measured) if measured else None


def _preview(values: Sequence[Any], limit: int = 12) -> str:
    values = list(values)
    text = ", ".join(map(str, values[:limit]))
    return text + (", ..." if len(values) > limit else "")


class Service(BridgeQueries, SaeQueries):
    """Queries over one store. Thread-safe: the API calls it from worker threads."""

    def __init__(self, store: Store | str, settings: Settings | None = None):
        self.settings = settings or Settings()
        self.store = store if isinstance(store, Store) else Store.open(store)
        self.layers = LayerCache(self.settings.cache_mb << 20)
        self.jobs = JobRunner()
        self._flight = SingleFlight()
        self._graphs: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._graphs_lock = threading.Lock()
        # Heavy numerics run one at a time: bounded memory, and GPU work is serialised.
        self._heavy = threading.Lock()
        self._runners: dict[str, Any] = {}
        self._runners_lock = threading.Lock()
        self.computed = 0  # heavy answers computed (not served from cache); tests read it

    # ------------------------------------------------------------------ catalog
    def models(self) -> list[ModelSummary]:
        datasets = self.store.datasets()
        return [self._summary(m, datasets) for m in self.store.models()]

    def model_infos(self) -> list[ModelInfo]:
        """Every stored model without its prompt counts (cheap: no activation table is read)."""
        return self.store.models()

    def model_info(self, key: str) -> ModelInfo | None:
        """The model under ``key`` without prompt counts, or None."""
        try:
            return self.store.model(key)
        except NotFound:
            return None

    def model_summary(self, key: str) -> ModelSummary:
        """Datasets and prompt count of one model (reads the prompt ids of every stored layer)."""
        return self._summary(self.store.model(key), self.store.datasets())

    def model(self, key: str) -> ModelSummary | None:
        """The model under ``key``, or None (GraphQL's nullable ``model``)."""
        try:
            info = self.store.model(key)
        except NotFound:
            return None
        return self._summary(info, self.store.datasets())

    def _summary(self, info: ModelInfo, datasets: list[DatasetInfo]) -> ModelSummary:
        ids = self.store.model_prompt_ids(info.key) if info.layers else np.empty(0, np.int64)
        names = [d.name for d in datasets if len(np.intersect1d(ids, self.store.prompt_ids(d.name), assume_unique=True))]
        return ModelSummary(info, names, len(ids))

    def datasets(self) -> list[DatasetInfo]:
        return self.store.datasets()

    def dataset(self, name: str) -> DatasetInfo:
        for d in self.store.datasets():
            if d.name == name:
                return d
        raise NotFound(f"unknown dataset {name!r}")

    def prompts(self, dataset: str, offset: int = 0, limit: int = 100) -> list[PromptRecord]:
        return self.store.prompts(dataset, offset, limit)

    def job(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    # --------------------------------------------------------------- resolution
    def resolve(self, ref: LayerRef) -> tuple[ModelInfo, int]:
        """(model info, stored layer index) of a LayerRef (see :meth:`LayerRef.resolve`)."""
        info = self.store.model(ref.model)
        return info, ref.resolve(info.n_layers, info.layers)

    def _layer_list(self, info: ModelInfo, layers: Sequence[int] | None) -> list[int]:
        if layers is None:
            if not info.layers:
                raise NotFound(f"model {info.key!r} has no stored layers")
            return list(info.layers)
        if len(layers) == 0:
            raise InvalidInput(f"the layer list for model {info.key!r} is empty")
        return [self.resolve(LayerRef(info.key, layer=int(l)))[1] for l in layers]

    def _grid(self, info: ModelInfo, grid: int) -> list[int]:
        layers = depth_grid(grid, info.n_layers, info.key)
        missing = [l for l in layers if l not in info.layers]
        if missing:
            raise NotFound(
                f"a grid of {grid} over model {info.key!r} needs layers {layers}; not stored: "
                f"{format_layers(missing)} (stored: {format_layers(info.layers)})"
            )
        return layers

    # ------------------------------------------------------------------- arrays
    def _full_layer(self, model: str, layer: int) -> tuple[int, np.ndarray, np.ndarray]:
        version = self.store.table_version(model, layer)
        ids, X = self.layers.get((model, layer, version), lambda: self.store.read_activations(model, layer))
        return version, ids, X

    def _rows(self, model: str, layer: int, ids: np.ndarray) -> tuple[int, np.ndarray]:
        """(table version, X [len(ids), d]) for prompt ids known to be stored."""
        version, all_ids, X = self._full_layer(model, layer)
        if len(all_ids) == len(ids) and np.array_equal(all_ids, ids):
            return version, X
        return version, X[np.searchsorted(all_ids, ids)]

    def _shared(self, model_a: str, model_b: str, dataset: str | None) -> np.ndarray:
        if dataset is not None:
            self.store.prompt_ids(dataset)  # NotFound for an unknown dataset
        ids = self.store.shared_prompts(model_a, model_b, dataset)
        if len(ids) == 0:
            where = f" in dataset {dataset!r}" if dataset else ""
            raise InvalidInput(f"models {model_a!r} and {model_b!r} share no stored prompts{where}")
        return ids

    def _check_k(self, k: int, n: int) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise InvalidInput(f"k must be an integer, got {k!r}")
        if k < 1 or k > self.settings.max_k or k >= n:
            raise InvalidInput(
                f"k must be between 1 and min({self.settings.max_k}, n - 1 = {n - 1}) for n = {n} prompts, got k={k}"
            )
        return int(k)

    def _graph(self, model: str, layer: int, ids: np.ndarray, k: int) -> tuple[int, np.ndarray]:
        version, graph, _ = self._graph_recall(model, layer, ids, k)
        return version, graph

    def _graph_recall(self, model: str, layer: int, ids: np.ndarray, k: int) -> tuple[int, np.ndarray, float | None]:
        """(table version, k-NN graph [n, k] over ``ids``, sampled recall or None when exact).

        From ``store.ann_threshold`` prompts on, the graph comes from batched searches of the
        layer's approximate index and its recall@k against exact search is measured on 256
        sampled prompts; below, it is exact (:func:`analysis.knn_graph`).
        """
        version, X = self._rows(model, layer, ids)
        approximate = len(ids) >= self.store.ann_threshold
        key = (model, layer, version, _digest(ids), k) + (("ann",) if approximate else ())
        with self._graphs_lock:
            if key in self._graphs:
                self._graphs.move_to_end(key)
                return (version,) + self._graphs[key]

        def build() -> tuple[np.ndarray, float | None]:
            if approximate:
                graph = self.store.knn_graph(model, layer, ids, k, approximate=True)
                return graph, analysis.knn_graph_recall(X, graph, sample=256, seed=0)
            return analysis.knn_graph(X, k), None

        entry = self._flight.run(("graph",) + key, build)
        with self._graphs_lock:
            self._graphs[key] = entry
            while len(self._graphs) > 512:
                self._graphs.popitem(last=False)
        return (version,) + entry

    # ------------------------------------------------------------ result cache
    def _cached(self, query: dict[str, Any], versions: dict[str, int], compute: Callable[[str], Any]) -> Any:
        """Answer of ``query`` from the results table, or computed once and stored there."""
        text = _canonical({"query": query, "versions": versions})
        key = hashlib.sha256(text.encode()).hexdigest()[:32]
        stored = self.store.get_result(key)
        if stored is not None:
            return from_jsonable(json.loads(stored))

        def run() -> Any:
            again = self.store.get_result(key)
            if again is not None:
                return from_jsonable(json.loads(again))
            with self._heavy:
                result = compute(key)
            self.computed += 1
            self.store.put_result(key, json.dumps(to_jsonable(result)), query=_canonical(query))
            return result

        return self._flight.run(key, run)

    def result(self, key: str) -> Any:
        """A cached answer by its key (for plots); NotFound if there is none."""
        stored = self.store.get_result(key)
        if stored is None:
            raise NotFound(f"no cached result {key!r}")
        return from_jsonable(json.loads(stored))

    # ----------------------------------------------------------------- queries
    def nearest_neighbors(
        self,
        at: LayerRef,
        prompt_id: int | None = None,
        vector: Sequence[float] | None = None,
        text: str | None = None,
        k: int = 10,
        dataset: str | None = None,
        metric: str = "cosine",
        labelled: bool | None = None,
    ) -> list[Neighbor]:
        """The k stored prompts nearest to a stored prompt, a raw vector or new text at one layer.

        A stored prompt is never its own neighbour. ``score`` is the cosine similarity or
        inner product (larger is nearer) or the Euclidean distance for ``l2`` (smaller is
        nearer). ``dataset`` restricts the answer to that dataset's prompts; ``labelled``
        to labelled (True) or unlabelled (False) prompts. Layers of at least
        ``store.ann_threshold`` prompts are searched through their approximate index (exact
        scores of re-ranked candidates; see :mod:`actstore.store.ann`).
        """
        given = [name for name, v in (("promptId", prompt_id), ("vector", vector), ("text", text)) if v is not None]
        if len(given) != 1:
            raise InvalidInput(
                f"give exactly one of promptId, vector or text (got {', '.join(given) if given else 'none'})"
            )
        metric = metric.lower()
        if metric not in METRICS:
            raise InvalidInput(f"metric must be one of COSINE, L2, DOT, got {metric!r}")
        info, layer = self.resolve(at)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.settings.max_k:
            raise InvalidInput(f"k must be between 1 and {self.settings.max_k} (and below n), got k={k}")
        if prompt_id is not None:
            ids, scores = self.store.knn_of_prompts(info.key, layer, [int(prompt_id)], k, metric=metric, dataset=dataset,
                                                    labelled=labelled)
            return self._neighbors(ids[0], scores[0])
        if vector is not None:
            query = np.asarray(vector, dtype=np.float64)
            if query.ndim != 1 or len(query) != info.d_model:
                raise InvalidInput(
                    f"vector has {query.size} values, but model {info.key!r} has d_model={info.d_model}"
                )
            if not np.isfinite(query).all():
                raise InvalidInput("vector contains NaN or inf")
            query = query.astype(np.float32)[None, :]
        else:
            if not text or not text.strip():
                raise InvalidInput("text must be non-empty")
            query = self.encode_text(info, layer, text)
        ids, scores = self.store.knn(info.key, layer, query, k, metric=metric, dataset=dataset, labelled=labelled)
        return self._neighbors(ids[0], scores[0])

    def _neighbors(self, ids: np.ndarray, scores: np.ndarray) -> list[Neighbor]:
        keep = ids >= 0
        prompts = {p.id: p for p in self.store.get_prompts(ids[keep])}
        return [
            Neighbor(rank=r + 1, prompt_id=int(i), score=float(s), text=prompts[int(i)].text)
            for r, (i, s) in enumerate(zip(ids[keep], scores[keep]))
        ]

    def encode_text(self, info: ModelInfo, layer: int, text: str) -> np.ndarray:
        """Activations [1, d_model] of new text at one layer, from the model's own weights.

        The model is loaded from its recorded source once and kept for later queries.
        """
        from actstore.ingest.runner import ModelRunner  # torch + transformers only when needed

        with self._runners_lock:
            runner = self._runners.get(info.key)
            if runner is None:
                try:
                    runner = ModelRunner(info.source)
                except InvalidInput as exc:
                    raise InvalidInput(
                        f"cannot encode text with model {info.key!r}: its weights are not reachable "
                        f"from the server ({exc})"
                    ) from None
                except Exception as exc:  # noqa: BLE001 - any load failure means "not reachable"
                    raise InvalidInput(
                        f"cannot encode text with model {info.key!r}: its weights at {info.source!r} are "
                        f"not reachable from the server ({type(exc).__name__}: {exc})"
                    ) from None
                self._runners[info.key] = runner
        if runner.d_model != info.d_model or runner.n_layers != info.n_layers:
            raise InvalidInput(
                f"the weights at {info.source!r} (d_model={runner.d_model}, {runner.n_layers} layers) do not "
                f"match stored model {info.key!r} (d_model={info.d_model}, {info.n_layers} layers)"
            )
        with self._heavy:
            out = runner.encode([text], layers=[layer], batch_size=1)
        return np.asarray(out[layer], dtype=np.float32).reshape(1, -1)

    def mutual_knn(self, a: LayerRef, b: LayerRef, k: int = 10, dataset: str | None = None) -> MutualKnnResult:
        """Mutual k-NN of two layers over their shared prompts (METHODS.md), with its null k/(n-1)."""
        ia, la = self.resolve(a)
        ib, lb = self.resolve(b)
        ids = self._shared(ia.key, ib.key, dataset)
        n = len(ids)
        k = self._check_k(k, n)
        versions = {
            f"{ia.key}/{la}": self.store.table_version(ia.key, la),
            f"{ib.key}/{lb}": self.store.table_version(ib.key, lb),
        }
        query = {"op": "mutualKnn", "a": [ia.key, la], "b": [ib.key, lb], "k": k, "dataset": dataset}
        if n >= self.store.ann_threshold:  # approximate graphs: a different answer
            query["approximate"] = True

        def compute(_key: str) -> MutualKnnResult:
            _, ga, ra = self._graph_recall(ia.key, la, ids, k)
            _, gb, rb = self._graph_recall(ib.key, lb, ids, k)
            return MutualKnnResult(analysis.mutual_knn(ga, gb), k, n, analysis.null_mean(k, n), la, lb,
                                   recall=_worst([ra, rb]))

        return self._cached(query, versions, compute)

    def affinity_matrix(
        self,
        model_a: str,
        model_b: str,
        k: int = 10,
        dataset: str | None = None,
        layers_a: Sequence[int] | None = None,
        layers_b: Sequence[int] | None = None,
    ) -> AffinityMatrixResult:
        """Mutual k-NN of every layer pair of two models (one graph per layer), the
        generalized-diagonal test and the argmax path."""
        ia, ib = self.store.model(model_a), self.store.model(model_b)
        la, lb = self._layer_list(ia, layers_a), self._layer_list(ib, layers_b)
        ids = self._shared(ia.key, ib.key, dataset)
        n = len(ids)
        k = self._check_k(k, n)
        versions = self._versions(ia.key, la) | self._versions(ib.key, lb)
        query = {"op": "affinityMatrix", "a": [ia.key, la], "b": [ib.key, lb], "k": k, "dataset": dataset}
        if n >= self.store.ann_threshold:  # approximate graphs: a different answer
            query["approximate"] = True

        def compute(key: str) -> AffinityMatrixResult:
            ga = [self._graph_recall(ia.key, l, ids, k) for l in la]
            gb = [self._graph_recall(ib.key, l, ids, k) for l in lb]
            recall = _worst([g[2] for g in ga + gb])
            ga, gb = [g[1] for g in ga], [g[1] for g in gb]
            M = analysis.affinity_matrix(ga, gb)
            diag = self._diagonal(M)
            return AffinityMatrixResult(
                model_a=ia.key, model_b=ib.key, layers_a=la, layers_b=lb, values=M.tolist(), n=n,
                argmax=analysis.argmax_path(M), k=k, null_mean=analysis.null_mean(k, n), diagonal=diag,
                depths_a=[relative_depth(l, ia.n_layers) for l in la],
                depths_b=[relative_depth(l, ib.n_layers) for l in lb], key=key, recall=recall,
            )

        return self._cached(query, versions, compute)

    @staticmethod
    def _diagonal(M: np.ndarray) -> DiagonalTestResult:
        """The diagonal test where it is defined; NaN fields for matrices too small for it."""
        if min(M.shape) < 2 or M.size - max(M.shape) < 2:
            nan = float("nan")
            return DiagonalTestResult(nan, nan, nan, nan)
        t = analysis.diagonal_test(M)
        return DiagonalTestResult(t.on_diagonal_mean, t.off_diagonal_mean, t.t_statistic, t.p_value)

    def _versions(self, model: str, layers: Sequence[int]) -> dict[str, int]:
        return {f"{model}/{l}": self.store.table_version(model, l) for l in layers}

    def cka(
        self,
        a: LayerRef,
        b: LayerRef,
        debiased: bool = True,
        permutations: int = 0,
        dataset: str | None = None,
        seed: int = 0,
    ) -> CkaResult:
        """Linear CKA of two layers over their shared prompts; ``permutations`` > 0 adds a
        permutation-test p-value (1 + #{null >= observed}) / (1 + P), reproducible for a seed."""
        self._check_permutations(permutations)
        ia, la = self.resolve(a)
        ib, lb = self.resolve(b)
        ids = self._shared(ia.key, ib.key, dataset)
        versions = {
            f"{ia.key}/{la}": self.store.table_version(ia.key, la),
            f"{ib.key}/{lb}": self.store.table_version(ib.key, lb),
        }
        query = {"op": "cka", "a": [ia.key, la], "b": [ib.key, lb], "debiased": bool(debiased),
                 "permutations": permutations, "dataset": dataset, "seed": seed if permutations else None}

        def compute(_key: str) -> CkaResult:
            _, X = self._rows(ia.key, la, ids)
            _, Y = self._rows(ib.key, lb, ids)
            if permutations:
                t = analysis.cka_permutation_test(X, Y, permutations=permutations, seed=seed, debiased=debiased)
                return CkaResult(t.value, bool(debiased), len(ids), la, lb, permutations, t.p_value)
            value = analysis.linear_cka(X, Y, debiased=debiased)
            return CkaResult(value, bool(debiased), len(ids), la, lb, 0, None)

        return self._cached(query, versions, compute)

    def _check_permutations(self, permutations: int) -> None:
        cap = self.settings.max_permutations
        if isinstance(permutations, bool) or not isinstance(permutations, (int, np.integer)) or not 0 <= permutations <= cap:
            raise InvalidInput(f"permutations must be between 0 and {cap}, got {permutations}")

    def cka_matrix(
        self,
        model_a: str,
        model_b: str,
        debiased: bool = True,
        dataset: str | None = None,
        layers_a: Sequence[int] | None = None,
        layers_b: Sequence[int] | None = None,
        grid: int | None = None,
    ) -> SimilarityMatrixResult:
        """CKA of every layer pair of two models (or of a relative-depth grid of ``grid`` layers each)."""
        ia, ib = self.store.model(model_a), self.store.model(model_b)
        if grid is not None:
            if layers_a is not None or layers_b is not None:
                raise InvalidInput("give either grid or layersA/layersB, not both")
            la, lb = self._grid(ia, grid), self._grid(ib, grid)
        else:
            la, lb = self._layer_list(ia, layers_a), self._layer_list(ib, layers_b)
        ids = self._shared(ia.key, ib.key, dataset)
        versions = self._versions(ia.key, la) | self._versions(ib.key, lb)
        query = {"op": "ckaMatrix", "a": [ia.key, la], "b": [ib.key, lb], "debiased": bool(debiased), "dataset": dataset}

        def compute(key: str) -> SimilarityMatrixResult:
            xs = [self._rows(ia.key, l, ids)[1] for l in la]
            ys = [self._rows(ib.key, l, ids)[1] for l in lb]
            M = analysis.cka_matrix(xs, ys, debiased=debiased)
            return SimilarityMatrixResult(
                model_a=ia.key, model_b=ib.key, layers_a=la, layers_b=lb, values=M.tolist(), n=len(ids),
                argmax=analysis.argmax_path(M), depths_a=[relative_depth(l, ia.n_layers) for l in la],
                depths_b=[relative_depth(l, ib.n_layers) for l in lb], debiased=bool(debiased), key=key,
            )

        return self._cached(query, versions, compute)

    # ---------------------------------------------------------------- mutations
    def add_prompts(self, dataset: str, texts: Sequence[str], labels: Sequence[int] | None = None) -> DatasetInfo:
        self.store.add_prompts(dataset, texts, labels)
        return self.dataset(dataset)

    def start_ingest(self, model: str, dataset: str, layers: Sequence[int] | None = None,
                     batch_size: int | None = None) -> Job:
        """Queue an ingest of ``model`` (hub id or local folder) over ``dataset``; returns the job."""
        self.store.prompt_ids(dataset)  # unknown dataset: fail now, not in the job
        if batch_size is not None and batch_size < 1:
            raise InvalidInput(f"batchSize must be >= 1, got {batch_size}")
        from actstore.ingest.pipeline import ingest

        def work(progress: Callable[[int, int], None]):
            return ingest(self.store, model, dataset, layers=list(layers) if layers is not None else "all",
                          batch_size=batch_size or 32, progress=False, on_progress=progress)

        def describe(summary: Any) -> str:
            return (f"stored {summary.encoded} prompts x {len(summary.layers)} layers as {summary.model_key!r} "
                    f"({summary.skipped} already stored, {summary.truncated} truncated)")

        return self.jobs.submit(work, describe)
