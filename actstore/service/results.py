"""Answers of heavy queries: result types registered once, their JSON codec, and the results
cache over the store's ``results`` table.

A result type is a frozen dataclass (an analysis dataclass, or one extending it with the
layers and models it read) registered with :func:`result_type`. Its JSON form is
``{"type": class name, "data": dataclasses.asdict(result)}``; decoding rebuilds nested
dataclasses, tuples and lists from the field annotations, so a decoded answer compares equal
to the one that was computed.

The cache key of an answer is a hash of the canonical query plus the versions of every table
the answer depends on. It is built from arguments and table versions only (no scan), so a
cached answer costs a key lookup; a new write changes a version and so the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar

import numpy as np

from actstore.analysis import AnalysisCancelled
from actstore.config import Settings
from actstore.errors import NotFound, QueryTimeout
from actstore.store import Store

from .cache import SingleFlight
from .display import display_methods
from .requests import Request
from .work import Cost, Scheduler, WorkStatus, check_budget, stop_requested

__all__ = [
    "ArrayKind",
    "Matrix",
    "Plan",
    "ResultCache",
    "Vector",
    "array_eq",
    "decode",
    "encode",
    "result_type",
    "same",
]

T = TypeVar("T")


class ArrayKind:
    """Marks an ndarray field of a result: ``ndim`` 1 (a vector) or 2 (a matrix) of float64.
    The JSON codec stores it as nested lists; GraphQL shows it as ``[Float!]!`` / ``[[Float!]!]!``."""

    def __init__(self, ndim: int) -> None:
        self.ndim = ndim

    def __repr__(self) -> str:
        return f"ArrayKind({self.ndim})"


#: a float64 matrix field of a result (rows x columns)
Matrix = Annotated[np.ndarray, ArrayKind(2)]
#: a float64 vector field of a result
Vector = Annotated[np.ndarray, ArrayKind(1)]

_TYPES: dict[str, type] = {}


def same(a: Any, b: Any) -> bool:
    """Equality that understands arrays (equal shape and values, NaN equal to NaN), nested
    dataclasses, tuples and lists."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.shape == b.shape
            and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f" and b.dtype.kind == "f"))
        )
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def _eq(self: Any, other: Any) -> object:  # bool, or NotImplemented for another type
    if type(other) is not type(self):
        return NotImplemented
    return same(self, other)


def array_eq(cls: type[T]) -> type[T]:
    """Class decorator: ``==`` of a dataclass with array fields compares them by value."""
    cls.__eq__ = _eq  # type: ignore[method-assign,assignment]
    cls.__hash__ = None  # type: ignore[assignment]  # arrays are mutable: not hashable
    return cls


