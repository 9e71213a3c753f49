"""The numpy <-> Arrow conversions of activation vectors.

Vectors are Arrow ``fixed_size_list<float16|float32>[d]`` columns. Conversions go through
the flat child array so that no Python code runs per row.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa

__all__ = ["STORAGE_DTYPES", "arrow_to_vectors", "vectors_to_arrow"]

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
            out[row:row + m] = flat.reshape(m, d_model)
        else:
            with warnings.catch_warnings():  # arrow buffers are read-only; torch only reads them
                warnings.simplefilter("ignore", UserWarning)
                src = torch.from_numpy(flat)
            torch.from_numpy(out[row:row + m]).view(-1).copy_(src)
        row += m
    return out
