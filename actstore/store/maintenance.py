"""Dropping models and datasets, and checking a store: the deletions users need (so nobody
deletes table folders by hand) and ``actstore verify``.

Drops are ordered so that a drop that fails half-way (a killed process, a full disk) loses
nothing else of the store and running it again finishes the job: what other data points at
goes last.

* :meth:`Maintenance.drop_model`: the model's key claims (a key held by a first write that
  died can be dropped), its SAEs (weight folders, then rows), its FAISS index files, its next-token table, its activation tables, its layer-catalog rows, and last
  its row in ``models`` (until then the model is listed, so a retry finds it).
* :meth:`Maintenance.drop_dataset` cascades: the dataset's rows in every activation and
  next-token table of every model, then its prompts (until then the dataset is listed). Models
  stay registered, with the rows of their other datasets (possibly none). Prompt ids are not
  handed out again (the claims log keeps its counts), so no later prompt inherits them.

Row deletions are Lance deletion files: the rows are gone from every read at once and their
bytes are freed when the tables are next compacted. Run drops when no ingest writes the same
model or dataset at the same time.

:meth:`Maintenance.verify` checks what the store can check (see :data:`CHECKS`). Lance itself
guarantees that every commit is atomic (a version's manifest is written with
put-if-not-exists, so a reader sees a whole version or the previous one) and that data files
are immutable once written; it keeps no checksums of data pages, so a flipped bit inside a
data file goes unnoticed by Lance unless it breaks the file's structure. ``verify`` reads every
row of every table (structural damage fails the scan), and checks what actstore adds on top:
every activation vector against the checksum written with it (the ``checksums`` check; see
:mod:`actstore.store.activations`), tables written before checksums counted as "no checksums".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .activations import Activations
from .checks import preview
from .checksums import check_digests
from .knn import Knn
from .knn import files as index_files
from .models import MODEL_LAYERS, MODELS, ModelInfo, Models
from .next_tokens import NEXT_TOKENS_PREFIX, next_tokens_table
from .prompts import PROMPTS, Prompts
from .saes import Saes
from .tables import Tables, acts_table, parse_acts_table, sql_str

__all__ = ["CHECKS", "Check", "DropSummary", "Maintenance"]

_IN_CHUNK = 10_000  # prompt ids per delete predicate

CHECKS = ("tables", "prompts", "references", "vectors", "checksums", "catalog", "indices", "saes")


@dataclass(frozen=True)
class DropSummary:
    """What a drop removed."""

    kind: str  # "model" or "dataset"
    name: str
    tables_dropped: int = 0
    rows_deleted: int = 0
    saes_removed: int = 0
    index_files_removed: int = 0


@dataclass
class Check:
    """The outcome of one check of :meth:`Maintenance.verify`: ``problems`` empty when it passed."""

    name: str
    summary: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        """One line: ``ok   name: summary`` or ``FAIL name: first problems``."""
        if self.ok:
            return f"ok   {self.name}: {self.summary}"
        more = f"; ... ({len(self.problems)} problems)" if len(self.problems) > 3 else ""
        shown = "; ".join(self.problems[:3]) + more
        return f"FAIL {self.name}: {shown}"


class Maintenance:
    """Drops and checks over one store's repositories."""

    def __init__(
        self, tables: Tables, prompts: Prompts, models: Models, activations: Activations, knn: Knn, saes: Saes
    ):
        self._tables = tables
        self._prompts = prompts
        self._models = models
        self._activations = activations
        self._knn = knn
        self._saes = saes

    # ------------------------------------------------------------------- drops
    def _model_tables(self, key: str) -> list[str]:
        return sorted(n for n in self._tables.names() if (parse_acts_table(n) or ("",))[0] == key)

    def drop_model(self, key: str) -> DropSummary:
        """Remove model ``key``: SAEs, FAISS files, next tokens, activation tables, catalog rows
        and last the model row (see the module docstring). NotFound for an unknown key."""
        names = self._model_tables(key)
        if self._models.find(key, layers=False) is None and not names and not self._models.claimed(key):
            self._models.get(key)  # NotFound naming the known models
        nt = next_tokens_table(key)
        with self._tables.write_lock:
            self._models.forget_claims(key)  # first: a later write of another model may claim the key
            saes = self._saes.remove_model(key)
            files = sum(self._knn.indexes.forget(name) for name in names)
            dropped = int(self._tables.drop(nt))
            for name in names:
                dropped += int(self._tables.drop(name))
            self._tables.delete(MODEL_LAYERS, f"model_key = {sql_str(key)}")
            self._tables.delete(MODELS, f"key = {sql_str(key)}")
        return DropSummary("model", key, tables_dropped=dropped, saes_removed=saes, index_files_removed=files)

    def drop_dataset(self, name: str) -> DropSummary:
        """Remove dataset ``name``: its rows in every activation and next-token table, then its
        prompts (see the module docstring). NotFound for an unknown dataset."""
        self._prompts.dataset(name)  # NotFound naming the known datasets
        ids = np.asarray(self._prompts.ids(name), dtype=np.int64)
        deleted = 0
        with self._tables.write_lock:
            for table in self._tables.names():
                if parse_acts_table(table) is None and not table.startswith(NEXT_TOKENS_PREFIX):
                    continue
                tbl = self._tables.open(table)
                if tbl is None:
                    continue
                stored = self._tables.scan(tbl, ["prompt_id"])["prompt_id"].to_numpy()
                hit = np.intersect1d(stored, ids)
                for s in range(0, len(hit), _IN_CHUNK):
                    self._tables.delete(table, f"prompt_id IN ({','.join(map(str, hit[s : s + _IN_CHUNK]))})")
                deleted += len(hit)
            self._prompts.forget_claims(name)  # a text added again later gets a new id
            self._tables.delete(PROMPTS, f"dataset = {sql_str(name)}")
        return DropSummary("dataset", name, rows_deleted=deleted + len(ids))

    # ------------------------------------------------------------------ verify
    def verify(self, on_check: Callable[[Check], None] | None = None) -> list[Check]:
        """Run every check (:data:`CHECKS`), reading every row of every table (one table in
        memory at a time); returns them in order (``on_check`` is called with each as it
        finishes)."""
        out: list[Check] = []

        def done(check: Check) -> None:
            out.append(check)
            if on_check is not None:
                on_check(check)

        tables, prompts, refs, vectors = Check("tables"), Check("prompts"), Check("references"), Check("vectors")
        sums = Check("checksums")
        n_checked = n_unsummed = 0
        unsummed_tables: list[str] = []
        names = sorted(self._tables.names(), key=lambda n: n != PROMPTS)  # prompts first
        infos = {m.key: m for m in self._models.list()}
        known = np.empty(0, np.int64)
        total = n_vectors = 0
        for name in names:
            try:
                tbl = self._tables.open(name)
                if tbl is None:
                    raise RuntimeError("cannot be opened")
                t = tbl.to_arrow()
                counted = int(tbl.count_rows())
                if t.num_rows != counted:
                    raise RuntimeError(f"scanned {t.num_rows} rows of {counted} counted")
            except Exception as exc:  # noqa: BLE001 - a damaged table is a finding, not a crash
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                tables.problems.append(f"{name}: {text}")
                continue
            total += t.num_rows
            if name == PROMPTS:
                known = self._check_prompts(t, prompts)
            elif parse_acts_table(name) or name.startswith(NEXT_TOKENS_PREFIX):
                n_vectors += self._check_rows(name, t, known, infos, refs, vectors)
                if parse_acts_table(name) and t.num_rows:
                    bad, missing = check_digests(name, t, t["vector"].type.list_size)
                    if len(bad):
                        sums.problems.append(
                            f"{name}: stored vectors of prompt id(s) {preview(bad)} do not match "
                            "their checksums (a damaged data file)"
                        )
                    n_checked += t.num_rows - missing
                    if missing:
                        n_unsummed += missing
                        unsummed_tables.append(name)
        tables.summary = f"{len(names)} tables open and scan ({total:,} rows)"
        prompts.summary = f"{len(known):,} prompt ids, none given to two different texts"
        refs.summary = "every activation and next-token row names a known prompt id, once per table"
        vectors.summary = f"{n_vectors:,} activation vectors finite, of their model's dimension"
        sums.summary = f"{n_checked:,} activation vectors match their checksums"
        if n_unsummed:
            sums.summary += (
                f"; no checksums for {n_unsummed:,} rows in {len(unsummed_tables)} table(s) written "
                f"before checksums ({preview(unsummed_tables, 3)}; their next write adds them)"
            )
        for check in (tables, prompts, refs, vectors, sums):
            done(check)
        done(self._check_catalog(names, infos))

        indices = Check("indices")
        digests = self._knn.indexes.digest_files()
        for path in digests:
            problem = index_files.verify(path)
            if problem is not None:
                indices.problems.append(f"{problem} (rebuilt on next use)")
        indices.summary = f"{len(digests)} persisted FAISS indices match their SHA-256"
        done(indices)

        saes = Check("saes")
        records = self._saes.list()
        for r in records:
            if r.model_key not in infos:
                saes.problems.append(f"SAE {r.sae_id} belongs to no registered model ({r.model_key!r})")
            problem = self._saes.check(r)
            if problem is not None:
                saes.problems.append(problem)
        saes.summary = f"{len(records)} stored SAE weights match their recorded SHA-256"
        done(saes)
        return out

    @staticmethod
    def _check_prompts(t: pa.Table, check: Check) -> np.ndarray:
        """Known prompt ids (sorted, unique). Two rows may share an id only with the same
        dataset and text (two writers storing one claimed text; the catalog keeps one)."""
        pid = t["prompt_id"].to_numpy()
        known = np.unique(pid)
        if len(known) != len(pid):
            rows = pa.table({"id": t["prompt_id"], "ds": t["dataset"], "sha": t["text_sha256"]})
            distinct = rows.group_by(["id", "ds", "sha"]).aggregate([]).group_by("id").aggregate([("ds", "count")])
            clash = distinct.filter(pc.greater(distinct["ds_count"], 1))["id"].to_numpy()
            if len(clash):
                check.problems.append(f"prompt id(s) {preview(np.sort(clash))} name different texts")
        return known

    @staticmethod
    def _check_rows(
        name: str, t: pa.Table, known: np.ndarray, infos: dict[str, ModelInfo], refs: Check, vectors: Check
    ) -> int:
        """Reference and vector checks of one activation or next-token table; its vector count."""
        ids = t["prompt_id"].to_numpy()
        uniq = np.unique(ids)
        if len(uniq) != len(ids):
            refs.problems.append(f"{name}: prompt id(s) stored twice")
        missing = np.setdiff1d(uniq, known, assume_unique=True)
        if len(missing):
            refs.problems.append(f"{name}: {len(missing)} row(s) of unknown prompt id(s) {preview(missing)}")
        parsed = parse_acts_table(name)
        if parsed is None or t.num_rows == 0:
            return 0
        col = t["vector"].combine_chunks()
        width = col.type.list_size
        info = infos.get(parsed[0])
        if info is not None and width != info.d_model:
            vectors.problems.append(
                f"{name}: vectors of dimension {width}, model {parsed[0]!r} has d_model={info.d_model}"
            )
        flat = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), width)
        bad = ~np.isfinite(flat).all(axis=1)
        if bad.any():
            vectors.problems.append(f"{name}: non-finite values in prompt id(s) {preview(ids[bad])}")
        return len(ids)

    @staticmethod
    def _check_catalog(names: list[str], infos: dict[str, ModelInfo]) -> Check:
        """The models table and layer catalog against the tables that exist."""
        check = Check("catalog")
        present = set(names)
        for name in names:
            parsed = parse_acts_table(name)
            if parsed is None:
                if name.startswith(NEXT_TOKENS_PREFIX) and name[len(NEXT_TOKENS_PREFIX) :] not in infos:
                    check.problems.append(f"table {name} belongs to no registered model")
                continue
            key, layer = parsed
            info = infos.get(key)
            if info is None:
                check.problems.append(f"table {name} belongs to no registered model")
            elif layer >= info.n_layers:
                check.problems.append(f"table {name}: layer {layer} out of range (n_layers={info.n_layers})")
            elif layer not in info.layers:
                check.problems.append(f"table {name} is missing from the layer catalog of {key!r}")
        for key, info in sorted(infos.items()):
            absent = [layer for layer in info.layers if acts_table(key, layer) not in present]
            if absent:
                check.problems.append(f"model {key!r}: catalogued layer(s) {preview(absent)} have no table")
        check.summary = f"{len(infos)} models agree with the layer catalog and the tables"
        return check