def result_type(cls: type[T]) -> type[T]:
    """Class decorator: register a dataclass as a cacheable result type (by class name); its
    ``==`` compares array fields by value, and it gets the notebook methods of :mod:`.display`
    (``to_dict``, ``to_pandas``, ``_repr_html_``, ``_repr_png_``)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} must be a dataclass to be a result type")
    if _TYPES.setdefault(cls.__name__, cls) is not cls:
        raise TypeError(f"two result types are named {cls.__name__}")
    return display_methods(array_eq(cls))


def canonical(obj: Any) -> str:
    """Compact, key-sorted JSON: equal queries give equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def encode(result: Any) -> str:
    """JSON text of a registered result."""
    kind: type = type(result)
    name = kind.__name__
    if _TYPES.get(name) is not kind:
        raise TypeError(f"{name} is not a registered result type")
    return json.dumps({"type": name, "data": dataclasses.asdict(result)}, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def decode(text: str) -> Any:
    """Inverse of :func:`encode`."""
    payload = json.loads(text)
    return _build(_TYPES[payload["type"]], payload["data"])


def _build(cls: type, data: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls, include_extras=True)
    return cls(**{f.name: _value(hints[f.name], data[f.name]) for f in dataclasses.fields(cls) if f.name in data})


def _value(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated and any(isinstance(a, ArrayKind) for a in args[1:]):
        return np.asarray(value, dtype=np.float64)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _value(inner[0], value) if len(inner) == 1 else value
    if dataclasses.is_dataclass(hint):
        return _build(typing.cast(type, hint), value)
    if origin in (list, tuple):
        item = args[0] if args else Any
        items = [_value(item, v) for v in value]
        return tuple(items) if origin is tuple else items
    return value


@dataclass(frozen=True)
class Plan(Generic[T]):
    """How a service part answers one request, made before any heavy work.

    ``resolved``: request fields replaced in the cache key by what they resolved to (a layer
    reference by [model key, layer], a layer list by the stored layers); ``versions``: the
    versions of the tables the answer depends on (activation-table tokens, other tables'
    version numbers); ``compute(key)`` makes the answer; ``cost()`` its estimate (None:
    cheap, no slot)."""

    compute: Callable[[str], T]
    resolved: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, str | int] = field(default_factory=dict)
    cost: Callable[[], Cost] | None = None
    #: False when ``compute`` answers other requests that take their own slots (a matrix of
    #: cached cells): the cost is checked against the budget, no slot is held
    slot: bool = True


class ResultCache:
    """Cached answers of heavy queries, computed once per key (single flight). A computation's
    estimated cost is checked against ``max_cost`` before it starts, and it runs in a slot of
    the ``scheduler`` (see :mod:`.work`)."""

    def __init__(self, store: Store, scheduler: Scheduler, settings: Settings | None = None) -> None:
        self.store = store
        self.scheduler = scheduler
        self.settings = settings or Settings()
        self.max_cost = self.settings.max_cost
        self._flight = SingleFlight()
        #: answers computed (not served from the results table); tests and benchmarks read it
        self.computed = 0

    @staticmethod
    def key(query: Mapping[str, Any], versions: Mapping[str, str | int]) -> str:
        """Cache key of ``query`` over tables at ``versions``."""
        text = canonical({"query": query, "versions": versions})
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    @property
    def status(self) -> WorkStatus:
        """Heavy computations running and queued now."""
        return self.scheduler.status()

    def effective(self, name: str) -> Any:
        """The value in force of a setting: the store's k-NN parameters as the store holds them
        (they can be changed on an open store), every other one from the settings."""
        knn = self.store.knn
        held = {
            "ann_threshold": knn.ann_threshold,
            "ann_recall": knn.recall_target,
            "ann_latency_ms": knn.latency_budget_ms,
        }
        return held[name] if name in held else getattr(self.settings, name)

    def request_key(self, request: Request, plan: Plan[Any]) -> str:
        """The cache key of ``request`` answered by ``plan``: every field of the request (see
        :meth:`Request.key_payload`) and the versions of the tables the answer depends on."""
        return self.key(request.key_payload(self, plan.resolved), plan.versions)

    def answer(self, request: Request, plan: Plan[T]) -> T:
        """The answer of ``request``: from the results table when stored, else computed once
        (cost estimate, slot, single flight) and stored. A request that is not ``cached``
        (nearest neighbours) is computed directly, within the budget."""
        if not request.cached:
            if plan.cost is not None:
                check_budget(plan.cost(), self.max_cost)
            return plan.compute("")
        return self.cached(
            request.key_payload(self, plan.resolved), plan.versions, plan.compute, plan.cost, slot=plan.slot
        )

    def cached(
        self,
        query: Mapping[str, Any],
        versions: Mapping[str, str | int],
        compute: Callable[[str], T],
        cost: Callable[[], Cost] | None = None,
        slot: bool = True,
    ) -> T:
        """The stored answer of ``query``, or ``compute(key)`` run once and stored.

        Before computing, ``cost()`` (when given) estimates the work: LimitExceeded over
        ``max_cost``; below the scheduler's cheap cost it runs without a slot. A caller that
        shared a computation stopped for another caller (its time limit) computes it itself."""
        key = self.key(query, versions)
        stored = self.store.results.get(key)
        if stored is not None:
            hit: T = decode(stored)
            return hit

        def run() -> T:
            again = self.store.results.get(key)
            if again is not None:
                shared: T = decode(again)
                return shared
            estimate = cost() if cost is not None else None
            if estimate is not None:
                check_budget(estimate, self.max_cost)
            with self.scheduler.slot(estimate if slot else Cost(0.0, "answers others, which hold their own slots")):
                result = compute(key)
            self.computed += 1
            self.store.results.put(key, encode(result), query=canonical(query))
            return result

        for _ in range(3):
            try:
                return self._flight.run(key, run)
            except (QueryTimeout, AnalysisCancelled):
                if stop_requested():
                    raise
                # the computation this call shared was stopped for another caller: compute it anew
        return self._flight.run(key, run)

    def has(self, key: str) -> bool:
        """True when an answer is stored under ``key``."""
        return self.store.results.get(key) is not None

    def get(self, key: str) -> Any:
        """A cached answer by its key (plots are served from it); NotFound if there is none."""
        stored = self.store.results.get(key)
        if stored is None:
            raise NotFound(f"no cached result {key!r}")
        return decode(stored)
