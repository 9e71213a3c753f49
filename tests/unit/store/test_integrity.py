"""Stale or damaged indices and caches (issue 12): table tokens that cannot repeat, index files
checked against their digests, cache writes that survive a full disk, a bounded results table."""

from __future__ import annotations

import errno
import io
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from actstore import Store
from actstore.config import Settings
from actstore.layers import LayerRef
from actstore.service import Service
from actstore.store.activations import acts_schema
from actstore.store.knn import files as index_files

TABLE = "acts__m__L000"
# Six unit vectors around the circle; the query [1, 0.1] has them in the order 0, 1, 2, 5, 3, 4.
X_FIRST = np.array([[1, 0], [0.8, 0.6], [0, 1], [-0.6, 0.8], [-1, 0], [0, -1]], np.float32)
# The same directions, reversed over the ids: the nearest to [1, 0.1] are now 5, 4, 3.
X_SECOND = X_FIRST[::-1].copy()
QUERY = np.array([[1.0, 0.1]], np.float32)


def _exact(X: np.ndarray, q: np.ndarray, k: int) -> tuple[list[int], np.ndarray]:
    """Cosine top-k by numpy, in float64 (independent of FAISS)."""
    x = X.astype(np.float64) / np.linalg.norm(X.astype(np.float64), axis=1, keepdims=True)
    v = q[0].astype(np.float64) / np.linalg.norm(q[0].astype(np.float64))
    sims = x @ v
    order = np.argsort(-sims, kind="stable")[:k]
    return order.tolist(), sims[order]


def _model(store: Store, X: np.ndarray = X_FIRST) -> list[int]:
    ids = store.add_prompts("ds", [f"p{i}" for i in range(len(X))])
    store.write_activations("m", 0, ids, X, n_layers=2, source="local/m", architecture="llama", dtype="float32")
    return ids


def _stem(store: Store, kind: str = "exact") -> Path:
    return store.knn.indexes.stem(TABLE, "cosine", store.activations.version("m", 0), kind)


# ------------------------------------------------------------------ tokens that cannot repeat
def test_a_table_deleted_by_hand_and_imported_again_gets_a_new_token(tmp_path, caplog):
    store = Store.open(tmp_path / "db")
    ids = _model(store)
    assert _exact(X_FIRST, QUERY, 3)[0] == [0, 1, 2]
    assert store.knn.search("m", 0, QUERY, 3)[0].tolist() == [[0, 1, 2]]
    before = store.activations.version("m", 0)
    assert Path(f"{_stem(store)}.faiss").exists()

    shutil.rmtree(tmp_path / "db" / f"{TABLE}.lance")  # deleted by hand ...
    other = Store.open(tmp_path / "db")  # ... and imported again by another process
    other.write_activations("m", 0, ids, X_SECOND)
    after = store.activations.version("m", 0)
    # Lance numbers the versions of the new table as it did the old one's: only the id differs.
    assert after.rpartition(":")[2] == before.rpartition(":")[2]
    assert after.rpartition(":")[0] != before.rpartition(":")[0]

    expected_ids, expected_scores = _exact(X_SECOND, QUERY, 3)
    assert expected_ids == [5, 4, 3]
    got, scores = store.knn.search("m", 0, QUERY, 3)
    assert got.tolist() == [expected_ids]
    np.testing.assert_allclose(scores[0], expected_scores, atol=1e-6)
    # the old table's index files are gone, the new one's are in place
    assert not any(
        p.name.startswith(f"{TABLE}.cosine.exact.{before.rpartition(':')[0]}")
        for p in store.knn.indexes.persist_dir.iterdir()
    )


