"""Import activations extracted elsewhere: ``.npy`` or ``.safetensors`` arrays plus a prompts file.

Accepted array layouts:

- one ``.npy`` of shape [n, L, d]: entry ``l`` along axis 1 is layer ``l``;
- ``.npy`` files of shape [n, d], one per layer; the layer is given with ``layers`` or read
  from the last number in the file name (``layer_05.npy`` -> 5);
- one ``.safetensors`` with one [n, d] tensor per layer; the layer is the last number in
  the tensor name (``blocks.5.hook_resid_post`` -> 5, ``layer_12`` -> 12, ``3`` -> 3).

Row ``i`` of every array belongs to prompt ``i`` of the prompts file. Everything is read and
validated before the store is opened (or created) and before anything is stored, so a bad
file stores nothing.

Imported arrays carry no fingerprint (the model they came from is not at hand). An import
under a key whose model was ingested (and so fingerprinted) is allowed only with ``source``
equal to the stored source (``--source`` naming the same model folder or hub id); otherwise
it is refused with Conflict before anything is stored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from actstore.config import Settings
from actstore.errors import InvalidInput

from .sources import read_prompts

if TYPE_CHECKING:
    from actstore.store import Store

_LAST_INT = re.compile(r"(\d+)(?!.*\d)")


@dataclass(frozen=True)
class ImportSummary:
    model_key: str
    dataset: str
    prompts: int
    layers: tuple[int, ...]
    d_model: int


def _layer_from_name(name: str) -> int:
    m = _LAST_INT.search(name)
    if m is None:
        raise InvalidInput(f"cannot tell the layer of {name!r}: put the layer number in its name or pass layers")
    return int(m.group(1))


def load_layer_arrays(paths: Sequence[str | Path], layers: Sequence[int] | None = None) -> dict[int, np.ndarray]:
    """Read activation arrays into {layer: [n, d] array} (memory-mapped for .npy)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise InvalidInput("no activation files given")
    for p in paths:
        if not p.exists():
            raise InvalidInput(f"activation file {str(p)!r} does not exist")
        if p.is_dir():
            raise InvalidInput(f"activation file {str(p)!r} is a folder; pass .npy or .safetensors files")
        if p.suffix not in (".npy", ".safetensors"):
            raise InvalidInput(f"activation file {str(p)!r}: expected .npy or .safetensors")
    if len(paths) == 1 and paths[0].suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        out: dict[int, np.ndarray] = {}
        try:
            with safe_open(str(paths[0]), framework="pt") as fh:
                names = list(fh.keys())
                if not names:
                    raise InvalidInput(f"{str(paths[0])!r} holds no tensors")
                for i, name in enumerate(names):
                    layer = layers[i] if layers is not None else _layer_from_name(name)
                    out[layer] = fh.get_tensor(name).float().numpy()
        except (OSError, SafetensorError) as exc:
            raise InvalidInput(f"cannot read activation file {str(paths[0])!r}: {exc}") from None
        if layers is not None and len(layers) != len(names):
            raise InvalidInput(f"{len(layers)} layers given for {len(names)} tensors in {str(paths[0])!r}")
        return out
    if any(p.suffix != ".npy" for p in paths):
        raise InvalidInput("give either one .safetensors file or .npy files, not a mix")
    arrays = []
    for p in paths:
        try:
            arrays.append(np.load(p, mmap_mode="r", allow_pickle=False))
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise InvalidInput(f"cannot read activation file {str(p)!r}: {why}") from None
    if len(arrays) == 1 and arrays[0].ndim == 3:
        if layers is not None and len(layers) != arrays[0].shape[1]:
            raise InvalidInput(f"{len(layers)} layers given for an array of {arrays[0].shape[1]} layers")
        ls = layers if layers is not None else range(arrays[0].shape[1])
        return {int(layer): arrays[0][:, i, :] for i, layer in enumerate(ls)}
    if layers is not None and len(layers) != len(paths):
        raise InvalidInput(f"{len(layers)} layers given for {len(paths)} .npy files")
    out = {}
    for i, (p, a) in enumerate(zip(paths, arrays)):
        if a.ndim != 2:
            raise InvalidInput(f"{str(p)!r} has shape {a.shape}: expected [n, d] per layer or one [n, L, d]")
        out[int(layers[i]) if layers is not None else _layer_from_name(p.stem)] = a
    return out


def import_activations(
    store: Store | str | Path,
    *,
    model_key: str,
    dataset: str,
    prompts_file: str | Path,
    arrays: Sequence[str | Path],
    layers: Sequence[int] | None = None,
    n_layers: int | None = None,
    dtype: str = "float16",
    source: str | None = None,
    architecture: str | None = None,
    text_column: str | int = "text",
    label_column: str | int | None = "label",
    settings: Settings | None = None,
) -> ImportSummary:
    """Store pre-extracted activations of ``prompts_file``'s prompts under ``model_key``.

    ``store`` is a Store or a URI (created if missing, once everything is validated).
    ``n_layers`` is the model's number of decoder blocks (default: the highest layer + 1).
    ``text_column`` / ``label_column`` name the prompts file's fields as for ingest. All
    arrays are validated (rows, dimension, finiteness, float16 range) before the prompts or
    any layer are written.
    """
    from actstore.ingest.pipeline import STORAGE_DTYPES, open_store
    from actstore.store.tables import check_model_key

    check_model_key(model_key)
    if dtype not in STORAGE_DTYPES:
        raise InvalidInput(f"storage dtype must be float16 or float32, got {dtype!r}")
    prompts = read_prompts(prompts_file, text_column=text_column, label_column=label_column)
    by_layer = load_layer_arrays(arrays, layers)
    n = len(prompts.texts)
    first_seen: dict[str, int] = {}
    for i, text in enumerate(prompts.texts):
        if text in first_seen:
            raise InvalidInput(
                f"{str(prompts_file)!r} holds the same text at prompts {first_seen[text]} and {i}: "
                "each prompt is stored once, so each array row needs a distinct text"
            )
        first_seen[text] = i
    dims = {a.shape[1] for a in by_layer.values()}
    if len(dims) != 1:
        raise InvalidInput(f"layers have different dimensions {sorted(dims)}: one model has one d_model")
    (d,) = dims
    L = n_layers if n_layers is not None else max(by_layer) + 1
    for layer, a in sorted(by_layer.items()):
        if a.shape[0] != n:
            raise InvalidInput(f"layer {layer} has {a.shape[0]} rows but {str(prompts_file)!r} has {n} prompts")
        if not 0 <= layer < L:
            raise InvalidInput(f"layer {layer} is out of range for n_layers={L}")
        if not np.isfinite(a).all():
            raise InvalidInput(f"layer {layer} contains NaN or inf")
        if dtype == "float16" and np.abs(a).max() > np.finfo(np.float16).max:
            raise InvalidInput(f"layer {layer} has values beyond float16 range: import with dtype float32")
    st = open_store(store, settings)
    source = source or str(arrays[0])
    stored = st.models.find(model_key, layers=False)
    if stored is not None:
        st.models.check_write(stored, None, source)  # Conflict before anything is stored
    ids = st.add_prompts(dataset, prompts.texts, prompts.labels, prompts.meta)
    for layer, a in sorted(by_layer.items()):
        st.write_activations(
            model_key,
            layer,
            ids,
            np.asarray(a, dtype=np.float32),
            n_layers=L,
            source=source,
            architecture=architecture or "imported",
            dtype=dtype,
        )
    st.activations.optimize(model_key)
    return ImportSummary(model_key, dataset, n, tuple(sorted(by_layer)), d)
