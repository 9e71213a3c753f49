"""The registry of similarity measures: one :class:`Measure` per name, registered by the
family modules of this package (``register``), looked up by name (``get``).

A measure compares two activation matrices X [n, p] and Y [n, q] over the same n inputs (rows
in the same order). It is split in two steps so that a matrix over many layers reuses each
layer's work: ``prepare(X, opts)`` computes a layer's statistics once (a centred Gram, an
SVD, a k-NN graph, ...) and ``compare(stats_x, stats_y, opts)`` turns two layers' statistics
into one float. A family may also give ``matrix(layers_a, layers_b, opts, should_stop)``, a
faster all-pairs form (blocked GEMMs); the default loops ``compare`` over prepared layers.

The family modules import this one and register on import; the package face
(``measures/__init__.py``) imports :mod:`.families`, and Python runs it before any submodule,
so the registry is full whenever it is reachable (no import from here back to the families:
that would be an import cycle).

Names are the reference projects' own (platonic-representation first, then ReSi). Options
are validated here, once: :meth:`Measure.options_for` returns the full option mapping with
defaults filled in, or raises AnalysisError naming the option, the bad value and what is
allowed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import AnalysisError, StopCheck, check_stop

__all__ = ["Measure", "Option", "check_pair", "get", "measures", "names", "register", "similarity", "similarity_matrix"]

Direction = Literal["similarity", "distance"]
Options = Mapping[str, Any]


@dataclass(frozen=True)
class Option:
    """One option of a measure: ``kind`` is int, float, bool or str; ``choices`` (for str)
    or ``minimum`` / ``maximum`` (inclusive, for numbers) say what is allowed. A ``required``
    option has no default: leaving it out is an error (``k`` of the neighbourhood measures)."""

    name: str
    kind: type
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    required: bool = False

    def check(self, value: Any, measure: str) -> Any:
        where = f"option {self.name!r} of measure {measure!r}"
        if self.kind is bool:
            if not isinstance(value, (bool, np.bool_)):
                raise AnalysisError(f"{where} must be true or false, got {value!r}")
            return bool(value)
        if self.kind is str:
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                allowed = f"one of {', '.join(self.choices)}" if self.choices else "a string"
                raise AnalysisError(f"{where} must be {allowed}, got {value!r}")
            return value
        if self.kind is int:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
                raise AnalysisError(f"{where} must be an integer, got {value!r}")
            v: float = int(value)
        else:
            if (
                isinstance(value, (bool, np.bool_))
                or not isinstance(value, numbers.Real)
                or not math.isfinite(float(value))
            ):
                raise AnalysisError(f"{where} must be a finite number, got {value!r}")
            v = float(value)
        if (self.minimum is not None and v < self.minimum) or (self.maximum is not None and v > self.maximum):
            lo = "-inf" if self.minimum is None else f"{self.minimum:g}"
            hi = "inf" if self.maximum is None else f"{self.maximum:g}"
            raise AnalysisError(f"{where} must be in [{lo}, {hi}], got {value!r}")
        return v


@dataclass(frozen=True)
class Measure:
    """A registered similarity measure.

    name: the reference project's name (``mutual_knn``, ``unbiased_cka``, ...).
    family: the module of this package that defines it.
    direction: "similarity" (larger = more alike) or "distance" (smaller = more alike).
    definition: the exact formula in METHODS.md's style.
    sensitive_to: one line on what the measure responds to (README, explorer).
    reference: the paper and the reference project's function (with the commit it was
        checked against and the largest difference found).
    options: every option (``k`` included for neighbourhood measures) with its default.
    prepare: per-layer statistics of X [n, d] (float64 or float32 input).
    compare: value of two layers from their prepared statistics.
    prepare_cost / compare_cost: flops of ``prepare`` for one layer (n, d, opts) and of
        ``compare`` for one pair (n, p, q, opts), for the cost budget.
    min_rows: the smallest n the measure is defined for (given opts: ``k`` + 1 for k-NN).
    matrix: optional all-pairs form (layers_a, layers_b, opts, should_stop) -> [m_a, m_b].
    symmetric: compare(a, b) == compare(b, a).
    """

    name: str
    family: str
    direction: Direction
    definition: str
    sensitive_to: str
    reference: str
    prepare: Callable[[np.ndarray, Options], Any]
    compare: Callable[[Any, Any, Options], float]
    prepare_cost: Callable[[int, int, Options], float]
    compare_cost: Callable[[int, int, int, Options], float]
    options: tuple[Option, ...] = ()
    min_rows: Callable[[Options], int] = field(default=lambda opts: 2)
    matrix: Callable[[Sequence[np.ndarray], Sequence[np.ndarray], Options, StopCheck | None], np.ndarray] | None = None
    symmetric: bool = True

    @property
    def uses_k(self) -> bool:
        """True for neighbourhood measures (they take ``k``)."""
        return any(o.name == "k" for o in self.options)

    def options_for(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every option of this measure, from ``given`` (validated) or its default; unknown
        names raise AnalysisError listing the known ones."""
        given = dict(given or {})
        known = {o.name: o for o in self.options}
        unknown = sorted(set(given) - set(known))
        if unknown:
            allowed = ", ".join(sorted(known)) or "none"
            raise AnalysisError(f"measure {self.name!r} has no option {unknown[0]!r} (its options: {allowed})")
        missing = [o.name for o in self.options if o.required and given.get(o.name) is None]
        if missing:
            o = known[missing[0]]
            raise AnalysisError(f"measure {self.name!r} needs option {o.name!r} ({o.description})")
        return {
            name: o.check(given[name], self.name) if name in given and given[name] is not None else o.default
            for name, o in known.items()
        }

    def cost(self, n: int, dims_a: Sequence[int], dims_b: Sequence[int], opts: Options) -> float:
        """Flops of a matrix over layers of widths ``dims_a`` x ``dims_b`` (one pair: one width each)."""
        return sum(self.prepare_cost(n, d, opts) for d in (*dims_a, *dims_b)) + sum(
            self.compare_cost(n, p, q, opts) for p in dims_a for q in dims_b
        )


