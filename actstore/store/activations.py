"""Activation tables: one per model and layer, ``acts__{model_key}__L{layer:03d}``, rows
``(prompt_id int64, vector fixed_size_list<float16|float32>[d_model], digest uint64)``.

Checksums: ``digest`` is the xxh3-64 of the vector's stored bytes
(:func:`~actstore.store.vectors.row_digests`), written with the row. ``verify`` compares every
row; with ``ACTSTORE_VERIFY_READS=1`` (:attr:`Activations.verify_reads`) every read does, and a
row that fails is never served (:class:`~actstore.errors.DataCorrupted` naming the table and
prompt ids). Tables written before checksums have no ``digest`` column: they read as before,
``verify`` counts them as "no checksums", and their next write rewrites the table once with a
digest for every row (:meth:`Activations.write`).

Writes are validated completely first, then each layer is one commit (an upsert on
prompt_id, so re-writing a prompt replaces it); the first write of a model registers it and
every write records its layers in the layer catalog (see :mod:`actstore.store.models`).

Table identity: a table's Lance version numbers start again at 1 when it is dropped and
created anew (a re-import after a drop, or a folder deleted by hand), so a version alone
cannot key a cache. Every activation table carries a random id, made when the table is
created and stored in its Arrow schema metadata (:data:`TABLE_ID_KEY`; a table created
before ids existed gets one, as metadata of its ``prompt_id`` field, on its next write).
:meth:`Activations.version` returns the token ``"<id>:<version>"`` (:func:`table_token`),
which cannot repeat; FAISS index files and the service's cached answers are keyed by it.

Caches, all keyed by table tokens (a cached answer costs one version check per table it
read, never a re-read of the rows):

* :meth:`Activations.ids` -- the sorted prompt ids of one layer, keyed by that layer
  table's version (least recently used ones dropped beyond :data:`IDS_CACHE_BYTES`);
* :meth:`Activations.model_ids` -- the ids stored at every stored layer of a model (and in
  a dataset), keyed by the model's stored layers, their tables' versions and the prompts
  table's version: a repeated call costs O(layers) version checks instead of O(layers x n)
  reads, and after a write to one layer only that layer's ids are read again.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa

from actstore.errors import InvalidInput, NotFound

from .checks import as_int, preview
from .checksums import DIGEST, check_digests, corrupted
from .models import ModelInfo, Models
from .prompts import Prompts
from .snapshots import FragmentTarget
from .tables import ACTS_STORAGE_VERSION, LanceTable, Tables, acts_table, check_model_key, is_vanished, parse_acts_table
from .vectors import STORAGE_DTYPES, arrow_digests, arrow_to_vectors, row_digests, vectors_to_arrow

__all__ = ["FLOAT16_MAX", "IDS_CACHE_BYTES", "TABLE_ID_KEY", "Activations", "acts_schema", "table_id", "table_token"]

FLOAT16_MAX = float(np.finfo(np.float16).max)
# Memory the per-layer prompt-id cache may hold (100,000 ids take 0.8 MB).
IDS_CACHE_BYTES = 256 << 20


# Schema metadata key of an activation table's id (see the module docstring).
TABLE_ID_KEY = b"actstore.table_id"


def acts_schema(d_model: int, dtype: str, table_id: str | None = None) -> pa.Schema:
    """Schema of an activation table: ``(prompt_id int64, vector fixed_size_list[d], digest
    uint64)``; with ``table_id``, carrying it as the table's id (the schema a table is created
    with)."""
    return pa.schema(
        [
            pa.field("prompt_id", pa.int64(), nullable=False),
            pa.field("vector", pa.list_(STORAGE_DTYPES[dtype], d_model)),
            pa.field(DIGEST, pa.uint64()),
        ],
        metadata={TABLE_ID_KEY: table_id.encode()} if table_id else None,
    )


def table_id(tbl: LanceTable) -> str | None:
    """The id of an activation table (schema metadata, or ``prompt_id`` field metadata for a
    table created before ids existed), or None for a table without one yet."""
    schema = tbl.schema
    uid = (schema.metadata or {}).get(TABLE_ID_KEY)
    if uid is None:
        uid = (schema.field("prompt_id").metadata or {}).get(TABLE_ID_KEY)
    return None if uid is None else uid.decode()


def table_token(tbl: LanceTable) -> str:
    """``"<table id>:<version>"`` of an activation table: changes with every commit and never
    repeats, not even after the table is dropped and created again. A table without an id
    yet (created before ids existed, not written since) gives ``"legacy:<version>"``."""
    version = int(tbl.version)
    return f"{table_id(tbl) or 'legacy'}:{version}"


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


class Activations:
    """The activation tables of every model and layer."""

    def __init__(self, tables: Tables, prompts: Prompts, models: Models, *, verify_reads: bool = False):
        self._tables = tables
        #: check every row read against its checksum (``ACTSTORE_VERIFY_READS``)
        self.verify_reads = verify_reads
        self._prompts = prompts
        self._models = models
        self._lock = threading.Lock()
        self._ids_cache: OrderedDict[str, tuple[str, np.ndarray]] = OrderedDict()
        self._ids_bytes = 0
        self._model_ids_cache: dict[tuple[str, str | None], tuple[tuple[Any, ...], np.ndarray]] = {}

    # ----------------------------------------------------------------- tables
    @contextmanager
    def _dropped_is_not_found(self, model_key: str, layers: Sequence[int]) -> Iterator[None]:
        """A table dropped (by another process) between its look-up and its read is an
        answer, not a crash: NotFound as if the drop had come first (unknown model, or no
        table for the layer)."""
        try:
            yield
        except Exception as exc:
            if not is_vanished(exc):
                raise
            for layer in layers:
                self._tables.forget(acts_table(model_key, int(layer)))
            for layer in layers:
                self.locate(model_key, layer)  # raises the NotFound a later request gets
            raise NotFound(f"the activations of model {model_key!r} were dropped while this call read them") from None

    def locate(self, model_key: str, layer: int, *, recent: bool = False) -> tuple[ModelInfo, int, LanceTable]:
        """(info, layer, table) of one activation table: NotFound for an unknown model or a
        layer without a table, InvalidInput for a layer out of range. The hot path of every
        read and k-NN query: one version check of the models table (none with ``recent``
        within ``Tables.version_check_s``); ``info.layers`` is left empty."""
        info = self._info(model_key, recent)
        layer, tbl = self._table(info, layer)
        return info, layer, tbl

    def recent_state(self, model_key: str, layer: int, *, fresh: bool = False) -> tuple[str, int]:
        """(token, rows) of one activation table (it must exist), memoised for
        ``Tables.version_check_s`` and until a write through this process (the k-NN look-up
        path; ``fresh=True`` checks now)."""
        with self._dropped_is_not_found(model_key, [layer]):
            return self._tables.recent(
                acts_table(model_key, layer), "token+rows", lambda t: (table_token(t), int(t.count_rows())), fresh=fresh
            )

    def _info(self, model_key: str, recent: bool = False) -> ModelInfo:
        info = self._models.find(model_key, layers=False, recent=recent)
        if info is None and recent:
            info = self._models.find(model_key, layers=False)
        return info if info is not None else self._models.get(model_key)  # NotFound naming the known models

    def _table(self, info: ModelInfo, layer: int) -> tuple[int, LanceTable]:
        layer = as_int(layer, "layer")
        if not 0 <= layer < info.n_layers:
            raise InvalidInput(
                f"layer {layer} is out of range for model {info.key!r}: "
                f"allowed 0..{info.n_layers - 1} (or -{info.n_layers}..-1 from the end)"
            )
        tbl = self._tables.open(acts_table(info.key, layer))
        if tbl is None:
            stored = self._models.get(info.key).layers
            raise NotFound(
                f"model {info.key!r} has no activations stored for layer {layer}; "
                f"stored layers: {preview(stored) or 'none'}"
            )
        return layer, tbl

    def version(self, model_key: str, layer: int) -> str:
        """Token of one activation table, ``"<table id>:<version>"`` (:func:`table_token`): it
        changes with every write and never repeats (cache keys and index files use it)."""
        with self._dropped_is_not_found(model_key, [layer]):
            _, _, tbl = self.locate(model_key, layer)
            return table_token(tbl)

    def versions(self, model_key: str, layers: Sequence[int], *, recent: bool = False) -> dict[int, str]:
        """:meth:`version` of several layers of one model, by layer (one model look-up).

        ``recent=True``: tokens memoised for ``Tables.version_check_s`` seconds and until this
        process writes (:meth:`Tables.recent`), so a hot path (the key of a cached answer) opens
        no table; another process's write is seen within ``version_check_s``."""
        info = self._info(model_key, recent=recent)
        out: dict[int, str] = {}
        with self._dropped_is_not_found(model_key, [x for x in layers if isinstance(x, (int, np.integer))]):
            for layer in layers:
                if recent:
                    name = acts_table(info.key, as_int(layer, "layer"))
                    token = self._tables.recent(name, "token", lambda tbl: None if tbl is None else table_token(tbl))
                    if token is not None:
                        out[int(layer)] = token
                        continue
                layer, tbl = self._table(info, layer)
                out[layer] = table_token(tbl)
        return out

    def _token(self, name: str) -> str | None:
        tbl = self._tables.open(name)
        return None if tbl is None else table_token(tbl)

    def optimize(self, model_key: str | None = None) -> None:
        """Compact the activation tables of one model (or, with None, every table of the
        store) into few fragments."""
        with self._tables.write_lock:
            for name in self._tables.names():
                parsed = parse_acts_table(name)
                if model_key is None or (parsed and parsed[0] == model_key):
                    self._tables.optimize(name)

    # ------------------------------------------------------------------ write
    def write(
        self,
        model_key: str,
        vectors_by_layer: Mapping[int, np.ndarray],
        prompt_ids: Sequence[int] | np.ndarray,
        *,
        n_layers: int | None = None,
        source: str | None = None,
        architecture: str | None = None,
        dtype: str | None = None,
        revision: str | None = None,
        fingerprint: str | None = None,
        quantization: str | None = None,
        token: str = "last",
        chat_template: bool = False,
    ) -> int:
        """Upsert the activations of ``prompt_ids`` at one or more layers; return the rows
        written (summed over layers).

        ``quantization`` (e.g. ``Q4_1`` for a GGUF source; None for unquantized weights) is
        recorded with the model on its first write, and so are ``token`` (the token site:
        last, first or mean) and ``chat_template`` (prompts wrapped in the chat template).

        ``fingerprint`` (of weights, tokenizer and extraction spec; the ingest computes it)
        is recorded on the first write and checked on later ones: a different one raises
        Conflict, and so does a write without one onto a fingerprinted model from another
        ``source`` (see :meth:`Models.check_write <actstore.store.models.Models.check_write>`).

        vectors_by_layer: {layer: [n, d_model] floats}, one row per prompt id. The first
        write of a model registers it (``n_layers`` required then; d_model is taken from the
        vectors; dtype is the storage dtype, ``float16`` unless ``float32`` is asked). All
        layers are validated before any is written; each layer is one commit.
        """
        check_model_key(model_key)
        ids = np.asarray(prompt_ids)
        if ids.ndim != 1 or (len(ids) and not np.issubdtype(ids.dtype, np.integer)):
            raise InvalidInput(f"prompt_ids must be a 1-D sequence of integers, got shape {ids.shape} of {ids.dtype}")
        ids = ids.astype(np.int64)
        if not vectors_by_layer:
            raise InvalidInput("no layers given to write")

        with self._tables.write_lock:
            existing = self._models.find(model_key, layers=False)
            d: int | None
            if existing is not None:
                L, d, stored_dtype = existing.n_layers, existing.d_model, existing.dtype
                if n_layers is not None and as_int(n_layers, "n_layers") != L:
                    raise InvalidInput(f"model {model_key!r} is registered with n_layers={L}, got n_layers={n_layers}")
                if dtype is not None and dtype != stored_dtype:
                    raise InvalidInput(f"model {model_key!r} stores {stored_dtype}; got dtype={dtype!r}")
                record_fingerprint = self._models.check_write(existing, fingerprint, source)
            else:
                if n_layers is None:
                    raise InvalidInput(f"model {model_key!r} is not registered yet: pass n_layers on its first write")
                L = as_int(n_layers, "n_layers")
                if L < 1:
                    raise InvalidInput(f"n_layers must be >= 1, got {L}")
                stored_dtype = dtype or "float16"
                if stored_dtype not in STORAGE_DTYPES:
                    raise InvalidInput(f"dtype must be one of {sorted(STORAGE_DTYPES)}, got {stored_dtype!r}")
                d = None

            prepared: list[tuple[int, np.ndarray]] = []
            for layer, vectors in vectors_by_layer.items():
                layer = as_int(layer, "layer")
                if not 0 <= layer < L:
                    raise InvalidInput(f"layer {layer} is out of range for model {model_key!r}: allowed 0..{L - 1}")
                X = np.asarray(vectors)
                if X.ndim != 2:
                    raise InvalidInput(f"vectors for layer {layer} must be 2-D [n, d_model], got shape {X.shape}")
                if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
                    raise InvalidInput(f"vectors must be numeric, got {X.dtype}")
                if X.shape[0] != len(ids):
                    raise InvalidInput(f"got {X.shape[0]} vectors for {len(ids)} prompt ids at layer {layer}")
                if d is None:
                    d = X.shape[1]
                    if d < 1:
                        raise InvalidInput("vectors have zero columns: d_model must be >= 1")
                if X.shape[1] != d:
                    raise InvalidInput(
                        f"vectors for layer {layer} have dimension {X.shape[1]}, but model {model_key!r} has d_model={d}"
                    )
                finite = np.isfinite(X).all(axis=1)
                if not finite.all():
                    bad = np.flatnonzero(~finite)
                    raise InvalidInput(
                        f"non-finite values (NaN or inf) in vectors for layer {layer}, prompt id(s) {preview(ids[bad])}"
                    )
                if stored_dtype == "float16" and len(X) and np.abs(X).max() > FLOAT16_MAX:
                    raise InvalidInput(
                        f"values up to {float(np.abs(X).max()):.4g} at layer {layer} overflow float16 "
                        f"(max {FLOAT16_MAX:g}); store this model with dtype='float32'"
                    )
                prepared.append((layer, X))

            if len(ids) == 0:
                return 0
            assert d is not None  # set by the first of the (non-empty) layers
            uniq, counts = np.unique(ids, return_counts=True)
            if (counts > 1).any():
                raise InvalidInput(f"duplicate prompt id(s) in one write: {preview(uniq[counts > 1])}")
            known = self._prompts.all_ids()
            pos = np.clip(np.searchsorted(known, uniq), 0, max(len(known) - 1, 0))
            missing = uniq if len(known) == 0 else uniq[known[pos] != uniq]
            if len(missing):
                raise InvalidInput(f"unknown prompt id(s): {preview(missing)}; add the prompts first")
            if existing is not None and record_fingerprint and fingerprint is not None:
                self._models.set_fingerprint(model_key, fingerprint)
            if existing is None:  # before any row: the loser of a first-write race writes nothing
                self._models.claim(
                    model_key, source=source, fingerprint=fingerprint, n_layers=L, d_model=d, dtype=stored_dtype
                )

            in_order = bool((np.diff(ids) > 0).all())
            order = None if in_order else np.argsort(ids, kind="stable")
            sorted_ids = pa.array(ids if in_order else ids[order], pa.int64())
            schema = acts_schema(d, stored_dtype)
            written = 0
            for layer, X in prepared:
                vec = vectors_to_arrow(X if in_order else X[order], stored_dtype)
                digests = row_digests(vec.values.to_numpy(zero_copy_only=False).reshape(len(vec), d))
                batch = pa.table(
                    {"prompt_id": sorted_ids, "vector": vec, DIGEST: pa.array(digests, pa.uint64())}, schema=schema
                )
                self._add_digests(acts_table(model_key, layer), d)
                # A new table is created with a fresh id (the schema's metadata); the batch's
                # own schema carries none, and appends keep the table's.
                tbl = self._tables.upsert(
                    acts_table(model_key, layer),
                    batch,
                    acts_schema(d, stored_dtype, uuid.uuid4().hex),
                    storage_version=ACTS_STORAGE_VERSION,
                )
                if table_id(tbl) is None:  # a table from before ids: give it one now
                    tbl.update_field_metadata(
                        {"path": "prompt_id", "metadata": {TABLE_ID_KEY.decode(): uuid.uuid4().hex}}
                    )
                written += len(ids)
            # The catalog before the model row: a model is never listed without its layers.
            self._models.add_layers(model_key, [layer for layer, _ in prepared])
            if existing is None and self._models.find(model_key, layers=False) is None:
                self._models.register(
                    model_key,
                    source=source,
                    revision=revision,
                    architecture=architecture,
                    n_layers=L,
                    d_model=d,
                    dtype=stored_dtype,
                    site="resid_post",
                    token=token,
                    fingerprint=fingerprint,
                    quantization=quantization,
                    chat_template=chat_template,
                )
            return written

    def _add_digests(self, name: str, d_model: int) -> None:
        """Give an activation table written before checksums (no ``digest`` column) a digest
        for every row: one rewrite of the table in one commit (its id kept; a table without
        an id gets one). Nothing for a table that has them or does not exist."""
        tbl = self._tables.open(name)
        if tbl is None or DIGEST in tbl.schema.names:
            return
        t = self._tables.scan(tbl, ["prompt_id", "vector"])
        uid = table_id(tbl) or uuid.uuid4().hex
        old = tbl.schema
        schema = pa.schema(
            [pa.field("prompt_id", pa.int64(), nullable=False), old.field("vector"), pa.field(DIGEST, pa.uint64())],
            metadata={TABLE_ID_KEY: uid.encode()},
        )
        full = pa.table(
            {
                "prompt_id": t["prompt_id"],
                "vector": t["vector"],
                DIGEST: pa.array(arrow_digests(t["vector"], d_model), pa.uint64()),
            },
            schema=schema,
        )
        self._tables.overwrite(name, full)

    # ------------------------------------------------------- distributed writes
    def fragment_targets(
        self,
        model_key: str,
        layers: Sequence[int],
        *,
        n_layers: int,
        d_model: int,
        dtype: str,
        source: str | None = None,
        architecture: str | None = None,
        revision: str | None = None,
        fingerprint: str | None = None,
        quantization: str | None = None,
        token: str = "last",
        chat_template: bool = False,
    ) -> dict[int, FragmentTarget]:
        """Prepare a distributed write of ``layers``: check the model as :meth:`write` does
        (same n_layers, d_model and dtype as stored; the fingerprint, see
        :meth:`Models.check_write <actstore.store.models.Models.check_write>`), create the
        missing layer tables empty (each with a fresh table id), record them in the layer
        catalog and, for a new model, register it (the fields as :meth:`write` records them),
        so that the store is consistent (``verify``) even if no fragment is ever committed.
        Returns where workers write their fragments
        (:func:`actstore.store.snapshots.write_layer_fragments`), by layer; their rows become
        visible at :meth:`commit_fragments`."""
        check_model_key(model_key)
        if dtype not in STORAGE_DTYPES:
            raise InvalidInput(f"dtype must be one of {sorted(STORAGE_DTYPES)}, got {dtype!r}")
        with self._tables.write_lock:
            existing = self._models.find(model_key, layers=False)
            record = False
            if existing is not None:
                if (existing.n_layers, existing.d_model, existing.dtype) != (n_layers, d_model, dtype):
                    raise InvalidInput(
                        f"model {model_key!r} is stored with n_layers={existing.n_layers}, "
                        f"d_model={existing.d_model}, dtype={existing.dtype}; got n_layers={n_layers}, "
                        f"d_model={d_model}, dtype={dtype}"
                    )
                record = self._models.check_write(existing, fingerprint, source)
            else:  # before any table: the loser of a first-write race creates nothing
                self._models.claim(
                    model_key, source=source, fingerprint=fingerprint, n_layers=n_layers, d_model=d_model, dtype=dtype
                )
            out: dict[int, FragmentTarget] = {}
            for layer in layers:
                layer = as_int(layer, "layer")
                if not 0 <= layer < n_layers:
                    raise InvalidInput(
                        f"layer {layer} is out of range for model {model_key!r}: allowed 0..{n_layers - 1}"
                    )
                name = acts_table(model_key, layer)
                tbl = self._tables.create(
                    name, acts_schema(d_model, dtype, uuid.uuid4().hex), storage_version=ACTS_STORAGE_VERSION
                )
                out[layer] = FragmentTarget(
                    layer, self._tables.dataset_uri(name), tbl.schema, dtype, dict(self._tables.storage_options)
                )
            if record and fingerprint is not None:  # record implies a fingerprint
                self._models.set_fingerprint(model_key, fingerprint)
            self._models.add_layers(model_key, list(out))
            if existing is None and self._models.find(model_key, layers=False) is None:
                self._models.register(
                    model_key,
                    source=source,
                    revision=revision,
                    architecture=architecture,
                    n_layers=n_layers,
                    d_model=d_model,
                    dtype=dtype,
                    site="resid_post",
                    token=token,
                    fingerprint=fingerprint,
                    quantization=quantization,
                    chat_template=chat_template,
                )
            return out

    def commit_fragments(self, model_key: str, fragments: Mapping[int, Sequence[str]]) -> int:
        """Commit fragments written by workers (``{layer: [fragment metadata JSON]}``, from
        :func:`~actstore.store.snapshots.write_layer_fragments` into the targets of
        :meth:`fragment_targets`): one atomic append per layer table. The fragments must hold
        prompt ids not stored yet in their layer (appends do not replace rows). Returns the
        number of tables committed to."""
        from lance.fragment import FragmentMetadata

        self._models.get(model_key)  # NotFound unless fragment_targets registered it
        done = 0
        with self._tables.write_lock:
            for layer, frags in sorted(fragments.items()):
                if frags:
                    self._tables.commit_append(
                        acts_table(model_key, layer), [FragmentMetadata.from_json(f) for f in frags]
                    )
                    done += 1
        return done

    # ------------------------------------------------------------------- read
    def read(
        self,
        model_key: str,
        layer: int,
        dataset: str | None = None,
        prompt_ids: Sequence[int] | np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stored activations of one model and layer.

        Returns (ids int64 [n], X float32 [n, d_model], C-contiguous), rows in ascending
        prompt_id order, optionally restricted to a dataset and/or to given prompt ids
        (every given id must be stored for this layer). NotFound also when the table is
        dropped while it is read.
        """
        with self._dropped_is_not_found(model_key, [layer]):
            return self._read(model_key, layer, dataset, prompt_ids)

    def _read(
        self, model_key: str, layer: int, dataset: str | None, prompt_ids: Sequence[int] | np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        info, layer, tbl = self.locate(model_key, layer)
        wanted = None
        if prompt_ids is not None:
            wanted = np.unique(np.asarray(prompt_ids, dtype=np.int64).reshape(-1))
        if dataset is not None:
            in_ds = self._prompts.ids(dataset)
            wanted = in_ds if wanted is None else np.intersect1d(wanted, in_ds, assume_unique=True)
        check = self.verify_reads and DIGEST in tbl.schema.names
        t = self._tables.scan_for(tbl, wanted, ["prompt_id", "vector", DIGEST] if check else ["prompt_id", "vector"])
        if check:
            bad, _ = check_digests(acts_table(info.key, layer), t, info.d_model)
            if wanted is not None:
                bad = bad[np.isin(bad, wanted)]
            if len(bad):
                raise corrupted(acts_table(info.key, layer), bad)
        ids = t["prompt_id"].to_numpy()
        X = arrow_to_vectors(t["vector"], info.d_model)
        if wanted is not None:
            keep = np.isin(ids, wanted)
            if not keep.all():
                ids, X = ids[keep], X[keep]
        if len(ids) > 1 and not (np.diff(ids) > 0).all():
            order = np.argsort(ids, kind="stable")
            ids, X = ids[order], np.ascontiguousarray(X[order])
        if prompt_ids is not None:
            asked = np.unique(np.asarray(prompt_ids, dtype=np.int64).reshape(-1))
            if dataset is not None:
                asked = np.intersect1d(asked, self._prompts.ids(dataset))
            missing = np.setdiff1d(asked, ids)
            if len(missing):
                raise NotFound(
                    f"prompt id(s) {preview(missing)} have no activations for model {model_key!r} layer {layer}"
                )
        return ids, X

    def ids(self, model_key: str, layer: int) -> np.ndarray:
        """Sorted ids of the prompts stored for one model and layer (empty if none); a
        read-only array cached by the table's version."""
        try:
            return self._ids(model_key, layer)
        except Exception as exc:  # dropped by another process since this one opened it: none now
            if not is_vanished(exc):
                raise
            self._tables.forget(acts_table(model_key, int(layer)))
            return self._ids(model_key, layer)

    def _ids(self, model_key: str, layer: int) -> np.ndarray:
        name = acts_table(model_key, int(layer))
        tbl = self._tables.open(name)
        if tbl is None:
            return np.empty(0, np.int64)
        version = table_token(tbl)
        with self._lock:
            hit = self._ids_cache.get(name)
            if hit is not None and hit[0] == version:
                self._ids_cache.move_to_end(name)
                return hit[1]
        # The version is taken before the read: a cached entry is never newer than its key.
        ids = _frozen(np.sort(self._tables.scan(tbl, ["prompt_id"])["prompt_id"].to_numpy()))
        with self._lock:
            old = self._ids_cache.pop(name, None)
            if old is not None:
                self._ids_bytes -= old[1].nbytes
            self._ids_cache[name] = (version, ids)
            self._ids_bytes += ids.nbytes
            while self._ids_bytes > IDS_CACHE_BYTES and len(self._ids_cache) > 1:
                _, (_, dropped) = self._ids_cache.popitem(last=False)
                self._ids_bytes -= dropped.nbytes
        return ids

    def model_ids(self, model_key: str, dataset: str | None = None) -> np.ndarray:
        """Sorted ids of the prompts stored for every stored layer of a model (optionally in a
        dataset); a read-only array cached by the versions of the tables it reads."""
        info = self._models.get(model_key)
        layers = info.layers
        stamp = (
            layers,
            tuple(self._token(acts_table(model_key, layer)) for layer in layers),
            None if dataset is None else self._prompts.version(),
        )
        key = (model_key, dataset)
        cached = self._model_ids_cache.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        ids: np.ndarray | None = None
        for layer in layers:
            layer_ids = self.ids(model_key, layer)
            ids = layer_ids if ids is None else np.intersect1d(ids, layer_ids, assume_unique=True)
        ids = np.empty(0, np.int64) if ids is None else ids
        if dataset is not None:
            ids = np.intersect1d(ids, self._prompts.ids(dataset), assume_unique=True)
        ids = _frozen(ids)
        self._model_ids_cache[key] = (stamp, ids)
        return ids

    def shared(self, model_a: str, model_b: str, dataset: str | None = None) -> np.ndarray:
        """Sorted ids of the prompts both models have at every stored layer (optionally in a dataset)."""
        return np.intersect1d(self.model_ids(model_a, dataset), self.model_ids(model_b, dataset), assume_unique=True)
