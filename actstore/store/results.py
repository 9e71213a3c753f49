"""The ``results`` table: computed answers (JSON text) cached by key.

A key is a hash of the canonical query plus the tokens of the tables it read (the service
builds it), so a new write invalidates the answers that depend on it naturally.

The table is a cache, and kept bounded:

* every ``compact_every`` puts of this process (``Settings.results_compact_every``) the
  oldest answers beyond ``max_rows`` (``Settings.results_max_rows``) are deleted and the
  table is compacted, removing versions older than :data:`RESULTS_KEEP_VERSIONS` (each put
  is one Lance commit: a data file, a manifest and a transaction file; without this the
  folder grows by ~3 files per distinct answer);
* writes are best effort: a put that fails with OSError (a full disk, a read-only store)
  logs a warning and returns False, and the answer is still returned to whoever asked;
  a get that fails with OSError is a cache miss.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from .tables import Tables, sql_str

__all__ = ["RESULTS", "RESULTS_KEEP_VERSIONS", "RESULTS_SCHEMA", "Results"]

log = logging.getLogger(__name__)

RESULTS = "results"
RESULTS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("query", pa.string()),
        pa.field("value", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
# Versions of the results table older than this are removed when it is compacted. A get
# reads the latest version at once (a key look-up), so readers never hold old ones long; a
# get that loses the race with a compaction is a cache miss.
RESULTS_KEEP_VERSIONS = timedelta(seconds=2)
_DELETE_CHUNK = 1000  # keys per delete predicate


class Results:
    """Cached answers by key, at most ``max_rows`` of them (checked every ``compact_every`` puts)."""

    def __init__(self, tables: Tables, max_rows: int = 10_000, compact_every: int = 100):
        if max_rows < 1 or compact_every < 1:
            raise ValueError(f"results max_rows and compact_every must be >= 1, got {max_rows}, {compact_every}")
        self._tables = tables
        self.max_rows = max_rows
        self.compact_every = compact_every
        self._puts = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        """A cached answer by key, or None (also when the table cannot be read: a miss)."""
        tbl = self._tables.open(RESULTS)
        if tbl is None:
            return None
        try:
            t = self._tables.scan(tbl, ["value"], f"key = {sql_str(key)}")
        except (OSError, RuntimeError) as exc:  # e.g. files of a version compacted away meanwhile
            log.warning("results cache unreadable (%s); computing the answer", exc)
            return None
        return t["value"][0].as_py() if t.num_rows else None

    def put(self, key: str, value: str, query: str | None = None) -> bool:
        """Cache an answer (JSON text) under ``key``; a second put replaces the first.

        Best effort: False (and a warning) when it could not be written. Every
        ``compact_every`` puts, :meth:`maintain` runs.
        """
        row = pa.Table.from_pylist(
            [{"key": key, "query": query, "value": value, "created_at": datetime.now(UTC)}],
            schema=RESULTS_SCHEMA,
        )
        try:
            with self._tables.write_lock:
                self._tables.merge(RESULTS, row, RESULTS_SCHEMA, "key")
        except OSError as exc:
            log.warning("could not cache an answer in the results table (%s); it is returned uncached", exc)
            return False
        with self._lock:
            self._puts += 1
            due = self._puts % self.compact_every == 0
        if due:
            self.maintain()
        return True

    def count(self) -> int:
        """Cached answers stored."""
        tbl = self._tables.open(RESULTS)
        return 0 if tbl is None else int(tbl.count_rows())

    def maintain(self) -> int:
        """Delete the oldest answers beyond ``max_rows``, then compact the table (old versions
        kept :data:`RESULTS_KEEP_VERSIONS`). Returns the answers deleted. Best effort: on
        OSError a warning, and the next round tries again."""
        tbl = self._tables.open(RESULTS)
        if tbl is None:
            return 0
        dropped = 0
        try:
            with self._tables.write_lock:
                n = int(tbl.count_rows())
                if n > self.max_rows:
                    t = self._tables.scan(tbl, ["key", "created_at"])
                    when = t["created_at"].cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
                    oldest = np.argsort(when, kind="stable")[: n - self.max_rows]
                    keys = t["key"].take(pa.array(oldest)).to_pylist()
                    for s in range(0, len(keys), _DELETE_CHUNK):
                        chunk = ",".join(sql_str(k) for k in keys[s : s + _DELETE_CHUNK])
                        self._tables.delete(RESULTS, f"key IN ({chunk})")
                    dropped = len(keys)
                self._tables.optimize(RESULTS, keep=RESULTS_KEEP_VERSIONS)
        except OSError as exc:
            log.warning("could not compact the results table (%s)", exc)
        return dropped
