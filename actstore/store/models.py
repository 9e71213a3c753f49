"""The ``models`` table (one row per stored model) and the layer catalog ``model_layers``.

The layer catalog says which layers of a model have an activation table, so that listing a
model's layers needs no listing of the database's tables. It is a table of
``(model_key, layer)`` rows, appended (never updated) in the same write call that first
stores a layer (:meth:`Models.add_layers`, called by ``Activations.write`` after the layer's
rows are committed; a write that finds its layer missing from the catalog appends it, so a
write interrupted between the two commits is repaired by the next write of that layer).
Appends commute, so writers in several processes never lose each other's entries (a
read-modify-write of a per-model ``layers`` column would); duplicates are dropped on read.

Fingerprints. A model row records ``fingerprint``: a digest of the weights, the tokenizer
and the extraction spec the activations came from (made by the ingest,
:mod:`actstore.ingest.fingerprint`). :meth:`Models.check_write` refuses (with
:class:`~actstore.errors.Conflict`) a write under a key whose stored fingerprint differs, so
two different models never end up under one key. A write without a fingerprint onto a
fingerprinted model is allowed only with the same ``source`` as the stored one (an
``actstore import`` of more arrays of that source); a fingerprinted write onto a model
stored without one (older stores, imports) records its fingerprint when the sources agree
and is refused otherwise. Stores whose models table predates the column get it (empty) on
their next model write; reading them needs nothing. The same holds for ``quantization``
(the weight format of a GGUF source, e.g. ``Q4_1``; empty for unquantized weights) and
``chat_template`` (whether prompts were wrapped in the tokenizer's chat template; empty reads
as False). ``token`` is the token site (``last``, ``first`` or ``mean``; older stores wrote
``last_non_padding``, read as ``last``).

Claiming a new key. The first write of a model claims its key before it writes any row
(:meth:`Models.claim`): it appends ``(token, key, source, fingerprint, n_layers, d_model,
dtype)`` to the append-only log ``model_claims`` (created with Lance stable row ids, so row ids
follow commit order, as for the prompt claims of :mod:`actstore.store.prompts`) and reads the
log back. The earliest claim of the key wins: a writer of the same model (same fingerprint; or,
without fingerprints, the same source) and shape goes on, any other gets
:class:`~actstore.errors.Conflict` and writes nothing. So of two first writes of different
models under one new key at the same moment in two processes, exactly one stores its rows.
A claim whose writer died before registering the model keeps the key for that model until
the key is dropped (:meth:`Models.forget_claims`, called by ``drop_model``).

Both tables are read whole and cached per table version: :meth:`Models.get` costs one
version check per table after the first read. A store written before the catalog existed
(no ``model_layers`` table) lists its table names instead, on every call, until its next
activation write creates the catalog, seeded from those names.
"""

from __future__ import annotations

import builtins
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from actstore.errors import Conflict, NotFound

from .checks import preview
from .tables import Tables, parse_acts_table, sql_str

log = logging.getLogger(__name__)

__all__ = [
    "MODELS",
    "MODELS_SCHEMA",
    "MODEL_CLAIMS",
    "MODEL_CLAIMS_SCHEMA",
    "MODEL_LAYERS",
    "MODEL_LAYERS_SCHEMA",
    "ModelInfo",
    "Models",
    "short_fingerprint",
]

MODELS = "models"
MODEL_LAYERS = "model_layers"
MODEL_CLAIMS = "model_claims"
# A row of the claims log that releases every earlier claim of its key (a drop).
_FORGET = "forget:"
# The marker row the claims log is created with (no key is empty: it names no claim).
_SEED = "seed"
_CLAIM_ATTEMPTS = 5

