"""Text encoding for nearest-neighbour queries by new text: each stored model's weights are
loaded from its recorded source once, on first use, and kept.

torch and transformers are imported only when a model is first loaded. A text is cut to
``CHARS_PER_TOKEN`` characters per token the encoder keeps (``MAX_TOKENS``, or the model's
maximum positions when fewer) before tokenization, on the tokenizer's truncation side, so a
huge text costs no more than a long one. Forward passes of one model run one at a time (the
runner's own lock); they take no heavy-work slot.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from actstore.errors import ActstoreError, InvalidInput, require_extra
from actstore.store import ModelInfo

__all__ = ["CHARS_PER_TOKEN", "MAX_TOKENS", "TextEncoders", "truncate_text"]

MAX_TOKENS = 512  # tokens of a text the encoder keeps (ModelRunner.encode's default)
CHARS_PER_TOKEN = 32  # characters kept per token: more than any common tokenizer's longest token


def truncate_text(text: str, max_tokens: int | None, side: str = "right") -> str:
    """``text`` cut to CHARS_PER_TOKEN * min(MAX_TOKENS, max_tokens) characters; ``side``
    "right" keeps the start, "left" the end (as the tokenizer would truncate tokens)."""
    limit = CHARS_PER_TOKEN * min(MAX_TOKENS, max_tokens or MAX_TOKENS)
    if len(text) <= limit:
        return text
    return text[-limit:] if side == "left" else text[:limit]


class TextEncoders:
    """Loaded model runners by model key. Thread-safe."""

    def __init__(self) -> None:
        self._runners: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def loaded(self) -> list[str]:
        """Keys of the models whose weights are loaded."""
        with self._lock:
            return sorted(self._runners)

    def _runner(self, info: ModelInfo) -> Any:
        require_extra("ingest", "a text look-up (running the model on new text)")
        from actstore.ingest.runner import ModelRunner  # torch + transformers only when needed

        with self._lock:
            runner = self._runners.get(info.key)
            if runner is not None:
                return runner
            try:
                runner = ModelRunner(info.source)
            except ActstoreError as exc:
                raise InvalidInput(
                    f"cannot encode text with model {info.key!r}: its weights are not reachable from the server ({exc})"
                ) from None
            except Exception as exc:  # noqa: BLE001 - any load failure means "not reachable"
                raise InvalidInput(
                    f"cannot encode text with model {info.key!r}: its weights at {info.source!r} "
                    f"are not reachable from the server ({type(exc).__name__}: {exc})"
                ) from None
            self._runners[info.key] = runner
            return runner

    def encode(self, info: ModelInfo, layer: int, text: str) -> np.ndarray:
        """Activations float32 [1, d_model] of ``text`` at ``layer`` of a stored model."""
        runner = self._runner(info)
        if runner.d_model != info.d_model or runner.n_layers != info.n_layers:
            raise InvalidInput(
                f"the weights at {info.source!r} (d_model={runner.d_model}, {runner.n_layers} layers) do not "
                f"match stored model {info.key!r} (d_model={info.d_model}, {info.n_layers} layers)"
            )
        side = getattr(getattr(runner, "tokenizer", None), "truncation_side", "right")
        text = truncate_text(text, getattr(runner, "max_length", None), side)
        out = runner.encode([text], layers=[layer], batch_size=1, max_tokens=MAX_TOKENS)
        return np.asarray(out[layer], dtype=np.float32).reshape(1, -1)
