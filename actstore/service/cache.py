"""In-memory caches of the service: recently used layers, other arrays, and one computation per key.

``LayerCache`` keeps whole layers (ids, X) read from the store, keyed by (model, layer,
table version) so a new write is never served stale, evicting least recently used entries
beyond a byte budget. ``ByteLRU`` does the same for any value whose size :func:`nbytes`
can tell (k-NN graphs, SAE feature activations). ``SingleFlight`` makes concurrent identical requests share one
computation: the first caller computes, the others wait for its answer.
"""

from __future__ import annotations

import dataclasses
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


def nbytes(value: Any) -> int:
    """Bytes held by arrays in ``value``: an ndarray, a scipy sparse matrix, or a tuple, list or
    dataclass of them (other values count 0)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(nbytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    parts = [getattr(value, name, None) for name in ("data", "indices", "indptr", "row", "col")]
    return sum(int(p.nbytes) for p in parts if isinstance(p, np.ndarray))


class ByteLRU:
    """Least recently used values bounded by their total :func:`nbytes`. Thread-safe.

    A value larger than the whole budget is returned but not kept."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        """Bytes held now."""
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, value: Any) -> None:
        size = nbytes(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.max_bytes:
                return
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


class SingleFlight:
    """Run ``fn`` once per key at a time; concurrent callers with the same key share the result."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[Hashable, Future[Any]] = {}

    def run(self, key: Hashable, fn: Callable[[], T]) -> T:
        with self._lock:
            running = self._running.get(key)
            if running is None:
                fut: Future[Any] = Future()
                self._running[key] = fut
        if running is not None:
            shared: T = running.result()
            return shared
        try:
            result = fn()
        except BaseException as exc:
            fut.set_exception(exc)
            raise
        else:
            fut.set_result(result)
            return result
        finally:
            with self._lock:
                self._running.pop(key, None)
