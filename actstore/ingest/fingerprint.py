"""Fingerprints of a model: which weights, tokenizer and extraction spec activations came from.

The store records one fingerprint per model key and refuses a write whose fingerprint differs
(:meth:`actstore.store.models.Models.check_write`), so a second model whose folder happens to
have the same name cannot add rows under the first one's key.

A fingerprint is three digests joined by ``-``: ``WWWWWWWWWWWW-TTTTTTTT-SSSSSSSS``

* ``W`` (12 hex digits of a SHA-256): the bytes of the weight files as stored on disk -- the
  ``*.safetensors`` files when there are any (what the runner loads), else ``*.bin`` /
  ``*.pt`` / ``*.pth`` / ``*.gguf`` -- with their file names, plus ``config.json`` parsed and
  without the keys that do not change the computation (``transformers_version``, ``dtype``,
  ``torch_dtype``, ``_name_or_path``, ``architectures``). Hashing runs at disk/SHA-256 speed
  (about 1-2 GB/s: seconds for a 7B model, against minutes for an ingest) and is cached per
  process by file path, size and modification time.
* ``T``: the tokenizer files (``tokenizer.json``, ``tokenizer_config.json``, vocabularies,
  merges, sentencepiece models, special/added tokens, chat templates).
* ``S``: the extraction spec: site (``resid_post``), token pooling (``last_non_padding`` for
  ``last``, or ``first`` / ``mean``), chat template (None: prompts are encoded as given;
  ``"user"``: each wrapped as one user message) and the effective maximum tokens (truncation
  changes the activations of long prompts). The defaults keep the spec of older stores.

A GGUF file (config, tokenizer and weights in one file) has ``W`` = the first 12 hex digits
of the file's own SHA-256 (``sha256sum FILE``) and ``T`` a digest of the tokenizer's
vocabulary as loaded from it.

The same weights saved in another format (``.bin`` instead of ``.safetensors``) give another
``W``: the check errs on the side of refusing. A hub model is fingerprinted from its files in
the local Hugging Face cache; when they cannot be found, from its loaded tensors (float32
bytes in state-dict order).
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actstore.ingest.runner import ModelRunner

__all__ = ["SITE", "TOKEN", "extraction_spec", "folder_digests", "model_fingerprint"]

SITE = "resid_post"
TOKEN = "last_non_padding"  # the spec's name of the token site ``last`` (see actstore.ingest.token_sites)

_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".gguf")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)
_CONFIG_NOISE = ("transformers_version", "dtype", "torch_dtype", "_name_or_path", "architectures")
_CHUNK = 1 << 20

_cache: dict[tuple, str] = {}
_cache_lock = threading.Lock()


def _file_digest(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _cache_lock:
        hit = _cache.get(key)
    if hit is None:
        with path.open("rb") as fh:
            hit = hashlib.file_digest(fh, "sha256").hexdigest()
        with _cache_lock:
            _cache[key] = hit
    return hit


def _config_digest(path: Path) -> str:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return _file_digest(path) if path.is_file() else "none"
    if isinstance(config, dict):
        for k in _CONFIG_NOISE:
            config.pop(k, None)
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def folder_digests(folder: str | Path) -> tuple[str, str] | None:
    """(weights digest, tokenizer digest) of a model folder, as full SHA-256 hex digests;
    None when the folder holds no weight files."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    weights = [p for p in files if p.suffix == ".safetensors"] or [p for p in files if p.suffix in _WEIGHT_SUFFIXES]
    if not weights:
        return None
    w = hashlib.sha256()
    for p in weights:
        w.update(f"{p.name}\0{_file_digest(p)}\n".encode())
    w.update(f"config.json\0{_config_digest(folder / 'config.json')}\n".encode())
    t = hashlib.sha256()
    for p in files:
        if p.name in _TOKENIZER_FILES:
            t.update(f"{p.name}\0{_file_digest(p)}\n".encode())
    return w.hexdigest(), t.hexdigest()


def extraction_spec(max_tokens: int | None, token: str = "last", chat_template: bool = False) -> dict[str, Any]:
    """What decides which vector is stored for a prompt, besides the model."""
    return {
        "site": SITE,
        "token": TOKEN if token == "last" else token,
        "chat_template": "user" if chat_template else None,
        "max_tokens": max_tokens,
    }


def _tensor_digests(runner: ModelRunner) -> tuple[str, str]:
    import torch

    w = hashlib.sha256()
    for name, tensor in runner.model.state_dict().items():
        w.update(name.encode() + b"\0")
        w.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return w.hexdigest(), _vocab_digest(runner)


def _vocab_digest(runner: ModelRunner) -> str:
    tok = runner.tokenizer
    vocab = json.dumps(sorted(tok.get_vocab().items()), ensure_ascii=False)
    return hashlib.sha256((type(tok).__name__ + vocab).encode()).hexdigest()


def _files_folder(runner: ModelRunner) -> Path | None:
    source = Path(runner.source)
    if source.is_dir():
        return source
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(runner.source, revision=runner.revision, local_files_only=True))
    except Exception:  # not in the local cache under that name: fall back on the tensors
        return None


def model_fingerprint(
    runner: ModelRunner, max_tokens: int | None, token: str = "last", chat_template: bool = False
) -> str:
    """The fingerprint of ``runner``'s model when it encodes prompts cut to ``max_tokens``
    (the effective limit, see :meth:`ModelRunner.effective_max_tokens`) at token site
    ``token``, wrapped in its chat template or not."""
    gguf = getattr(runner, "gguf_file", None)
    if gguf:  # config, tokenizer and weights all in one file: W is the file's own SHA-256
        digests = _file_digest(Path(gguf)), _vocab_digest(runner)
    else:
        folder = _files_folder(runner)
        digests = folder_digests(folder) if folder is not None else None
    if digests is None:
        digests = _tensor_digests(runner)
    weights, tokenizer = digests
    spec = hashlib.sha256(
        json.dumps(extraction_spec(max_tokens, token, chat_template), sort_keys=True).encode()
    ).hexdigest()
    return f"{weights[:12]}-{tokenizer[:8]}-{spec[:8]}"
