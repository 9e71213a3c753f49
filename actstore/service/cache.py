"""In-memory caches of the service: recently used layers, and one computation per key.

``LayerCache`` keeps whole layers (ids, X) read from the store, keyed by (model, layer,
table version) so a new write is never served stale, evicting least recently used entries
beyond a byte budget. ``SingleFlight`` makes concurrent identical requests share one
computation: the first caller computes, the others wait for its answer.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


class LayerCache:
    """LRU of (ids int64 [n], X float32 [n, d]) bounded by total bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._flight = SingleFlight()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, load: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
        value = self._flight.run(key, load)
        ids, X = value
        ids.setflags(write=False)
        X.setflags(write=False)  # shared between requests: nobody may modify it in place
        size = ids.nbytes + X.nbytes
        with self._lock:
            if key not in self._items:
                self.misses += 1
                if size <= self.max_bytes:
                    self._items[key] = value
                    self._bytes += size
                while self._bytes > self.max_bytes and self._items:
                    _, (old_ids, old_X) = self._items.popitem(last=False)
                    self._bytes -= old_ids.nbytes + old_X.nbytes
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


class SingleFlight:
    """Run ``fn`` once per key at a time; concurrent callers with the same key share the result."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[Hashable, Future] = {}

    def run(self, key: Hashable, fn: Callable[[], T]) -> T:
        with self._lock:
            fut = self._running.get(key)
            leader = fut is None
            if leader:
                fut = self._running[key] = Future()
        if not leader:
            return fut.result()
        try:
            result: Any = fn()
        except BaseException as exc:
            fut.set_exception(exc)
            raise
        else:
            fut.set_result(result)
            return result
        finally:
            with self._lock:
                self._running.pop(key, None)
