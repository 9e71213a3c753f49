"""The activation store: prompts, models and per-layer activation tables in one LanceDB database.

Consistency model: every write is one LanceDB commit (a new table version), so readers see
a table before or after a write, never half of it. The store assumes one writer per
database at a time (a process-level lock serialises writers inside one process); any
number of readers, in any process, may read while it writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import knn as knn_mod
from actstore.errors import InvalidInput, NotFound
from .tables import (
    MODELS,
    MODELS_SCHEMA,
    PROMPTS,
    PROMPTS_SCHEMA,
    RESULTS,
    RESULTS_SCHEMA,
    STORAGE_DTYPES,
    acts_schema,
    acts_table,
    arrow_to_vectors,
    check_model_key,
    parse_acts_table,
    vectors_to_arrow,
)

log = logging.getLogger(__name__)

FLOAT16_MAX = float(np.finfo(np.float16).max)
# Compact a table once it has more fragments than this (many small ingest writes).
MAX_FRAGMENTS = 16
# Old table versions are removed by compaction only once they are this old, so that a
# reader still scanning an older version keeps its files.
KEEP_VERSIONS_FOR = timedelta(minutes=10)
# Lance file format of activation tables. Measured with bench/store_io.py-sized data
# (20,000 x 2,048 float16): a whole-table read takes ~14 ms with the legacy (v1) format
# against 60-100 ms with the 2.x formats, whose page decoding dominates such wide
# fixed_size_list columns; on-disk size is the same.
ACTS_STORAGE_VERSION = "legacy"
# Up to this many ids, a filtered read pushes `prompt_id IN (...)` down to Lance.
_PUSHDOWN_IDS = 512


@dataclass(frozen=True)
class ModelInfo:
    """One stored model. ``layers`` are the decoder blocks with an activation table."""

    key: str
    source: str
    architecture: str
    n_layers: int
    d_model: int
    dtype: str
    revision: str | None = None
    site: str = "resid_post"
    token: str = "last_non_padding"
    created_at: datetime | None = None
    layers: tuple[int, ...] = ()


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    prompt_count: int
    has_labels: bool


@dataclass(frozen=True)
class PromptRecord:
    id: int
    dataset: str
    text: str
    label: int | None = None
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidInput(f"{name} must be an integer, got {value!r}")
    return int(value)


def _preview(values: Sequence[Any] | np.ndarray, limit: int = 10) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


class Store:
    """A LanceDB database of prompts and activations. Open with :meth:`Store.open`."""

    def __init__(self, uri: str | Path):
        uri = str(uri)
        self.uri = uri
        if _is_local(uri):
            path = Path(uri.removeprefix("file://")).expanduser()
            path.mkdir(parents=True, exist_ok=True)
            self.uri = str(path)
            persist = path / "_faiss"
        else:
            persist = None
        # read_consistency_interval=0: every read sees the latest commit of any process.
        self._db = lancedb.connect(self.uri, read_consistency_interval=timedelta(0))
        self._write_lock = threading.RLock()
        self._tables: dict[str, Any] = {}
        self._tables_lock = threading.Lock()
        self._knn = knn_mod.KnnIndexes(persist)
        self._prompt_cache: tuple[int, pa.Table, np.ndarray] | None = None
        self._models_cache: tuple[int, dict[str, dict[str, Any]]] | None = None

    @classmethod
    def open(cls, uri: str | Path) -> "Store":
        """Open the database at ``uri`` (local path or object-store URI), creating it if missing."""
        return cls(uri)

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    # ----------------------------------------------------------------- tables
    def _table_names(self) -> list[str]:
        names: list[str] = []
        token = None
        while True:
            resp = self._db.list_tables(page_token=token)
            names.extend(resp.tables)
            token = resp.page_token
            if not token:
                return names

    def _table(self, name: str, schema: pa.Schema | None = None, storage_version: str | None = None):
        """Open table ``name``; create it empty with ``schema`` if given and missing, else None."""
        with self._tables_lock:
            tbl = self._tables.get(name)
            if tbl is not None:
                return tbl
            try:
                tbl = self._db.open_table(name)
            except (ValueError, FileNotFoundError):
                if schema is None:
                    return None
                options = {"new_table_data_storage_version": storage_version} if storage_version else None
                tbl = self._db.create_table(name, schema=schema, exist_ok=True, storage_options=options)
            self._tables[name] = tbl
            return tbl

    @staticmethod
    def _scan(tbl, columns: list[str] | None = None, where: str | None = None) -> pa.Table:
        if columns is None and where is None:
            return tbl.to_arrow()
        q = tbl.search()
        if where is not None:
            q = q.where(where)
        if columns is not None:
            q = q.select(columns)
        return q.limit(None).to_arrow()

    # ---------------------------------------------------------------- prompts
    def add_prompts(
        self,
        dataset: str,
        texts: Sequence[str],
        labels: Sequence[int | None] | None = None,
        meta: Sequence[Mapping[str, Any] | None] | None = None,
        split: str | Sequence[str | None] | None = None,
    ) -> list[int]:
        """Add prompts to ``dataset``; return their int64 ids, one per text, in order.

        A text already in the dataset (same UTF-8 bytes) keeps its id and is not stored again;
        its stored label is left as it is. Validates everything first and writes all new
        rows in one commit, or nothing.
        """
        if not isinstance(dataset, str) or not dataset.strip():
            raise InvalidInput(f"dataset must be a non-empty name, got {dataset!r}")
        if isinstance(texts, str):
            raise InvalidInput("texts must be a list of strings, not one string")
        texts = list(texts)
        if not texts:
            raise InvalidInput(f"no texts given for dataset {dataset!r}")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InvalidInput(f"texts[{i}] must be a string, got {type(t).__name__}")
            if not t.strip():
                raise InvalidInput(f"texts[{i}] is empty: prompts must contain text")
        n = len(texts)
        if labels is not None:
            labels = list(labels)
            if len(labels) != n:
                raise InvalidInput(f"got {len(labels)} labels for {n} texts: give one label per text")
            labels = [None if v is None else _as_int(v, f"labels[{i}]") for i, v in enumerate(labels)]
        if meta is not None:
            meta = list(meta)
            if len(meta) != n:
                raise InvalidInput(f"got {len(meta)} meta entries for {n} texts")
            try:
                meta_json = [None if m is None else json.dumps(dict(m), sort_keys=True) for m in meta]
            except (TypeError, ValueError) as exc:
                raise InvalidInput(f"meta must be JSON-serialisable mappings: {exc}") from exc
        else:
            meta_json = [None] * n
        splits = [split] * n if split is None or isinstance(split, str) else list(split)
        if len(splits) != n:
            raise InvalidInput(f"got {len(splits)} splits for {n} texts")

        shas = [_sha256(t) for t in texts]
        with self._write_lock:
            tbl = self._table(PROMPTS, PROMPTS_SCHEMA)
            catalog = self._catalog()
            in_ds = catalog.filter(pc.equal(catalog["dataset"], dataset))
            known = dict(zip(in_ds["text_sha256"].to_pylist(), in_ds["prompt_id"].to_pylist()))
            all_ids = self._all_prompt_ids()
            next_id = int(all_ids[-1]) + 1 if len(all_ids) else 0
            ids: list[int] = []
            new_rows: list[int] = []
            for i, sha in enumerate(shas):
                pid = known.get(sha)
                if pid is None:
                    pid = known[sha] = next_id
                    next_id += 1
                    new_rows.append(i)
                ids.append(pid)
            if new_rows:
                batch = pa.table(
                    {
                        "prompt_id": pa.array([ids[i] for i in new_rows], pa.int64()),
                        "dataset": pa.array([dataset] * len(new_rows), pa.string()),
                        "text": pa.array([texts[i] for i in new_rows], pa.string()),
                        "text_sha256": pa.array([shas[i] for i in new_rows], pa.string()),
                        "label": pa.array([labels[i] if labels else None for i in new_rows], pa.int64()),
                        "split": pa.array([splits[i] for i in new_rows], pa.string()),
                        "meta": pa.array([meta_json[i] for i in new_rows], pa.string()),
                    },
                    schema=PROMPTS_SCHEMA,
                )
                tbl.add(batch)
                self._maybe_compact(tbl)
        return ids

    def _catalog(self) -> pa.Table:
        """The whole prompts table sorted by prompt_id, cached per table version.

        Every prompt read (texts for k-NN answers, labels, dataset membership) is a
        searchsorted into this in-memory copy instead of a filtered scan; it costs roughly
        the size of the prompt texts in memory.
        """
        tbl = self._table(PROMPTS)
        if tbl is None:
            return PROMPTS_SCHEMA.empty_table()
        version = tbl.version
        cached = self._prompt_cache
        if cached is None or cached[0] != version:
            t = self._scan(tbl)
            t = t.take(pc.sort_indices(t["prompt_id"]))
            cached = self._prompt_cache = (version, t, t["prompt_id"].to_numpy())
        return cached[1]

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        """Rows of the catalog holding these prompt ids; NotFound for unknown ids."""
        self._catalog()
        all_ids = self._prompt_cache[2] if self._prompt_cache else np.empty(0, np.int64)
        if len(all_ids) == 0:
            if len(ids):
                raise NotFound(f"unknown prompt id(s): {_preview(ids)}")
            return np.empty(0, np.int64)
        pos = np.clip(np.searchsorted(all_ids, ids), 0, len(all_ids) - 1)
        found = all_ids[pos] == ids
        if not found.all():
            raise NotFound(f"unknown prompt id(s): {_preview(ids[~found])}")
        return pos

    def _all_prompt_ids(self) -> np.ndarray:
        """Sorted ids of every stored prompt."""
        self._catalog()
        return self._prompt_cache[2] if self._prompt_cache else np.empty(0, np.int64)

    def datasets(self) -> list[DatasetInfo]:
        """Every dataset with its prompt count and whether any prompt has a label."""
        t = self._catalog().select(["dataset", "label"])
        if t.num_rows == 0:
            return []
        t = t.append_column("has_label", pc.is_valid(t["label"]))
        g = t.group_by("dataset").aggregate([("dataset", "count"), ("has_label", "any")])
        rows = sorted(zip(g["dataset"].to_pylist(), g["dataset_count"].to_pylist(), g["has_label_any"].to_pylist()))
        return [DatasetInfo(name, int(count), bool(lab)) for name, count, lab in rows]

    def _check_dataset(self, dataset: str) -> None:
        names = [d.name for d in self.datasets()]
        if dataset not in names:
            raise NotFound(f"unknown dataset {dataset!r}; known datasets: {_preview(names) or 'none'}")

    def prompt_ids(self, dataset: str) -> np.ndarray:
        """Sorted int64 ids of the prompts of ``dataset``."""
        t = self._catalog()
        ids = t["prompt_id"].filter(pc.equal(t["dataset"], dataset)).to_numpy()
        if len(ids) == 0:
            self._check_dataset(dataset)
        return ids

    def prompts(self, dataset: str, offset: int = 0, limit: int = 100) -> list[PromptRecord]:
        """Prompts of ``dataset`` in ascending id order, ``limit`` of them from ``offset``."""
        offset, limit = _as_int(offset, "offset"), _as_int(limit, "limit")
        if offset < 0:
            raise InvalidInput(f"offset must be >= 0, got {offset}")
        if limit < 0:
            raise InvalidInput(f"limit must be >= 0, got {limit}")
        ids = self.prompt_ids(dataset)[offset : offset + limit]
        return self.get_prompts(ids)

    def get_prompts(self, ids: Sequence[int] | np.ndarray) -> list[PromptRecord]:
        """The prompts with these ids, in the order given. Unknown ids raise NotFound."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) == 0:
            return []
        rows = self._catalog().take(self._positions(ids)).to_pylist()
        return [
            PromptRecord(id=r["prompt_id"], dataset=r["dataset"], text=r["text"], label=r["label"],
                         split=r["split"], meta=json.loads(r["meta"]) if r["meta"] else {})
            for r in rows
        ]

    def labels(self, prompt_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Labels of these prompts as float64 (NaN where a prompt has none), in the order given."""
        ids = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        if len(ids) == 0:
            return np.empty(0)
        labels = self._catalog()["label"].take(pa.array(self._positions(ids)))
        return labels.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls -> NaN

    # ----------------------------------------------------------------- models
    def _model_rows(self) -> dict[str, dict[str, Any]]:
        """Rows of the models table by key, cached per table version (a cheap check)."""
        tbl = self._table(MODELS)
        if tbl is None:
            return {}
        version = tbl.version
        cached = self._models_cache
        if cached is None or cached[0] != version:
            cached = self._models_cache = (version, {r["key"]: r for r in self._scan(tbl).to_pylist()})
        return cached[1]

    def _layers_by_model(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for name in self._table_names():
            parsed = parse_acts_table(name)
            if parsed:
                out.setdefault(parsed[0], []).append(parsed[1])
        return {k: sorted(v) for k, v in out.items()}

    @staticmethod
    def _info(row: Mapping[str, Any], layers: Sequence[int]) -> ModelInfo:
        return ModelInfo(
            key=row["key"], source=row["source"] or "", architecture=row["architecture"] or "",
            n_layers=int(row["n_layers"]), d_model=int(row["d_model"]), dtype=row["dtype"],
            revision=row["revision"], site=row["site"] or "resid_post",
            token=row["token"] or "last_non_padding", created_at=row["created_at"],
            layers=tuple(layers),
        )

    def models(self) -> list[ModelInfo]:
        """Every registered model, sorted by key."""
        layers = self._layers_by_model()
        rows = self._model_rows()
        return [self._info(rows[k], layers.get(k, [])) for k in sorted(rows)]

    def model(self, key: str) -> ModelInfo:
        """The model registered under ``key``; NotFound naming the known keys otherwise."""
        rows = self._model_rows()
        if key not in rows:
            raise NotFound(f"unknown model {key!r}; known models: {_preview(sorted(rows)) or 'none'}")
        return self._info(rows[key], self._layers_by_model().get(key, []))

    def _register_model(self, key: str, **fields: Any) -> None:
        row = {name: fields.get(name) for name in MODELS_SCHEMA.names}
        row.update(key=key, created_at=datetime.now(timezone.utc))
        self._table(MODELS, MODELS_SCHEMA).add(pa.Table.from_pylist([row], schema=MODELS_SCHEMA))

    # ------------------------------------------------------------ activations
    def _acts(self, model_key: str, layer: int, *, must_exist: bool = True):
        """(info, layer, table) of one activation table; the hot path of every read and k-NN
        query, so it avoids listing tables unless the layer is missing. ``info.layers`` is
        left empty here."""
        rows = self._model_rows()
        if model_key not in rows:
            self.model(model_key)  # raises NotFound naming the known models
        info = self._info(rows[model_key], ())
        layer = _as_int(layer, "layer")
        if not 0 <= layer < info.n_layers:
            raise InvalidInput(
                f"layer {layer} is out of range for model {model_key!r}: "
                f"allowed 0..{info.n_layers - 1} (or -{info.n_layers}..-1 from the end)"
            )
        tbl = self._table(acts_table(model_key, layer))
        if tbl is None and must_exist:
            stored = self._layers_by_model().get(model_key, [])
            raise NotFound(
                f"model {model_key!r} has no activations stored for layer {layer}; "
                f"stored layers: {_preview(stored) or 'none'}"
            )
        return info, layer, tbl

    def write_activations(
        self,
        model_key: str,
        layer: int,
        prompt_ids: Sequence[int] | np.ndarray,
        vectors: np.ndarray,
        *,
        n_layers: int | None = None,
        source: str | None = None,
        architecture: str | None = None,
        dtype: str | None = None,
        revision: str | None = None,
    ) -> int:
        """Upsert the activations of ``prompt_ids`` at one layer; return the rows written.

        vectors: [n, d_model] floats, one row per prompt id. The first write of a model
        registers it (``n_layers`` required then; d_model is taken from ``vectors``; dtype
        is the storage dtype, ``float16`` unless ``float32`` is asked). Everything is
        validated first; the rows go in as one commit, or nothing is written.
        """
        return self.write_layers(
            model_key, {layer: vectors}, prompt_ids, n_layers=n_layers, source=source,
            architecture=architecture, dtype=dtype, revision=revision,
        )

    def write_layers(
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
    ) -> int:
        """:meth:`write_activations` for several layers of the same prompts.

        All layers are validated before any is written; each layer is one commit.
        Returns the total number of rows written.
        """
        check = check_model_key
        try:
            check(model_key)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        ids = np.asarray(prompt_ids)
        if ids.ndim != 1 or (len(ids) and not np.issubdtype(ids.dtype, np.integer)):
            raise InvalidInput(f"prompt_ids must be a 1-D sequence of integers, got shape {ids.shape} of {ids.dtype}")
        ids = ids.astype(np.int64)
        if not vectors_by_layer:
            raise InvalidInput("no layers given to write")

        with self._write_lock:
            rows = self._model_rows()
            existing = rows.get(model_key)
            if existing is not None:
                L, d, stored_dtype = int(existing["n_layers"]), int(existing["d_model"]), existing["dtype"]
                if n_layers is not None and _as_int(n_layers, "n_layers") != L:
                    raise InvalidInput(f"model {model_key!r} is registered with n_layers={L}, got n_layers={n_layers}")
                if dtype is not None and dtype != stored_dtype:
                    raise InvalidInput(f"model {model_key!r} stores {stored_dtype}; got dtype={dtype!r}")
            else:
                if n_layers is None:
                    raise InvalidInput(f"model {model_key!r} is not registered yet: pass n_layers on its first write")
                L = _as_int(n_layers, "n_layers")
                if L < 1:
                    raise InvalidInput(f"n_layers must be >= 1, got {L}")
                stored_dtype = dtype or "float16"
                if stored_dtype not in STORAGE_DTYPES:
                    raise InvalidInput(f"dtype must be one of {sorted(STORAGE_DTYPES)}, got {stored_dtype!r}")
                d = None

            prepared: list[tuple[int, np.ndarray]] = []
            for layer, vectors in vectors_by_layer.items():
                layer = _as_int(layer, "layer")
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
                        f"non-finite values (NaN or inf) in vectors for layer {layer}, prompt id(s) {_preview(ids[bad])}"
                    )
                if stored_dtype == "float16" and len(X) and np.abs(X).max() > FLOAT16_MAX:
                    raise InvalidInput(
                        f"values up to {float(np.abs(X).max()):.4g} at layer {layer} overflow float16 "
                        f"(max {FLOAT16_MAX:g}); store this model with dtype='float32'"
                    )
                prepared.append((layer, X))

            if len(ids) == 0:
                return 0
            uniq, counts = np.unique(ids, return_counts=True)
            if (counts > 1).any():
                raise InvalidInput(f"duplicate prompt id(s) in one write: {_preview(uniq[counts > 1])}")
            known = self._all_prompt_ids()
            pos = np.clip(np.searchsorted(known, uniq), 0, max(len(known) - 1, 0))
            missing = uniq if len(known) == 0 else uniq[known[pos] != uniq]
            if len(missing):
                raise InvalidInput(f"unknown prompt id(s): {_preview(missing)}; add the prompts first")

            in_order = bool((np.diff(ids) > 0).all())
            order = None if in_order else np.argsort(ids, kind="stable")
            sorted_ids = pa.array(ids if in_order else ids[order], pa.int64())
            written = 0
            for layer, X in prepared:
                batch = pa.table(
                    {"prompt_id": sorted_ids, "vector": vectors_to_arrow(X if in_order else X[order], stored_dtype)},
                    schema=acts_schema(d, stored_dtype),
                )
                self._upsert(acts_table(model_key, layer), batch, acts_schema(d, stored_dtype), ids)
                written += len(ids)
            if existing is None:
                self._register_model(
                    model_key, source=source, revision=revision, architecture=architecture,
                    n_layers=L, d_model=d, dtype=stored_dtype, site="resid_post", token="last_non_padding",
                )
            return written

    def _upsert(self, name: str, batch: pa.Table, schema: pa.Schema, ids: np.ndarray) -> None:
        tbl = self._table(name, schema, ACTS_STORAGE_VERSION)
        present = self._scan(tbl, ["prompt_id"])["prompt_id"].to_numpy()
        if len(present) and np.isin(ids, present).any():
            (tbl.merge_insert("prompt_id").when_matched_update_all().when_not_matched_insert_all().execute(batch))
        else:
            tbl.add(batch)
        self._maybe_compact(tbl)

    def _maybe_compact(self, tbl) -> None:
        if tbl.stats()["fragment_stats"]["num_fragments"] > MAX_FRAGMENTS:
            tbl.optimize(cleanup_older_than=KEEP_VERSIONS_FOR)

    def optimize(self, model_key: str | None = None) -> None:
        """Compact the tables of one model (or all tables) into few fragments."""
        with self._write_lock:
            for name in self._table_names():
                parsed = parse_acts_table(name)
                if model_key is None or (parsed and parsed[0] == model_key):
                    self._table(name).optimize(cleanup_older_than=KEEP_VERSIONS_FOR)

    def stored_prompt_ids(self, model_key: str, layer: int) -> np.ndarray:
        """Sorted ids of the prompts stored for one model and layer (empty if none)."""
        tbl = self._table(acts_table(model_key, int(layer)))
        if tbl is None:
            return np.empty(0, np.int64)
        return np.sort(self._scan(tbl, ["prompt_id"])["prompt_id"].to_numpy())

    def model_prompt_ids(self, model_key: str, dataset: str | None = None) -> np.ndarray:
        """Sorted ids of the prompts stored for every stored layer of a model (optionally in a dataset)."""
        info = self.model(model_key)
        ids: np.ndarray | None = None
        for layer in info.layers:
            layer_ids = self.stored_prompt_ids(model_key, layer)
            ids = layer_ids if ids is None else np.intersect1d(ids, layer_ids, assume_unique=True)
        ids = np.empty(0, np.int64) if ids is None else ids
        if dataset is not None:
            ids = np.intersect1d(ids, self.prompt_ids(dataset), assume_unique=True)
        return ids

    def shared_prompts(self, model_a: str, model_b: str, dataset: str | None = None) -> np.ndarray:
        """Sorted ids of the prompts both models have at every stored layer (optionally in a dataset)."""
        return np.intersect1d(
            self.model_prompt_ids(model_a, dataset), self.model_prompt_ids(model_b, dataset), assume_unique=True
        )

    def table_version(self, model_key: str, layer: int) -> int:
        """Version of one activation table: it changes with every write (cache keys use it)."""
        _, _, tbl = self._acts(model_key, layer)
        return int(tbl.version)

    def read_activations(
        self,
        model_key: str,
        layer: int,
        dataset: str | None = None,
        prompt_ids: Sequence[int] | np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stored activations of one model and layer.

        Returns (ids int64 [n], X float32 [n, d_model], C-contiguous), rows in ascending
        prompt_id order, optionally restricted to a dataset and/or to given prompt ids
        (every given id must be stored for this layer).
        """
        info, layer, tbl = self._acts(model_key, layer)
        wanted = None
        if prompt_ids is not None:
            wanted = np.unique(np.asarray(prompt_ids, dtype=np.int64).reshape(-1))
        if dataset is not None:
            in_ds = self.prompt_ids(dataset)
            wanted = in_ds if wanted is None else np.intersect1d(wanted, in_ds, assume_unique=True)
        if wanted is not None and len(wanted) <= _PUSHDOWN_IDS:
            where = f"prompt_id IN ({','.join(map(str, wanted))})" if len(wanted) else "false"
            t = self._scan(tbl, ["prompt_id", "vector"], where)
        else:
            t = tbl.to_arrow()
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
                asked = np.intersect1d(asked, self.prompt_ids(dataset))
            missing = np.setdiff1d(asked, ids)
            if len(missing):
                raise NotFound(
                    f"prompt id(s) {_preview(missing)} have no activations for model {model_key!r} layer {layer}"
                )
        return ids, X

    # -------------------------------------------------------------------- knn
    def knn(
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
        :mod:`actstore.store.knn` for the score of each metric. Exact search below
        ``ann_threshold`` rows, approximate (exact scores of re-ranked candidates) from it on;
        ``approximate`` forces either.
        """
        info, layer, entry = self._knn_entry(model_key, layer, metric, approximate)
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
        k, allowed = self._knn_k(entry, k, dataset, labelled)
        return knn_mod.search(entry, q, k, metric, excl, allowed)

    def knn_of_prompts(
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
        """:meth:`knn` for stored prompts, each left out of its own answer.

        The query vectors come from the index itself (no table read), which keeps a
        single look-up at the cost of one index search.
        """
        info, layer, entry = self._knn_entry(model_key, layer, metric, approximate)
        pids = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        pos = np.clip(np.searchsorted(entry.ids, pids), 0, max(len(entry.ids) - 1, 0))
        missing = pids[entry.ids[pos] != pids] if len(entry.ids) else pids
        if len(missing):
            raise NotFound(
                f"prompt id(s) {_preview(missing)} have no activations for model {model_key!r} layer {layer}"
            )
        k, allowed = self._knn_k(entry, k, dataset, labelled)
        q = knn_mod.vectors_at(entry, pos)
        return knn_mod.search(entry, q, k, metric, pids, allowed, normalized=True)

    @property
    def ann_threshold(self) -> int:
        """Rows from which a layer's k-NN search is approximate (env ``ACTSTORE_ANN_THRESHOLD``)."""
        return self._knn.ann_threshold

    @ann_threshold.setter
    def ann_threshold(self, rows: int) -> None:
        self._knn.ann_threshold = _as_int(rows, "ann_threshold")

    def knn_graph(self, model_key: str, layer: int, prompt_ids: Sequence[int] | np.ndarray, k: int,
                  *, approximate: bool | None = None, batch: int = 4096) -> np.ndarray:
        """Cosine k-NN graph of the given stored prompts at one layer, by batched index search.

        prompt_ids: [n] distinct stored ids. Returns int64 [n, k]: row i holds positions into
        ``prompt_ids`` of the k prompts nearest to prompt i among ``prompt_ids`` (itself
        left out), best first; -1 where fewer than k exist. Uses the layer's approximate
        index when the table is at least ``ann_threshold`` rows (measure the recall of the
        answer against exact search, e.g. with ``analysis.knn_graph_recall``).
        """
        info, layer, entry = self._knn_entry(model_key, layer, "cosine", approximate)
        pids = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        order = np.argsort(pids, kind="stable")
        sorted_ids = pids[order]
        if len(sorted_ids) > 1 and not (np.diff(sorted_ids) > 0).all():
            raise InvalidInput("prompt_ids must be distinct")
        pos = np.clip(np.searchsorted(entry.ids, sorted_ids), 0, max(len(entry.ids) - 1, 0))
        if len(entry.ids) == 0 or (entry.ids[pos] != sorted_ids).any():
            missing = sorted_ids if len(entry.ids) == 0 else sorted_ids[entry.ids[pos] != sorted_ids]
            raise NotFound(
                f"prompt id(s) {_preview(missing)} have no activations for model {model_key!r} layer {layer}"
            )
        k = _as_int(k, "k")
        if not 1 <= k < len(pids):
            raise InvalidInput(f"k must be between 1 and n - 1 = {len(pids) - 1}, got k={k}")
        allowed = None if len(sorted_ids) == len(entry.ids) else sorted_ids
        out = np.empty((len(pids), k), np.int64)
        for s in range(0, len(pids), batch):
            q = knn_mod.vectors_at(entry, np.searchsorted(entry.ids, pids[s:s + batch]))
            nb, _ = knn_mod.search(entry, q, k, "cosine", pids[s:s + batch], allowed, normalized=True)
            where = np.searchsorted(sorted_ids, np.clip(nb, 0, None))
            out[s:s + batch] = np.where(nb >= 0, order[np.clip(where, 0, len(order) - 1)], -1)
        return out

    def _knn_entry(self, model_key: str, layer: int, metric: str, approximate: bool | None = None):
        if metric not in knn_mod.METRICS:
            raise InvalidInput(f"metric must be one of {list(knn_mod.METRICS)}, got {metric!r}")
        info, layer, tbl = self._acts(model_key, layer)
        name = acts_table(model_key, layer)
        load = lambda: self.read_activations(model_key, layer)  # noqa: E731
        if self._knn.use_ann(int(tbl.count_rows()), approximate):
            return info, layer, self._knn.get_ann(name, int(tbl.version), metric, load)
        entry = self._knn.get(name, int(tbl.version), metric, load)
        return info, layer, entry

    def _knn_k(self, entry, k: int, dataset: str | None, labelled: bool | None = None) -> tuple[int, np.ndarray | None]:
        k = _as_int(k, "k")
        allowed, n = None, len(entry.ids)
        if dataset is not None:
            allowed = np.intersect1d(entry.ids, self.prompt_ids(dataset), assume_unique=True)
            n = len(allowed)
        if labelled is not None:
            pool = entry.ids if allowed is None else allowed
            has = ~np.isnan(self.labels(pool)) if len(pool) else np.zeros(0, bool)
            allowed = pool[has if labelled else ~has]
            n = len(allowed)
        if not 1 <= k < n:
            raise InvalidInput(f"k must be between 1 and n - 1 = {n - 1} (n = {n} stored prompts), got k={k}")
        return k, allowed

    # ---------------------------------------------------------------- results
    def get_result(self, key: str) -> str | None:
        """A cached answer by key, or None."""
        tbl = self._table(RESULTS)
        if tbl is None:
            return None
        t = self._scan(tbl, ["value"], f"key = {_sql_str(key)}")
        return t["value"][0].as_py() if t.num_rows else None

    def put_result(self, key: str, value: str, query: str | None = None) -> None:
        """Cache an answer (JSON text) under ``key``; a second put replaces the first."""
        row = pa.Table.from_pylist(
            [{"key": key, "query": query, "value": value, "created_at": datetime.now(timezone.utc)}],
            schema=RESULTS_SCHEMA,
        )
        with self._write_lock:
            tbl = self._table(RESULTS, RESULTS_SCHEMA)
            tbl.merge_insert("key").when_matched_update_all().when_not_matched_insert_all().execute(row)
            self._maybe_compact(tbl)

    # ------------------------------------------------------------------- saes
    def register_sae(self, model_key: str, layer: int, path: str | Path, root: str | Path | None = None):
        """Copy a SAELens folder into the store as an SAE of one model layer (see
        :func:`actstore.store.saes.register_sae`); with ``root``, only folders under it."""
        from . import saes

        return saes.register_sae(self, model_key, layer, path, root)

    def saes(self, model: str | None = None):
        """Registered SAEs (:class:`actstore.store.saes.SaeRecord`), optionally of one model."""
        from . import saes

        return saes.list_saes(self, model)

    def sae(self, sae_id: str):
        """One registered SAE by id; NotFound otherwise."""
        from . import saes

        return saes.get_sae(self, sae_id)

    def load_sae(self, sae_id: str):
        """(record, {tensor name: float32 ndarray}) of a registered SAE, from the store's copy."""
        from . import saes

        record = saes.get_sae(self, sae_id)
        return record, saes.load_weights(self, record)
