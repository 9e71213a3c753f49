"""Llama Scope: a folder holding ``hyperparams.json`` and ``checkpoints/final.safetensors``
with encoder.weight [d_sae, d_model], encoder.bias [d_sae], decoder.weight [d_model, d_sae],
decoder.bias [d_model] (torch Linear orientation, transposed here).

``hyperparams.json`` gives ``d_model``, ``d_sae``, ``hook_point_in`` / ``hook_point_out``
(different = a transcoder, refused), the scalar ``jump_relu_threshold`` and
``dataset_average_activation_norm.in``. As SAELens' ``llama_scope`` loader does: JumpReLU
with threshold[d_sae] = jump_relu_threshold * s, inputs scaled by s = sqrt(d_model) /
dataset_average_activation_norm.in (normalize_activations "expected_average_only_in" with
norm_scaling_factor s; SAELens folds s into W_enc, which encodes identically), b_dec not
subtracted before encoding. Weights keep the file's dtype (SAELens' loader casts to bfloat16
unless the caller asks for float32, as ``SAE.from_pretrained`` does by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from actstore.errors import InvalidInput

from .common import (
    SaeFormat,
    check_memory,
    file_in,
    finish,
    load_safetensors,
    normalised,
    not_an_sae,
    positive_int,
    read_json,
)

__all__ = ["FORMAT", "HYPERPARAMS_FILE", "WEIGHTS_FILE", "read"]

HYPERPARAMS_FILE = "hyperparams.json"
WEIGHTS_FILE = "checkpoints/final.safetensors"


def read(folder: Path, root: str | Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(normalised cfg, tensors) of a Llama Scope folder."""
    raw = read_json(file_in(folder, HYPERPARAMS_FILE, root, "Llama Scope"))
    hin, hout = raw.get("hook_point_in"), raw.get("hook_point_out", raw.get("hook_point_in"))
    if hin != hout:
        raise not_an_sae(
            f"the Llama Scope dictionary in {str(folder)!r} (hook_point_in {hin!r} != "
            f"hook_point_out {hout!r}: a transcoder)"
        )
    d_in = positive_int(raw.get("d_model"), f"d_model in {HYPERPARAMS_FILE}")
    d_sae = positive_int(raw.get("d_sae"), f"d_sae in {HYPERPARAMS_FILE}")
    thr = raw.get("jump_relu_threshold")
    norms = raw.get("dataset_average_activation_norm")
    avg = norms.get("in") if isinstance(norms, dict) else None
    if isinstance(thr, bool) or not isinstance(thr, (int, float)):
        raise InvalidInput(
            f"{HYPERPARAMS_FILE} in {str(folder)!r} must give jump_relu_threshold as a number, got {thr!r}"
        )
    if isinstance(avg, bool) or not isinstance(avg, (int, float)) or not avg > 0:
        raise InvalidInput(
            f"{HYPERPARAMS_FILE} in {str(folder)!r} must give dataset_average_activation_norm.in "
            f"as a positive number (the input scaling), got {avg!r}"
        )
    s = d_in**0.5 / float(avg)
    where = f"{WEIGHTS_FILE} in {str(folder)!r}"
    check_memory(
        [("encoder.weight", (d_sae, d_in), 2), ("decoder.weight", (d_in, d_sae), 2)],
        f"{HYPERPARAMS_FILE} in {str(folder)!r}",
    )
    raw_t = load_safetensors(file_in(folder, WEIGHTS_FILE, root, "Llama Scope"), where)
    missing = [k for k in ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias") if k not in raw_t]
    if missing:
        raise InvalidInput(f"{where} lacks {', '.join(missing)} (has {', '.join(sorted(raw_t)) or 'nothing'})")
    import torch

    tensors = {
        "W_enc": raw_t["encoder.weight"].T,
        "W_dec": raw_t["decoder.weight"].T,
        "b_enc": raw_t["encoder.bias"],
        "b_dec": raw_t["decoder.bias"],
        "threshold": torch.full((d_sae,), float(thr) * s, dtype=torch.float32),
    }
    cfg = normalised(
        architecture="jumprelu",
        d_in=d_in,
        d_sae=d_sae,
        apply_b_dec_to_input=False,
        normalize_activations="expected_average_only_in",
        norm_scaling_factor=s,
        hook_name=hin,
        model_name="meta-llama/Llama-3.1-8B",
        layout="llama_scope",
        format="llama_scope",
        original=raw,
    )
    return finish(cfg, tensors, where)


FORMAT = SaeFormat("llama_scope", "Llama Scope", (HYPERPARAMS_FILE, WEIGHTS_FILE), read)
