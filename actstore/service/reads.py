"""What every query part reads: layer references resolved against the store, the prompts two
models share, whole layers kept in memory, k-NN graphs, and the table versions an answer
depends on.

Two models are compared on the prompts both have at every stored layer (optionally within a
dataset), in ascending prompt-id order. That set depends on every stored layer of both models,
so :meth:`Reads.versions` lists the version of each of them: a cached answer is keyed by them
and a write to any layer of either model invalidates it. Prompt ids never change dataset or
label once stored, so the prompts table's version is not part of the key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from actstore import analysis
from actstore.errors import InvalidInput, NotFound
from actstore.layers import LayerRef, depth_grid, format_layers, relative_depth
from actstore.store import ModelInfo, Store

from .cache import ByteLRU, LayerCache, SingleFlight
from .work import stop_check

__all__ = ["Reads", "digest", "worst_recall"]

RECALL_SAMPLE = 256  # prompts on which an approximate graph's recall@k is measured


def digest(ids: np.ndarray) -> str:
    """Short content hash of a prompt-id array (cache keys of in-memory entries)."""
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()[:16]


def worst_recall(recalls: Sequence[float | None]) -> float | None:
    """Smallest of the measured recalls (None entries are exact graphs); None if all exact."""
    measured = [r for r in recalls if r is not None]
    return min(measured) if measured else None


class Reads:
    """Resolution, shared prompts, cached layers and graphs over one store. Thread-safe."""

    def __init__(self, store: Store, cache_bytes: int, graph_bytes: int = 512 << 20) -> None:
        """``cache_bytes``: budget of the layer cache; ``graph_bytes``: of the k-NN graph cache."""
        self.store = store
        self.layers = LayerCache(cache_bytes)
        self.graphs = ByteLRU(graph_bytes)  # (graph int64 [n, k], recall) by layer version, prompts, k
        self._flight = SingleFlight()

    # ------------------------------------------------------------ resolution
    def resolve(self, ref: LayerRef) -> tuple[ModelInfo, int]:
        """(model info, stored layer index) of a layer reference (see :class:`LayerRef`)."""
        # catalogs up to Settings.version_check_s old: no version check per look-up
        info = self.store.models.get(ref.model, recent=True)
        return info, ref.resolve(info.n_layers, info.layers)

    def layer_list(self, info: ModelInfo, layers: Sequence[int] | None) -> list[int]:
        """The given layers (negative from the end) of a model, each stored; all stored layers for None."""
        if layers is None:
            if not info.layers:
                raise NotFound(f"model {info.key!r} has no stored layers")
            return list(info.layers)
        if len(layers) == 0:
            raise InvalidInput(f"the layer list for model {info.key!r} is empty")
        return [LayerRef(info.key, layer=int(l_)).resolve(info.n_layers, info.layers) for l_ in layers]

    def grid(self, info: ModelInfo, grid: int) -> list[int]:
        """The depth grid of ``grid`` layers of a model (see :func:`depth_grid`), each stored."""
        layers = depth_grid(grid, info.n_layers, info.key)
        missing = [l_ for l_ in layers if l_ not in info.layers]
        if missing:
            raise NotFound(
                f"a grid of {grid} over model {info.key!r} needs layers {layers}; not stored: "
                f"{format_layers(missing)} (stored: {format_layers(info.layers)})"
            )
        return layers

    @staticmethod
    def depths(info: ModelInfo, layers: Sequence[int]) -> list[float]:
        return [relative_depth(l_, info.n_layers) for l_ in layers]

    # --------------------------------------------------------------- prompts
    def shared(self, model_a: str, model_b: str, dataset: str | None) -> np.ndarray:
        """Sorted ids of the prompts both models have at every stored layer (within ``dataset``)."""
        if dataset is not None:
            self.store.prompts.dataset(dataset)  # NotFound for an unknown dataset
        ids = self.store.activations.shared(model_a, model_b, dataset)
        if len(ids) == 0:
            for key in (model_a, model_b):
                if not self.store.models.get(key).layers:  # no layer at all: a drop under way
                    raise NotFound(
                        f"model {key!r} has no activations stored (it is being dropped, or its "
                        "first write has not finished)"
                    )
            where = f" in dataset {dataset!r}" if dataset else ""
            raise InvalidInput(f"models {model_a!r} and {model_b!r} share no stored prompts{where}")
        return ids

    def versions(self, *models: ModelInfo) -> dict[str, str | int]:
        """Version of every stored layer table of these models (the cache-key dependencies),
        as recent as ``Settings.version_check_s`` (this process's own writes are seen at once):
        the key of a cached answer opens no table."""
        out: dict[str, str | int] = {}
        for info in models:
            for layer, version in self.store.activations.versions(info.key, info.layers, recent=True).items():
                out[f"{info.key}/{layer}"] = version
        return out

    # ---------------------------------------------------------------- arrays
    def full_layer(self, model: str, layer: int) -> tuple[str, np.ndarray, np.ndarray]:
        """(table token, ids [n], X float32 [n, d]) of a whole layer, from the LRU cache."""
        version = self.store.activations.version(model, layer)
        ids, X = self.layers.get((model, layer, version), lambda: self.store.activations.read(model, layer))
        return version, ids, X

    def rows(self, model: str, layer: int, ids: np.ndarray) -> np.ndarray:
        """X [len(ids), d] of prompt ids known to be stored at this layer, in the order given."""
        _, all_ids, X = self.full_layer(model, layer)
        if len(all_ids) == len(ids) and np.array_equal(all_ids, ids):
            return X
        return X[np.searchsorted(all_ids, ids)]

    def graph(self, model: str, layer: int, ids: np.ndarray, k: int) -> tuple[np.ndarray, float | None]:
        """(cosine k-NN graph [n, k] over ``ids``, sampled recall@k or None when exact).

        From ``store.knn.ann_threshold`` prompts on, the graph comes from batched searches of the
        layer's approximate index and its recall@k against exact search is measured on
        RECALL_SAMPLE sampled prompts; below, it is exact (:func:`analysis.knn_graph`).
        """
        version, _, _ = self.full_layer(model, layer)
        approximate = len(ids) >= self.store.knn.ann_threshold
        key = (model, layer, version, digest(ids), k, approximate)
        hit: tuple[np.ndarray, float | None] | None = self.graphs.get(key)
        if hit is not None:
            return hit

        def build() -> tuple[np.ndarray, float | None]:
            X = self.rows(model, layer, ids)
            if approximate:
                g = self.store.knn.graph(model, layer, ids, k, approximate=True)
                return g, analysis.knn_graph_recall(X, g, sample=RECALL_SAMPLE, seed=0)
            return analysis.knn_graph(X, k, should_stop=stop_check()), None

        entry = self._flight.run(key, build)
        self.graphs.put(key, entry)
        return entry