MODEL_CLAIMS_SCHEMA = pa.schema(
    [
        pa.field("token", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("fingerprint", pa.string()),
        pa.field("n_layers", pa.int64()),
        pa.field("d_model", pa.int64()),
        pa.field("dtype", pa.string()),
    ]
)

MODELS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("revision", pa.string()),
        pa.field("architecture", pa.string()),
        pa.field("n_layers", pa.int64(), nullable=False),
        pa.field("d_model", pa.int64(), nullable=False),
        pa.field("dtype", pa.string(), nullable=False),
        pa.field("site", pa.string()),
        pa.field("token", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("fingerprint", pa.string()),
        pa.field("quantization", pa.string()),
        pa.field("chat_template", pa.bool_()),
    ]
)

MODEL_LAYERS_SCHEMA = pa.schema(
    [
        pa.field("model_key", pa.string(), nullable=False),
        pa.field("layer", pa.int64(), nullable=False),
    ]
)


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
    token: str = "last"
    created_at: datetime | None = None
    layers: tuple[int, ...] = ()
    fingerprint: str | None = None
    quantization: str | None = None
    chat_template: bool = False


# Token sites as older stores wrote them (one name only: "last_non_padding" = "last").
_OLD_TOKEN_NAMES = {"last_non_padding": "last"}


def _info(row: dict[str, Any]) -> ModelInfo:
    return ModelInfo(
        key=row["key"],
        source=row["source"] or "",
        architecture=row["architecture"] or "",
        n_layers=int(row["n_layers"]),
        d_model=int(row["d_model"]),
        dtype=row["dtype"],
        revision=row["revision"],
        site=row["site"] or "resid_post",
        token=_OLD_TOKEN_NAMES.get(row["token"] or "last", row["token"] or "last"),
        created_at=row["created_at"],
        fingerprint=row.get("fingerprint"),
        quantization=row.get("quantization"),
        chat_template=bool(row.get("chat_template")),
    )


def short_fingerprint(fingerprint: str | None) -> str:
    """A fingerprint for messages: at most 30 characters (an ingest's fingerprint is
    ``weights-tokenizer-spec``, 30 characters, whole); 'none' when there is none."""
    return fingerprint[:30] if fingerprint else "none"


def _differences(a: str, b: str) -> str:
    """' (different weights and tokenizer)' for two ``weights-tokenizer-spec`` fingerprints."""
    pa_, pb = a.split("-"), b.split("-")
    if len(pa_) != 3 or len(pb) != 3:
        return ""
    names = [n for n, x, y in zip(("weights", "tokenizer", "extraction spec"), pa_, pb) if x != y]
    return f" (different {' and '.join(names)})" if names else ""


