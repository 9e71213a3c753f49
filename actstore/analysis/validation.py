"""Input checks shared by the analysis modules (not re-exported by the package).

Every check raises :class:`~actstore.analysis.errors.AnalysisError` with a message that names
the bad value and what is allowed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Sequence

import numpy as np

from .errors import AnalysisError

__all__ = [
    "activations",
    "activation_list",
    "check_int",
    "check_positive",
    "check_rank",
    "check_ranks",
    "check_same_rows",
    "finite_matrix",
]


def check_int(value: object, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as ``int`` or raise if it is not an integer in [minimum, maximum]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        shown = value.item() if isinstance(value, np.generic) else value
        raise AnalysisError(f"{name} must be an integer, got {shown!r}")
    v = int(value)
    if minimum is not None and v < minimum:
        hi = "" if maximum is None else f" and <= {maximum}"
        raise AnalysisError(f"{name} must be >= {minimum}{hi}, got {v}")
    if maximum is not None and v > maximum:
        lo = "" if minimum is None else f" and >= {minimum}"
        raise AnalysisError(f"{name} must be <= {maximum}{lo}, got {v}")
    return v


def check_positive(value: object, name: str) -> float:
    """Return ``value`` as ``float`` or raise if it is not a finite real number > 0."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise AnalysisError(f"{name} must be a positive number, got {value!r}")
    a = float(value)
    if not math.isfinite(a) or a <= 0:
        raise AnalysisError(f"{name} must be a finite number > 0, got {value!r}")
    return a


def check_rank(rank: object, p: int, q: int) -> int:
    """A rank of a linear map from width p to width q: an integer in 1..min(p, q)."""
    return check_int(rank, "rank", minimum=1, maximum=min(p, q))


def check_ranks(ranks: object, p: int, q: int) -> list[int]:
    """A non-empty sequence of distinct ranks, each an integer in 1..min(p, q)."""
    if isinstance(ranks, (str, bytes)) or not isinstance(ranks, Collection) or len(ranks) == 0:
        raise AnalysisError(f"ranks must be a non-empty list of integers in 1..{min(p, q)}, got {ranks!r}")
    out = [check_rank(r, p, q) for r in ranks]
    if len(set(out)) != len(out):
        raise AnalysisError(f"ranks must not repeat, got {list(out)}")
    return out


def activations(x: object, name: str = "X", *, min_rows: int = 1) -> np.ndarray:
    """Check one layer's activations: a finite real 2-D array [n_prompts, d] with n >= min_rows.

    Returns the array as given when it is already a floating ndarray (no copy); integer input
    is converted to float64. Non-finite values are reported with their first position.
    """
    a = np.asarray(x)
    if a.dtype == object or a.dtype.kind not in "fiu":
        raise AnalysisError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    if a.ndim != 2:
        raise AnalysisError(f"{name} must be 2-D [n_prompts, d], got shape {tuple(a.shape)}")
    if a.shape[1] < 1:
        raise AnalysisError(f"{name} must have at least one column (d >= 1), got shape {tuple(a.shape)}")
    if a.shape[0] < min_rows:
        raise AnalysisError(f"{name} has n = {a.shape[0]} rows (prompts); at least {min_rows} are needed")
    if a.dtype.kind in "iu":
        a = a.astype(np.float64)
    _check_finite(a, name)
    return a


def finite_matrix(x: object, name: str = "M", *, min_rows: int = 1, min_cols: int = 1) -> np.ndarray:
    """A finite real 2-D float64 matrix with at least min_rows x min_cols entries."""
    a = np.asarray(x)
    if a.dtype == object or a.dtype.kind not in "fiub":
        raise AnalysisError(f"{name} must be a real numeric matrix, got dtype {a.dtype}")
    if a.ndim != 2:
        raise AnalysisError(f"{name} must be 2-D, got shape {tuple(a.shape)}")
    if a.shape[0] < min_rows or a.shape[1] < min_cols:
        raise AnalysisError(f"{name} must be at least {min_rows} x {min_cols}, got {a.shape[0]} x {a.shape[1]}")
    a = a.astype(np.float64, copy=False)
    _check_finite(a, name)
    return a


def _check_finite(a: np.ndarray, name: str) -> None:
    # Chunked so that a large float16 layer does not need a full boolean copy at once.
    rows = max(1, (1 << 24) // max(1, a.shape[1]))
    for s in range(0, a.shape[0], rows):
        block = a[s : s + rows]
        ok = np.isfinite(block)
        if not ok.all():
            i, j = np.argwhere(~ok)[0]
            raise AnalysisError(
                f"{name} contains a non-finite value ({block[i, j]}) at row {s + i}, column "
                f"{j}; activations must be finite (no NaN or inf)"
            )


def activation_list(layers: object, name: str, *, min_rows: int = 1, indexed: bool = True) -> list[np.ndarray]:
    """Check a non-empty sequence of layers that share one row count.

    Layers are named ``name[i]`` in messages, or just ``name`` when ``indexed`` is False.
    """
    if isinstance(layers, np.ndarray) and layers.ndim == 2:
        raise AnalysisError(f"{name} must be a sequence of 2-D layers, got a single 2-D array; wrap it in a list")
    if not isinstance(layers, (Sequence, np.ndarray)) or len(layers) == 0:
        raise AnalysisError(
            f"{name} must be a non-empty sequence of 2-D arrays, got "
            f"{type(layers).__name__} of length "
            f"{len(layers) if hasattr(layers, '__len__') else '?'}"
        )
    names = [f"{name}[{i}]" if indexed else name for i in range(len(layers))]
    out = [activations(x, nm, min_rows=min_rows) for x, nm in zip(layers, names)]
    check_same_rows(out, names)
    return out


def check_same_rows(arrays: Sequence[np.ndarray], names: Sequence[str]) -> int:
    """All arrays must have the same number of rows (the same prompts); return it."""
    n: int = arrays[0].shape[0]
    for a, nm in zip(arrays, names):
        if a.shape[0] != n:
            raise AnalysisError(
                f"row counts differ: {names[0]} has {n} rows but {nm} has {a.shape[0]}; "
                f"both sides must hold the same prompts in the same order"
            )
    return n
