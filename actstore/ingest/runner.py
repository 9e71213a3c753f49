"""The forward pass of an ingest: tokenize, batch, and capture block outputs per layer.

What is captured
    For prompt ``x`` and layer ``l``: the output of decoder block ``l`` (0-based), i.e. the
    residual stream after the block (TransformerLens ``blocks.{l}.hook_resid_post``), at the
    last non-padding token of ``x`` (``token="last"``, the default; ``"first"``: the first
    token, whichever side the batch is padded on; ``"mean"``: the mean over the non-padding
    tokens, padding weighted 0, summed in float32). It is read with a forward hook on the block module
    itself, so the last layer is the raw block output, *not* ``hidden_states[-1]`` (which most
    Hugging Face models return after the final norm).

    Encoder models (BERT-style) are handled the same way: the blocks are ``encoder.layer`` and
    the "last token" is the last non-padding token, which for BERT tokenizers is ``[SEP]``
    (attention is bidirectional, so every position has seen the whole prompt); sentence-
    embedding users pool them with ``first`` (``[CLS]``) or ``mean``.
    With ``chat_template=True`` each prompt is first wrapped as one user message by the
    tokenizer's chat template (generation prompt added; the template writes the special
    tokens, so none are added on top).

Loading
    :func:`actstore.ingest.loading.load_model` (hub id, folder, GGUF file or hub GGUF; the
    load report; the LM-head check). Compute dtype: bf16 (fp16 where bf16 is unsupported) on
    CUDA, fp32 on CPU.

Blocks
    Found generically: the shallowest ``nn.ModuleList`` whose length is the config's number
    of hidden layers (``model.layers`` for Llama/Gemma-2/Qwen2/Mistral/Phi/GPT-NeoX base
    models, ``h`` for GPT-2, ``encoder.layer`` for BERT). Block outputs may be a Tensor
    (transformers >= 4.54 decoder layers) or a tuple whose first item is the hidden state;
    both are handled, and the shape is checked to be ``[batch, seq, d_model]``.

Padding
    Batches are padded on the tokenizer's side (or ``padding_side``). The last real token of
    row ``i`` is ``T - 1 - mask[i].flip().argmax()``, correct for either side. With left
    padding the runner passes ``position_ids = (mask.cumsum(-1) - 1).clamp(min=0)`` so that
    absolute-position models (GPT-2, BERT) and rotary ones alike see positions ``0..n-1`` for
    the real tokens; models that derive positions from the input ids themselves (RoBERTa
    family) are left alone. With right padding the default positions are already right.

Batching
    Prompts are tokenized once, truncated to ``max_tokens`` (and to the model's maximum
    positions) on the tokenizer's truncation side, sorted by token length (longest first) and
    cut into batches of ``batch_size``, so little padding is computed. On CUDA out-of-memory
    the batch is halved (and the cap kept for later batches) until it fits.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actstore.config import Settings
from actstore.errors import InvalidInput
from actstore.ingest.loading import (
    gguf_quantization,
    hub_gguf,
    hub_reachable,
    is_bidirectional,
    load_model,
    resolve_device,
    resolve_dtype,
)
from actstore.ingest.token_sites import check_token_site
from actstore.layers import LayerSpec, parse_layer_spec

__all__ = [
    "Batch",
    "ModelRunner",
    "Tokenized",
    "gguf_quantization",
    "hub_gguf",
    "hub_reachable",
    "resolve_device",
    "resolve_dtype",
]

log = logging.getLogger(__name__)

# Model types whose embeddings compute position ids from the input ids (padding-aware).
_SELF_POSITIONED = {
    "roberta",
    "xlm-roberta",
    "camembert",
    "longformer",
    "luke",
    "mpnet",
    "data2vec-text",
    "xmod",
    "roberta-prelayernorm",
    "esm",
}
_BLOCK_NAMES = ("layers", "h", "layer", "blocks", "block")


class _StopForward(Exception):
    """Raised by the hook of the deepest requested block to skip the rest of the model."""


@dataclass
class Tokenized:
    """Token ids of ``n`` prompts, each already truncated to the runner's maximum length.

    ``input_ids[i]`` is a list of ``lengths[i]`` ints; ``token_type_ids`` is ``None`` unless
    the tokenizer produces them; ``truncated[i]`` says whether prompt ``i`` was cut.
    """

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    lengths: np.ndarray  # int64 [n]
    truncated: np.ndarray  # bool [n]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_truncated(self) -> int:
        return int(self.truncated.sum())

    @property
    def n_tokens(self) -> int:
        return int(self.lengths.sum())


@dataclass(frozen=True)
class Batch:
    """What :meth:`ModelRunner.run_batch` computes for some prompts, rows in the order asked.

    ``activations``: ``{layer: float32 [n, d_model]}``, the block outputs at the last real
    token. ``next_tokens``: the model's ``top_k`` most probable next-token ids after the last
    real token, int64 ``[n, top_k]`` most probable first, when asked for (else None).
    """

    activations: dict[int, np.ndarray]
    next_tokens: np.ndarray | None = None

    def __len__(self) -> int:
        return len(next(iter(self.activations.values()))) if self.activations else 0

    @staticmethod
    def concat(parts: Sequence[Batch]) -> Batch:
        """The rows of ``parts`` one after another (same layers, next tokens in all or none)."""
        layers = parts[0].activations.keys()
        nxt = [p.next_tokens for p in parts]
        return Batch(
            {l: np.concatenate([p.activations[l] for p in parts]) for l in layers},
            None if nxt[0] is None else np.concatenate(nxt),
        )


# --------------------------------------------------------------------------- the runner


class ModelRunner:
    """A loaded model ready to encode prompts into last-token block outputs.

    Attributes: ``n_layers`` (decoder blocks), ``d_model``, ``architecture``
    (``config.model_type``), ``source``, ``device``, ``dtype`` (compute), ``max_length``
    (the model's maximum positions, or None), ``padding_side``, ``tokenizer``, ``model``;
    for a GGUF source ``gguf_file`` (its path, also ``source``) and ``quantization``
    (e.g. ``Q4_1``), both None otherwise.
    Safe to share between threads (forward passes are serialised by a lock).
    """

    def __init__(
        self,
        source: str | Path,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype | None = None,
        revision: str | None = None,
        padding_side: str | None = None,
        lm_head: bool = False,
        settings: Settings | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        loaded = load_model(
            source, device=self.device, dtype=self.dtype, revision=revision, lm_head=lm_head, settings=settings
        )
        self.source, self.revision = loaded.source, loaded.revision
        self.gguf_file, self.quantization = loaded.gguf_file, loaded.quantization
        self.tokenizer, config = loaded.tokenizer, loaded.config
        # With lm_head the blocks and forward use the causal LM's base model, and the head maps
        # the final (normed) hidden state to next-token logits (see run_batch).
        self.lm_head: torch.nn.Module | None = loaded.lm_head
        self.model = model = loaded.model
        self.config = model.config
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.architecture: str = str(getattr(config, "model_type", type(model).__name__))
        # BERT-style encoder: its last token is a separator ([SEP]), see loading.is_bidirectional
        self.bidirectional: bool = is_bidirectional(config)
        n_cfg = getattr(text_config, "num_hidden_layers", None)
        self.blocks_name, self.blocks = _find_blocks(self.model, n_cfg)
        self.n_layers: int = len(self.blocks)
        self.d_model: int = int(getattr(text_config, "hidden_size", 0) or _probe_width(self.model))
        max_pos = getattr(text_config, "max_position_embeddings", None)
        self.max_length: int | None = int(max_pos) if isinstance(max_pos, int) and max_pos > 0 else None
        self.padding_side = padding_side or getattr(self.tokenizer, "padding_side", "right") or "right"
        if self.padding_side not in ("left", "right"):
            raise InvalidInput(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")
        tok = self.tokenizer
        pad = tok.pad_token_id
        if pad is None:
            pad = tok.eos_token_id if tok.eos_token_id is not None else 0
        self.pad_id = int(pad if not isinstance(pad, list) else pad[0])
        params = inspect.signature(self.model.forward).parameters
        self._accepts = set(params)
        self._pass_positions = "position_ids" in params and self.architecture not in _SELF_POSITIONED
        self._batch_cap: int | None = None
        self.last_truncated = 0
        # Hooks are registered per forward pass on shared block modules: one pass at a time.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"ModelRunner({self.source!r}, architecture={self.architecture!r}, "
            f"n_layers={self.n_layers}, d_model={self.d_model}, device={str(self.device)!r}, "
            f"dtype={str(self.dtype).removeprefix('torch.')!r})"
        )

    # ----------------------------------------------------------------- tokenization

    def effective_max_tokens(self, max_tokens: int | None) -> int | None:
        """``max_tokens`` capped by the model's maximum positions (None = no cap)."""
        if max_tokens is not None and max_tokens < 1:
            raise InvalidInput(f"max_tokens must be >= 1, got {max_tokens}")
        limits = [m for m in (max_tokens, self.max_length) if m]
        return min(limits) if limits else None

    def apply_chat_template(self, texts: Sequence[str]) -> list[str]:
        """Each of ``texts`` wrapped as a single user message by the tokenizer's chat template
        (with the generation prompt); InvalidInput when the tokenizer has none."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise InvalidInput(
                f"the tokenizer of model {str(self.source)!r} has no chat template; "
                "ingest it without the chat template",
                field="chat_template",
            )
        return [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False
            )
            for t in texts
        ]

    def tokenize(self, texts: Sequence[str], max_tokens: int | None = 512, chat_template: bool = False) -> Tokenized:
        """Tokenize ``texts`` (with special tokens) and truncate each to ``max_tokens``.
        ``chat_template``: wrap each text first (see :meth:`apply_chat_template`); the template
        writes the special tokens itself, so none are added then."""
        texts = list(texts)
        special = True
        if chat_template:
            texts = self.apply_chat_template(texts)
            special = False
        if not texts:
            return Tokenized([], None, np.zeros(0, np.int64), np.zeros(0, bool))
        limit = self.effective_max_tokens(max_tokens)
        enc = self.tokenizer(
            texts,
            add_special_tokens=special,
            truncation=False,
            padding=False,
            return_attention_mask=False,
            verbose=False,
        )
        ids: list[list[int]] = [list(x) for x in enc["input_ids"]]
        tti = enc.get("token_type_ids")
        tti = [list(x) for x in tti] if tti is not None and "token_type_ids" in self._accepts else None
        truncated = np.array([limit is not None and len(x) > limit for x in ids], dtype=bool)
        if truncated.any():
            where = np.flatnonzero(truncated)
            cut = self.tokenizer(
                [texts[i] for i in where],
                add_special_tokens=special,
                truncation=True,
                max_length=limit,
                padding=False,
                return_attention_mask=False,
                verbose=False,
            )
            for j, i in enumerate(where):
                ids[i] = list(cut["input_ids"][j])
                if tti is not None:
                    tti[i] = list(cut["token_type_ids"][j])
        lengths = np.array([len(x) for x in ids], dtype=np.int64)
        if (lengths == 0).any():
            i = int(np.flatnonzero(lengths == 0)[0])
            raise InvalidInput(f"prompt {i} ({texts[i][:40]!r}) tokenizes to no tokens")
        return Tokenized(ids, tti, lengths, truncated)

    @staticmethod
    def plan_batches(tok: Tokenized, batch_size: int) -> list[np.ndarray]:
        """Indices into ``tok`` grouped into batches of similar length, longest first.

        Deterministic for given lengths (stable sort), so a resumed ingest sees the same
        batches as an uninterrupted one.
        """
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be >= 1, got {batch_size}")
        order = np.argsort(-tok.lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    # ----------------------------------------------------------------- forward

    def layers(self, spec: LayerSpec = "all") -> list[int]:
        """Resolve a layer spec (``"all"``, ``"0,5,-1"``, ``"grid:9"``, ints) for this model."""
        return parse_layer_spec(spec, self.n_layers)

    def run_batch(
        self,
        tok: Tokenized,
        idx: np.ndarray | Sequence[int],
        layers: Sequence[int],
        top_k: int = 0,
        token: str = "last",
    ) -> Batch:
        """Block outputs at the last real token for prompts ``idx`` of ``tok`` (``token``:
        ``last``; ``first`` the first token, ``mean`` the mean over the real tokens).

        Returns a :class:`Batch`: ``activations`` ``{layer: float32 [len(idx), d_model]}`` in
        the order of ``idx``; with ``top_k`` > 0 (needs ``lm_head=True``) also ``next_tokens``,
        the model's ``top_k`` most probable next-token ids [len(idx), top_k] (int64, most
        probable first) after the last real token.
        Splits the batch on CUDA out-of-memory (halving until it fits).
        """
        idx = np.asarray(idx, dtype=np.int64)
        check_token_site(token)
        layers = sorted(set(int(x) for x in layers))
        if top_k and self.lm_head is None:
            raise InvalidInput("next tokens need the LM head: load the runner with lm_head=True", field="next_tokens")
        cap = self._batch_cap
        if cap is not None and len(idx) > cap:
            return Batch.concat(
                [self.run_batch(tok, idx[i : i + cap], layers, top_k, token) for i in range(0, len(idx), cap)]
            )
        try:
            with self._lock:
                return self._forward(tok, idx, layers, top_k, token)
        except torch.OutOfMemoryError:
            if len(idx) <= 1:
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self._batch_cap = max(1, len(idx) // 2)
            log.warning("CUDA out of memory at batch size %d; retrying with %d", len(idx), self._batch_cap)
            return self.run_batch(tok, idx, layers, top_k, token)

    @torch.inference_mode()
    def _forward(self, tok: Tokenized, idx: np.ndarray, layers: list[int], top_k: int, token: str = "last") -> Batch:
        B = len(idx)
        if B == 0:
            return Batch(
                {l: np.zeros((0, self.d_model), np.float32) for l in layers},
                np.zeros((0, top_k), np.int64) if top_k else None,
            )
        for l in layers:
            if not 0 <= l < self.n_layers:
                raise InvalidInput(f"layer {l} out of range 0..{self.n_layers - 1}")
        lengths = tok.lengths[idx]
        T = int(lengths.max())
        ids = np.full((B, T), self.pad_id, dtype=np.int64)
        mask = np.zeros((B, T), dtype=np.int64)
        tti = np.zeros((B, T), dtype=np.int64) if tok.token_type_ids is not None else None
        left = self.padding_side == "left"
        for r, i in enumerate(idx):
            n = int(lengths[r])
            sl = slice(T - n, T) if left else slice(0, n)
            ids[r, sl] = tok.input_ids[i]
            mask[r, sl] = 1
            if tti is not None:
                tti[r, sl] = tok.token_type_ids[i]
        dev = self.device
        inputs: dict[str, torch.Tensor | bool] = {
            "input_ids": torch.from_numpy(ids).to(dev),
            "attention_mask": torch.from_numpy(mask).to(dev),
        }
        if tti is not None:
            inputs["token_type_ids"] = torch.from_numpy(tti).to(dev)
        if left and self._pass_positions:
            inputs["position_ids"] = torch.from_numpy(np.clip(mask.cumsum(-1) - 1, 0, None)).to(dev)
        if "use_cache" in self._accepts:
            inputs["use_cache"] = False
        # Last real token of each row, for either padding side: T - 1 - argmax(flipped mask).
        last = torch.from_numpy(T - 1 - mask[:, ::-1].argmax(1)).to(dev)
        first = torch.from_numpy(mask.argmax(1)).to(dev)  # first real token (left or right padding)
        weights = torch.from_numpy(mask / lengths[:, None]).to(dev, torch.float32)[:, :, None]
        rows = torch.arange(B, device=dev)

        def pool(h: torch.Tensor) -> torch.Tensor:
            if token == "first":
                return h[rows, first].float()
            if token == "mean":  # padding positions weigh 0; summed in float32
                return (h.float() * weights).sum(1)
            return h[rows, last].float()

        captured: dict[int, torch.Tensor] = {}
        deepest = max(layers)
        stop_early = deepest < self.n_layers - 1 and not top_k

        def make_hook(layer: int):
            def hook(module, args, output):
                h = _hidden_from_output(output)
                if h.dim() != 3 or h.shape[0] != B or h.shape[1] != T:
                    raise RuntimeError(
                        f"block {layer} of {self.architecture} returned shape {tuple(h.shape)}, "
                        f"expected [{B}, {T}, d_model]"
                    )
                captured[layer] = pool(h)
                if stop_early and layer == deepest:
                    raise _StopForward

            return hook

        handles = [self.blocks[l].register_forward_hook(make_hook(l)) for l in layers]
        result = None
        try:
            result = self.model(**inputs)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        acts = {l: captured[l].cpu().numpy() for l in layers}
        next_ids = None
        if top_k:
            final = _hidden_from_output(result)[rows, last]  # last hidden state, final norm applied
            logits = self.lm_head(final).float()
            k = min(int(top_k), logits.shape[-1])
            next_ids = torch.topk(logits, k, dim=-1).indices.cpu().numpy().astype(np.int64)
        return Batch(acts, next_ids)

    # ----------------------------------------------------------------- convenience

    def iter_encode(
        self,
        tok: Tokenized,
        layers: Sequence[int],
        batch_size: int = 32,
        batches: Sequence[np.ndarray] | None = None,
        token: str = "last",
    ) -> Iterator[tuple[np.ndarray, dict[int, np.ndarray]]]:
        """Yield ``(idx, {layer: float32 [len(idx), d]})`` batch by batch (length-sorted)."""
        for idx in batches if batches is not None else self.plan_batches(tok, batch_size):
            yield idx, self.run_batch(tok, idx, layers, token=token).activations

    def encode(
        self,
        texts: Sequence[str],
        layers: LayerSpec = "all",
        batch_size: int = 32,
        max_tokens: int | None = 512,
        token: str = "last",
        chat_template: bool = False,
    ) -> dict[int, np.ndarray]:
        """Encode ``texts``: ``{layer: float32 array [len(texts), d_model]}`` in input order.

        ``layers`` is a layer spec (see :func:`actstore.layers.parse_layer_spec`).
        ``self.last_truncated`` holds how many prompts were cut to ``max_tokens``.
        """
        wanted = self.layers(layers)
        tok = self.tokenize(texts, max_tokens, chat_template)
        self.last_truncated = tok.n_truncated
        out = {l: np.zeros((len(tok), self.d_model), np.float32) for l in wanted}
        for idx, acts in self.iter_encode(tok, wanted, batch_size, token=token):
            for l in wanted:
                out[l][idx] = acts[l]
        return out


# --------------------------------------------------------------------------- helpers


def _hidden_from_output(output: Any) -> torch.Tensor:
    """The hidden state of a block's output: a Tensor, or item 0 of a tuple/ModelOutput."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    hs = getattr(output, "hidden_states", None) or getattr(output, "last_hidden_state", None)
    if isinstance(hs, torch.Tensor):
        return hs
    raise RuntimeError(f"cannot find the hidden state in a block output of type {type(output).__name__}")


