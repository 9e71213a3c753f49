"""Tiny random Hugging Face models and a locally trained tokenizer, built offline.

Used by ``actstore demo`` when no hub is reachable and by the tests: real model folders
(``config.json``, ``model.safetensors``, tokenizer files written by ``save_pretrained``) that
load through the ordinary ``from_pretrained`` path. Nothing is downloaded.

Families: llama, gemma2, qwen2, gpt_neox (Pythia), gpt2, mistral, phi. Models are saved as
their ``...ForCausalLM`` class, as hub checkpoints are, so the loader strips the LM head as
it would for a real model. The tokenizer is a byte-level BPE (any text is encodable) trained
on a few hundred words of built-in text, wrapped in ``PreTrainedTokenizerFast`` with
``<pad>``, ``<s>``, ``</s>`` and ``<unk>``; Llama-like families get a BOS token prepended,
GPT-2-like ones do not.
"""

from __future__ import annotations

from pathlib import Path

FAMILIES: tuple[str, ...] = ("llama", "gemma2", "qwen2", "gpt_neox", "gpt2", "mistral", "phi")

# Families whose real tokenizers prepend a BOS token.
_ADDS_BOS = {"llama", "gemma2", "mistral"}

_CORPUS = """
The quick brown fox jumps over the lazy dog while the small cat sleeps in the warm sun.
A model reads a prompt and writes a vector for every layer of the network it has.
Researchers compare the layers of two models to see whether they learn the same features.
It is a charming and often affecting journey through the history of a small town.
The film is bleak and desperate, but the actors give it a strange and quiet beauty.
Markets rose on Monday after the central bank said it would keep interest rates low.
The team won the final game of the season with a goal in the last minute of play.
Scientists found water on a distant planet that orbits a star like our own sun.
A new phone was released today with a faster chip, a better camera and a larger screen.
Unions representing workers say they are disappointed after talks with the company.
This movie was great, I loved every minute of it and would watch it again tomorrow.
That was the worst meal I have ever had, cold food and a rude waiter at the table.
Paris is the capital of France and Berlin is the capital of Germany in Europe.
One two three four five six seven eight nine ten eleven twelve numbers count up.
Red green blue yellow orange purple black white colours of the rainbow and the night.
Please tell me a story about a dragon who lives under a mountain and guards gold.
How many legs does a spider have, and why do birds fly south in the winter months?
Water boils at one hundred degrees and freezes at zero on the Celsius scale.
The stock of the company fell sharply after the report showed lower profits this year.
She walked to the store, bought some bread and milk, and came home before dark.
""".strip()


def build_tokenizer(*, add_bos: bool = False, padding_side: str = "right", vocab_size: int = 400):
    """Train a byte-level BPE tokenizer on the built-in corpus; return a PreTrainedTokenizerFast.

    Special tokens: ``<pad>`` (id 0), ``<s>``, ``</s>``, ``<unk>``. With ``add_bos`` every
    encoding starts with ``<s>`` (as Llama/Gemma/Mistral tokenizers do).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    if add_bos:
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        padding_side=padding_side,
        model_max_length=128,
    )


def make_config(family: str, vocab_size: int, *, n_layers: int = 2, hidden: int = 32):
    """A tiny config of ``family`` (``hidden`` 32-64, ``n_layers`` 2-3 recommended)."""
    import transformers as tf

    heads = 4
    common = dict(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if family == "llama":
        return tf.LlamaConfig(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=n_layers,
            num_attention_heads=heads,
            num_key_value_heads=2,
            max_position_embeddings=256,
            **common,
        )
    if family == "mistral":
        return tf.MistralConfig(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=n_layers,
            num_attention_heads=heads,
            num_key_value_heads=2,
            max_position_embeddings=256,
            sliding_window=64,
            **common,
        )
    if family == "qwen2":
        return tf.Qwen2Config(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=n_layers,
            num_attention_heads=heads,
            num_key_value_heads=2,
            max_position_embeddings=256,
            **common,
        )
    if family == "gemma2":
        return tf.Gemma2Config(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=n_layers,
            num_attention_heads=heads,
            num_key_value_heads=2,
            head_dim=hidden // heads,
            query_pre_attn_scalar=hidden // heads,
            max_position_embeddings=256,
            sliding_window=8,
            **common,
        )
    if family == "gpt_neox":
        return tf.GPTNeoXConfig(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=n_layers,
            num_attention_heads=heads,
            max_position_embeddings=256,
            **common,
        )
    if family == "gpt2":
        return tf.GPT2Config(n_embd=hidden, n_layer=n_layers, n_head=heads, n_positions=256, **common)
    if family == "phi":
        return tf.PhiConfig(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=n_layers,
            num_attention_heads=heads,
            max_position_embeddings=256,
            **common,
        )
    raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")


def build_tiny_model(
    family: str, path: str | Path, *, n_layers: int = 2, hidden: int = 32, padding_side: str = "right", seed: int = 0
) -> Path:
    """Build a random ``family`` model + tokenizer and save both (safetensors) under ``path``.

    The weights are random (``torch.manual_seed(seed)``) with a larger init scale than the
    default so that activations differ visibly across tokens and layers.
    """
    import torch
    import transformers as tf

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(add_bos=family in _ADDS_BOS, padding_side=padding_side)
    config = make_config(family, len(tokenizer), n_layers=n_layers, hidden=hidden)
    config.initializer_range = 0.2
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config)
    model.eval()
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path
