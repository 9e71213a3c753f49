"""Table names, Arrow schemas and the numpy <-> Arrow conversions of the store.

Vectors are Arrow ``fixed_size_list<float16|float32>[d]`` columns. Conversions go through
the flat child array so that no Python code runs per row.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pyarrow as pa

MODELS = "models"
PROMPTS = "prompts"
RESULTS = "results"
ACTS_PREFIX = "acts__"

STORAGE_DTYPES = {"float16": pa.float16(), "float32": pa.float32()}
_KEY_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?$")


def check_model_key(key: str) -> str:
    """Return ``key`` if it is a valid model key (a slug), else raise ``ValueError``."""
    if not isinstance(key, str) or not _KEY_RE.match(key) or "__" in key:
        raise ValueError(
            f"invalid model key {key!r}: use 1-100 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit, without '__'"
        )
    return key


def acts_table(model_key: str, layer: int) -> str:
    """Name of the activation table of one model and layer: ``acts__{key}__L{layer:03d}``."""
    return f"{ACTS_PREFIX}{model_key}__L{layer:03d}"


def parse_acts_table(name: str) -> tuple[str, int] | None:
    """Inverse of :func:`acts_table`; ``None`` for names that are not activation tables."""
    if not name.startswith(ACTS_PREFIX):
        return None
    key, sep, layer = name[len(ACTS_PREFIX):].rpartition("__L")
    if not sep or not layer.isdigit():
        return None
    return key, int(layer)


PROMPTS_SCHEMA = pa.schema(
    [
        pa.field("prompt_id", pa.int64(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("text_sha256", pa.string(), nullable=False),
        pa.field("label", pa.int64()),
        pa.field("split", pa.string()),
        pa.field("meta", pa.string()),
    ]
)

MODELS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("revision", pa.string()),
        pa.field("architecture", pa.string()),
        pa.field("n_layers", pa.int64(), nullable=False),
        pa.field("d_model", pa.int64(), nullable=False),
        pa.field("dtype", pa.string(), nullable=False),
        pa.field("site", pa.string()),
        pa.field("token", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
    ]
)

RESULTS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("query", pa.string()),
        pa.field("value", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
    ]
)


def acts_schema(d_model: int, dtype: str) -> pa.Schema:
    """Schema of an activation table: ``(prompt_id int64, vector fixed_size_list[d])``."""
    return pa.schema(
        [
            pa.field("prompt_id", pa.int64(), nullable=False),
            pa.field("vector", pa.list_(STORAGE_DTYPES[dtype], d_model)),
        ]
    )


def vectors_to_arrow(vectors: np.ndarray, dtype: str) -> pa.FixedSizeListArray:
    """[n, d] numpy array -> ``fixed_size_list<dtype>[d]`` array (one copy, no per-row work).

    Casts to float16 go through torch (vectorised, ~10x numpy's speed), as reads do.
    """
    n, d = vectors.shape
    target = np.dtype(dtype)
    if vectors.dtype == target:
        flat = np.ascontiguousarray(vectors).reshape(-1)
    else:
        import torch

        flat = np.empty(n * d, dtype=target)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only inputs are only read
            src = torch.from_numpy(np.ascontiguousarray(vectors)).reshape(-1)
        torch.from_numpy(flat).copy_(src)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), d)


def arrow_to_vectors(column: pa.ChunkedArray | pa.Array, d_model: int) -> np.ndarray:
    """``fixed_size_list`` column -> C-contiguous float32 array [n, d].

    The float16 -> float32 cast goes through torch, whose vectorised (F16C) conversion is
    about 10x faster than numpy's on CPU; it dominates a whole-layer read otherwise.
    """
    import torch  # deferred: only reads pay for the import

    if isinstance(column, pa.ChunkedArray):
        chunks = column.chunks
    else:
        chunks = [column]
    n = sum(len(c) for c in chunks)
    out = np.empty((n, d_model), dtype=np.float32)
    row = 0
    for chunk in chunks:
        m = len(chunk)
        if m == 0:
            continue
        flat = chunk.flatten().to_numpy(zero_copy_only=False)  # flatten() honours slicing
        if flat.dtype == np.float32:
            out[row:row + m] = flat.reshape(m, d_model)
        else:
            with warnings.catch_warnings():  # arrow buffers are read-only; torch only reads them
                warnings.simplefilter("ignore", UserWarning)
                src = torch.from_numpy(flat)
            torch.from_numpy(out[row:row + m]).view(-1).copy_(src)
        row += m
    return out
