"""The one layer model of actstore: layer indices, relative depth, nearest layer, depth grids,
layer specs and layer references. Ingest, store, service and CLI all use this module.

A layer ``l`` (0-based) is the output of decoder block ``l`` of an ``L``-block model
(TransformerLens ``blocks.{l}.hook_resid_post``). Negative indices count from the end
(``-1`` is ``L - 1``).

Relative depth of layer ``l`` is ``l / (L - 1)`` (0.0 for a one-layer model).

**The rounding rule** (METHODS.md), the only one in actstore: a position ``p = d (L - 1)`` goes
to the nearest layer, and an exact midpoint goes UP, to the deeper layer:
``floor(p + 1/2)``. A grid of ``g`` depths is ``floor((2 i (L-1) + (g-1)) / (2 (g-1)))`` for
``i = 0..g-1``, computed in integers. Examples: L = 6, g = 3 -> [0, 3, 5]; L = 6, g = 5 ->
[0, 1, 3, 4, 5]; L = 12, depth 0.5 -> 6; L = 6, depth 0.5 -> 3.

Layer specs (``--layers`` of ingest, :func:`parse_layer_spec`): ``all`` (or None), a comma
list ``0,5,-1``, ``grid:G``, a list of ints or one int.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from actstore.errors import InvalidInput, NotFound

__all__ = [
    "LayerRef",
    "LayerSpec",
    "depth_grid",
    "format_layers",
    "nearest_layer",
    "parse_layer_spec",
    "relative_depth",
    "resize_rows",
    "resolve_index",
]

LayerSpec = str | int | Iterable[int] | None

# positions within this of k + 1/2 count as the midpoint (0.3 * 5 is 1.4999999999999998)
_MIDPOINT_TOL = 1e-9


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidInput(f"{name} must be an integer, got {value!r}")
    return int(value)


def _depth(depth: object) -> float:
    if isinstance(depth, bool) or not isinstance(depth, numbers.Real):
        raise InvalidInput(f"depth must be a number in [0, 1], got {depth!r}")
    d = float(depth)
    if not 0.0 <= d <= 1.0:  # also refuses NaN
        raise InvalidInput(f"depth must be in [0, 1], got {depth!r}")
    return d


def _n_layers(n_layers: object) -> int:
    L = _int(n_layers, "n_layers")
    if L < 1:
        raise InvalidInput(f"a model has at least one layer, got n_layers={L}")
    return L


def resolve_index(layer: object, n_layers: int, model: str | None = None) -> int:
    """The layer index ``layer`` names in an ``n_layers``-block model (negative from the end).

    Raises InvalidInput naming the allowed range for anything else.
    """
    L = _n_layers(n_layers)
    lay = _int(layer, "layer")
    if not -L <= lay < L:
        of = f" for model {model!r}" if model else f" for a model with {L} layers"
        raise InvalidInput(f"layer {lay} is out of range{of}: allowed 0..{L - 1} or -{L}..-1")
    return lay % L


def relative_depth(layer: int, n_layers: int) -> float:
    """Depth of ``layer`` in [0, 1]: ``layer / (n_layers - 1)``; 0.0 for a one-layer model."""
    L = _n_layers(n_layers)
    lay = _int(layer, "layer")
    if not 0 <= lay < L:
        raise InvalidInput(f"layer {lay} is out of range for a model with {L} layers: allowed 0..{L - 1}")
    return 0.0 if L == 1 else lay / (L - 1)


def nearest_layer(depth: float, n_layers: int, stored: Sequence[int] | None = None) -> int:
    """The layer nearest to relative ``depth``: ``floor(depth (L - 1) + 1/2)`` (ties go deeper).

    With ``stored`` (the layers that exist), the stored layer nearest to ``depth (L - 1)``,
    ties again to the deeper one; with every layer stored both agree.
    """
    d = _depth(depth)
    L = _n_layers(n_layers)
    pos = d * (L - 1)
    if stored is None:
        return int(min(L - 1, math.floor(pos + 0.5 + _MIDPOINT_TOL)))
    if len(stored) == 0:
        raise NotFound("no layers are stored")
    # smallest distance; among (near-)equal distances the deeper layer
    return min(stored, key=lambda l_: (round(abs(l_ - pos), 9), -l_))


def depth_grid(g: int, n_layers: int, model: str | None = None) -> list[int]:
    """``g`` evenly spaced layers of an ``n_layers`` model, shallowest first (see module doc).

    Always starts at 0 and ends at L - 1. ``g`` must be between 2 and L (a grid finer than
    the model would repeat layers).
    """
    g_ = _int(g, "grid")
    L = _n_layers(n_layers)
    if g_ < 2:
        raise InvalidInput(f"grid must be at least 2 (first and last layer), got {g_}")
    if g_ > L:
        of = f"model {model!r}" if model else "the model"
        raise InvalidInput(f"grid {g_} asks for more layers than {of} has ({L}); use grid <= {L}")
    return [(2 * i * (L - 1) + (g_ - 1)) // (2 * (g_ - 1)) for i in range(g_)]


def resize_rows(stored: Sequence[int], n_layers: int, size: int) -> list[int]:
    """Rows of a stored layer axis that resize it to ``size`` evenly spaced relative depths.

    For each depth ``j / (size - 1)``, ``j = 0..size-1``, the layer it names by the one rounding
    rule, ``floor(j (L - 1) / (size - 1) + 1/2)`` (computed in integers, midpoints go deeper);
    if that layer is not stored, the stored layer nearest to it (ties to the deeper one).
    Returns indices INTO ``stored`` (positions, not layer numbers), so ``values[rows]`` resizes
    a matrix whose axis holds the stored layers in the given order. ``size`` may exceed the
    number of layers (rows then repeat), as when the study resizes every affinity matrix to a
    common square.

    Examples: stored 0..5 (L = 6), size 3 -> depths 0, 0.5, 1 -> layers 0, 3, 5 -> [0, 3, 5];
    stored [0, 2, 4] of L = 5, size 5 -> layers 0, 1, 2, 3, 4 -> 1 is between 0 and 2 (tie,
    deeper: 2), 3 between 2 and 4 (4) -> [0, 1, 1, 2, 2]; stored 0..3 (L = 4), size 7 ->
    layers 0, 1, 1, 2, 2, 3, 3 (0.5 -> 1, 1.5 -> 2, 2.5 -> 3) -> [0, 1, 1, 2, 2, 3, 3].

    Raises InvalidInput for size < 2, an empty ``stored``, or stored layers that repeat or lie
    outside 0..L-1.
    """
    L = _n_layers(n_layers)
    g = _int(size, "size")
    if g < 2:
        raise InvalidInput(f"size must be at least 2 (first and last depth), got {g}")
    layers = [_int(v, "stored layer") for v in stored]
    if not layers:
        raise InvalidInput("stored holds no layers; resizing needs at least one stored layer")
    bad = [v for v in layers if not 0 <= v < L]
    if bad:
        raise InvalidInput(f"stored layer {bad[0]} is out of range for a model with {L} layers: allowed 0..{L - 1}")
    if len(set(layers)) != len(layers):
        dup = next(v for i, v in enumerate(layers) if v in layers[:i])
        raise InvalidInput(f"stored layer {dup} is listed twice; stored layers must be distinct")
    pos = {v: i for i, v in enumerate(layers)}
    out = []
    for j in range(g):
        target = (2 * j * (L - 1) + (g - 1)) // (2 * (g - 1))
        if target in pos:
            out.append(pos[target])
            continue
        best = min(layers, key=lambda v: (abs(v - target), -v))
        out.append(pos[best])
    return out


def parse_layer_spec(spec: LayerSpec, n_layers: int) -> list[int]:
    """The sorted, distinct layer indices a layer spec selects in an ``n_layers`` model.

    ``all``/``*``/None: every layer; ``"0,5,-1"``: those layers (negative from the end);
    ``"grid:G"``: :func:`depth_grid` (G above L is capped at L, i.e. every layer); a list
    of ints or one int. Ranges like ``2-4`` are refused to keep the syntax unambiguous.
    """
    L = _n_layers(n_layers)
    if spec is None:
        return list(range(L))
    if isinstance(spec, numbers.Integral) and not isinstance(spec, bool):
        return [resolve_index(spec, L)]
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s in ("all", "*", ""):
            return list(range(L))
        if s.startswith("grid:"):
            try:
                g = int(s[5:])
            except ValueError:
                raise InvalidInput(f"bad layer grid {spec!r}: use grid:G with an integer G >= 2") from None
            if g < 2:
                raise InvalidInput(f"bad layer grid {spec!r}: G must be at least 2")
            return depth_grid(min(g, L), L) if L > 1 else [0]
        values: list[int] = []
        for part in s.split(","):
            try:
                values.append(int(part.strip()))
            except ValueError:
                raise InvalidInput(
                    f"bad layer spec {spec!r}: {part.strip()!r} is not an integer; use 'all', "
                    "a list like '0,5,-1', or 'grid:G'"
                ) from None
        return _distinct(values, L, spec)
    try:
        values = list(spec)
    except TypeError:
        raise InvalidInput(f"bad layer spec {spec!r}: use 'all', '0,5,-1', 'grid:G' or a list of ints") from None
    return _distinct(values, L, spec)


def _distinct(values: Iterable[object], L: int, spec: object) -> list[int]:
    out = {resolve_index(v, L) for v in values}
    if not out:
        raise InvalidInput(f"layer spec {spec!r} selects no layers")
    return sorted(out)


@dataclass(frozen=True)
class LayerRef:
    """One layer of one stored model: exactly one of ``layer`` (negative counts from the end)
    or ``depth`` (relative depth in [0, 1]: the nearest stored layer, ties deeper)."""

    model: str
    layer: int | None = None
    depth: float | None = None

    @classmethod
    def parse(cls, text: str) -> LayerRef:
        """``MODEL:LAYER`` (0-based block, negative from the end) or ``MODEL@DEPTH`` (relative
        depth in [0, 1]) -> LayerRef. ``pythia-70m:3``, ``llama:-1``, ``qwen@0.5``.
        InvalidInput naming the text and the syntax for anything else."""
        if not isinstance(text, str):
            raise InvalidInput(f"a layer reference must be text like MODEL:LAYER or MODEL@DEPTH, got {text!r}")
        if "@" in text:
            model, _, depth = text.rpartition("@")
            try:
                d = float(depth)
            except ValueError:
                d = math.nan
            if not model or not 0.0 <= d <= 1.0:  # also refuses NaN
                raise InvalidInput(f"bad depth in {text!r}: use MODEL@DEPTH with DEPTH in [0, 1]")
            return cls(model, depth=d)
        model, sep, layer = text.rpartition(":")
        if not sep or not model:
            raise InvalidInput(f"bad layer {text!r}: use MODEL:LAYER (e.g. pythia-70m:3, llama:-1) or MODEL@DEPTH")
        try:
            return cls(model, layer=int(layer))
        except ValueError:
            raise InvalidInput(f"bad layer number in {text!r}: use MODEL:LAYER with an integer LAYER") from None

    def resolve(self, n_layers: int, stored: Sequence[int]) -> int:
        """The stored layer index this reference names in a model of ``n_layers`` blocks
        whose stored layers are ``stored``. InvalidInput for a bad reference, NotFound for a
        layer that is not stored."""
        if (self.layer is None) == (self.depth is None):
            raise InvalidInput(
                f"give exactly one of layer or depth for model {self.model!r} "
                f"(got layer={self.layer}, depth={self.depth})"
            )
        if not stored:
            raise NotFound(f"model {self.model!r} has no stored layers")
        if self.depth is not None:
            return nearest_layer(self.depth, n_layers, stored)
        layer = resolve_index(self.layer, n_layers, self.model)
        if layer not in stored:
            raise NotFound(
                f"layer {layer} of model {self.model!r} is not stored; stored layers: {format_layers(stored)}"
            )
        return layer


def format_layers(layers: Sequence[int]) -> str:
    """(0, 1, 2, 5, 7, 8) -> '0-2, 5, 7-8'; 'none' when empty."""
    parts: list[str] = []
    start = None
    values = list(layers)
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(parts) or "none"
