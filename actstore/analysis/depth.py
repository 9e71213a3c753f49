"""Layer selection by relative depth.

Relative depth of layer l (0-based) in an L-layer model is l / (L - 1) (METHODS.md): 0 is the
first block's output, 1 the last. Rounding a depth to a layer goes to the nearest layer, and
an exact midpoint goes UP (to the deeper layer): round-half-up, not numpy's round-half-to-even,
so that ties do not alternate with the parity of the layer index. Example: in a 6-layer model
depth 0.5 is layer 2.5 -> 3; the grid of 5 depths is layers [0, 1, 3, 4, 5] (numpy's
np.round would give [0, 1, 2, 4, 5]).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._validate import check_int
from .errors import AnalysisError

__all__ = ["relative_depth", "nearest_layer", "depth_grid"]

_MIDPOINT_TOL = 1e-9  # positions within this of k + 0.5 count as the midpoint


def relative_depth(layer: int, n_layers: int) -> float:
    """Depth of ``layer`` in [0, 1]: layer / (n_layers - 1). Needs n_layers >= 2."""
    L = check_int(n_layers, "n_layers", minimum=2)
    l_ = check_int(layer, "layer", minimum=0, maximum=L - 1)
    return l_ / (L - 1)


def _check_depth(depth: object) -> float:
    if isinstance(depth, np.generic):
        depth = depth.item()
    if isinstance(depth, (bool, np.bool_)) or not isinstance(depth, numbers.Real):
        raise AnalysisError(f"depth must be a number in [0, 1], got {depth!r}")
    d = float(depth)
    if not (0.0 <= d <= 1.0):  # also rejects NaN
        raise AnalysisError(f"depth must be in [0, 1], got {depth!r}")
    return d


def nearest_layer(depth: float, n_layers: int) -> int:
    """The layer nearest to relative ``depth`` in [0, 1]: round-half-up of depth (L - 1).

    A one-layer model (n_layers = 1) maps every depth to layer 0.
    """
    d = _check_depth(depth)
    L = check_int(n_layers, "n_layers", minimum=1)
    pos = d * (L - 1)
    return int(min(L - 1, math.floor(pos + 0.5 + _MIDPOINT_TOL)))


def depth_grid(g: int, n_layers: int) -> list[int]:
    """g evenly spaced layers: round(linspace(0, L - 1, g)) with round-half-up.

    Computed in exact integer arithmetic (layer_i = floor((2 i (L-1) + (g-1)) / (2 (g-1)))),
    so no floating-point near-midpoints. Always starts at 0 and ends at L - 1; when g > L
    some layers repeat (the list has exactly g entries, in ascending order).
    """
    g_ = check_int(g, "grid size g", minimum=2)
    L = check_int(n_layers, "n_layers", minimum=1)
    return [(2 * i * (L - 1) + (g_ - 1)) // (2 * (g_ - 1)) for i in range(g_)]
