"""The SAE registry: SAELens-format folders read, checked, copied into the store, listed.

A SAELens folder holds ``cfg.json`` and ``sae_weights.safetensors`` (W_enc [d_in, d_sae],
W_dec [d_sae, d_in], b_enc [d_sae], b_dec [d_in], jumprelu adds threshold [d_sae]). Two
config layouts are read:

* v6 (SAELens >= 6): ``architecture`` ("standard" | "jumprelu" | "topk" ...), ``d_in``,
  ``d_sae``, ``apply_b_dec_to_input``, ``normalize_activations`` (a string), ``k`` for topk,
  and a nested ``metadata`` (older v6 drafts: ``meta``) block with hook_name, model_name, ...
  but no ``hook_layer``;
* flat (SAELens < 6): the same keys at the top level plus ``hook_point``/``hook_name``,
  ``hook_layer``, ``activation_fn_str`` ("relu" | "topk" with ``activation_fn_kwargs.k``),
  and ``normalize_activations`` possibly a boolean (True = "expected_average_only_in").
  Missing keys take SAELens' defaults (architecture "standard", apply_b_dec_to_input True).

Supported: standard/relu, jumprelu, topk. Gated and every other architecture are refused
with a message saying so. Registering copies the weights (only the tensors encoding and
decoding need, in their stored dtype) and the config into ``<store>/_saes/<sae_id>/``, so
the store stays self-contained, then adds one row to the ``saes`` table. The copy is written
under a temporary name and renamed into place; a failure leaves nothing behind.

Path rule: with a ``root`` (``ACTSTORE_SAE_ROOT``; required for the API), the folder and each
file read from it must resolve -- symlinks followed -- inside the root, or the call is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from actstore.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from .store import Store

SAES = "saes"
SAE_DIR = "_saes"
CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"

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

_ARCH = {"standard": "relu", "relu": "relu", "jumprelu": "jumprelu", "topk": "topk"}
_NORMS = ("none", "constant_norm_rescale", "layer_norm", "expected_average_only_in")
_REQUIRED = ("W_enc", "W_dec", "b_enc", "b_dec")


@dataclass(frozen=True)
class SaeRecord:
    """One registered SAE. ``cfg`` is the normalised config (architecture, k,
    apply_b_dec_to_input, normalize_activations, norm_scaling_factor, hook_name, hook_layer,
    layout, original); ``weights_path`` is relative to the store folder."""

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


# ------------------------------------------------------------------ reading
def resolve_folder(path: str | Path, root: str | Path | None) -> Path:
    """The real (symlink-free) folder ``path`` names; with ``root``, relative paths are taken
    from the root and anything resolving outside it is refused."""
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise InvalidInput(f"path must be a non-empty folder path, got {path!r}")
    raw = Path(str(path)).expanduser()
    if root is None:
        real = raw.resolve()
    else:
        root_real = Path(root).expanduser().resolve()
        if not root_real.is_dir():
            raise InvalidInput(f"the SAE root {str(root)!r} is not an existing folder")
        real = (raw if raw.is_absolute() else root_real / raw).resolve()
        if not real.is_relative_to(root_real):
            raise InvalidInput(
                f"SAE path {str(path)!r} resolves to {str(real)!r}, outside the allowed SAE root "
                f"{str(root_real)!r}; only folders under ACTSTORE_SAE_ROOT can be registered")
    if not real.exists():
        raise NotFound(f"SAE folder {str(path)!r} does not exist")
    if not real.is_dir():
        raise InvalidInput(f"SAE path {str(path)!r} is not a folder: give the SAELens folder "
                                f"holding {CFG_FILE} and {WEIGHTS_FILE}")
    return real


def _file_in(folder: Path, name: str, root: str | Path | None) -> Path:
    f = folder / name
    if not f.exists():
        raise InvalidInput(f"SAE folder {str(folder)!r} has no {name}: a SAELens folder holds "
                                f"{CFG_FILE} and {WEIGHTS_FILE}")
    real = f.resolve()
    if root is not None and not real.is_relative_to(Path(root).expanduser().resolve()):
        raise InvalidInput(f"{name} in {str(folder)!r} resolves to {str(real)!r}, outside the allowed "
                                f"SAE root; symlinks out of ACTSTORE_SAE_ROOT are refused")
    if not real.is_file():
        raise InvalidInput(f"{name} in {str(folder)!r} is not a file")
    return real


def parse_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Normalise a SAELens cfg.json (either layout) to the fields encoding needs.

    Raises InvalidInput for unsupported architectures (gated, ...), missing d_in/d_sae,
    a topk without k, unknown normalisations.
    """
    if not isinstance(raw, dict):
        raise InvalidInput(f"{CFG_FILE} must hold a JSON object")
    meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else raw.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    layout = "v6" if ("metadata" in raw or "meta" in raw) and "hook_layer" not in raw else "flat"
    arch_raw = str(raw.get("architecture", "standard")).lower()
    act = str(raw.get("activation_fn_str", raw.get("activation_fn", "relu")) or "relu").lower()
    if arch_raw == "standard" and act == "topk":
        arch_raw = "topk"
    if arch_raw not in _ARCH:
        what = "gated SAEs (b_gate, r_mag, b_mag)" if arch_raw == "gated" else f"architecture {arch_raw!r}"
        raise InvalidInput(
            f"{what} are not supported yet; supported architectures: standard (relu), jumprelu, topk")
    if arch_raw == "standard" and act not in ("relu",):
        raise InvalidInput(f"activation function {act!r} of a standard SAE is not supported; "
                                "supported: relu (standard), jumprelu, topk")
    arch = _ARCH[arch_raw]
    for key in ("d_in", "d_sae"):
        v = raw.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidInput(f"{CFG_FILE} must give {key} as a positive integer, got {v!r}")
    k = None
    if arch == "topk":
        kwargs = raw.get("activation_fn_kwargs") or {}
        k = raw.get("k", kwargs.get("k") if isinstance(kwargs, dict) else None)
        if isinstance(k, float) and k.is_integer():
            k = int(k)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= raw["d_sae"]:
            raise InvalidInput(f"a topk SAE needs k in 1..d_sae={raw['d_sae']} in {CFG_FILE}, got {k!r}")
        if raw.get("rescale_acts_by_decoder_norm"):
            raise InvalidInput("topk SAEs with rescale_acts_by_decoder_norm are not supported yet")
    norm = raw.get("normalize_activations", "none")
    if isinstance(norm, bool):
        norm = "expected_average_only_in" if norm else "none"
    norm = "none" if norm is None else str(norm)
    if norm not in _NORMS:
        raise InvalidInput(f"normalize_activations {norm!r} is not supported; allowed: {', '.join(_NORMS)}")
    scale = raw.get("norm_scaling_factor")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0):
        raise InvalidInput(f"norm_scaling_factor must be a positive number, got {scale!r}")
    if str(raw.get("reshape_activations", "none")) not in ("none", "None"):
        raise InvalidInput(f"reshape_activations={raw.get('reshape_activations')!r} (attention hook_z SAEs) "
                                "is not supported: actstore stores the residual stream")
    apply_b = raw.get("apply_b_dec_to_input", True)
    if not isinstance(apply_b, bool):
        raise InvalidInput(f"apply_b_dec_to_input must be true or false, got {apply_b!r}")
    hook_name = meta.get("hook_name") or raw.get("hook_name") or raw.get("hook_point")
    hook_layer = raw.get("hook_layer", meta.get("hook_layer"))
    if hook_layer is None and isinstance(hook_name, str):
        m = re.search(r"blocks\.(\d+)\.", hook_name)
        hook_layer = int(m.group(1)) if m else None
    return {
        "architecture": arch, "d_in": int(raw["d_in"]), "d_sae": int(raw["d_sae"]), "k": k,
        "apply_b_dec_to_input": apply_b, "normalize_activations": norm,
        "norm_scaling_factor": None if scale is None else float(scale),
        "hook_name": hook_name, "hook_layer": hook_layer,
        "model_name": meta.get("model_name") or raw.get("model_name"), "layout": layout,
    }


