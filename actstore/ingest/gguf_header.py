"""The header of a GGUF file: read once, checked against the file's tensors.

A GGUF's metadata (``{arch}.embedding_length``, ``block_count``, ``vocab_size``, the token
list) is what transformers builds the model from; a file whose metadata lies (a damaged or
wrongly written file) would make it build, and try to allocate, a different model.
:func:`check_gguf` compares the metadata with the tensors' real shapes, from the header
alone (the file is memory-mapped, nothing large is read), and the float32 size of the
dequantized weights with the available memory. Parsing a header with a large vocabulary takes
seconds (about 3 s for SmolLM2's 49k tokens on 2 cores), so :func:`read_gguf` keeps the last
few readers by path, size and modification time: the key default, the check and the
quantization share one parse. Imports neither torch nor transformers.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actstore.errors import InvalidInput

__all__ = ["GGUFHeader", "available_memory", "check_gguf", "gguf_quantization", "read_gguf"]


def read_gguf(path: str | Path) -> Any:
    """A ``gguf.GGUFReader`` of ``path``, shared while the file is unchanged (OSError when it
    cannot be read, ValueError when it is not a GGUF file)."""
    p = os.path.realpath(path)
    st = os.stat(p)
    return _reader(p, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _reader(path: str, size: int, mtime_ns: int) -> Any:
    from gguf import GGUFReader

    return GGUFReader(path)


@dataclass(frozen=True)
class GGUFHeader:
    """What the header of a GGUF file says, checked against its tensors (see :func:`check_gguf`).

    ``name``: ``general.name`` (None when absent); ``quantization``: the weight format
    (``Q4_1``, ``Q8_0``, ``F16``...); ``d_model`` / ``n_layers`` / ``vocab``: from the tensors;
    ``n_params``: elements of all tensors; ``float32_bytes``: their size dequantized to float32.
    """

    name: str | None
    architecture: str
    quantization: str
    d_model: int
    n_layers: int
    vocab: int
    n_params: int

    @property
    def float32_bytes(self) -> int:
        return 4 * self.n_params


def _field(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None or not f.data:
        return None
    try:
        return f.contents()
    except (AttributeError, ValueError, IndexError):
        return None


def _gib(n: float) -> str:
    """A byte count in GiB, MiB or KiB (one decimal)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 2**10:.1f} KiB"


def available_memory() -> int:
    """Bytes of memory available to a new allocation (psutil's ``available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_gguf(path: str | Path) -> GGUFHeader:
    """Read the header of a GGUF file (memory-mapped: nothing large is read) and refuse one
    whose metadata contradicts its tensors, or whose dequantized float32 weights would not fit
    in the available memory. InvalidInput names the file, the metadata value and the tensor's
    real shape (or the estimate and the memory available)."""
    from collections import Counter

    from gguf import LlamaFileType

    p = str(path)
    try:
        reader = read_gguf(p)
    except (OSError, ValueError, KeyError) as e:
        raise InvalidInput(f"cannot read the GGUF file {p!r}: {e}") from None
    arch = _field(reader, "general.architecture") or "unknown"
    tensors = {t.name: t for t in reader.tensors}
    emb = tensors.get("token_embd.weight")
    if emb is None:
        raise InvalidInput(
            f"GGUF file {p!r} has no token_embd.weight tensor, so it is not a language model transformers can load"
        )
    # GGML order: shape[0] is the embedding width, shape[1] the vocabulary
    d_model, vocab = int(emb.shape[0]), int(emb.shape[1]) if len(emb.shape) > 1 else 0
    blocks = {int(n.split(".")[1]) for n in tensors if n.startswith("blk.") and n.split(".")[1].isdigit()}
    n_layers = max(blocks) + 1 if blocks else 0
    claims = [
        (
            "embedding_length",
            _field(reader, f"{arch}.embedding_length"),
            d_model,
            f"its tensor token_embd.weight is {d_model} wide",
        ),
        (
            "block_count",
            _field(reader, f"{arch}.block_count"),
            n_layers,
            f"it holds tensors of {n_layers} blocks (blk.0..blk.{n_layers - 1})",
        ),
        ("vocab_size", _field(reader, f"{arch}.vocab_size"), vocab, f"its tensor token_embd.weight has {vocab} rows"),
    ]
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if tokens is not None:
        claims.append(
            ("tokenizer.ggml.tokens", len(tokens.data), vocab, f"its tensor token_embd.weight has {vocab} rows")
        )
    n_params = int(sum(int(t.n_elements) for t in reader.tensors))
    for what, said, real, why in claims:
        if said is not None and int(said) != real:
            name = what if "." in what else f"{arch}.{what}"
            count = " entries" if what == "tokenizer.ggml.tokens" else ""
            raise InvalidInput(
                f"GGUF file {p!r} is inconsistent: its metadata says {name} = {int(said)}{count} but {why}; "
                f"the file is damaged or was written wrongly (its tensors hold {n_params:,} parameters, "
                f"{_gib(4 * n_params)} as float32)"
            )
    code = _field(reader, "general.file_type")
    quant = None
    if code is not None:
        try:
            quant = LlamaFileType(int(code)).name.removeprefix("MOSTLY_")
        except ValueError:
            quant = None
    if quant is None:
        counts = Counter(t.tensor_type.name for t in reader.tensors if len(t.shape) == 2)
        quant = counts.most_common(1)[0][0] if counts else "unknown"
    header = GGUFHeader(_field(reader, "general.name"), str(arch), quant, d_model, n_layers, vocab, n_params)
    free = available_memory()
    if header.float32_bytes > free:
        raise InvalidInput(
            f"GGUF file {p!r} ({n_params:,} parameters) needs about {_gib(header.float32_bytes)} once "
            f"dequantized to float32, but only {_gib(free)} of memory is available"
        )
    return header


def gguf_quantization(path: str | Path) -> str:
    """The weight format of a GGUF file, e.g. ``Q4_1``, ``Q8_0``, ``F16``.

    Read from the metadata ``general.file_type`` (llama.cpp's ``LlamaFileType``, whose
    ``MOSTLY_`` prefix is dropped); files without it get the most common type of their
    2-D tensors (the matrices, where quantization applies). The header is checked as by
    :func:`check_gguf`.
    """
    return check_gguf(path).quantization
