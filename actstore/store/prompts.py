"""The ``prompts`` table: prompt texts by dataset, with int64 ids unique within the store.

Concurrent writers. Any number of processes (CLI ingests, the server's mutations, Ray
workers) may add prompts to one store at once, local or on object storage. Ids come from an
append-only *claims log*, the table ``prompt_claims``: a writer appends one row
``(token: a fresh uuid4, dataset, count, shas)`` naming the texts it is about to add (their
SHA-256) and how many ids it needs, then reads the log back. The log is created with Lance
*stable row ids*: ``_rowid`` is assigned when a commit succeeds, from the manifest's row
counter (a commit that lost a race is rebased and numbered again), so row ids follow commit
order, and compaction keeps them. (Scan order does not: compaction gives rewritten
fragments new, higher fragment ids and Lance sorts fragments by id.) Hence every reader
agrees on the rows before any given row, and a writer's block of ids starts at the sum of
the counts of all rows with a smaller row id. The first row (``token = "seed"``) reserves
the ids a store had before the log existed; it is written in the table's creating commit,
so racing creators cannot both seed it. Blocks of different writers never overlap;
unused ids leave gaps, never collisions.

The same text added to one dataset by two writers at once gets one id: the id of the
earliest claim (smallest row id) naming that text in that dataset wins, every writer looks
for earlier claims of its texts before using its own block, and a writer also stores the
rows of texts it found claimed earlier when they are not stored yet (so a claimer that died
before writing them leaves no returned id without its prompt). Two rows with the same id
hold the same dataset and text; the catalog keeps one of them, deterministically (the
smallest label, split and meta). A text already stored in the dataset keeps its id. Dropping
a dataset appends a ``forget:`` row for it (:meth:`Prompts.forget_claims`): claims before it
give no ids, so a text added again after a drop gets a new id.

This relies on Lance's atomic commits: local folders (no-replace rename), S3 with
conditional writes, GCS, Azure. S3-compatible stores without conditional PUT (``If-None-
Match``) need the ``s3+ddb://`` commit store. Writers of actstore versions from before the
claims log must not write a store at the same time as newer ones.

Every read goes through the *prompt catalog*: the whole table sorted by prompt_id, held in
memory and cached per table version. A prompt read (texts for k-NN answers, labels, dataset
membership) is a searchsorted into it instead of a filtered scan; it costs roughly the size
of the prompt texts in memory. The id set of each dataset and the dataset summary are
cached with the catalog, so they are recomputed only after a write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from actstore.errors import InvalidInput, NotFound

from .checks import as_int, preview
from .tables import Tables, sql_str

__all__ = [
    "PROMPTS",
    "PROMPTS_SCHEMA",
    "PROMPT_CLAIMS",
    "PROMPT_CLAIMS_SCHEMA",
    "DatasetInfo",
    "PromptRecord",
    "Prompts",
]

log = logging.getLogger(__name__)

PROMPTS = "prompts"
PROMPTS_SCHEMA = pa.schema(
    [
        pa.field("prompt_id", pa.int64(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("text_sha256", pa.string(), nullable=False),
        pa.field("label", pa.int64()),
        pa.field("split", pa.string()),
        pa.field("meta", pa.string()),
    ]
)

# The claims log of prompt ids (see the module docstring).
PROMPT_CLAIMS = "prompt_claims"
PROMPT_CLAIMS_SCHEMA = pa.schema(
    [
        pa.field("token", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
        pa.field("shas", pa.list_(pa.binary(32))),
    ]
)
_SEED = "seed"
_FORGET = "forget:"
_CLAIM_ATTEMPTS = 5


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


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _Catalog:
    """The prompts table at one version, sorted by prompt_id, and what is derived from it."""

    def __init__(self, version: int, table: pa.Table):
        self.version = version
        ids = table["prompt_id"].to_numpy()
        if len(ids) > 1 and not (np.diff(ids) > 0).all():  # the same id stored twice (see above)
            order = pc.sort_indices(
                table, sort_keys=[(c, "ascending", "at_end") for c in ("prompt_id", "label", "split", "meta")]
            )
            table = table.take(order)
            ids = table["prompt_id"].to_numpy()
            keep = np.ones(len(ids), dtype=bool)
            keep[1:] = ids[1:] != ids[:-1]
            table = table.filter(pa.array(keep))
            ids = table["prompt_id"].to_numpy()
        self.table = table
        self.ids: np.ndarray = ids  # ascending, unique
        self.ids.flags.writeable = False
        self.by_dataset: dict[str, np.ndarray] = {}
        self._datasets: list[DatasetInfo] | None = None
        self._lock = threading.Lock()

    def datasets(self) -> list[DatasetInfo]:
        if self._datasets is None:
            t = self.table.select(["dataset", "label"])
            if t.num_rows == 0:
                self._datasets = []
            else:
                t = t.append_column("has_label", pc.is_valid(t["label"]))
                g = t.group_by("dataset").aggregate([("dataset", "count"), ("has_label", "any")])
                rows = sorted(
                    zip(g["dataset"].to_pylist(), g["dataset_count"].to_pylist(), g["has_label_any"].to_pylist())
                )
                self._datasets = [DatasetInfo(name, int(count), bool(lab)) for name, count, lab in rows]
        return self._datasets

    def dataset_ids(self, dataset: str) -> np.ndarray:
        with self._lock:
            ids = self.by_dataset.get(dataset)
            if ids is None:
                t = self.table
                ids = t["prompt_id"].filter(pc.equal(t["dataset"], dataset)).to_numpy()
                ids.flags.writeable = False
                self.by_dataset[dataset] = ids
            return ids


class Prompts:
    """The prompts of the store (table ``prompts``)."""

    def __init__(self, tables: Tables):
        self._tables = tables
        self._cache: _Catalog | None = None

    # ------------------------------------------------------------------ write
    def add(
        self,
        dataset: str,
        texts: Sequence[str],
        labels: Sequence[int | None] | None = None,
        meta: Sequence[Mapping[str, Any] | None] | None = None,
        split: str | Sequence[str | None] | None = None,
    ) -> list[int]:
        """Add prompts to ``dataset``; return their int64 ids, one per text, in order.

        A text already in the dataset (same UTF-8 bytes) keeps its id and is not stored again;
        its stored label is left as it is. Validates everything first; new texts get their ids
        from the claims log (one append, safe across processes: see the module docstring),
        then all their rows are written in one commit. A call that fails after its claim
        leaves only unused ids behind.
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
            labels = [None if v is None else as_int(v, f"labels[{i}]") for i, v in enumerate(labels)]
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
        with self._tables.write_lock:
            catalog = self._catalog()
            in_ds = catalog.table.filter(pc.equal(catalog.table["dataset"], dataset))
            known: dict[str, int] = dict(zip(in_ds["text_sha256"].to_pylist(), in_ds["prompt_id"].to_pylist()))
            first: dict[str, int] = {}  # new text -> its first position in `texts`
            for i, sha in enumerate(shas):
                if sha not in known and sha not in first:
                    first[sha] = i
            if first:
                known.update(self._claim(dataset, list(first), catalog))
                # Rows whose id another writer stored meanwhile are not written again.
                claimed = np.array([known[sha] for sha in first], dtype=np.int64)
                stored = np.isin(claimed, self._catalog().ids)
                new_rows = [i for i, done in zip(first.values(), stored) if not done]
                if new_rows:
                    batch = pa.table(
                        {
                            "prompt_id": pa.array([known[shas[i]] for i in new_rows], pa.int64()),
                            "dataset": pa.array([dataset] * len(new_rows), pa.string()),
                            "text": pa.array([texts[i] for i in new_rows], pa.string()),
                            "text_sha256": pa.array([shas[i] for i in new_rows], pa.string()),
                            "label": pa.array([labels[i] if labels else None for i in new_rows], pa.int64()),
                            "split": pa.array([splits[i] for i in new_rows], pa.string()),
                            "meta": pa.array([meta_json[i] for i in new_rows], pa.string()),
                        },
                        schema=PROMPTS_SCHEMA,
                    )
                    self._tables.add(PROMPTS, batch, PROMPTS_SCHEMA)
        return [known[sha] for sha in shas]

    def _claim(self, dataset: str, shas: list[str], catalog: _Catalog) -> dict[str, int]:
        """Ids of the texts ``shas`` (new to ``dataset`` as far as ``catalog`` knows), from the
        claims log: the id an earlier claim gave a text, else one of this claim's block."""
        if self._tables.open(PROMPT_CLAIMS) is None:
            base = int(catalog.ids[-1]) + 1 if len(catalog.ids) else 0
            seed = pa.table(
                {"token": [_SEED], "dataset": [""], "count": [base], "shas": [[]]}, schema=PROMPT_CLAIMS_SCHEMA
            )
            self._tables.create_seeded(PROMPT_CLAIMS, seed, PROMPT_CLAIMS_SCHEMA, stable_row_ids=True)
        token = uuid.uuid4().hex
        row = pa.table(
            {"token": [token], "dataset": [dataset], "count": [len(shas)], "shas": [[bytes.fromhex(s) for s in shas]]},
            schema=PROMPT_CLAIMS_SCHEMA,
        )
        for attempt in range(_CLAIM_ATTEMPTS):
            try:
                self._tables.add(PROMPT_CLAIMS, row, PROMPT_CLAIMS_SCHEMA)
                break
            except (OSError, RuntimeError, ValueError) as exc:  # e.g. too many concurrent commits
                if self._claim_rows(token) is not None:  # committed after all
                    break
                if attempt + 1 == _CLAIM_ATTEMPTS:
                    raise
                log.warning("prompt id claim retried after: %s", exc)
                time.sleep(0.05 * 2**attempt)
        found = self._claim_rows(token)
        if found is None:  # cannot happen after a successful commit (reads see every commit)
            raise RuntimeError(f"prompt id claim {token} is missing from {PROMPT_CLAIMS!r} after its commit")
        rowids, counts, mine = found
        order = np.argsort(rowids, kind="stable")
        starts = dict(zip(rowids[order].tolist(), (np.cumsum(counts[order]) - counts[order]).tolist()))
        wanted = set(shas)
        out: dict[str, int] = {}
        tbl = self._tables.open(PROMPT_CLAIMS)
        earlier = self._tables.scan(
            tbl, ["token", "shas"], f"dataset = {sql_str(dataset)} AND _rowid < {mine}", row_ids=True
        )
        if earlier.num_rows:
            earlier = earlier.take(pc.sort_indices(earlier["_rowid"]))
            forgets = np.flatnonzero(pc.starts_with(earlier["token"], _FORGET).to_numpy(zero_copy_only=False))
            if len(forgets):  # claims before the dataset was last dropped give no ids
                earlier = earlier.slice(int(forgets[-1]) + 1)
            for rid, claimed in zip(earlier["_rowid"].to_pylist(), earlier["shas"].to_pylist()):
                for j, raw in enumerate(claimed or ()):
                    sha = raw.hex()
                    if sha in wanted and sha not in out:
                        out[sha] = int(starts[rid]) + j
        start = int(starts[mine])
        for j, sha in enumerate(shas):
            out.setdefault(sha, start + j)
        return out

    def forget_claims(self, dataset: str) -> None:
        """Mark the claims log so that texts claimed for ``dataset`` so far give no ids to later
        adds (call it when the dataset is dropped: a text added again then gets a new id,
        and no id of a dropped prompt is handed out again). One append; the counts stay."""
        with self._tables.write_lock:
            if self._tables.open(PROMPT_CLAIMS) is None:
                return
            row = pa.table(
                {"token": [_FORGET + uuid.uuid4().hex], "dataset": [dataset], "count": [0], "shas": [[]]},
                schema=PROMPT_CLAIMS_SCHEMA,
            )
            self._tables.add(PROMPT_CLAIMS, row, PROMPT_CLAIMS_SCHEMA)

    def _claim_rows(self, token: str) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(row ids, counts) of the whole claims log and the row id of claim ``token``; None
        when that claim is not in the log."""
        t = self._tables.scan(self._tables.open(PROMPT_CLAIMS), ["token", "count"], row_ids=True)
        hit = pc.index(t["token"], token).as_py()
        if hit < 0:
            return None
        rowids = t["_rowid"].to_numpy()
        return rowids, t["count"].to_numpy(), int(rowids[hit])

    # ------------------------------------------------------------------- read
    def version(self) -> int:
        """Version of the prompts table (changes with every write); -1 when there is none."""
        v = self._tables.version(PROMPTS)
        return -1 if v is None else v

    def _catalog(self, recent: bool = False) -> _Catalog:
        """The prompt catalog at the table's latest version (cached per version); ``recent``:
        at a version checked at most ``Tables.version_check_s`` ago (:meth:`Tables.recent`)."""
        version = self._tables.checked_version(PROMPTS, recent)
        tbl = self._tables.open(PROMPTS)
        version = -1 if tbl is None or version is None else version
        cached = self._cache
        if cached is None or cached.version != version:
            if tbl is None:
                t = PROMPTS_SCHEMA.empty_table()
            else:
                t = self._tables.scan(tbl)
                t = t.take(pc.sort_indices(t["prompt_id"]))
            cached = self._cache = _Catalog(version, t)
        return cached

    def _recent_with(self, ids: np.ndarray) -> _Catalog:
        """The catalog at a version checked at most ``Tables.version_check_s`` ago when it
        holds every one of ``ids`` (stored prompts never change), else at the latest version.
        Reads of stored prompts thus cost no version check per request."""
        catalog = self._catalog(recent=True)
        known = catalog.ids
        if len(known):
            pos = np.clip(np.searchsorted(known, ids), 0, len(known) - 1)
            if (known[pos] == ids).all():
                return catalog
        return self._catalog()

    def _positions(self, catalog: _Catalog, ids: np.ndarray) -> np.ndarray:
        """Rows of the catalog holding these prompt ids; NotFound for unknown ids."""
        all_ids = catalog.ids
        if len(all_ids) == 0:
            if len(ids):
                raise NotFound(f"unknown prompt id(s): {preview(ids)}")
            return np.empty(0, np.int64)
        pos = np.clip(np.searchsorted(all_ids, ids), 0, len(all_ids) - 1)
        found = all_ids[pos] == ids
        if not found.all():
            raise NotFound(f"unknown prompt id(s): {preview(ids[~found])}")
        return pos

    def require(self, ids: Sequence[int] | np.ndarray) -> None:
        """Check that every id is a stored prompt; NotFound naming the unknown ones."""
        self._positions(self._catalog(), np.asarray(ids, dtype=np.int64).reshape(-1))

    def all_ids(self) -> np.ndarray:
        """Sorted ids of every stored prompt (read-only array)."""
        return self._catalog().ids

    def datasets(self) -> list[DatasetInfo]:
        """Every dataset with its prompt count and whether any prompt has a label."""
        return list(self._catalog().datasets())

    def dataset(self, name: str) -> DatasetInfo:
        """One dataset's summary; NotFound naming the known datasets otherwise."""
        infos = self._catalog().datasets()
        for info in infos:
            if info.name == name:
                return info
        names = [d.name for d in infos]
        raise NotFound(f"unknown dataset {name!r}; known datasets: {preview(names) or 'none'}")

    def ids(self, dataset: str) -> np.ndarray:
        """Sorted int64 ids of the prompts of ``dataset`` (read-only array, cached per table
        version); NotFound for an unknown dataset."""
        ids = self._catalog().dataset_ids(dataset)
        if len(ids) == 0:
            self.dataset(dataset)  # raises NotFound naming the known datasets
        return ids

    def page(self, dataset: str, offset: int = 0, limit: int = 100) -> list[PromptRecord]:
        """Prompts of ``dataset`` in ascending id order, ``limit`` of them from ``offset``."""
        offset, limit = as_int(offset, "offset"), as_int(limit, "limit")
        if offset < 0:
            raise InvalidInput(f"offset must be >= 0, got {offset}")
        if limit < 0:
            raise InvalidInput(f"limit must be >= 0, got {limit}")
        ids = self.ids(dataset)[offset : offset + limit]
        return self.get(ids)

    def get(self, ids: Sequence[int] | np.ndarray) -> list[PromptRecord]:
        """The prompts with these ids, in the order given. Unknown ids raise NotFound."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) == 0:
            return []
        catalog = self._recent_with(ids)
        rows = catalog.table.take(self._positions(catalog, ids)).to_pylist()
        return [
            PromptRecord(
                id=r["prompt_id"],
                dataset=r["dataset"],
                text=r["text"],
                label=r["label"],
                split=r["split"],
                meta=json.loads(r["meta"]) if r["meta"] else {},
            )
            for r in rows
        ]

    def labels(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Labels of these prompts as float64 (NaN where a prompt has none), in the order given."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) == 0:
            return np.empty(0)
        catalog = self._recent_with(ids)
        labels = catalog.table["label"].take(pa.array(self._positions(catalog, ids)))
        out: np.ndarray = labels.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls -> NaN
        return out
