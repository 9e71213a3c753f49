"""EleutherAI sparsify: a hookpoint folder (``layers.L``) holding ``cfg.json`` and
``sae.safetensors`` with encoder.weight [num_latents, d_in], encoder.bias [num_latents],
W_dec [num_latents, d_in], b_dec [d_in] (``SparseCoder.save_to_disk``).

``cfg.json`` gives ``d_in``, ``num_latents`` (0 = d_in * ``expansion_factor``), ``k``,
``activation`` ("topk"; "groupmax" is refused), ``transcode`` (a transcoder: refused),
``skip_connection`` (W_skip only adds to the reconstruction: encoding is unaffected).
Encoding follows sparsify's own ``SparseCoder.encode``: topk of relu(encoder(x - b_dec)),
i.e. b_dec IS subtracted for an SAE (SAELens' ``sparsify`` loader sets
apply_b_dec_to_input = not normalize_decoder, which disagrees with sparsify whenever b_dec is
non-zero; actstore follows sparsify). The hook is resid_post of layer L for ``layers.L``
folders (sparsify hooks the output of decoder layer L), ``hook_embed`` for ``embed_tokens``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from actstore.errors import InvalidInput

from .common import (
    SUPPORTED,
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

__all__ = ["CFG_FILE", "FORMAT", "WEIGHTS_FILE", "read"]

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"


def read(folder: Path, root: str | Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(normalised cfg, tensors) of a sparsify hookpoint folder."""
    raw = read_json(file_in(folder, CFG_FILE, root, "sparsify"))
    if raw.get("transcode"):
        raise not_an_sae(f"the sparsify transcoder in {str(folder)!r} (transcode: true)")
    activation = str(raw.get("activation", "topk")).lower()
    if activation != "topk":
        raise InvalidInput(f"sparsify activation {activation!r} is not supported; {SUPPORTED}")
    if raw.get("signed"):
        raise InvalidInput(f"signed sparsify SAEs are not supported; {SUPPORTED}")
    d_in = positive_int(raw.get("d_in"), f"d_in in {CFG_FILE}")
    n = raw.get("num_latents") or 0
    d_sae = positive_int(n if n else d_in * int(raw.get("expansion_factor", 32)), f"num_latents in {CFG_FILE}")
    where = f"{WEIGHTS_FILE} in {str(folder)!r}"
    check_memory([("encoder.weight", (d_sae, d_in), 2), ("W_dec", (d_sae, d_in), 2)], f"{CFG_FILE} in {str(folder)!r}")
    raw_t = load_safetensors(file_in(folder, WEIGHTS_FILE, root, "sparsify"), where)
    W_enc = raw_t["W_enc"] if "W_enc" in raw_t else raw_t["encoder.weight"].T if "encoder.weight" in raw_t else None
    W_dec = raw_t.get("W_dec", raw_t["decoder.weight"].T if "decoder.weight" in raw_t else None)
    if W_dec is not None and W_dec.ndim == 2 and tuple(W_dec.shape) == (d_in, d_sae) and d_in != d_sae:
        W_dec = W_dec.T  # [d_in, d_sae] as SAELens' converter expects: take either orientation
    b_enc = raw_t.get("encoder.bias", raw_t.get("b_enc"))
    notes = (
        ["W_skip (skip connection) left out: it adds to reconstructions, not to features"] if "W_skip" in raw_t else []
    )
    name = folder.name
    m = re.search(r"layers[._](\d+)", name)
    hook_name, layer = (
        (f"blocks.{int(m.group(1))}.hook_resid_post", int(m.group(1)))
        if m
        else (("hook_embed", None) if name == "embed_tokens" else (None, None))
    )
    cfg = normalised(
        architecture="topk",
        d_in=d_in,
        d_sae=d_sae,
        k=raw.get("k", 32),
        apply_b_dec_to_input=True,
        hook_name=hook_name,
        hook_layer=layer,
        layout="sparsify",
        format="sparsify",
        notes=notes,
        original=raw,
    )
    tensors = {"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": raw_t.get("b_dec")}
    return finish(cfg, {k: v for k, v in tensors.items() if v is not None}, where)


FORMAT = SaeFormat("sparsify", "EleutherAI sparsify", (CFG_FILE, WEIGHTS_FILE), read)
