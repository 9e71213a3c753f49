"""Argument checks and message helpers shared by the store's repositories."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from actstore.errors import InvalidInput

__all__ = ["as_int", "preview"]


def as_int(value: Any, name: str) -> int:
    """``value`` as a Python int; InvalidInput naming ``name`` for anything but an integer
    (booleans included)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidInput(f"{name} must be an integer, got {value!r}")
    return int(value)


def preview(values: Sequence[Any] | np.ndarray, limit: int = 10) -> str:
    """The first ``limit`` values, comma-separated, with the total when there are more."""
    values = list(values)
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")
