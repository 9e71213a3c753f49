"""Version checks of the look-up path (issue 17): table versions are checked at most once per
``ACTSTORE_VERSION_CHECK_S``, not per request; a write through this process (any Tables
object of the database) is seen at once; other processes' writes within the interval.
"""

from __future__ import annotations

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from actstore import Store
from actstore.config import Settings
from actstore.layers import LayerRef
from actstore.service import Service
from actstore.store.tables import Tables

SCHEMA = pa.schema([pa.field("k", pa.int64())])


def _rows(*values: int) -> pa.Table:
    return pa.table({"k": pa.array(values, pa.int64())}, schema=SCHEMA)


def test_recent_versions_are_memoised_and_writes_of_this_process_invalidate(tmp_path):
    t = Tables(tmp_path / "db")
    t.version_check_s = 1000.0
    t.add("x", _rows(1), SCHEMA)
    v1 = t.checked_version("x", recent=True)
    # another process's commit (a connection that is not a Tables of this process)
    lancedb.connect(str(tmp_path / "db")).open_table("x").add(_rows(2))
    assert t.checked_version("x", recent=True) == v1  # within the interval: no check
    assert t.checked_version("x") == v1 + 1  # an exact check sees it (and refreshes the memo)
    assert t.checked_version("x", recent=True) == v1 + 1
    # a write through another Tables object of this process invalidates at once
    other = Tables(tmp_path / "db")
    other.add("x", _rows(3), SCHEMA)
    assert t.checked_version("x", recent=True) == v1 + 2
    with other.write_lock:  # any writer holding the write lock counts as a write when it lets go
        lancedb.connect(str(tmp_path / "db")).open_table("x").add(_rows(4))
    assert t.checked_version("x", recent=True) == v1 + 3
    t.version_check_s = 0.0  # 0: every call checks
    lancedb.connect(str(tmp_path / "db")).open_table("x").add(_rows(5))
    assert t.checked_version("x", recent=True) == v1 + 4


@pytest.mark.parametrize("interval, expect_checks", [(1000.0, False), (0.0, True)])
def test_look_ups_check_no_versions_within_the_interval(tmp_path, monkeypatch, interval, expect_checks):
    store = Store.open(tmp_path / "db", settings=Settings(environ={}, version_check_s=interval))
    rng = np.random.default_rng(0)
    ids = store.add_prompts("d", [f"p{i}" for i in range(300)])
    store.write_activations("m", 0, ids, rng.standard_normal((300, 16), dtype=np.float32), n_layers=1)
    svc = Service(store, Settings(environ={}, version_check_s=interval))
    svc.similarity.nearest_neighbors(LayerRef("m", 0), prompt_id=ids[0], k=5)  # warm: index, catalogs

    calls = []
    table_cls = type(store.tables.open("acts__m__L000"))
    real_version, real_count = table_cls.version, table_cls.count_rows
    monkeypatch.setattr(table_cls, "version", property(lambda self: calls.append("version") or real_version.fget(self)))
    monkeypatch.setattr(
        table_cls, "count_rows", lambda self, *a, **k: calls.append("rows") or real_count(self, *a, **k)
    )
    for pid in ids[1:21]:
        out = svc.similarity.nearest_neighbors(LayerRef("m", 0), prompt_id=pid, k=5)
        assert len(out) == 5 and out[0].text.startswith("p") and pid not in [n.prompt_id for n in out]
    assert bool(calls) == expect_checks, calls
    svc.close()


def test_a_write_through_this_process_is_seen_by_the_next_look_up(tmp_path):
    store = Store.open(tmp_path / "db", settings=Settings(environ={}, version_check_s=1000.0))
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 8), dtype=np.float32)
    ids = store.add_prompts("d", [f"p{i}" for i in range(200)])
    store.write_activations("m", 0, ids, X, n_layers=1, dtype="float32")
    q = rng.standard_normal((1, 8), dtype=np.float32)
    store.knn.search("m", 0, q, 3)
    # another Store object of this process writes a row equal to the query: the next look-up has it first
    writer = Store.open(tmp_path / "db", settings=Settings(environ={}, version_check_s=1000.0))
    [new] = writer.add_prompts("d", ["the query itself"])
    writer.write_activations("m", 0, [new], q)
    got, scores = store.knn.search("m", 0, q, 3)
    assert got[0, 0] == new and scores[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert store.prompts.get([new])[0].text == "the query itself"
    # and a look-up by that prompt id finds it (no NotFound from a stale index)
    nb, _ = store.knn.of_prompts("m", 0, [new], 3)
    assert new not in nb[0]