def test_a_cached_answer_is_not_served_for_a_table_imported_again(tmp_path):
    store = Store.open(tmp_path / "db")
    rng = np.random.default_rng(0)
    ids = store.add_prompts("ds", [f"p{i}" for i in range(40)])
    A, B = rng.standard_normal((40, 6)), rng.standard_normal((40, 6))
    store.write_activations("a", 0, ids, A, n_layers=1, dtype="float32")
    store.write_activations("b", 0, ids, A @ rng.standard_normal((6, 6)), n_layers=1, dtype="float32")
    service = Service(store, Settings(environ={}))
    first = service.similarity.cka(LayerRef("a", layer=0), LayerRef("b", layer=0))
    assert service.similarity.cka(LayerRef("a", layer=0), LayerRef("b", layer=0)).value == first.value
    assert service.results.computed == 1

    shutil.rmtree(tmp_path / "db" / "acts__a__L000.lance")
    Store.open(tmp_path / "db").write_activations("a", 0, ids, B)
    second = service.similarity.cka(LayerRef("a", layer=0), LayerRef("b", layer=0))
    assert service.results.computed == 2
    fresh = Store.open(tmp_path / "fresh")
    fresh_ids = fresh.add_prompts("ds", [f"p{i}" for i in range(40)])
    fresh.write_activations("a", 0, fresh_ids, B, n_layers=1, dtype="float32")
    fresh.write_activations("b", 0, fresh_ids, store.read_activations("b", 0)[1], n_layers=1, dtype="float32")
    expected = Service(fresh, Settings(environ={})).similarity.cka(LayerRef("a", layer=0), LayerRef("b", layer=0))
    assert second.value == pytest.approx(expected.value, abs=1e-9)
    assert second.value != pytest.approx(first.value, abs=1e-3)


# ------------------------------------------------------------------ damaged index files
def _flip_byte(path: Path, offset_from_end: int) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) - offset_from_end] ^= 0x40  # an exponent bit of a float32: a huge or tiny value
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["bit flip in the index", "permuted id array"])
def test_a_damaged_exact_index_is_rebuilt(tmp_path, caplog, damage):
    store = Store.open(tmp_path / "db")
    _model(store)
    store.knn.search("m", 0, QUERY, 3)
    stem = _stem(store)
    if damage == "bit flip in the index":
        _flip_byte(Path(f"{stem}.faiss"), 5)  # inside the stored vectors (the file ends with them)
    else:
        ids = np.load(f"{stem}.ids.npy")
        buf = io.BytesIO()
        np.save(buf, ids[[1, 0, 2, 3, 4, 5]])
        Path(f"{stem}.ids.npy").write_bytes(buf.getvalue())
    assert index_files.verify(Path(f"{stem}.sha256")) is not None

    fresh = Store.open(tmp_path / "db")  # a new process: loads the persisted index
    with caplog.at_level(logging.WARNING):
        got, scores = fresh.knn.search("m", 0, QUERY, 5)
    expected_ids, expected_scores = _exact(X_FIRST, QUERY, 5)
    assert expected_ids == [0, 1, 2, 5, 3]
    assert got.tolist() == [expected_ids]
    np.testing.assert_allclose(scores[0], expected_scores, atol=1e-6)
    assert any("rebuilding FAISS index" in r.getMessage() and "SHA-256" in r.getMessage() for r in caplog.records)
    assert index_files.verify(Path(f"{stem}.sha256")) is None  # rewritten whole


def test_a_damaged_approximate_index_is_rebuilt(tmp_path, caplog):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 16)).astype(np.float32)
    store = Store.open(tmp_path / "db")
    ids = store.add_prompts("ds", [f"p{i}" for i in range(200)])
    store.write_activations("m", 0, ids, X, n_layers=1, dtype="float32")
    q = rng.standard_normal((1, 16)).astype(np.float32)
    store.knn.search("m", 0, q, 5, approximate=True)
    stem = _stem(store, "ann")
    _flip_byte(Path(f"{stem}.faiss"), 100)
    assert index_files.verify(Path(f"{stem}.sha256")) is not None

    fresh = Store.open(tmp_path / "db")
    with caplog.at_level(logging.WARNING):
        got, scores = fresh.knn.search("m", 0, q, 5, approximate=True)
    expected_ids, expected_scores = _exact(X, q, 5)  # 200 rows: every row is re-ranked exactly
    assert got.tolist() == [expected_ids]
    np.testing.assert_allclose(scores[0], expected_scores, atol=1e-5)
    assert any("rebuilding approximate index" in r.getMessage() for r in caplog.records)
    assert index_files.verify(Path(f"{stem}.sha256")) is None