class Models:
    """The stored models and their layer catalog."""

    def __init__(self, tables: Tables):
        self._tables = tables
        self._rows_cache: tuple[int, dict[str, ModelInfo]] | None = None  # layers left empty
        self._layers_cache: tuple[int, dict[str, tuple[int, ...]]] | None = None
        self._full_cache: tuple[tuple[int, int], dict[str, ModelInfo]] | None = None

    # ------------------------------------------------------------------- read
    def version(self) -> int:
        """Changes with every write to the models table or the layer catalog; -1 when no
        model is stored. (The sum of the two tables' versions: each only grows.)"""
        mv = self._tables.version(MODELS)
        if mv is None:
            return -1
        return mv + (self._tables.version(MODEL_LAYERS) or 0)

    def _rows(self, recent: bool = False) -> tuple[int, dict[str, ModelInfo]]:
        """(models-table version, registered models by key with ``layers`` empty), cached per
        version; version -1 when there is no table. ``recent``: the version may be up to
        ``Tables.version_check_s`` old (:meth:`Tables.recent`)."""
        version = self._tables.checked_version(MODELS, recent)
        tbl = self._tables.open(MODELS)
        if tbl is None or version is None:
            return -1, {}
        cached = self._rows_cache
        if cached is None or cached[0] != version:
            rows = self._tables.scan(tbl).to_pylist()
            # Two first writes of one key in two processes at once can both register it: the
            # earliest registration is the model (the same answer in every reader).
            rows.sort(
                key=lambda r: (
                    r["created_at"] is None,
                    r["created_at"] or 0,
                    r.get("fingerprint") or "",
                    r["source"] or "",
                ),
                reverse=True,
            )
            cached = self._rows_cache = (version, {r["key"]: _info(r) for r in rows})
        return cached

    def _listed_layers(self) -> dict[str, tuple[int, ...]]:
        """Stored layers by model from the activation tables' names (no catalog needed)."""
        out: dict[str, set[int]] = {}
        for name in self._tables.names():
            parsed = parse_acts_table(name)
            if parsed:
                out.setdefault(parsed[0], set()).add(parsed[1])
        return {k: tuple(sorted(v)) for k, v in out.items()}

    def _catalog(self, recent: bool = False) -> tuple[int | None, dict[str, tuple[int, ...]]]:
        """(catalog version, stored layers by model); version None for a store without a
        catalog, whose layers come from the table names. ``recent`` as in :meth:`_rows`."""
        version = self._tables.checked_version(MODEL_LAYERS, recent)
        tbl = self._tables.open(MODEL_LAYERS)
        if tbl is None or version is None:
            return None, self._listed_layers()
        cached = self._layers_cache
        if cached is None or cached[0] != version:
            t = self._tables.scan(tbl)
            out: dict[str, set[int]] = {}
            for key, layer in zip(t["model_key"].to_pylist(), t["layer"].to_pylist()):
                out.setdefault(key, set()).add(int(layer))
            cached = self._layers_cache = (version, {k: tuple(sorted(v)) for k, v in out.items()})
        return cached

    def _infos(self, recent: bool = False) -> dict[str, ModelInfo]:
        """Registered models by key with their stored layers, cached per pair of versions."""
        mv, rows = self._rows(recent)
        if not rows:
            return {}
        lv, layers = self._catalog(recent)
        if lv is None:
            return {k: replace(info, layers=layers.get(k, ())) for k, info in rows.items()}
        cached = self._full_cache
        if cached is None or cached[0] != (mv, lv):
            full = {k: replace(info, layers=layers.get(k, ())) for k, info in rows.items()}
            cached = self._full_cache = ((mv, lv), full)
        return cached[1]

    def list(self) -> builtins.list[ModelInfo]:
        """Every registered model, sorted by key."""
        infos = self._infos()
        return [infos[k] for k in sorted(infos)]

    def get(self, key: str, *, recent: bool = False) -> ModelInfo:
        """The model registered under ``key``; NotFound naming the known keys otherwise.
        ``recent=True``: from catalogs up to ``Tables.version_check_s`` old (a key they lack
        is looked up afresh)."""
        info = self.find(key, recent=recent)
        if info is None and recent:
            info = self.find(key)
        if info is None:
            raise NotFound(f"unknown model {key!r}; known models: {preview(sorted(self._rows()[1])) or 'none'}")
        return info

    def find(self, key: str, *, layers: bool = True, recent: bool = False) -> ModelInfo | None:
        """The model registered under ``key``, or None. ``layers=False`` leaves
        ``info.layers`` empty and skips the layer catalog (one version check: the hot path
        of every activation read). ``recent=True``: from catalogs up to
        ``Tables.version_check_s`` old (no version check within that time)."""
        if not layers:
            return self._rows(recent)[1].get(key)
        return self._infos(recent).get(key)

    # ------------------------------------------------------------------ write
    def check_write(self, info: ModelInfo, fingerprint: str | None, source: str | None) -> bool:
        """Whether a write of ``source`` with ``fingerprint`` may add rows to the stored model
        ``info``: raises :class:`Conflict` naming both sources and the ``--key`` to use when
        it may not; returns True when the write's fingerprint should be recorded (the model
        has none yet and the sources agree)."""
        stored, given = info.fingerprint, fingerprint
        here = source or "this model"
        if stored and given:
            if stored == given:
                return False
            raise Conflict(
                f"model key {info.key!r} holds activations of {info.source or 'an unknown source'} "
                f"(fingerprint {short_fingerprint(stored)}); {here} has fingerprint "
                f"{short_fingerprint(given)}{_differences(stored, given)}: ingest it under another "
                "key",
                field="key",
                value=info.key,
                allowed="a key not holding another model",
            )
        same_source = bool(source) and source == info.source
        if stored and not same_source:
            raise Conflict(
                f"model key {info.key!r} holds activations of {info.source or 'an unknown source'} "
                f"(fingerprint {short_fingerprint(stored)}); a write from {source or 'an unnamed source'} "
                "without a fingerprint cannot be checked against it: ingest the model (which "
                "fingerprints it) or store it under another key",
                field="key",
                value=info.key,
                allowed="a key not holding another model",
            )
        if given and not stored:
            if info.source and not same_source:
                raise Conflict(
                    f"model key {info.key!r} holds activations of {info.source} (stored without a "
                    f"fingerprint); {here} has fingerprint {short_fingerprint(given)} and cannot be "
                    "shown to be the same model: ingest it under another key",
                    field="key",
                    value=info.key,
                    allowed="a key not holding another model",
                )
            return True
        return False

    def claim(
        self, key: str, *, source: str | None, fingerprint: str | None, n_layers: int, d_model: int, dtype: str
    ) -> None:
        """Claim ``key`` for the first write of a model (see the module docstring): returns
        when the earliest live claim of ``key`` is this model's (this one, or an earlier one
        of the same model and shape), raises :class:`Conflict` naming the other model when it
        is not. One append and one read of the claims log; call it before writing any row."""
        token = uuid.uuid4().hex
        row = pa.Table.from_pylist(
            [
                {
                    "token": token,
                    "key": key,
                    "source": source,
                    "fingerprint": fingerprint,
                    "n_layers": n_layers,
                    "d_model": d_model,
                    "dtype": dtype,
                }
            ],
            schema=MODEL_CLAIMS_SCHEMA,
        )
        if self._tables.open(MODEL_CLAIMS) is None:
            # Created with a marker row (the same from every creator: a creation that loses a
            # race loses nothing); each claim is then an append, which Lance never drops.
            seed = pa.Table.from_pylist([{"token": _SEED, "key": ""}], schema=MODEL_CLAIMS_SCHEMA)
            self._tables.create_seeded(MODEL_CLAIMS, seed, MODEL_CLAIMS_SCHEMA, stable_row_ids=True)
        for attempt in range(_CLAIM_ATTEMPTS):
            try:
                self._tables.add(MODEL_CLAIMS, row, MODEL_CLAIMS_SCHEMA)
                break
            except (OSError, RuntimeError, ValueError) as exc:  # e.g. too many concurrent commits
                if self._claims(key, token):  # committed after all
                    break
                if attempt + 1 == _CLAIM_ATTEMPTS:
                    raise
                log.warning("model key claim retried after: %s", exc)
                time.sleep(0.05 * 2**attempt)
        live = self._claims(key)
        if not any(r["token"] == token for r in live):  # cannot happen after a successful commit
            raise RuntimeError(f"model key claim {token} is missing from {MODEL_CLAIMS!r} after its commit")
        first = live[0]
        if first["token"] == token:
            return
        same_model = (
            first["fingerprint"] == fingerprint
            if first["fingerprint"] and fingerprint
            else (first["source"] or None) == (source or None)
        )
        same_shape = (first["n_layers"], first["d_model"], first["dtype"]) == (n_layers, d_model, dtype)
        if not (same_model and same_shape):
            raise Conflict(
                f"model key {key!r} is claimed by a write of {first['source'] or 'an unnamed source'} "
                f"(fingerprint {short_fingerprint(first['fingerprint'])}, n_layers={first['n_layers']}, "
                f"d_model={first['d_model']}, dtype={first['dtype']}) that started first; {source or 'this write'} "
                f"(fingerprint {short_fingerprint(fingerprint)}, n_layers={n_layers}, d_model={d_model}, "
                f"dtype={dtype}) was not written: store it under another key (if no such write is running, "
                "drop the model key first)"
            )

    def _claims(self, key: str, token: str | None = None) -> builtins.list[dict[str, Any]]:
        """The live claims of ``key`` (after its last forget row), earliest first; with
        ``token``, only that claim (empty when it is not in the log)."""
        tbl = self._tables.open(MODEL_CLAIMS)
        if tbl is None:
            return []
        where = f"key = {sql_str(key)}" + (f" AND token = {sql_str(token)}" if token else "")
        rows: list[dict[str, Any]] = self._tables.scan(tbl, MODEL_CLAIMS_SCHEMA.names, where, row_ids=True).to_pylist()
        rows.sort(key=lambda r: r["_rowid"])
        forgets = [i for i, r in enumerate(rows) if r["token"].startswith(_FORGET)]
        return rows[forgets[-1] + 1 :] if forgets else rows

    def claimed(self, key: str) -> bool:
        """Whether a live claim holds ``key`` (a first write under way, or one that died)."""
        return bool(self._claims(key))

    def forget_claims(self, key: str) -> None:
        """Release every claim of ``key`` so far (one append; nothing without a claims log).
        Callers hold ``tables.write_lock``."""
        if self._tables.open(MODEL_CLAIMS) is None:
            return
        row = pa.Table.from_pylist([{"token": _FORGET + uuid.uuid4().hex, "key": key}], schema=MODEL_CLAIMS_SCHEMA)
        self._tables.add(MODEL_CLAIMS, row, MODEL_CLAIMS_SCHEMA)

    def register(self, key: str, **fields: Any) -> None:
        """Add the row of a new model (fields: the columns of :data:`MODELS_SCHEMA`).
        Callers hold ``tables.write_lock``."""
        row = {name: fields.get(name) for name in MODELS_SCHEMA.names}
        row.update(key=key, created_at=datetime.now(UTC))
        self._ensure_columns()
        self._tables.add(MODELS, pa.Table.from_pylist([row], schema=MODELS_SCHEMA), MODELS_SCHEMA)

    def set_fingerprint(self, key: str, fingerprint: str) -> None:
        """Record the fingerprint of the stored model ``key`` (one commit). Callers hold
        ``tables.write_lock``."""
        self._ensure_columns()
        tbl = self._tables.open(MODELS)
        tbl.update(where=f"key = {sql_str(key)}", values={"fingerprint": fingerprint})

    def _ensure_columns(self) -> None:
        """Add the columns a models table written by an older actstore lacks (empty)."""
        tbl = self._tables.open(MODELS)
        if tbl is None:
            return
        missing = [f for f in MODELS_SCHEMA if f.name not in tbl.schema.names]
        if missing:
            tbl.add_columns(missing)

    def add_layers(self, key: str, layers: Iterable[int]) -> None:
        """Record that ``key`` has activation tables for ``layers`` (those not catalogued yet,
        in one append). The first call on a store without a catalog creates it, seeded with
        every activation table's name. Callers hold ``tables.write_lock``."""
        wanted = sorted({int(l) for l in layers})
        version, known = self._catalog()
        if version is None:  # seed the catalog from the table names (which include these layers)
            seed = {(k, l) for k, ls in known.items() for l in ls} | {(key, l) for l in wanted}
            rows = sorted(seed)
        else:
            have = set(known.get(key, ()))
            rows = [(key, l) for l in wanted if l not in have]
        if not rows:
            return
        batch = pa.table(
            {
                "model_key": pa.array([k for k, _ in rows], pa.string()),
                "layer": pa.array([l for _, l in rows], pa.int64()),
            },
            schema=MODEL_LAYERS_SCHEMA,
        )
        self._tables.add(MODEL_LAYERS, batch, MODEL_LAYERS_SCHEMA)
