"""Hugging Face models -> last-token activations per layer -> store; prompt sources.

Modules (imported lazily, so ``from actstore.ingest.sources import read_prompts`` does not
pull in torch):

- :mod:`.sources`  ``read_prompts(path) -> PromptSet`` for JSONL/CSV/TSV/Parquet/text/HF.
- :mod:`.loading`  ``load_model(source, ...)``: hub id, folder, GGUF file or hub GGUF -> config,
  tokenizer, model (GGUF headers checked, the LM head checked against the load report).
- :mod:`.runner`   ``ModelRunner(source).encode(texts, layers)`` -> {layer: float32 [n, d]}: the
  forward pass (tokenize, batch, hook the blocks, pool the token site, next tokens).
- :mod:`.keys`     ``default_model_key(source)``: a model's key from its own name.
- :mod:`.plan`     ``plan_ingest(store, model, dataset, ...) -> IngestPlan``: the checks of an
  ingest, done once for either engine; ``IngestPlan.claim(ModelInfo)`` -> ``IngestWork``.
- :mod:`.pipeline` ``ingest(store, model, dataset, ...) -> IngestSummary`` (resumable).
- :mod:`.manifest` ``run_manifest(store, "runs.toml")`` for several models/datasets.
- :mod:`.ray_engine` ``ingest_ray(store, model, dataset, ...)``: the same ingest as a Ray Data
  pipeline of model actors (``--engine ray``; Ray imported only when called).
- :mod:`.token_sites` the token sites an ingest can store (``last``, ``first``, ``mean``).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "PromptSet": "sources",
    "read_prompts": "sources",
    "Batch": "runner",
    "ModelRunner": "runner",
    "IngestSummary": "pipeline",
    "ingest": "pipeline",
    "model_key_for": "pipeline",
    "open_store": "pipeline",
    "IngestPlan": "plan",
    "plan_ingest": "plan",
    "default_model_key": "keys",
    "load_model": "loading",
    "ManifestRun": "manifest",
    "load_manifest": "manifest",
    "run_manifest": "manifest",
    "ingest_ray": "ray_engine",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