# ------------------------------------------------------------------ a full disk
def _disk_full(fh, data):
    fh.write(bytes(data[: len(data) // 2]))  # half the file reaches the disk, then ENOSPC
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_leaves_no_index_files_and_the_answer_stands(store, monkeypatch, caplog):
    _model(store)
    monkeypatch.setattr(index_files, "write_bytes", _disk_full)
    with caplog.at_level(logging.WARNING):
        got, scores = store.knn.search("m", 0, QUERY, 3)
    assert got.tolist() == [[0, 1, 2]]
    np.testing.assert_allclose(scores[0], _exact(X_FIRST, QUERY, 3)[1], atol=1e-6)
    assert any(
        "could not persist index" in r.getMessage() and "No space left" in r.getMessage() for r in caplog.records
    )
    assert sorted(p.name for p in store.knn.indexes.persist_dir.iterdir()) == []  # no .tmp, no half file
    assert store.knn.search("m", 0, QUERY, 3)[0].tolist() == [[0, 1, 2]]  # served from memory
    monkeypatch.undo()
    Store.open(store.uri).knn.search("m", 0, QUERY, 3)  # with space again: persisted, complete
    stem = _stem(store).name
    assert sorted(p.name for p in store.knn.indexes.persist_dir.iterdir()) == [
        f"{stem}.faiss",
        f"{stem}.ids.npy",
        f"{stem}.sha256",
    ]


def test_a_full_disk_does_not_fail_a_cached_query(tmp_path, monkeypatch, caplog):
    store = Store.open(tmp_path / "db")
    rng = np.random.default_rng(0)
    ids = store.add_prompts("ds", [f"p{i}" for i in range(30)])
    A = rng.standard_normal((30, 5))
    store.write_activations("a", 0, ids, A, n_layers=1, dtype="float32")
    store.write_activations("b", 0, ids, 2 * A, n_layers=1, dtype="float32")
    service = Service(store, Settings(environ={}))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.tables, "merge", full)
    with caplog.at_level(logging.WARNING):
        r = service.similarity.cka(LayerRef("a", layer=0), LayerRef("b", layer=0))
    assert r.value == pytest.approx(1.0, abs=1e-9)  # B = 2A: CKA 1
    assert any("could not cache an answer" in rec.getMessage() for rec in caplog.records)
    assert store.results.count() == 0
    assert not list((tmp_path / "db").rglob("*.tmp"))


# ------------------------------------------------------------------ the results table is bounded
def test_the_results_table_is_capped_and_compacted(tmp_path):
    store = Store.open(tmp_path / "db", settings=Settings(environ={}, results_max_rows=5, results_compact_every=4))
    for i in range(10):
        assert store.results.put(f"k{i}", f'"v{i}"') is True
    # maintenance ran after puts 4 and 8: 8 answers -> the newest 5 kept; then two more puts
    assert store.results.count() == 7
    assert [store.results.get(f"k{i}") for i in range(10)] == [None, None, None] + [f'"v{i}"' for i in range(3, 10)]
    assert store.results.maintain() == 2
    assert [store.results.get(f"k{i}") for i in range(10)] == [None] * 5 + [f'"v{i}"' for i in range(5, 10)]


def test_a_table_from_before_ids_gets_one_on_its_next_write(store):
    ids = _model(store)
    # no id and no digest column: as tables were created before ids and checksums existed
    schema = pa.schema([f for f in acts_schema(2, "float32") if f.name != "digest"])
    store.tables.add(
        "acts__m__L001",
        pa.table(
            {"prompt_id": pa.array(ids, pa.int64()), "vector": pa.array(X_FIRST.tolist(), schema.field("vector").type)},
            schema=schema,
        ),
        schema,
    )
    assert store.activations.version("m", 1) == "legacy:2"
    store.write_activations("m", 1, ids[:1], X_FIRST[:1])
    token = store.activations.version("m", 1)
    # the rewrite that adds checksums (and the id), then the upsert
    assert token.endswith(":4") and len(token.split(":")[0]) == 32
    store.write_activations("m", 1, ids[:1], X_FIRST[1:2])
    assert store.activations.version("m", 1) == f"{token.split(':')[0]}:5"  # the id stays
