"""The SAE registry (table ``saes``): SAE folders checked, copied into the store, listed.

Registering reads and checks an SAE folder in any supported layout
(:mod:`actstore.store.sae_folders` and :mod:`actstore.store.sae_formats`: SAELens, Gemma
Scope, Gemma Scope 2, Llama Scope, sparsify, dictionary_learning; the supported
architectures; the path rule) or a SAELens registry entry, then copies the weights (only the
tensors encoding and decoding need, in SAELens orientation) and the layout's config into the
store (:mod:`actstore.store.sae_weights`: a folder of a local store, a Lance table of a store
on object storage), so the store stays self-contained, and adds one row to the ``saes``
table. A failure leaves nothing behind.
"""

from __future__ import annotations

import builtins
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from actstore.errors import InvalidInput, NotFound

from .models import ModelInfo, Models
from .sae_folders import read_folder
from .sae_formats.saelens_registry import read_release
from .sae_weights import SaeWeights
from .tables import Tables, sql_str

__all__ = ["SAES", "SAES_SCHEMA", "SaeRecord", "Saes", "tensors_sha256"]

SAES = "saes"

SAES_SCHEMA = pa.schema(
    [
        pa.field("sae_id", pa.string(), nullable=False),
        pa.field("model_key", pa.string(), nullable=False),
        pa.field("layer", pa.int64(), nullable=False),
        pa.field("d_in", pa.int64(), nullable=False),
        pa.field("d_sae", pa.int64(), nullable=False),
        pa.field("architecture", pa.string(), nullable=False),
        pa.field("cfg", pa.string(), nullable=False),
        pa.field("weights_path", pa.string(), nullable=False),
        pa.field("weights_sha256", pa.string(), nullable=False),
        pa.field("source_path", pa.string()),
        pa.field("notes", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class SaeRecord:
    """One registered SAE. ``architecture`` uses SAELens' names ("standard", "jumprelu",
    "topk"; records written before read "relu" and are reported as "standard"). ``cfg`` is the
    normalised config (architecture, k, apply_b_dec_to_input, normalize_activations,
    norm_scaling_factor, hook_name, hook_layer, layout, format, original); ``weights_path`` is
    relative to the store folder."""

    sae_id: str
    model_key: str
    layer: int
    d_in: int
    d_sae: int
    architecture: str
    cfg: dict[str, Any]
    weights_path: str
    weights_sha256: str
    source_path: str | None
    notes: str | None
    created_at: datetime | None


def tensors_sha256(tensors: dict[str, Any]) -> str:
    """SHA-256 of a set of torch tensors: names (sorted), dtypes, shapes and bytes. An SAE's
    ``weights_sha256`` (and the tail of its id) is this digest of its stored tensors."""
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(name.encode() + str(t.dtype).encode() + str(list(t.shape)).encode())
        h.update(t.contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()


_LEGACY_ARCH = {"relu": "standard"}  # names stored by earlier versions -> SAELens' names


def _record(row: dict[str, Any]) -> SaeRecord:
    cfg = json.loads(row["cfg"])
    arch = _LEGACY_ARCH.get(row["architecture"], row["architecture"])
    if isinstance(cfg, dict) and "architecture" in cfg:
        cfg["architecture"] = _LEGACY_ARCH.get(cfg["architecture"], cfg["architecture"])
    return SaeRecord(
        sae_id=row["sae_id"],
        model_key=row["model_key"],
        layer=int(row["layer"]),
        d_in=int(row["d_in"]),
        d_sae=int(row["d_sae"]),
        architecture=arch,
        cfg=cfg,
        weights_path=row["weights_path"],
        weights_sha256=row["weights_sha256"],
        source_path=row["source_path"],
        notes=row["notes"],
        created_at=row["created_at"],
    )


class Saes:
    """The SAEs registered in the store."""

    def __init__(self, tables: Tables, models: Models):
        self._tables = tables
        self._models = models
        #: the stored copies of the weights (a folder per SAE, or a Lance table on object storage)
        self.weights = SaeWeights(tables)

    def list(self, model: str | None = None) -> builtins.list[SaeRecord]:
        """Registered SAEs (optionally of one model), by model, layer, then registration time."""
        tbl = self._tables.open(SAES)
        if tbl is None:
            if model is not None:
                self._models.get(model)
            return []
        rows = [_record(r) for r in self._tables.scan(tbl).to_pylist()]
        if model is not None:
            self._models.get(model)  # NotFound for an unknown model
            rows = [r for r in rows if r.model_key == model]
        epoch = datetime.min.replace(tzinfo=UTC)
        return sorted(rows, key=lambda r: (r.model_key, r.layer, r.created_at or epoch, r.sae_id))

    def get(self, sae_id: str) -> SaeRecord:
        """The SAE registered under ``sae_id``; NotFound naming some known ids otherwise."""
        records = self.list()
        for r in records:
            if r.sae_id == str(sae_id):
                return r
        known = [r.sae_id for r in records]
        shown = ", ".join(known[:10]) + (" ..." if len(known) > 10 else "")
        raise NotFound(f"unknown SAE id {str(sae_id)!r}; registered SAEs: {shown or 'none'}")

    def load(self, sae_id: str) -> tuple[SaeRecord, dict[str, np.ndarray]]:
        """(record, {tensor name: float32 ndarray}) of a registered SAE, from the store's copy."""
        record = self.get(sae_id)
        return record, self.weights.read_float32(record.sae_id, record.weights_path)

    def check(self, record: SaeRecord) -> str | None:
        """None when the stored weights of ``record`` match its recorded SHA-256, else what is wrong."""
        try:
            tensors = self.weights.read(record.sae_id, record.weights_path)
        except NotFound:
            return f"SAE {record.sae_id}: weights file {record.weights_path} is missing"
        try:
            got = tensors_sha256(tensors)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a finding, not a crash
            return f"SAE {record.sae_id}: weights file {record.weights_path} is unreadable ({exc})"
        if got != record.weights_sha256:
            return (
                f"SAE {record.sae_id}: weights SHA-256 {got[:12]}... differs from the recorded "
                f"{record.weights_sha256[:12]}..."
            )
        return None

    def remove_model(self, model_key: str) -> int:
        """Remove every SAE of ``model_key``: weight folders first, then the rows (a retry after
        a failure in between finds the rows and finishes). Returns the SAEs removed. Callers
        hold ``tables.write_lock``."""
        tbl = self._tables.open(SAES)
        if tbl is None:
            return 0
        ids = self._tables.scan(tbl, ["sae_id"], f"model_key = {sql_str(model_key)}")["sae_id"].to_pylist()
        self.weights.remove(ids)
        if ids:
            self._tables.delete(SAES, f"model_key = {sql_str(model_key)}")
        return len(ids)

    def register(self, model_key: str, layer: int, path: str | Path, root: str | Path | None = None) -> SaeRecord:
        """Read, check and copy an SAE folder (any supported layout) into the store as an SAE
        of ``model_key`` at ``layer`` (negative counts from the end); returns its record.

        Checks: the model exists, the layer is in range, d_in equals the model's d_model, the
        architecture is supported, shapes agree with the config, the sizes fit in memory; with
        ``root``, the folder and its files resolve inside it (only folders under it can be
        registered). Registering the same weights for the same model and layer again returns
        the existing record.
        """
        info, lay = self._layer(model_key, layer)
        cfg, tensors, folder = read_folder(path, root)
        return self._add(info, model_key, lay, cfg, tensors, str(folder))

    def register_release(self, model_key: str, layer: int, release: str, sae_id: str) -> SaeRecord:
        """Register SAELens registry entry ``release`` / ``sae_id`` (resolved and downloaded by
        the sae-lens package, with the registry's norm_scaling_factor and config overrides) as
        an SAE of ``model_key`` at ``layer``; the same checks and copy as :meth:`register`."""
        for name, v in (("release", release), ("sae_id", sae_id)):
            if not isinstance(v, str) or not v.strip():
                raise InvalidInput(f"{name} must be a non-empty string, got {v!r}")
        info, lay = self._layer(model_key, layer)
        cfg, tensors, source = read_release(release.strip(), sae_id.strip())
        return self._add(info, model_key, lay, cfg, tensors, source)

    def _layer(self, model_key: str, layer: int) -> tuple[ModelInfo, int]:
        info = self._models.get(model_key)
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
            raise InvalidInput(f"layer must be an integer, got {layer!r}")
        L = info.n_layers
        lay = int(layer) + L if layer < 0 else int(layer)
        if not 0 <= lay < L:
            raise InvalidInput(f"layer {layer} is out of range for model {model_key!r}: allowed 0..{L - 1} or -{L}..-1")
        return info, lay

    def _add(
        self, info: ModelInfo, model_key: str, lay: int, cfg: dict[str, Any], tensors: dict[str, Any], source: str
    ) -> SaeRecord:
        if cfg["d_in"] != info.d_model:
            raise InvalidInput(
                f"SAE d_in = {cfg['d_in']} does not match d_model = {info.d_model} of model "
                f"{model_key!r} (layer {lay}); this SAE was trained on other activations"
            )
        notes = list(cfg.get("notes") or [])
        if cfg["hook_layer"] is not None and int(cfg["hook_layer"]) != lay:
            notes.append(
                f"the SAE's config says hook layer {cfg['hook_layer']} ({cfg['hook_name']}), registered at layer {lay}"
            )
        if isinstance(cfg["hook_name"], str) and "resid_post" not in cfg["hook_name"]:
            notes.append(f"trained on hook {cfg['hook_name']!r}; actstore stores the residual stream after each block")
        if cfg["normalize_activations"] == "expected_average_only_in" and cfg["norm_scaling_factor"] is None:
            notes.append(
                "normalize_activations is expected_average_only_in without norm_scaling_factor: "
                "encoding applies no scaling (as SAELens does without a folded factor); a factor kept "
                "only in SAELens' registry is not visible from a folder: register it through the registry (release and sae_id) "
                "(needs sae-lens) to use it"
            )
        sha = tensors_sha256(tensors)
        sae_id = f"{model_key}.L{lay}.{sha[:10]}"
        with self._tables.write_lock:
            for r in self.list(model_key):
                if r.sae_id == sae_id:
                    return r
            weights_path = self.weights.write(sae_id, tensors, sha, cfg["original"])
            try:
                row = {
                    "sae_id": sae_id,
                    "model_key": model_key,
                    "layer": lay,
                    "d_in": cfg["d_in"],
                    "d_sae": cfg["d_sae"],
                    "architecture": cfg["architecture"],
                    "cfg": json.dumps(cfg, sort_keys=True, default=str),
                    "weights_path": weights_path,
                    "weights_sha256": sha,
                    "source_path": source,
                    "notes": "; ".join(notes) or None,
                    "created_at": datetime.now(UTC),
                }
                self._tables.add(SAES, pa.Table.from_pylist([row], schema=SAES_SCHEMA), SAES_SCHEMA)
            except BaseException:
                self.weights.remove([sae_id])
                raise
        return self.get(sae_id)
