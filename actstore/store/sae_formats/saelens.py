"""SAELens folders: ``cfg.json`` + ``sae_weights.safetensors`` (W_enc [d_in, d_sae], W_dec
[d_sae, d_in], b_enc [d_sae], b_dec [d_in]; jumprelu adds threshold [d_sae], or log_threshold,
stored as its exp). Two config layouts are read:

* v6 (SAELens >= 6): ``architecture`` ("standard" | "jumprelu" | "topk" ...), ``d_in``,
  ``d_sae``, ``apply_b_dec_to_input``, ``normalize_activations`` (a string), ``k`` and
  ``rescale_acts_by_decoder_norm`` for topk, and a nested ``metadata`` (older v6 drafts:
  ``meta``) block with hook_name, model_name, ... but no ``hook_layer``;
* flat (SAELens < 6): the same keys at the top level plus ``hook_point``/``hook_name``,
  ``hook_layer``, ``activation_fn_str`` ("relu" | "topk" with ``activation_fn_kwargs.k``),
  and ``normalize_activations`` possibly a boolean (True = "expected_average_only_in").
  Missing keys take SAELens' defaults (architecture "standard", apply_b_dec_to_input True).

Gated SAEs and every other architecture are refused with a message saying so; transcoders
(``*transcoder`` architectures, ``d_out`` / ``hook_name_out``) are refused as non-SAEs.
:func:`parse_config` is also used for configs from SAELens' registry loaders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from actstore.errors import InvalidInput

from .common import SUPPORTED, SaeFormat, check_memory, file_in, finish, load_safetensors, normalised, read_json

__all__ = ["CFG_FILE", "FORMAT", "WEIGHTS_FILE", "parse_config", "read"]

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"

_ARCH = {"standard": "standard", "relu": "standard", "jumprelu": "jumprelu", "topk": "topk"}
_NORMS = ("none", "constant_norm_rescale", "layer_norm", "expected_average_only_in")
_NOT_SAE = (
    "transcoder",
    "skip_transcoder",
    "jumprelu_transcoder",
    "jumprelu_skip_transcoder",
    "temporal",
    "clt",
    "crosscoder",
)


def parse_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Normalise a SAELens config (either layout) to the fields encoding needs.

    Raises InvalidInput for unsupported architectures (gated, ...), transcoders, missing
    d_in/d_sae, a topk without k, unknown normalisations.
    """
    if not isinstance(raw, dict):
        raise InvalidInput(f"{CFG_FILE} must hold a JSON object")
    meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else raw.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    layout = "v6" if ("metadata" in raw or "meta" in raw) and "hook_layer" not in raw else "flat"
    arch_raw = str(raw.get("architecture", "standard")).lower()
    act = str(raw.get("activation_fn_str", raw.get("activation_fn", "relu")) or "relu").lower()
    if (
        arch_raw in _NOT_SAE
        or "transcoder" in arch_raw
        or raw.get("d_out") is not None
        or raw.get("hook_name_out") is not None
    ):
        raise InvalidInput(
            f"a SAELens {arch_raw} (reads one hook, writes another) is not a sparse autoencoder "
            f"of one activation site and cannot be registered; {SUPPORTED}"
        )
    if arch_raw == "standard" and act == "topk":
        arch_raw = "topk"
    if arch_raw not in _ARCH:
        what = "gated SAEs (b_gate, r_mag, b_mag)" if arch_raw == "gated" else f"architecture {arch_raw!r}"
        raise InvalidInput(f"{what} are not supported yet; {SUPPORTED}")
    if arch_raw == "standard" and act not in ("relu",):
        raise InvalidInput(f"activation function {act!r} of a standard SAE is not supported; {SUPPORTED}")
    arch = _ARCH[arch_raw]
    for key in ("d_in", "d_sae"):
        v = raw.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidInput(f"{CFG_FILE} must give {key} as a positive integer, got {v!r}")
    k = None
    rescale = False
    if arch == "topk":
        kwargs = raw.get("activation_fn_kwargs") or {}
        k = raw.get("k", kwargs.get("k") if isinstance(kwargs, dict) else None)
        if isinstance(k, float) and k.is_integer():
            k = int(k)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= raw["d_sae"]:
            raise InvalidInput(f"a topk SAE needs k in 1..d_sae={raw['d_sae']} in {CFG_FILE}, got {k!r}")
        rescale = bool(raw.get("rescale_acts_by_decoder_norm", False))
        if isinstance(kwargs, dict) and kwargs.get("signed"):
            raise InvalidInput(f"signed topk SAEs are not supported; {SUPPORTED}")
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
        raise InvalidInput(
            f"reshape_activations={raw.get('reshape_activations')!r} (attention hook_z SAEs) "
            "is not supported: actstore stores the residual stream"
        )
    apply_b = raw.get("apply_b_dec_to_input", True)
    if not isinstance(apply_b, bool):
        raise InvalidInput(f"apply_b_dec_to_input must be true or false, got {apply_b!r}")
    hook_name = meta.get("hook_name") or raw.get("hook_name") or raw.get("hook_point")
    return normalised(
        architecture=arch,
        d_in=int(raw["d_in"]),
        d_sae=int(raw["d_sae"]),
        k=k,
        apply_b_dec_to_input=apply_b,
        normalize_activations=norm,
        norm_scaling_factor=None if scale is None else float(scale),
        hook_name=hook_name,
        hook_layer=raw.get("hook_layer", meta.get("hook_layer")),
        model_name=meta.get("model_name") or raw.get("model_name"),
        layout=layout,
        format="saelens",
        rescale_acts_by_decoder_norm=rescale,
        original=raw,
    )


def tensors_to_saelens(tensors: dict[str, Any], where: str) -> dict[str, Any]:
    """SAELens state-dict names as encoding reads them: log_threshold becomes threshold (exp);
    gated parameters are refused."""
    if "b_gate" in tensors or "r_mag" in tensors:
        raise InvalidInput(f"gated SAEs (b_gate, r_mag, b_mag) are not supported yet; {SUPPORTED}")
    if "log_threshold" in tensors and "threshold" not in tensors:
        tensors["threshold"] = tensors.pop("log_threshold").float().exp()
    return tensors


def read(folder: Path, root: str | Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(normalised cfg, tensors) of a SAELens folder."""
    cfg = parse_config(read_json(file_in(folder, CFG_FILE, root, "SAELens")))
    weights = file_in(folder, WEIGHTS_FILE, root, "SAELens")
    where = f"{WEIGHTS_FILE} in {str(folder)!r}"
    check_memory(
        [("W_enc", (cfg["d_in"], cfg["d_sae"]), 2), ("W_dec", (cfg["d_sae"], cfg["d_in"]), 2)],
        f"{CFG_FILE} in {str(folder)!r}",
    )
    tensors = tensors_to_saelens(load_safetensors(weights, where), where)
    return finish(cfg, tensors, where)


FORMAT = SaeFormat("saelens", "SAELens", (CFG_FILE, WEIGHTS_FILE), read)
