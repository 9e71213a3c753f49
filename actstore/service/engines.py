"""Where a CKA matrix is computed: in this process, or as Ray tasks over row ranges.

:func:`choose_engine` applies ``Settings.engine`` (``ACTSTORE_ENGINE``): ``local`` always
here, ``ray`` always on Ray, ``auto`` on Ray when Ray is importable and a cluster is at hand
(``ray.init`` was called in this process, or ``ACTSTORE_RAY_ADDRESS`` names one) and the
layers to read, n x (sum p + sum q) float32, exceed ``ACTSTORE_RAY_MIN_MB``.

:func:`ray_cka_matrix` computes the feature form of :mod:`actstore.analysis.feature_sums`:

1. The driver pins each layer table at its current version (:mod:`actstore.store.snapshots`)
   and reads a sample of rows (the first :data:`CENTRE_SAMPLE` shared prompts) for each
   layer's centre vector.
2. The shared prompt ids (ascending) are cut into ``shards`` row ranges; the layer pairs into
   groups whose statistics (p x q float64 per pair) fit :data:`GROUP_BYTES`. One Ray task per
   (shard, group) reads its rows of the group's layers straight from Lance (S3 or a shared
   folder) and returns the shard's sums.
3. The driver adds the sums of each group as they arrive and turns them into CKA values.

Equal to the single-machine answer to float64 rounding (the tests ask 1e-9 relative).
Preprocessing (``preprocess``) and ``byDataset`` answers stay local.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from actstore.analysis.feature_sums import FeatureSums, add_feature_sums, cka_from_sums, feature_sums, sums_bytes
from actstore.config import Settings
from actstore.errors import InvalidInput
from actstore.store import ModelInfo, Store
from actstore.store.snapshots import LayerSnapshot, read_rows, snapshot

__all__ = [
    "CENTRE_SAMPLE",
    "GROUP_BYTES",
    "SHARD_BYTES",
    "choose_engine",
    "distributed_cka_matrix",
    "ray_atlas_graphs",
    "ray_overlap_blocks",
    "ray_cka_matrix",
]

CENTRE_SAMPLE = 1024  # rows read by the driver for each layer's centre vector
GROUP_BYTES = 1 << 30  # float64 statistics of one pair group (per task and in the reduce)
SHARD_BYTES = 256 << 20  # float32 rows of one shard's layers in one task
_INIT_LOCK = threading.Lock()


def _ray_at_hand(settings: Settings) -> bool:
    try:
        import ray
    except ImportError:
        return False
    return bool(ray.is_initialized() or settings.ray_address)


def choose_engine(settings: Settings, n: int, dims_a: Sequence[int], dims_b: Sequence[int]) -> str:
    """``"local"`` or ``"ray"`` for an all-pairs CKA of n prompts over layers of widths
    ``dims_a`` and ``dims_b`` (see the module docstring)."""
    if settings.engine == "local":
        return "local"
    if settings.engine == "ray":
        return "ray"
    data_mb = n * (sum(dims_a) + sum(dims_b)) * 4 / 2**20
    return "ray" if data_mb >= settings.ray_min_mb and _ray_at_hand(settings) else "local"


def distributed_cka_matrix(
    settings: Settings,
    store: Store,
    info_a: ModelInfo,
    layers_a: Sequence[int],
    info_b: ModelInfo,
    layers_b: Sequence[int],
    ids: np.ndarray,
    debiased: bool,
) -> np.ndarray | None:
    """The CKA matrix of the shared prompts ``ids`` on Ray when :func:`choose_engine` says so,
    else None (the caller computes it locally)."""
    if choose_engine(settings, len(ids), [info_a.d_model] * len(layers_a), [info_b.d_model] * len(layers_b)) != "ray":
        return None
    return ray_cka_matrix(
        store, info_a, layers_a, info_b, layers_b, ids, debiased=debiased, address=settings.ray_address
    )


def _shard_sums(
    snaps: list[LayerSnapshot], ids: np.ndarray, centres: list[np.ndarray], pairs: list[tuple[int, int]]
) -> Any:
    """Ray task body: the FeatureSums of rows ``ids`` of the layers ``snaps``."""
    return feature_sums([read_rows(s, ids) for s in snaps], centres, pairs)


def _groups(dims: list[int], pairs: list[tuple[int, int]], budget: int) -> list[list[tuple[int, int]]]:
    """``pairs`` cut, in order, into groups whose sums fit ``budget`` bytes (at least one pair each)."""
    out: list[list[tuple[int, int]]] = [[]]
    for pair in pairs:
        if out[-1] and sums_bytes(dims, out[-1] + [pair]) > budget:
            out.append([])
        out[-1].append(pair)
    return out


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InvalidInput("the Ray engine needs Ray: pip install 'actstore[ray]' (or ACTSTORE_ENGINE=local)") from None
    return ray


def _init(ray: Any, address: str | None) -> None:
    with _INIT_LOCK:  # two heavy-work threads may ask at once; ray.init works in any thread
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)


def _layer_graph(snap: LayerSnapshot, ids: np.ndarray, k: int) -> np.ndarray:
    """Ray task body: the exact cosine k-NN graph of rows ``ids`` of one pinned layer."""
    from actstore.analysis.knn import knn_graph

    return knn_graph(read_rows(snap, ids), k)


def _overlap_block(rows: list[np.ndarray], cols: list[np.ndarray]) -> np.ndarray:
    """Ray task body: mutual k-NN of every (row graph, column graph) pair."""
    from actstore.analysis.atlas import graph_overlaps

    return graph_overlaps(rows, cols)


def ray_atlas_graphs(
    store: Store, layers: Sequence[tuple[ModelInfo, int]], ids: np.ndarray, k: int, address: str | None = None
) -> list[np.ndarray]:
    """The exact k-NN graph [n, k] of each (model, layer) over prompts ``ids``, one Ray task
    per layer reading its rows from a table pinned at its current version (what the local
    atlas computes, the same graph: ties to the smaller index)."""
    ray = _ray()
    _init(ray, address)
    ids = np.asarray(ids, dtype=np.int64)
    task = ray.remote(_layer_graph)
    refs = [task.remote(snapshot(store.tables, info.key, layer, info.d_model), ids, k) for info, layer in layers]
    return list(ray.get(refs))


def ray_overlap_blocks(
    blocks: Sequence[tuple[list[np.ndarray], list[np.ndarray]]], address: str | None = None
) -> list[np.ndarray]:
    """:func:`actstore.analysis.atlas.graph_overlaps` of each (row graphs, column graphs) block,
    one Ray task per block."""
    ray = _ray()
    _init(ray, address)
    task = ray.remote(_overlap_block)
    return list(ray.get([task.remote(rows, cols) for rows, cols in blocks]))


def ray_cka_matrix(
    store: Store,
    info_a: ModelInfo,
    layers_a: Sequence[int],
    info_b: ModelInfo,
    layers_b: Sequence[int],
    ids: np.ndarray,
    *,
    debiased: bool = True,
    shards: int | None = None,
    address: str | None = None,
    group_bytes: int = GROUP_BYTES,
) -> np.ndarray:
    """CKA [len(layers_a), len(layers_b)] float64 of two models' layers over the prompts ``ids``
    (int64, ascending; stored for every layer), computed by Ray tasks over row ranges (see the
    module docstring). ``shards``: row ranges (default: enough for :data:`SHARD_BYTES` per
    task, and at least the cluster's CPUs). ``address``: the Ray cluster when Ray is not
    initialised yet (None: ``RAY_ADDRESS``, else a new local Ray)."""
    try:
        import ray
    except ImportError:
        raise InvalidInput("the Ray engine needs Ray: pip install 'actstore[ray]' (or ACTSTORE_ENGINE=local)") from None
    with _INIT_LOCK:  # two heavy-work threads may ask at once; ray.init works in any thread
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) > 1 and not (np.diff(ids) > 0).all():
        raise InvalidInput("prompt ids must be ascending and distinct")
    # Distinct layers: A's then B's (the same table used on both sides is read once).
    keys: list[tuple[str, int]] = []
    for k in [(info_a.key, int(l)) for l in layers_a] + [(info_b.key, int(l)) for l in layers_b]:
        if k not in keys:
            keys.append(k)
    width = {info_a.key: info_a.d_model, info_b.key: info_b.d_model}
    snaps = [
        snapshot(store.tables, key, layer, width[key], verify=store.activations.verify_reads) for key, layer in keys
    ]
    index_a = [keys.index((info_a.key, int(l))) for l in layers_a]
    index_b = [keys.index((info_b.key, int(l))) for l in layers_b]
    sample = ids[:CENTRE_SAMPLE]
    centres = [read_rows(s, sample).mean(axis=0, dtype=np.float64) for s in snaps]
    dims = [s.d_model for s in snaps]
    pairs = list(dict.fromkeys([(i, j) for i in index_a for j in index_b] + [(i, i) for i in range(len(keys))]))
    if shards is None:
        rows = max(1, SHARD_BYTES // (4 * sum(dims)))
        # ray leaves cluster_resources unannotated
        shards = max(int(ray.cluster_resources().get("CPU", 1)), -(-len(ids) // rows))  # type: ignore[no-untyped-call]
    shards = max(1, min(int(shards), len(ids)))
    cuts = np.array_split(ids, shards)
    task = ray.remote(_shard_sums)
    results: list[tuple[list[int], FeatureSums]] = []
    for group in _groups(dims, pairs, group_bytes):
        used = sorted({i for pair in group for i in pair})
        local = {g: k for k, g in enumerate(used)}
        refs = [
            task.remote(
                [snaps[i] for i in used], cut, [centres[i] for i in used], [(local[i], local[j]) for i, j in group]
            )
            for cut in cuts
        ]
        total: FeatureSums | None = None
        while refs:  # add the shards' sums as they finish (one in memory besides the total)
            done, refs = ray.wait(refs, num_returns=1)
            part: FeatureSums = ray.get(done[0])
            total = part if total is None else add_feature_sums([total, part])
        assert total is not None  # every group has at least one shard
        results.append((used, total))
    # Re-key every group's pairs by the distinct-layer index, then one CKA table.
    from dataclasses import replace

    rekeyed = [
        replace(
            t,
            pairs=tuple((used[i], used[j]) for i, j in t.pairs),
            u=_spread(t.u, used, len(keys)),
            dsum=_spread(t.dsum, used, len(keys)),
        )
        for used, t in results
    ]
    return cka_from_sums(rekeyed, index_a, index_b, debiased=debiased)


def _spread(values: tuple[Any, ...], used: list[int], m: int) -> tuple[Any, ...]:
    """Per-layer values of the layers ``used`` placed at their distinct-layer index (None elsewhere)."""
    out: list[Any] = [None] * m
    for k, g in enumerate(used):
        out[g] = values[k]
    return tuple(out)
