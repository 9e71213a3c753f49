"""dictionary_learning (saprmarks/dictionary_learning): a trainer folder holding
``config.json`` ({"trainer": {dict_class, activation_dim, dict_size, k, layer, lm_name,
submodule_name, ...}, "buffer": {...}}) and ``ae.pt`` (a state dict saved with torch.save,
read with ``torch.load(weights_only=True)``; anything else is refused).

Per ``dict_class`` (their ``encode``; SAELens' ``dictionary_learning_1`` loader agrees):

* AutoEncoder: relu(encoder(x - bias)); encoder.weight [dict, act], encoder.bias,
  decoder.weight [act, dict], bias [act] -> standard, b_dec = bias, subtracted.
* AutoEncoderNew: relu(encoder(x)); decoder.bias is b_dec -> standard, not subtracted.
* AutoEncoderTopK: topk of relu(encoder(x - b_dec)) with the ``k`` buffer / trainer k
  (its ``threshold`` buffer is only used on request) -> topk.
* BatchTopKSAE / MatryoshkaBatchTopKSAE: inference uses the learned scalar ``threshold``:
  relu(pre) * (relu(pre) > threshold), b_dec subtracted -> jumprelu with threshold broadcast
  to [d_sae] (a negative, never calibrated threshold makes it a plain ReLU, as in theirs).
  Matryoshka stores W_enc [act, dict], b_enc, W_dec [dict, act], b_dec.
* JumpReluAutoEncoder: W_enc, b_enc, W_dec, b_dec, threshold [dict]; b_dec not subtracted.
* GatedAutoEncoder and other classes are refused.

The trainer ``norm_factor`` needs no handling: dictionary_learning rescales the biases
before saving, so the saved dictionary reads raw activations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from actstore.errors import InvalidInput

from .common import (
    SUPPORTED,
    SaeFormat,
    check_memory,
    file_in,
    finish,
    load_torch,
    normalised,
    not_an_sae,
    positive_int,
    read_json,
)

__all__ = ["CONFIG_FILE", "FORMAT", "WEIGHTS_FILE", "read"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "ae.pt"

_CLASSES = (
    "AutoEncoder",
    "AutoEncoderNew",
    "AutoEncoderTopK",
    "BatchTopKSAE",
    "MatryoshkaBatchTopKSAE",
    "JumpReluAutoEncoder",
)


def _linear(sd: dict[str, Any], name: str) -> Any:
    w = sd.get(f"{name}.weight")
    return None if w is None else w.T


def read(folder: Path, root: str | Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(normalised cfg, tensors) of a dictionary_learning trainer folder."""
    import torch

    raw = read_json(file_in(folder, CONFIG_FILE, root, "dictionary_learning"))
    trainer = raw.get("trainer")
    if not isinstance(trainer, dict):
        raise InvalidInput(
            f'{CONFIG_FILE} in {str(folder)!r} has no "trainer" object; a dictionary_learning '
            f'config holds {{"trainer": {{"dict_class", "activation_dim", "dict_size", ...}}}}'
        )
    cls = str(trainer.get("dict_class", ""))
    if "transcoder" in cls.lower() or "crosscoder" in cls.lower() or trainer.get("transcoder"):
        raise not_an_sae(f"the dictionary_learning {cls or 'transcoder'} in {str(folder)!r}")
    if cls == "GatedAutoEncoder":
        raise InvalidInput(f"gated SAEs (GatedAutoEncoder) are not supported yet; {SUPPORTED}")
    if cls not in _CLASSES:
        raise InvalidInput(
            f"dictionary_learning dict_class {cls!r} is not supported (supported classes: "
            f"{', '.join(_CLASSES)}); {SUPPORTED}"
        )
    d_in = positive_int(trainer.get("activation_dim"), f"trainer.activation_dim in {CONFIG_FILE}")
    d_sae = positive_int(trainer.get("dict_size"), f"trainer.dict_size in {CONFIG_FILE}")
    where = f"{WEIGHTS_FILE} in {str(folder)!r}"
    check_memory([("encoder", (d_sae, d_in), 2), ("decoder", (d_in, d_sae), 2)], f"{CONFIG_FILE} in {str(folder)!r}")
    sd = load_torch(file_in(folder, WEIGHTS_FILE, root, "dictionary_learning"), where)
    arch, apply_b, k = "standard", True, None
    W_enc = sd.get("W_enc", _linear(sd, "encoder"))
    W_dec = sd.get("W_dec", _linear(sd, "decoder"))
    b_enc = sd.get("b_enc", sd.get("encoder.bias"))
    b_dec = sd.get("b_dec", sd.get("bias"))
    threshold = None
    if cls == "AutoEncoderNew":
        b_dec, apply_b = sd.get("decoder.bias"), False
    elif cls == "AutoEncoderTopK":
        arch = "topk"
        k = trainer.get("k", sd["k"].item() if "k" in sd else None)
    elif cls in ("BatchTopKSAE", "MatryoshkaBatchTopKSAE", "JumpReluAutoEncoder"):
        arch = "jumprelu"
        threshold = sd.get("threshold")
        if threshold is not None and threshold.ndim == 0:
            threshold = torch.full((d_sae,), float(threshold), dtype=torch.float32)
        apply_b = cls != "JumpReluAutoEncoder"
    cfg = normalised(
        architecture=arch,
        d_in=d_in,
        d_sae=d_sae,
        k=k,
        apply_b_dec_to_input=apply_b,
        hook_name=f"blocks.{trainer['layer']}.hook_resid_post" if isinstance(trainer.get("layer"), int) else None,
        model_name=trainer.get("lm_name"),
        layout=cls,
        format="dictionary_learning",
        notes=[f"submodule {trainer['submodule_name']!r}"] if trainer.get("submodule_name") else [],
        original=raw,
    )
    tensors = {"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec, "threshold": threshold}
    return finish(cfg, {n: v for n, v in tensors.items() if v is not None}, where)


FORMAT = SaeFormat("dictionary_learning", "dictionary_learning", (CONFIG_FILE, WEIGHTS_FILE), read)
