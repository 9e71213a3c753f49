"""Layer specifications: which decoder blocks to capture.

A layer ``l`` is the output of decoder block ``l`` (0-based) of an ``n_layers``-block model.

Accepted specs (see :func:`parse_layers`):

- ``"all"`` (or ``None``): every block, ``0 .. n_layers-1``;
- ``"0,5,-1"``: a comma-separated list; negative numbers count from the end (``-1`` is the last
  block); ranges ``"2-4"`` / ``"2:5"`` are not accepted, to keep the syntax unambiguous;
- ``"grid:G"``: ``round(linspace(0, n_layers-1, G))``, deduplicated (G >= 2);
- a list/tuple of ints (negatives count from the end) or a single int.

The result is always a sorted list of distinct in-range layer indices.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from actstore.store.errors import InvalidInputError

__all__ = ["parse_layers", "grid_layers"]

LayerSpec = str | int | Iterable[int] | None


def grid_layers(n_layers: int, g: int) -> list[int]:
    """``round(linspace(0, n_layers-1, g))`` deduplicated and sorted (METHODS.md depth grid)."""
    if g < 2:
        raise InvalidInputError(f"layer grid must have at least 2 points, got grid:{g}")
    return sorted({int(x) for x in np.round(np.linspace(0, n_layers - 1, g))})


def _normalize(values: Iterable[int], n_layers: int, spec: object) -> list[int]:
    out: set[int] = set()
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise InvalidInputError(f"layer {v!r} in {spec!r} is not an integer")
        v = int(v)
        if not -n_layers <= v < n_layers:
            raise InvalidInputError(
                f"layer {v} is out of range for a model with {n_layers} layers: "
                f"use 0..{n_layers - 1} or -{n_layers}..-1"
            )
        out.add(v % n_layers)
    if not out:
        raise InvalidInputError(f"layer spec {spec!r} selects no layers")
    return sorted(out)


def parse_layers(spec: LayerSpec, n_layers: int) -> list[int]:
    """Resolve a layer spec against a model with ``n_layers`` blocks; see module docstring."""
    if n_layers < 1:
        raise InvalidInputError(f"model has no layers (n_layers={n_layers})")
    if spec is None:
        return list(range(n_layers))
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        return _normalize([int(spec)], n_layers, spec)
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s in ("all", "*", ""):
            return list(range(n_layers))
        if s.startswith("grid:"):
            try:
                g = int(s[5:])
            except ValueError:
                raise InvalidInputError(
                    f"bad layer grid {spec!r}: use grid:G with an integer G >= 2"
                ) from None
            return grid_layers(n_layers, g)
        values = []
        for part in s.split(","):
            part = part.strip()
            try:
                values.append(int(part))
            except ValueError:
                raise InvalidInputError(
                    f"bad layer spec {spec!r}: {part!r} is not an integer; use 'all', "
                    "a list like '0,5,-1', or 'grid:G'"
                ) from None
        return _normalize(values, n_layers, spec)
    try:
        values = list(spec)
    except TypeError:
        raise InvalidInputError(
            f"bad layer spec {spec!r}: use 'all', '0,5,-1', 'grid:G' or a list of ints"
        ) from None
    return _normalize(values, n_layers, spec)
