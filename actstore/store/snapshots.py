"""Pinned, picklable views of activation tables, for workers that read them without a Store.

A :class:`LayerSnapshot` names one activation table's Lance dataset (its URI, the storage
options needed to reach it and the version read) and its width. It is a small frozen
dataclass, cheap to send to a Ray task; :func:`read_rows` then reads the rows of some prompt
ids from exactly that version, so every shard of a distributed computation sees the same
table even while writers commit new versions.

Distributed writes go the other way: :func:`write_layer_fragments` writes rows of one layer
as Lance fragments (data files not yet part of any version) from a worker, returning their
metadata as JSON; :meth:`actstore.store.activations.Activations.commit_fragments` commits
them in one atomic append per layer table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from actstore.errors import InvalidInput, NotFound

from .checks import preview
from .checksums import DIGEST, check_digests, corrupted
from .tables import ACTS_STORAGE_VERSION, Tables, acts_table
from .vectors import STORAGE_DTYPES, arrow_to_vectors, row_digests, vectors_to_arrow

__all__ = ["FragmentTarget", "LayerSnapshot", "read_rows", "snapshot", "write_layer_fragments"]


@dataclass(frozen=True)
class LayerSnapshot:
    """One activation table at one version: ``uri`` of its Lance dataset, ``version``,
    ``d_model`` and the ``storage_options`` to reach it (strings); ``verify``: check every row
    read against its checksum (``ACTSTORE_VERIFY_READS``)."""

    model_key: str
    layer: int
    uri: str
    version: int
    d_model: int
    storage_options: Mapping[str, str] = field(default_factory=dict)
    verify: bool = False


def snapshot(tables: Tables, model_key: str, layer: int, d_model: int, *, verify: bool = False) -> LayerSnapshot:
    """The current version of the activation table of ``model_key`` / ``layer`` (NotFound
    when it does not exist); ``verify`` as in :class:`LayerSnapshot`."""
    name = acts_table(model_key, layer)
    version = tables.version(name)
    if version is None:
        raise NotFound(f"model {model_key!r} has no activations stored for layer {layer}")
    return LayerSnapshot(
        model_key, int(layer), tables.dataset_uri(name), version, int(d_model), dict(tables.storage_options), verify
    )


def read_rows(snap: LayerSnapshot, ids: np.ndarray) -> np.ndarray:
    """float32 [len(ids), d_model] of the prompt ids ``ids`` (int64, ascending, distinct)
    from the snapshot's version, in the order of ``ids``. Reads the id range
    ``[ids[0], ids[-1]]`` (a filter Lance pushes down) and keeps the ids asked for; NotFound
    when one is missing; DataCorrupted for a row that fails its checksum (with ``verify``)."""
    import lance

    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        return np.zeros((0, snap.d_model), np.float32)
    if len(ids) > 1 and not (np.diff(ids) > 0).all():
        raise InvalidInput("read_rows needs ascending, distinct prompt ids")
    ds = lance.dataset(snap.uri, version=snap.version, storage_options=dict(snap.storage_options) or None)
    check = snap.verify and DIGEST in ds.schema.names
    t = ds.to_table(
        columns=["prompt_id", "vector", DIGEST] if check else ["prompt_id", "vector"],
        filter=f"prompt_id >= {int(ids[0])} AND prompt_id <= {int(ids[-1])}",
    )
    if check:
        bad, _ = check_digests(acts_table(snap.model_key, snap.layer), t, snap.d_model)
        bad = bad[np.isin(bad, ids)]
        if len(bad):
            raise corrupted(acts_table(snap.model_key, snap.layer), bad)
    got = t["prompt_id"].to_numpy()
    order = np.argsort(got, kind="stable")
    pos = np.searchsorted(got[order], ids)
    pos = np.clip(pos, 0, max(len(got) - 1, 0))
    if len(got) == 0 or (got[order][pos] != ids).any():
        missing = ids if len(got) == 0 else ids[got[order][pos] != ids]
        raise NotFound(
            f"prompt id(s) {preview(missing)} have no activations for model "
            f"{snap.model_key!r} layer {snap.layer} (version {snap.version})"
        )
    X = arrow_to_vectors(t["vector"], snap.d_model)
    return np.ascontiguousarray(X[order[pos]])


@dataclass(frozen=True)
class FragmentTarget:
    """Where a worker writes fragments of one layer: the table's dataset ``uri``, its
    ``schema`` (Arrow, with the table's metadata), storage ``dtype`` and ``storage_options``."""

    layer: int
    uri: str
    schema: pa.Schema
    dtype: str
    storage_options: Mapping[str, str] = field(default_factory=dict)


def write_layer_fragments(target: FragmentTarget, ids: np.ndarray, vectors: np.ndarray) -> list[str]:
    """Write rows ``(ids[k], vectors[k])`` (ids int64 [n] distinct; vectors [n, d] floats)
    into new Lance data files of ``target``'s table, sorted by prompt id, converted to the
    storage dtype exactly as :meth:`Activations.write` converts them; nothing is visible to
    readers until the fragments are committed. Returns each fragment's metadata as JSON.
    Raises InvalidInput for non-finite values or values beyond float16."""
    from lance.fragment import write_fragments

    ids = np.asarray(ids, dtype=np.int64)
    X = np.asarray(vectors)
    if len(ids) == 0:
        return []
    if X.shape[0] != len(ids):
        raise InvalidInput(f"got {X.shape[0]} vectors for {len(ids)} prompt ids at layer {target.layer}")
    if not np.isfinite(X).all():
        raise InvalidInput(f"non-finite values (NaN or inf) in vectors for layer {target.layer}")
    if target.dtype == "float16" and np.abs(X).max() > float(np.finfo(np.float16).max):
        raise InvalidInput(
            f"values at layer {target.layer} overflow float16; ingest with dtype float32",
            field="dtype",
            value="float16",
            allowed="float32",
        )
    if target.dtype not in STORAGE_DTYPES:
        raise InvalidInput(f"dtype must be one of {sorted(STORAGE_DTYPES)}, got {target.dtype!r}")
    order = np.argsort(ids, kind="stable")
    vec = vectors_to_arrow(X[order], target.dtype)
    columns = {"prompt_id": pa.array(ids[order], pa.int64()), "vector": vec}
    if DIGEST in target.schema.names:  # tables written before checksums have none
        columns[DIGEST] = pa.array(
            row_digests(vec.values.to_numpy(zero_copy_only=False).reshape(len(vec), -1)), pa.uint64()
        )
    batch = pa.table(columns, schema=target.schema)
    frags = write_fragments(
        batch,
        target.uri,
        schema=target.schema,
        data_storage_version=ACTS_STORAGE_VERSION,
        storage_options=dict(target.storage_options) or None,
    )
    return [json.dumps(f.to_json()) for f in frags]
