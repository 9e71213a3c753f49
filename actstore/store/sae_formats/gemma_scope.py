"""Gemma Scope (Gemma 2): a folder ``layer_L/width_W/average_l0_N/`` holding ``params.npz``
with W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc [d_sae], b_dec [d_in], threshold [d_sae]
(float32; SAELens' ``gemma_2`` loader also accepts lower-case ``w_`` names).

There is no config file: sizes come from the arrays, the rest follows SAELens' ``gemma_2``
loader: JumpReLU, b_dec not subtracted before encoding, no input normalisation; the hook is
resid_post of layer L for the ``-res`` releases, mlp_out / attn z for ``-mlp`` / ``-att``
(read from the path, e.g. a Hugging Face cache path naming the repo), unknown otherwise.
Embedding SAEs are rescaled as SAELens does (W_enc / sqrt(d_in), W_dec * sqrt(d_in)); a
``scaling_factor`` that is not all ones (a finetuning scale SAELens handles separately) and
Gemma Scope transcoders are refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from actstore.errors import InvalidInput

from .common import SUPPORTED, SaeFormat, file_in, finish, load_npz, normalised, not_an_sae

__all__ = ["FORMAT", "PARAMS_FILE", "read"]

PARAMS_FILE = "params.npz"


def read(folder: Path, root: str | Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(normalised cfg, tensors) of a Gemma Scope folder."""
    path = str(folder).lower()
    if "transcoder" in path:
        raise not_an_sae(f"the Gemma Scope transcoder in {str(folder)!r}")
    f = file_in(folder, PARAMS_FILE, root, "Gemma Scope")
    where = f"{PARAMS_FILE} in {str(folder)!r}"
    raw = load_npz(f, where)
    tensors = {("W_" + k[2:] if k.startswith("w_") else k): v for k, v in raw.items()}
    if "W_enc" not in tensors or tensors["W_enc"].ndim != 2:
        raise InvalidInput(
            f"{where} lacks a 2-D W_enc [d_in, d_sae] (has {', '.join(sorted(raw)) or 'nothing'}); {SUPPORTED}"
        )
    d_in, d_sae = (int(s) for s in tensors["W_enc"].shape)
    notes = []
    scale = tensors.pop("scaling_factor", None)
    if scale is not None and not bool((scale.float() == 1).all()):
        raise InvalidInput(
            f"{where} has a scaling_factor that is not all ones (a finetuning scale); "
            f"such Gemma Scope SAEs are not supported"
        )
    m = re.search(r"layer_(\d+)", path)
    layer = int(m.group(1)) if m else None
    hook_name = None
    if "embedding" in path:
        hook_name, layer = "hook_embed", None
        if "W_dec" in tensors:
            tensors["W_enc"] = tensors["W_enc"].float() / d_in**0.5
            tensors["W_dec"] = tensors["W_dec"].float() * d_in**0.5
            notes.append("embedding SAE: W_enc / sqrt(d_in) and W_dec * sqrt(d_in), as SAELens loads it")
    elif layer is not None and re.search(r"gemma-scope-[^/]*-res", path):
        hook_name = f"blocks.{layer}.hook_resid_post"
    elif layer is not None and re.search(r"gemma-scope-[^/]*-mlp", path):
        hook_name = f"blocks.{layer}.hook_mlp_out"
    elif layer is not None and re.search(r"gemma-scope-[^/]*-att", path):
        hook_name = f"blocks.{layer}.attn.hook_z"
    else:
        notes.append(
            "params.npz does not say which hook it was trained on (the -res, -mlp and -att releases "
            "share this layout); use a residual-stream (-res) SAE"
        )
    cfg = normalised(
        architecture="jumprelu",
        d_in=d_in,
        d_sae=d_sae,
        apply_b_dec_to_input=False,
        hook_name=hook_name,
        hook_layer=layer,
        layout="gemma_scope",
        format="gemma_scope",
        notes=notes,
        original={"format": "gemma_scope", "path": str(folder), "arrays": {k: list(v.shape) for k, v in raw.items()}},
    )
    return finish(cfg, tensors, where)


FORMAT = SaeFormat("gemma_scope", "Gemma Scope", (PARAMS_FILE,), read)
