"""Dropping models and datasets (ordered so a retry finishes a failed drop) and verify."""

from __future__ import annotations

import errno
import shutil

import numpy as np
import pyarrow as pa
import pytest

from actstore import Store
from actstore.errors import NotFound
from actstore.store.activations import acts_schema
from actstore.store.next_tokens import next_tokens_table
from actstore.store.tables import Tables
from tests.unit.store.test_sae_registry import _random_tensors, write_saelens


def _world(store: Store, tmp_path):
    """Models m (2 layers, next tokens, one SAE, a persisted index) and keep (1 layer), over
    datasets a (ids 0-3) and b (ids 4-6)."""
    a = store.add_prompts("a", ["a0", "a1", "a2", "a3"])
    b = store.add_prompts("b", ["b0", "b1", "b2"])
    ids = a + b
    rng = np.random.default_rng(0)
    for layer in (0, 1):
        store.write_activations("m", layer, ids, rng.standard_normal((7, 4)), n_layers=2, dtype="float32")
    store.write_activations("keep", 0, ids, rng.standard_normal((7, 4)), n_layers=1, dtype="float32")
    store.next_tokens.write("m", ids, [[1]] * 7, [["x"]] * 7)
    folder = write_saelens(tmp_path / "sae", _random_tensors(rng, 4, 8), layout="v6", d_in=4, d_sae=8)
    sae = store.saes.register("m", 1, folder)
    store.knn.search("m", 0, np.ones((1, 4)), 2)
    store.knn.search("keep", 0, np.ones((1, 4)), 2)
    return a, b, sae


def _files(store: Store, prefix: str) -> list[str]:
    return sorted(p.name for p in store.knn.indexes.persist_dir.iterdir() if p.name.startswith(prefix))


def test_drop_model_removes_everything_of_it_and_nothing_else(store, tmp_path):
    a, b, sae = _world(store, tmp_path)
    keep_before = store.read_activations("keep", 0)
    keep_files = _files(store, "acts__keep__")
    assert len(keep_files) == 3 and len(_files(store, "acts__m__")) == 3

    summary = store.maintenance.drop_model("m")
    assert (summary.kind, summary.name, summary.tables_dropped, summary.saes_removed, summary.index_files_removed) == (
        "model",
        "m",
        3,
        1,
        3,
    )
    assert [m.key for m in store.models.list()] == ["keep"]
    assert sorted(n for n in store.tables.names() if "__" in n) == ["acts__keep__L000"]
    assert store.saes.list() == [] and not (store.tables.local_path / "_saes" / sae.sae_id).exists()
    assert _files(store, "acts__m__") == [] and _files(store, "acts__keep__") == keep_files
    np.testing.assert_array_equal(store.read_activations("keep", 0)[1], keep_before[1])
    assert [d.name for d in store.prompts.datasets()] == ["a", "b"]
    with pytest.raises(NotFound, match=r"unknown model 'm'; known models: keep"):
        store.read_activations("m", 0)
    with pytest.raises(NotFound, match=r"unknown model 'm'; known models: keep"):
        store.maintenance.drop_model("m")
    assert all(c.ok for c in store.maintenance.verify()), [c.line() for c in store.maintenance.verify()]
    # the same key can be ingested again, from scratch
    store.write_activations("m", 0, a, np.eye(4), n_layers=3, dtype="float32")
    assert store.models.get("m").n_layers == 3 and store.models.get("m").layers == (0,)


def test_a_drop_that_fails_half_way_is_finished_by_a_retry(store, tmp_path, monkeypatch):
    _world(store, tmp_path)
    real_drop = Tables.drop
    calls = []

    def flaky(self, name):
        calls.append(name)
        if len(calls) == 2:  # the next-token table went; the first activation table fails
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_drop(self, name)

    monkeypatch.setattr(Tables, "drop", flaky)
    with pytest.raises(OSError, match="No space left"):
        store.maintenance.drop_model("m")
    monkeypatch.undo()
    # half-way: still listed (its row goes last), the other model untouched
    assert [m.key for m in store.models.list()] == ["keep", "m"]
    assert store.tables.open(next_tokens_table("m")) is None
    summary = store.maintenance.drop_model("m")
    assert summary.tables_dropped == 2
    assert [m.key for m in store.models.list()] == ["keep"]
    assert sorted(n for n in store.tables.names() if "__" in n) == ["acts__keep__L000"]


