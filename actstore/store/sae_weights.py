"""Where the weights of registered SAEs live, for stores on a local disk and on object storage.

* Local store: ``<store>/_saes/<sae_id>/sae_weights.safetensors`` plus the layout's config as
  ``cfg.json``, written under a temporary folder name and renamed into place (a failure
  leaves nothing behind). ``weights_path`` is that file's path relative to the store.
* Store on object storage (``s3://``, ``gs://``, ``az://``): one row of the Lance table
  ``sae_weights`` (``sae_id``, the safetensors file as bytes, the config as JSON), reached
  with the store's own storage options and committed atomically like every other table;
  ``weights_path`` is ``sae_weights/<sae_id>``. No second client or credential set is needed.

Both hold the same safetensors bytes, so the recorded SHA-256 of the tensors checks either.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from actstore.errors import NotFound

from .sae_folders import CFG_FILE, WEIGHTS_FILE
from .tables import Tables, sql_str

__all__ = ["SAE_DIR", "SAE_WEIGHTS", "SaeWeights"]

SAE_DIR = "_saes"
SAE_WEIGHTS = "sae_weights"
_SCHEMA = pa.schema(
    [
        pa.field("sae_id", pa.string(), nullable=False),
        pa.field("safetensors", pa.large_binary(), nullable=False),
        pa.field("cfg", pa.string(), nullable=False),
    ]
)


class SaeWeights:
    """Write, read and remove the stored copy of SAE weights (see the module doc)."""

    def __init__(self, tables: Tables) -> None:
        self._tables = tables

    @property
    def remote(self) -> bool:
        return self._tables.local_path is None

    def write(self, sae_id: str, tensors: dict[str, Any], sha256: str, cfg: dict[str, Any]) -> str:
        """Store ``tensors`` (torch tensors by name) and the layout's config ``cfg``; returns the
        ``weights_path`` to record. Callers hold ``tables.write_lock``."""
        from safetensors.torch import save, save_file

        metadata = {"sae_id": sae_id, "sha256": sha256}
        cfg_text = json.dumps(cfg, indent=1, sort_keys=True, default=str)
        local = self._tables.local_path
        if local is None:  # remote
            self.remove([sae_id])
            row = {"sae_id": sae_id, "safetensors": save(tensors, metadata=metadata), "cfg": cfg_text}
            self._tables.add(SAE_WEIGHTS, pa.Table.from_pylist([row], schema=_SCHEMA), _SCHEMA)
            return f"{SAE_WEIGHTS}/{sae_id}"
        base = local / SAE_DIR
        base.mkdir(parents=True, exist_ok=True)
        tmp, final = base / f".tmp-{uuid.uuid4().hex}", base / sae_id
        tmp.mkdir()
        try:
            save_file(tensors, str(tmp / WEIGHTS_FILE), metadata=metadata)
            (tmp / CFG_FILE).write_text(cfg_text)
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return f"{SAE_DIR}/{sae_id}/{WEIGHTS_FILE}"

    def read(self, sae_id: str, weights_path: str) -> dict[str, Any]:
        """{tensor name: torch tensor} of a stored SAE; NotFound when its copy is missing."""
        from safetensors.torch import load, load_file

        if weights_path.startswith(f"{SAE_WEIGHTS}/"):
            tbl = self._tables.open(SAE_WEIGHTS)
            rows = None if tbl is None else self._tables.scan(tbl, ["safetensors"], f"sae_id = {sql_str(sae_id)}")
            if rows is None or rows.num_rows == 0:
                raise NotFound(f"the weights of SAE {sae_id!r} are missing from the store ({weights_path})")
            return load(rows["safetensors"][0].as_py())
        if self._tables.local_path is None:
            raise NotFound(
                f"the weights of SAE {sae_id!r} were stored as a file ({weights_path}) of a local "
                f"store; this store is on object storage ({self._tables.uri})"
            )
        path = self._tables.local_path / weights_path
        if not path.is_file():
            raise NotFound(f"the weights of SAE {sae_id!r} are missing from the store ({path})")
        return load_file(str(path))

    def read_float32(self, sae_id: str, weights_path: str) -> dict[str, np.ndarray]:
        """{tensor name: float32 ndarray} of a stored SAE."""
        return {k: v.float().numpy() for k, v in self.read(sae_id, weights_path).items()}

    def remove(self, sae_ids: Iterable[str]) -> None:
        """Remove the stored copies of ``sae_ids`` (missing ones are skipped). Callers hold
        ``tables.write_lock``."""
        ids = list(sae_ids)
        if not ids:
            return
        if self._tables.local_path is not None:
            for sae_id in ids:
                shutil.rmtree(self._tables.local_path / SAE_DIR / sae_id, ignore_errors=True)
        if self._tables.open(SAE_WEIGHTS) is not None:
            self._tables.delete(SAE_WEIGHTS, "sae_id IN (" + ", ".join(sql_str(i) for i in ids) + ")")

    def local_folder(self, sae_id: str) -> Path | None:
        """The folder of a local copy (None on object storage)."""
        return None if self._tables.local_path is None else self._tables.local_path / SAE_DIR / sae_id