_REGISTRY: dict[str, Measure] = {}


def register(measure: Measure) -> Measure:
    """Add a measure under its name (a second measure of the same name is an error)."""
    if measure.name in _REGISTRY and _REGISTRY[measure.name] is not measure:
        raise ValueError(f"two measures are named {measure.name!r}")
    _REGISTRY[measure.name] = measure
    return measure


def get(name: str) -> Measure:
    """The measure called ``name``; AnalysisError listing every name otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise AnalysisError(f"unknown measure {name!r}; registered measures: {', '.join(names())}") from None


def names() -> list[str]:
    """Every registered name, in registration order (platonic-representation's first)."""
    return list(_REGISTRY)


def measures() -> list[Measure]:
    """Every registered measure, in registration order."""
    return list(_REGISTRY.values())


def check_pair(X: np.ndarray, Y: np.ndarray, m: Measure, opts: Options) -> None:
    """AnalysisError unless X [n, p] and Y [n, q] share n >= ``m.min_rows(opts)`` rows."""
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise AnalysisError(f"X and Y must be [n, p] and [n, q] over the same n rows, got {X.shape} and {Y.shape}")
    need = m.min_rows(opts)
    if X.shape[0] < need:
        raise AnalysisError(f"measure {m.name!r} needs at least {need} rows with these options, got {X.shape[0]}")


def similarity(X: np.ndarray, Y: np.ndarray, measure: str, options: Mapping[str, Any] | None = None) -> float:
    """The value of ``measure`` between X [n, p] and Y [n, q] (rows: the same inputs)."""
    m = get(measure)
    opts = m.options_for(options)
    X, Y = np.asarray(X), np.asarray(Y)
    check_pair(X, Y, m, opts)
    return float(m.compare(m.prepare(X, opts), m.prepare(Y, opts), opts))


def similarity_matrix(
    layers_a: Sequence[np.ndarray],
    layers_b: Sequence[np.ndarray],
    measure: str,
    options: Mapping[str, Any] | None = None,
    *,
    should_stop: StopCheck | None = None,
) -> np.ndarray:
    """float64 [len(layers_a), len(layers_b)]: ``measure`` of every layer pair; each layer is
    prepared once (or the measure's own all-pairs form runs)."""
    m = get(measure)
    opts = m.options_for(options)
    la, lb = [np.asarray(x) for x in layers_a], [np.asarray(y) for y in layers_b]
    if not la or not lb:
        raise AnalysisError("both layer lists must be non-empty")
    for x in la + lb:
        check_pair(la[0], x, m, opts)
    if m.matrix is not None:
        return np.asarray(m.matrix(la, lb, opts, should_stop), dtype=np.float64)
    total = len(la) + len(lb)
    prepared = []
    for i, x in enumerate(la + lb):
        check_stop(should_stop, i, total, "layers prepared")
        prepared.append(m.prepare(x, opts))
    pa, pb = prepared[: len(la)], prepared[len(la) :]
    out = np.empty((len(la), len(lb)))
    for i, a in enumerate(pa):
        check_stop(should_stop, i, len(pa), "rows of the similarity matrix")
        for j, b in enumerate(pb):
            out[i, j] = m.compare(a, b, opts)
    return out