def _find_blocks(model: torch.nn.Module, n_layers: int | None) -> tuple[str, torch.nn.ModuleList]:
    """The ModuleList of transformer blocks: the shallowest one with ``n_layers`` entries."""
    lists = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.ModuleList) and len(m) > 0 and len({type(c) for c in m}) == 1
    ]
    if n_layers:
        matching = [(n, m) for n, m in lists if len(m) == n_layers]
    else:
        matching = []
    if not matching:
        # fall back on the conventional names, longest list first
        matching = [(n, m) for n, m in lists if n.rsplit(".", 1)[-1] in _BLOCK_NAMES]
        matching.sort(key=lambda nm: -len(nm[1]))
        matching = matching[:1]
    if not matching:
        raise InvalidInput(
            f"cannot find the transformer blocks of {type(model).__name__}: no ModuleList of {n_layers} layers"
        )

    def rank(item: tuple[str, torch.nn.ModuleList]) -> tuple[int, int]:
        name = item[0]
        leaf = name.rsplit(".", 1)[-1]
        return (
            name.count(".") if name else -1,
            _BLOCK_NAMES.index(leaf) if leaf in _BLOCK_NAMES else len(_BLOCK_NAMES),
        )

    name, blocks = min(matching, key=rank)
    return name, blocks


def _probe_width(model: torch.nn.Module) -> int:
    emb = model.get_input_embeddings()
    return int(emb.weight.shape[1])
