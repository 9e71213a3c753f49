"""The numpy <-> Arrow conversions of activation vectors.

Vectors are Arrow ``fixed_size_list<float16|float32>[d]`` columns. Conversions go through
the flat child array so that no Python code runs per row.

Checksums: :func:`row_digests` is the xxh3-64 digest of each row's bytes *as stored*
(float16 or float32, little-endian), written beside the vector (the ``digest`` column of an
activation table) and compared on ``verify`` and, with ``ACTSTORE_VERIFY_READS=1``, on every
read (Lance keeps no checksums of data pages). xxh3 is not a cryptographic hash: it detects
damage (flipped bits, torn pages), not deliberate forgery.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa

__all__ = ["STORAGE_DTYPES", "arrow_digests", "arrow_to_vectors", "row_digests", "vectors_to_arrow"]

STORAGE_DTYPES = {"float16": pa.float16(), "float32": pa.float32()}


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
            out[row : row + m] = flat.reshape(m, d_model)
        else:
            with warnings.catch_warnings():  # arrow buffers are read-only; torch only reads them
                warnings.simplefilter("ignore", UserWarning)
                src = torch.from_numpy(flat)
            torch.from_numpy(out[row : row + m]).view(-1).copy_(src)
        row += m
    return out


def row_digests(values: np.ndarray) -> np.ndarray:
    """xxh3-64 digest of each row's bytes: ``values`` [n, d] in the storage dtype -> uint64 [n]
    (never 0: a digest of 0 is stored as 1, 0 meaning "none").
    (One hash call per row, ~1 us for a 2,048-wide float16 row; see bench/checksums.py.)"""
    import xxhash

    a = np.ascontiguousarray(values)
    n = a.shape[0]
    if n == 0:
        return np.empty(0, np.uint64)
    step = a.nbytes // n
    buf = a.reshape(-1).view(np.uint8).data
    digest = xxhash.xxh3_64_intdigest
    out = np.fromiter((digest(buf[i * step : (i + 1) * step]) for i in range(n)), np.uint64, n)
    out[out == 0] = 1  # 0 marks "no digest" (a null in the legacy Lance format reads as 0)
    return out


def arrow_digests(column: pa.ChunkedArray | pa.Array, d_model: int) -> np.ndarray:
    """:func:`row_digests` of a ``fixed_size_list`` column as stored -> uint64 [n]."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = [row_digests(c.flatten().to_numpy(zero_copy_only=False).reshape(len(c), d_model)) for c in chunks if len(c)]
    return np.concatenate(parts) if parts else np.empty(0, np.uint64)
