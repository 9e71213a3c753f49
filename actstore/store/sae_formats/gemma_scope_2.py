"""Gemma Scope 2 (Gemma 3): a folder holding ``config.json`` and ``params.safetensors`` with
w_enc [d_in, d_sae], w_dec [d_sae, d_in], b_enc [d_sae], b_dec [d_in], threshold [d_sae].

``config.json`` carries ``architecture`` ("jump_relu"), ``model_name`` and
``hf_hook_point_in`` (``model.layers.L.output`` = resid_post of layer L; o_proj input = attn
z; post_feedforward_layernorm output = mlp_out); transcoders carry ``hf_hook_point_out`` /
``affine_connection`` and are refused, as are folders named ``transcoder``/``clt``. As in
SAELens' ``gemma_3`` loader: JumpReLU, b_dec not subtracted before encoding, no normalisation.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from actstore.errors import InvalidInput

from .common import SUPPORTED, SaeFormat, file_in, finish, load_safetensors, normalised, not_an_sae, read_json

__all__ = ["CONFIG_FILE", "FORMAT", "PARAMS_FILE", "read"]

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.safetensors"


def _hook(hf_hook: Any, folder: Path) -> tuple[str | None, int | None]:
    text = hf_hook if isinstance(hf_hook, str) else ""
    m = re.search(r"layers\.(\d+)", text) or re.search(r"layer_(\d+)", str(folder))
    layer = int(m.group(1)) if m else None
    if layer is None:
        return None, None
    if text.endswith(f"layers.{layer}.output") or (not text and "resid_post" in str(folder)):
        return f"blocks.{layer}.hook_resid_post", layer
    if "o_proj" in text or (not text and "attn_out" in str(folder)):
        return f"blocks.{layer}.attn.hook_z", layer
    if "post_feedforward_layernorm" in text or (not text and "mlp_out" in str(folder)):
        return f"blocks.{layer}.hook_mlp_out", layer
    return (text or None), layer


def read(folder: Path, root: str | Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(normalised cfg, tensors) of a Gemma Scope 2 folder."""
    raw = read_json(file_in(folder, CONFIG_FILE, root, "Gemma Scope 2"))
    name = str(folder).lower()
    if (
        raw.get("hf_hook_point_out")
        or "affine_connection" in raw
        or "transcoder" in name
        or "clt" in name.split("/")[-1]
    ):
        raise not_an_sae(f"the Gemma Scope 2 transcoder in {str(folder)!r}")
    arch = str(raw.get("architecture", "jump_relu")).lower()
    if arch not in ("jump_relu", "jumprelu"):
        raise InvalidInput(
            f"{CONFIG_FILE} in {str(folder)!r} gives architecture {arch!r}; Gemma Scope 2 SAEs "
            f"are jump_relu; {SUPPORTED}"
        )
    where = f"{PARAMS_FILE} in {str(folder)!r}"
    raw_t = load_safetensors(file_in(folder, PARAMS_FILE, root, "Gemma Scope 2"), where)
    if "affine_skip_connection" in raw_t:
        raise not_an_sae(f"the Gemma Scope 2 skip transcoder in {str(folder)!r}")
    w_enc = raw_t.get("w_enc")
    if w_enc is None or w_enc.ndim != 2:
        raise InvalidInput(f"{where} lacks a 2-D w_enc [d_in, d_sae] (has {', '.join(sorted(raw_t)) or 'nothing'})")
    d_in, d_sae = (int(s) for s in w_enc.shape)
    w_dec = raw_t.get("w_dec")
    if w_dec is not None and w_dec.ndim == 2 and int(w_dec.shape[0]) == d_sae and int(w_dec.shape[1]) != d_in:
        raise not_an_sae(
            f"the dictionary in {str(folder)!r} (w_dec writes {int(w_dec.shape[1])} dimensions, "
            f"w_enc reads {d_in}: a transcoder)"
        )
    hook_name, layer = _hook(raw.get("hf_hook_point_in"), folder)
    tensors = {
        "W_enc": w_enc,
        "W_dec": w_dec,
        "b_enc": raw_t.get("b_enc"),
        "b_dec": raw_t.get("b_dec"),
        "threshold": raw_t.get("threshold"),
    }
    cfg = normalised(
        architecture="jumprelu",
        d_in=d_in,
        d_sae=d_sae,
        apply_b_dec_to_input=False,
        hook_name=hook_name,
        hook_layer=layer,
        model_name=raw.get("model_name"),
        layout="gemma_scope_2",
        format="gemma_scope_2",
        original=raw,
    )
    return finish(cfg, {k: v for k, v in tensors.items() if v is not None}, where)


FORMAT = SaeFormat("gemma_scope_2", "Gemma Scope 2", (CONFIG_FILE, PARAMS_FILE), read)
