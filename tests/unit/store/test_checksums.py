"""Checksums of stored vectors (issue 22, item 8): a bit flipped inside a Lance data file is
found by ``verify`` and refused by reads with ``ACTSTORE_VERIFY_READS=1``; tables written
before checksums still read, are reported as having none, and get them on their next write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import xxhash

from actstore import Store
from actstore.config import Settings
from actstore.errors import DataCorrupted
from actstore.store.activations import TABLE_ID_KEY, table_id
from actstore.store.vectors import row_digests

TABLE = "acts__m__L000"
# Rows whose float32 bytes are easy to find in a data file (no row repeats another's bytes).
X = (np.arange(6 * 4, dtype=np.float32).reshape(6, 4) + 1) * np.float32(1.375) + np.float32(1000.0)


def _store(path: Path, verify_reads: bool = False) -> Store:
    return Store.open(path, settings=Settings(environ={}, verify_reads=verify_reads))


def _model(store: Store) -> list[int]:
    ids = store.add_prompts("ds", [f"p{i}" for i in range(len(X))])
    store.write_activations("m", 0, ids, X, n_layers=1, source="local/m", architecture="llama", dtype="float32")
    return ids


def _flip_byte_of_row(db: Path, row: np.ndarray) -> Path:
    """Flip one bit of the first float of ``row`` inside the table's Lance data file."""
    needle = row.astype(np.float32).tobytes()
    for f in sorted((db / f"{TABLE}.lance" / "data").glob("*.lance")):
        raw = bytearray(f.read_bytes())
        at = raw.find(needle)
        if at >= 0:
            raw[at + 1] ^= 0x10  # a low mantissa bit: the value stays finite, only slightly off
            f.write_bytes(bytes(raw))
            return f
    raise AssertionError("row bytes not found in any data file")


def _checks(store: Store) -> dict[str, object]:
    return {c.name: c for c in store.maintenance.verify()}


def test_row_digest_is_xxh3_of_the_row_bytes():
    rows = X.astype(np.float16)
    got = row_digests(rows)
    assert got.dtype == np.uint64
    assert got.tolist() == [xxhash.xxh3_64_intdigest(r.tobytes()) for r in rows]
    assert row_digests(np.empty((0, 4), np.float16)).tolist() == []


def test_every_written_row_carries_its_digest(tmp_path):
    store = _store(tmp_path / "db")
    _model(store)
    t = store.tables.open(TABLE).to_arrow().sort_by("prompt_id")
    assert t["digest"].to_pylist() == [xxhash.xxh3_64_intdigest(r.tobytes()) for r in X]
    checks = _checks(store)
    assert checks["checksums"].ok and checks["checksums"].summary == "6 activation vectors match their checksums"


def test_a_flipped_bit_in_a_data_file_is_found_by_verify_and_refused_by_checked_reads(tmp_path):
    store = _store(tmp_path / "db")
    ids = _model(store)
    _flip_byte_of_row(tmp_path / "db", X[3])

    # Unchecked reads serve the damaged value (what Lance alone does) ...
    plain = _store(tmp_path / "db")
    _, got = plain.read_activations("m", 0)
    assert got[3, 0] != X[3, 0] and np.array_equal(got[[0, 1, 2, 4, 5]], X[[0, 1, 2, 4, 5]])

    # ... verify names the table and the prompt id ...
    checks = _checks(plain)
    assert checks["checksums"].problems == [
        f"{TABLE}: stored vectors of prompt id(s) {ids[3]} do not match their checksums (a damaged data file)"
    ]
    assert checks["vectors"].ok  # the value is still finite: only the checksum sees it

    # ... and checked reads refuse it, whole-table and by id, but serve the intact rows.
    checked = _store(tmp_path / "db", verify_reads=True)
    with pytest.raises(DataCorrupted) as err:
        checked.read_activations("m", 0)
    assert str(err.value).startswith(
        f"activation table {TABLE}: the stored vectors of prompt id(s) {ids[3]} do not match their checksums"
    )
    with pytest.raises(DataCorrupted, match=f"prompt id\\(s\\) {ids[3]} "):
        checked.read_activations("m", 0, prompt_ids=[ids[2], ids[3]])
    got_ids, good = checked.read_activations("m", 0, prompt_ids=[ids[0], ids[5]])
    assert got_ids.tolist() == [ids[0], ids[5]] and np.array_equal(good, X[[0, 5]])


def test_verify_reads_comes_from_the_environment():
    assert Settings(environ={"ACTSTORE_VERIFY_READS": "1"}).verify_reads is True
    assert Settings(environ={"ACTSTORE_VERIFY_READS": "off"}).verify_reads is False
    assert Settings(environ={}).verify_reads is False


def test_a_table_written_before_checksums_reads_is_reported_and_gets_them_on_its_next_write(tmp_path):
    store = _store(tmp_path / "db", verify_reads=True)
    ids = store.add_prompts("ds", [f"p{i}" for i in range(len(X))])
    store.write_activations("m", 0, ids[:5], X[:5], n_layers=1, source="local/m", architecture="llama", dtype="float32")
    # Rewrite the table as an older actstore wrote it: no digest column, id in field metadata.
    tbl = store.tables.open(TABLE)
    uid = table_id(tbl)
    old = pa.schema(
        [
            pa.field("prompt_id", pa.int64(), nullable=False, metadata={TABLE_ID_KEY.decode(): uid}),
            pa.field("vector", pa.list_(pa.float32(), 4)),
        ]
    )
    t = tbl.to_arrow()
    store.tables.overwrite(TABLE, pa.table({"prompt_id": t["prompt_id"], "vector": t["vector"]}, schema=old))
    assert "digest" not in store.tables.open(TABLE).schema.names

    _, got = store.read_activations("m", 0)  # reads as before, checked reads included
    assert np.array_equal(got, X[:5])
    checks = _checks(store)
    assert checks["checksums"].ok
    assert checks["checksums"].summary == (
        "0 activation vectors match their checksums; no checksums for 5 rows in 1 table(s) written before "
        f"checksums ({TABLE}; their next write adds them)"
    )

    store.write_activations("m", 0, ids[5:], X[5:])
    tbl = store.tables.open(TABLE)
    assert table_id(tbl) == uid  # the same table: cached answers keyed by its token stay sound
    t = tbl.to_arrow().sort_by("prompt_id")
    assert t["digest"].to_pylist() == [xxhash.xxh3_64_intdigest(r.tobytes()) for r in X]
    assert _checks(store)["checksums"].summary == "6 activation vectors match their checksums"
    _, got = store.read_activations("m", 0)
    assert np.array_equal(got, X)


def test_snapshot_reads_of_workers_refuse_a_flipped_bit_when_verifying(tmp_path):
    from actstore.store.snapshots import read_rows, snapshot

    store = _store(tmp_path / "db")
    ids = np.asarray(_model(store))
    _flip_byte_of_row(tmp_path / "db", X[4])
    plain = snapshot(store.tables, "m", 0, 4)
    assert read_rows(plain, ids)[4, 0] != X[4, 0]  # served unchecked, as before
    checked = snapshot(store.tables, "m", 0, 4, verify=True)
    assert np.array_equal(read_rows(checked, ids[:4]), X[:4])
    with pytest.raises(
        DataCorrupted, match=f"^activation table {TABLE}: the stored vectors of prompt id\\(s\\) {ids[4]} "
    ):
        read_rows(checked, ids)