def test_drop_dataset_cascades_to_every_model(store, tmp_path):
    a, b, _ = _world(store, tmp_path)
    summary = store.maintenance.drop_dataset("a")
    # 4 prompts, and their rows in m L0, m L1, keep L0 and m's next tokens
    assert (summary.kind, summary.rows_deleted) == ("dataset", 4 + 4 * 4)
    assert [d.name for d in store.prompts.datasets()] == ["b"]
    for key, layer in (("m", 0), ("m", 1), ("keep", 0)):
        assert store.read_activations(key, layer)[0].tolist() == b
    assert store.next_tokens.ids("m").tolist() == b
    assert store.knn.search("m", 0, np.ones((1, 4)), 2)[0][0].tolist()[0] in b  # index rebuilt
    with pytest.raises(NotFound, match=r"unknown dataset 'a'"):
        store.maintenance.drop_dataset("a")
    assert all(c.ok for c in store.maintenance.verify())
    # new prompts never get the dropped ids, not even the same texts added to the same name again
    assert min(store.add_prompts("c", ["c0"])) > max(a)
    texts = [p.text for p in store.prompts.get(store.prompts.ids("b"))]  # b's texts still stored
    readded = store.add_prompts("a", [f"a{i}" for i in range(4)])
    assert min(readded) > max(a) and store.prompts.ids("a").tolist() == sorted(readded)
    assert [p.text for p in store.prompts.get(b)] == texts


def test_verify_reports_each_kind_of_damage(store, tmp_path):
    _world(store, tmp_path)
    lines = [c.line() for c in store.maintenance.verify()]
    assert [line.split(":")[0] for line in lines] == [
        "ok   tables",
        "ok   prompts",
        "ok   references",
        "ok   vectors",
        "ok   checksums",
        "ok   catalog",
        "ok   indices",
        "ok   saes",
    ]
    assert lines[0] == "ok   tables: 10 tables open and scan (47 rows)"  # model_claims: 1 table, seed + 2 claims

    # a damaged index file, a damaged SAE, a table deleted by hand, rows of unknown prompts
    digest = store.knn.indexes.digest_files()[0]
    faiss_file = digest.with_name(digest.name.replace(".sha256", ".faiss"))
    data = bytearray(faiss_file.read_bytes())
    data[-3] ^= 1
    faiss_file.write_bytes(bytes(data))
    sae = store.saes.list()[0]
    weights = store.tables.local_path / sae.weights_path
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    shutil.rmtree(store.tables.local_path / "acts__m__L001.lance")
    store.tables.drop("acts__m__L001")  # forget the handle, as a new process would
    schema = acts_schema(4, "float32")
    bad = pa.table(
        {
            "prompt_id": pa.array([999], pa.int64()),
            "vector": pa.array([[np.inf, 0, 0, 0]], schema.field("vector").type),
            "digest": pa.array([None], pa.uint64()),
        },
        schema=schema,
    )
    store.tables.add("acts__keep__L000", bad, schema)  # past every check of a write
    checks = {c.name: c for c in store.maintenance.verify()}
    assert [n for n, c in checks.items() if not c.ok] == ["references", "vectors", "catalog", "indices", "saes"]
    assert checks["references"].problems == ["acts__keep__L000: 1 row(s) of unknown prompt id(s) 999"]
    assert checks["vectors"].problems == ["acts__keep__L000: non-finite values in prompt id(s) 999"]
    assert checks["catalog"].problems == ["model 'm': catalogued layer(s) 1 have no table"]
    assert "differs from the recorded" in checks["indices"].problems[0]
    assert checks["saes"].problems[0].startswith(f"SAE {sae.sae_id}: weights SHA-256 ")
