"""Reading SAELens-format SAE folders: path rules, the two config layouts, tensor checks.

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
with a message saying so.

Path rule: with a ``root`` (``ACTSTORE_SAE_ROOT``; required for the API), the folder and each
file read from it must resolve -- symlinks followed -- inside the root, or the call is refused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from actstore.errors import InvalidInput, NotFound

__all__ = ["CFG_FILE", "WEIGHTS_FILE", "parse_config", "read_folder", "resolve_folder"]

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"

_ARCH = {"standard": "relu", "relu": "relu", "jumprelu": "jumprelu", "topk": "topk"}
_NORMS = ("none", "constant_norm_rescale", "layer_norm", "expected_average_only_in")
_REQUIRED = ("W_enc", "W_dec", "b_enc", "b_dec")


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
