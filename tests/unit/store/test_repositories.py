"""The store's repositories: opening without creating, settings, the layer catalog, the
version-keyed caches, next tokens and results."""

from __future__ import annotations

from datetime import timedelta

import lancedb
import numpy as np
import pytest

from actstore.config import Settings
from actstore.errors import InvalidInput, NotFound
from actstore.store import Store
from actstore.store.tables import Tables


def _model(store: Store, key: str = "m", layers=(0, 1, 2), n: int = 6, d: int = 4, n_layers: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = store.add_prompts("ds", [f"p{i}" for i in range(n)], labels=[i % 2 for i in range(n)])
    store.activations.write(
        key, {l: rng.standard_normal((n, d)) for l in layers}, ids, n_layers=n_layers, dtype="float32"
    )
    return np.asarray(ids)


class ScanCounter:
    """Counts Tables.scan calls by table name (monkeypatched on the class)."""

    def __init__(self, monkeypatch):
        self.names: list[str] = []
        real = Tables.scan

        def counting(tbl, columns=None, where=None, **kw):
            self.names.append(tbl.name)
            return real(tbl, columns, where, **kw)

        monkeypatch.setattr(Tables, "scan", staticmethod(counting))


# ------------------------------------------------------------------- opening
def test_open_without_create_refuses_a_missing_store_and_creates_nothing(tmp_path):
    missing = tmp_path / "nowhere" / "db"
    with pytest.raises(
        NotFound,
        match=r"no actstore store at '.*nowhere/db'; create one with `actstore ingest`, "
        r"`actstore import` or `actstore demo`",
    ):
        Store.open(missing, create=False)
    assert not (tmp_path / "nowhere").exists()
    created = Store.open(tmp_path / "db")
    _model(created)
    reopened = Store.open(tmp_path / "db", create=False)
    assert reopened.uri == created.uri == str(tmp_path / "db")
    assert [m.key for m in reopened.models.list()] == ["m"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInput, match="is a file, not an actstore store folder"):
        Store.open(tmp_path / "file")


def test_ann_threshold_comes_from_settings_not_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTSTORE_ANN_THRESHOLD", "7")
    assert Store.open(tmp_path / "a", settings=Settings(environ={})).knn.ann_threshold == 50_000
    assert Store.open(tmp_path / "b", settings=Settings(environ={}, ann_threshold=123)).knn.ann_threshold == 123
    assert Store.open(tmp_path / "c").knn.ann_threshold == 7  # Settings() reads the environment
    store = Store.open(tmp_path / "d")
    store.knn.ann_threshold = 10
    assert store.knn.ann_threshold == 10
    with pytest.raises(InvalidInput, match="ann_threshold must be an integer, got 'x'"):
        store.knn.ann_threshold = "x"


# ------------------------------------------------------------ layer catalog
def test_layer_catalog_needs_no_table_listing(store, monkeypatch):
    _model(store, layers=(0, 2))
    assert store.models.get("m").layers == (0, 2)

    def no_listing():
        raise AssertionError("the layer catalog should not list the database's tables")

    monkeypatch.setattr(store.tables, "names", no_listing)
    scans = ScanCounter(monkeypatch)
    assert store.models.get("m").layers == (0, 2)
    assert [m.layers for m in store.models.list()] == [(0, 2)]
    assert store.models.find("m", layers=False).layers == ()
    assert scans.names == []  # cached per table version
    store.activations.write("m", {3: np.ones((2, 4))}, [0, 1])  # a new layer: one append to the catalog
    assert store.models.get("m").layers == (0, 2, 3)
    store.activations.write("m", {3: np.ones((2, 4))}, [0, 1])  # a known layer: no catalog write
    assert [n for n in scans.names if not n.startswith("acts__")] == ["model_layers"]  # re-read once
    v = store.models.version()
    store.activations.write("m", {1: np.ones((2, 4))}, [0, 1])
    assert store.models.version() > v
    assert store.models.find("nope") is None
    with pytest.raises(NotFound, match=r"unknown model 'nope'; known models: m"):
        store.models.get("nope")


def test_two_stores_writing_new_layers_of_one_model_both_land(tmp_path):
    a = Store.open(tmp_path / "db")
    ids = _model(a, layers=(0,))
    b = Store.open(tmp_path / "db")
    assert b.models.get("m").layers == (0,)
    a.activations.write("m", {1: np.ones((len(ids), 4))}, ids)
    b.activations.write("m", {2: np.ones((len(ids), 4))}, ids)  # b's cached catalog is older than a's write
    assert a.models.get("m").layers == b.models.get("m").layers == (0, 1, 2)


def test_a_store_without_catalog_lists_table_names_then_seeds_it(tmp_path):
    store = Store.open(tmp_path / "db")
    _model(store, "m", layers=(0, 2))
    _model(store, "other", layers=(1,), seed=1)
    # a store written before the catalog existed: no model_layers table
    lancedb.connect(str(tmp_path / "db"), read_consistency_interval=timedelta(0)).drop_table("model_layers")
    old = Store.open(tmp_path / "db")
    assert [(m.key, m.layers) for m in old.models.list()] == [("m", (0, 2)), ("other", (1,))]
    np.testing.assert_array_equal(old.activations.model_ids("m"), np.arange(6))
    old.activations.write("m", {3: np.ones((6, 4))}, np.arange(6))  # creates the catalog, seeded
    assert "model_layers" in old.tables.names()
    fresh = Store.open(tmp_path / "db")
    assert [(m.key, m.layers) for m in fresh.models.list()] == [("m", (0, 2, 3)), ("other", (1,))]


# -------------------------------------------------------------------- caches
def test_prompt_ids_of_a_layer_are_cached_by_table_version(store, monkeypatch):
    ids = _model(store)
    scans = ScanCounter(monkeypatch)
    first = store.activations.ids("m", 1)
    np.testing.assert_array_equal(first, ids)
    assert store.activations.ids("m", 1) is first and len(scans.names) == 1
    with pytest.raises(ValueError):
        first[0] = 99  # the cached array is read-only
    (new,) = store.add_prompts("ds", ["one more"])
    store.activations.write("m", {1: np.ones((1, 4))}, [new])
    np.testing.assert_array_equal(store.activations.ids("m", 1), np.r_[ids, new])
    assert len(store.activations.ids("m", 3)) == 0  # no table


def test_model_ids_cost_no_reads_when_nothing_changed(store, monkeypatch):
    ids = _model(store, layers=(0, 1, 2))
    other = np.asarray(store.add_prompts("other", ["x", "y"]))
    store.activations.write("m", {0: np.ones((2, 4)), 1: np.ones((2, 4))}, other)  # not at layer 2
    scans = ScanCounter(monkeypatch)
    np.testing.assert_array_equal(store.activations.model_ids("m"), ids)
    assert sorted(scans.names) == ["acts__m__L000", "acts__m__L001", "acts__m__L002"]
    scans.names.clear()
    np.testing.assert_array_equal(store.activations.model_ids("m"), ids)
    np.testing.assert_array_equal(store.activations.model_ids("m", dataset="ds"), ids)
    np.testing.assert_array_equal(store.activations.model_ids("m", dataset="ds"), ids)
    assert scans.names == []  # (the prompt catalog is cached too)
    # a write to one layer re-reads that layer only
    store.activations.write("m", {2: np.ones((2, 4))}, other)
    scans.names.clear()
    np.testing.assert_array_equal(store.activations.model_ids("m"), np.r_[ids, other])
    assert [n for n in scans.names if n.startswith("acts__")] == ["acts__m__L002"]
    np.testing.assert_array_equal(store.activations.model_ids("m", dataset="other"), other)
    np.testing.assert_array_equal(store.activations.shared("m", "m", dataset="other"), other)
    with pytest.raises(NotFound, match="unknown dataset 'nope'"):
        store.activations.model_ids("m", dataset="nope")
    with pytest.raises(NotFound, match="unknown model 'zz'"):
        store.activations.model_ids("zz")


def test_versions(store):
    _model(store, layers=(0, 1))
    v = store.activations.versions("m", [0, 1])
    assert v == {0: store.activations.version("m", 0), 1: store.activations.version("m", 1)}
    store.activations.write("m", {1: np.zeros((6, 4))}, np.arange(6))
    after = store.activations.versions("m", [0, 1])
    assert after[0] == v[0] and after[1] != v[1]
    # a token is "<table id>:<version>": same table, a later version
    assert after[1].rpartition(":")[0] == v[1].rpartition(":")[0]
    assert int(after[1].rpartition(":")[2]) > int(v[1].rpartition(":")[2])
    with pytest.raises(NotFound, match=r"no activations stored for layer 3; stored layers: 0, 1"):
        store.activations.versions("m", [0, 3])
    with pytest.raises(InvalidInput, match=r"layer 9 is out of range for model 'm': allowed 0..3"):
        store.activations.version("m", 9)


# ------------------------------------------------------------------- prompts
def test_prompt_repository(store):
    assert store.prompts.version() == -1 and store.prompts.datasets() == []
    ids = store.add_prompts("a", ["x", "y"], labels=[1, None])
    v = store.prompts.version()
    assert v >= 1
    assert store.prompts.dataset("a").prompt_count == 2
    with pytest.raises(NotFound, match=r"unknown dataset 'b'; known datasets: a"):
        store.prompts.dataset("b")
    with pytest.raises(NotFound, match=r"unknown dataset 'b'; known datasets: a"):
        store.prompts.ids("b")
    store.prompts.require(ids)
    with pytest.raises(NotFound, match=r"unknown prompt id\(s\): 7"):
        store.prompts.require([ids[0], 7])
    np.testing.assert_array_equal(store.prompts.all_ids(), ids)
    store.add_prompts("b", ["z"])
    assert store.prompts.version() > v
    np.testing.assert_array_equal(store.prompts.ids("b"), [2])


# ------------------------------------------------------ next tokens, results
def test_next_tokens(store):
    ids = _model(store, layers=(0,))
    assert not store.next_tokens.has("m") and store.next_tokens.version("m") == -1
    assert len(store.next_tokens.ids("m")) == 0
    with pytest.raises(NotFound, match="model 'm' has no next tokens stored"):
        store.next_tokens.read("m")
    with pytest.raises(NotFound, match="unknown model 'zz'"):
        store.next_tokens.read("zz")
    assert store.next_tokens.write("m", ids[:2], [[5, 6], [7, 8]], [["a", "b"], ["c", "d"]]) == 2
    assert store.next_tokens.has("m") and store.next_tokens.version("m") >= 1
    got_ids, tid, tok = store.next_tokens.read("m", [ids[1]])
    assert (got_ids.tolist(), tid, tok) == ([ids[1]], [[7, 8]], [["c", "d"]])
    store.next_tokens.write("m", ids[1:3], [[1], [2]], [["e"], ["f"]])  # replaces prompt 1, adds 2
    got_ids, tid, _ = store.next_tokens.read("m")
    assert (got_ids.tolist(), tid) == (ids[:3].tolist(), [[5, 6], [1], [2]])
    np.testing.assert_array_equal(store.next_tokens.ids("m"), ids[:3])
    with pytest.raises(NotFound, match=r"unknown prompt id\(s\): 99"):
        store.next_tokens.write("m", [99], [[1]], [["x"]])
    with pytest.raises(NotFound, match="has no next tokens for 1 prompt"):
        store.next_tokens.read("m", [ids[5]])
    with pytest.raises(InvalidInput, match="invalid model key 'bad key'"):
        store.next_tokens.has("bad key")


def test_results(store):
    assert store.results.get("k") is None
    store.results.put("k", '{"a": 1}', query="q")
    store.results.put("k'2", "2")
    store.results.put("k", '{"a": 3}')
    assert store.results.get("k") == '{"a": 3}' and store.results.get("k'2") == "2"
    assert store.tables.open("results").count_rows() == 2
