"""The ``results`` table: computed answers (JSON text) cached by key.

A key is a hash of the canonical query plus the versions of the tables it read (the
service builds it), so a new write invalidates the answers that depend on it naturally.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa

from .tables import Tables, sql_str

__all__ = ["RESULTS", "RESULTS_SCHEMA", "Results"]

RESULTS = "results"
RESULTS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("query", pa.string()),
        pa.field("value", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
    ]
)


class Results:
    """Cached answers by key."""

    def __init__(self, tables: Tables):
        self._tables = tables

    def get(self, key: str) -> str | None:
        """A cached answer by key, or None."""
        tbl = self._tables.open(RESULTS)
        if tbl is None:
            return None
        t = self._tables.scan(tbl, ["value"], f"key = {sql_str(key)}")
        return t["value"][0].as_py() if t.num_rows else None

    def put(self, key: str, value: str, query: str | None = None) -> None:
        """Cache an answer (JSON text) under ``key``; a second put replaces the first."""
        row = pa.Table.from_pylist(
            [{"key": key, "query": query, "value": value, "created_at": datetime.now(timezone.utc)}],
            schema=RESULTS_SCHEMA,
        )
        with self._tables.write_lock:
            self._tables.merge(RESULTS, row, RESULTS_SCHEMA, "key")