def read_folder(path: str | Path, root: str | Path | None = None) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """(normalised cfg, tensors {name: torch.Tensor}, real folder) of a SAELens folder;
    refuses anything resolving outside ``root`` when one is given."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = resolve_folder(path, root)
    cfg_file = _file_in(folder, CFG_FILE, root)
    weights_file = _file_in(folder, WEIGHTS_FILE, root)
    try:
        raw = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{CFG_FILE} in {str(path)!r} is not valid JSON: {exc}") from None
    cfg = parse_config(raw)
    cfg["original"] = raw
    try:
        tensors = load_file(str(weights_file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InvalidInput(f"{WEIGHTS_FILE} in {str(path)!r} cannot be read as safetensors: {exc}") from None
    if "log_threshold" in tensors and "threshold" not in tensors:
        tensors["threshold"] = tensors.pop("log_threshold").float().exp()
    need = list(_REQUIRED) + (["threshold"] if cfg["architecture"] == "jumprelu" else [])
    if "b_gate" in tensors or "r_mag" in tensors:
        raise InvalidInput("gated SAEs (b_gate, r_mag, b_mag) are not supported yet; "
                                "supported architectures: standard (relu), jumprelu, topk")
    missing = [k for k in need if k not in tensors]
    if missing:
        raise InvalidInput(f"{WEIGHTS_FILE} in {str(path)!r} lacks {', '.join(missing)} "
                                f"(has {', '.join(sorted(tensors)) or 'nothing'})")
    d_in, d_sae = cfg["d_in"], cfg["d_sae"]
    shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,),
              "threshold": (d_sae,)}
    for name in need:
        t = tensors[name]
        if tuple(t.shape) != shapes[name]:
            raise InvalidInput(f"{name} has shape {list(t.shape)} but {CFG_FILE} says d_in={d_in}, "
                                    f"d_sae={d_sae}, so it must be {list(shapes[name])}")
        if not t.is_floating_point() or not bool(t.float().isfinite().all()):
            raise InvalidInput(f"{name} must hold finite floating-point values")
    return cfg, {k: tensors[k].contiguous() for k in need}, folder


# ------------------------------------------------------------------ registry
def _table(store: "Store", create: bool = False):
    return store._table(SAES, SAES_SCHEMA if create else None)


def _record(row: dict[str, Any]) -> SaeRecord:
    return SaeRecord(sae_id=row["sae_id"], model_key=row["model_key"], layer=int(row["layer"]),
                     d_in=int(row["d_in"]), d_sae=int(row["d_sae"]), architecture=row["architecture"],
                     cfg=json.loads(row["cfg"]), weights_path=row["weights_path"],
                     weights_sha256=row["weights_sha256"], source_path=row["source_path"],
                     notes=row["notes"], created_at=row["created_at"])


def list_saes(store: "Store", model: str | None = None) -> list[SaeRecord]:
    """Registered SAEs (optionally of one model), by model, layer, then registration time."""
    tbl = _table(store)
    if tbl is None:
        if model is not None:
            store.model(model)
        return []
    rows = [_record(r) for r in store._scan(tbl).to_pylist()]
    if model is not None:
        store.model(model)  # NotFound for an unknown model
        rows = [r for r in rows if r.model_key == model]
    epoch = datetime.min.replace(tzinfo=timezone.utc)
    return sorted(rows, key=lambda r: (r.model_key, r.layer, r.created_at or epoch, r.sae_id))


def get_sae(store: "Store", sae_id: str) -> SaeRecord:
    """The SAE registered under ``sae_id``; NotFound naming some known ids otherwise."""
    for r in list_saes(store):
        if r.sae_id == str(sae_id):
            return r
    known = [r.sae_id for r in list_saes(store)]
    shown = ", ".join(known[:10]) + (" ..." if len(known) > 10 else "")
    raise NotFound(f"unknown SAE id {str(sae_id)!r}; registered SAEs: {shown or 'none'}")


def _store_dir(store: "Store") -> Path:
    if "://" in store.uri and not store.uri.startswith("file://"):
        raise InvalidInput(f"registering SAEs needs a local store (the weights are copied into it); "
                                f"{store.uri!r} is remote")
    return Path(store.uri.removeprefix("file://"))


def register_sae(store: "Store", model_key: str, layer: int, path: str | Path,
                 root: str | Path | None = None) -> SaeRecord:
    """Read, check and copy a SAELens folder into the store as an SAE of ``model_key``
    at ``layer`` (negative counts from the end); returns its record.

    Checks: the model exists, the layer is in range, d_in equals the model's d_model, the
    architecture is supported, shapes agree with cfg.json; with ``root``, the folder and its
    files resolve inside it. Registering the same weights for the same model and layer again
    returns the existing record.
    """
    import torch
    from safetensors.torch import save_file

    info = store.model(model_key)
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise InvalidInput(f"layer must be an integer, got {layer!r}")
    L = info.n_layers
    lay = int(layer) + L if layer < 0 else int(layer)
    if not 0 <= lay < L:
        raise InvalidInput(f"layer {layer} is out of range for model {model_key!r}: "
                                f"allowed 0..{L - 1} or -{L}..-1")
    cfg, tensors, folder = read_folder(path, root)
    if cfg["d_in"] != info.d_model:
        raise InvalidInput(f"SAE d_in = {cfg['d_in']} does not match d_model = {info.d_model} of model "
                                f"{model_key!r} (layer {lay}); this SAE was trained on other activations")
    notes = []
    if cfg["hook_layer"] is not None and int(cfg["hook_layer"]) != lay:
        notes.append(f"cfg.json says hook layer {cfg['hook_layer']} ({cfg['hook_name']}), registered at layer {lay}")
    if isinstance(cfg["hook_name"], str) and "resid_post" not in cfg["hook_name"]:
        notes.append(f"trained on hook {cfg['hook_name']!r}; actstore stores the residual stream after each block")
    if cfg["normalize_activations"] == "expected_average_only_in" and cfg["norm_scaling_factor"] is None:
        notes.append("normalize_activations is expected_average_only_in without norm_scaling_factor: "
                     "encoding applies no scaling (as SAELens does without a folded factor)")
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(name.encode() + str(t.dtype).encode() + str(list(t.shape)).encode())
        h.update(t.contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
    sha = h.hexdigest()
    sae_id = f"{model_key}.L{lay}.{sha[:10]}"
    with store._write_lock:
        for r in list_saes(store, model_key):
            if r.sae_id == sae_id:
                return r
        base = _store_dir(store) / SAE_DIR
        base.mkdir(parents=True, exist_ok=True)
        tmp = base / f".tmp-{uuid.uuid4().hex}"
        final = base / sae_id
        tmp.mkdir()
        try:
            save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"sae_id": sae_id, "sha256": sha})
            (tmp / CFG_FILE).write_text(json.dumps(cfg["original"], indent=1, sort_keys=True, default=str))
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            row = {
                "sae_id": sae_id, "model_key": model_key, "layer": lay, "d_in": cfg["d_in"],
                "d_sae": cfg["d_sae"], "architecture": cfg["architecture"],
                "cfg": json.dumps(cfg, sort_keys=True, default=str),
                "weights_path": f"{SAE_DIR}/{sae_id}/{WEIGHTS_FILE}", "weights_sha256": sha,
                "source_path": str(folder), "notes": "; ".join(notes) or None,
                "created_at": datetime.now(timezone.utc),
            }
            _table(store, create=True).add(pa.Table.from_pylist([row], schema=SAES_SCHEMA))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(final, ignore_errors=True)
            raise
    return get_sae(store, sae_id)


def load_weights(store: "Store", record: SaeRecord) -> dict[str, np.ndarray]:
    """The SAE's tensors from the store's copy, as float32 numpy arrays."""
    from safetensors.torch import load_file

    path = _store_dir(store) / record.weights_path
    if not path.is_file():
        raise NotFound(f"the weights of SAE {record.sae_id!r} are missing from the store ({path})")
    return {k: v.float().numpy() for k, v in load_file(str(path)).items()}
