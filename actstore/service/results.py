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

import contextvars
import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from actstore.analysis import AnalysisCancelled
from actstore.errors import NotFound, QueryTimeout
from actstore.store import Store

from .cache import SingleFlight
from .work import Cost, Scheduler, WorkStatus, check_budget, stop_requested

__all__ = ["Estimated", "ResultCache", "decode", "encode", "result_type"]

T = TypeVar("T")

_TYPES: dict[str, type] = {}


def result_type(cls: type[T]) -> type[T]:
    """Class decorator: register a dataclass as a cacheable result type (by class name)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} must be a dataclass to be a result type")
    if _TYPES.setdefault(cls.__name__, cls) is not cls:
        raise TypeError(f"two result types are named {cls.__name__}")
    return cls


def canonical(obj: Any) -> str:
    """Compact, key-sorted JSON: equal queries give equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def encode(result: Any) -> str:
    """JSON text of a registered result."""
    name = type(result).__name__
    if _TYPES.get(name) is not type(result):
        raise TypeError(f"{name} is not a registered result type")
    return json.dumps({"type": name, "data": dataclasses.asdict(result)})


def decode(text: str) -> Any:
    """Inverse of :func:`encode`."""
    payload = json.loads(text)
    return _build(_TYPES[payload["type"]], payload["data"])


def _build(cls: type, data: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _value(hints[f.name], data[f.name]) for f in dataclasses.fields(cls) if f.name in data})


def _value(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _value(inner[0], value) if len(inner) == 1 else value
    if dataclasses.is_dataclass(hint):
        return _build(hint, value)
    if origin in (list, tuple):
        item = args[0] if args else Any
        items = [_value(item, v) for v in value]
        return tuple(items) if origin is tuple else items
    return value


# True while ResultCache.estimate runs a service call: it stops at its computation
_ESTIMATING: contextvars.ContextVar[bool] = contextvars.ContextVar("actstore_estimating", default=False)


class Estimated(Exception):
    """Control flow of :meth:`ResultCache.estimate`: a service call reached a computation
    that is not cached; ``cost`` is its estimate (None when the call gives none)."""

    def __init__(self, cost: Cost | None) -> None:
        super().__init__(cost.what if cost is not None else "no estimate")
        self.cost = cost


class ResultCache:
    """Cached answers of heavy queries, computed once per key (single flight). A computation's
    estimated cost is checked against ``max_cost`` before it starts, and it runs in a slot of
    the ``scheduler`` (see :mod:`.work`)."""

    def __init__(self, store: Store, scheduler: Scheduler, max_cost: float = float("inf")) -> None:
        self.store = store
        self.scheduler = scheduler
        self.max_cost = max_cost
        self._flight = SingleFlight()
        #: answers computed (not served from the results table); tests and benchmarks read it
        self.computed = 0

    @staticmethod
    def key(query: Mapping[str, Any], versions: Mapping[str, int]) -> str:
        """Cache key of ``query`` over tables at ``versions``."""
        text = canonical({"query": query, "versions": versions})
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    @property
    def status(self) -> WorkStatus:
        """Heavy computations running and queued now."""
        return self.scheduler.status()

    def cached(self, query: Mapping[str, Any], versions: Mapping[str, int], compute: Callable[[str], T],
               cost: Callable[[], Cost] | None = None) -> T:
        """The stored answer of ``query``, or ``compute(key)`` run once and stored.

        Before computing, ``cost()`` (when given) estimates the work: LimitExceeded over
        ``max_cost``; below the scheduler's cheap cost it runs without a slot. A caller that
        shared a computation stopped for another caller (its time limit) computes it itself."""
        key = self.key(query, versions)
        stored = self.store.results.get(key)
        if stored is not None:
            return decode(stored)
        if _ESTIMATING.get():
            raise Estimated(cost() if cost is not None else None)

        def run() -> T:
            again = self.store.results.get(key)
            if again is not None:
                return decode(again)
            estimate = cost() if cost is not None else None
            if estimate is not None:
                check_budget(estimate, self.max_cost)
            with self.scheduler.slot(estimate):
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

    def check(self, cost: Cost) -> None:
        """``cost`` checked against ``max_cost`` (LimitExceeded over it) by a service call
        that is about to compute several answers; while estimating, the estimate of that call."""
        if _ESTIMATING.get():
            raise Estimated(cost)
        check_budget(cost, self.max_cost)

    def estimate(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Cost | None:
        """What ``fn(*args, **kwargs)`` (a service call answered through this cache) would
        compute, without computing it: the call runs its checks and look-ups up to its first
        answer that is not cached and stops there, giving that computation's estimate (None
        when it has no estimate). ``Cost(0, ...)`` when every answer it needs is cached.
        The call's own errors (unknown model, bad argument) propagate."""
        token = _ESTIMATING.set(True)
        try:
            fn(*args, **kwargs)
        except Estimated as done:
            return done.cost
        finally:
            _ESTIMATING.reset(token)
        return Cost(0.0, "a cached answer")

    def get(self, key: str) -> Any:
        """A cached answer by its key (plots are served from it); NotFound if there is none."""
        stored = self.store.results.get(key)
        if stored is None:
            raise NotFound(f"no cached result {key!r}")
        return decode(stored)
