"""The LanceDB store: prompts, activation round trips, validation, catalog, k-NN."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from actstore import Store
from actstore.errors import InvalidInput, NotFound
from actstore.store import tables as tables_mod


def _setup(store: Store, n: int = 12, d: int = 8, layers: int = 3, dtype: str = "float32", seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = store.add_prompts("ds", [f"prompt {i}" for i in range(n)], labels=[i % 2 for i in range(n)])
    X = rng.standard_normal((n, d)).astype(np.float32)
    store.write_activations("m", 0, ids, X, n_layers=layers, source="local/m", architecture="llama", dtype=dtype)
    return np.asarray(ids), X


def _snapshot(store: Store, key: str = "m", layer: int = 0):
    ids, X = store.read_activations(key, layer)
    return store.activations.version(key, layer), ids.copy(), X.copy()


# ------------------------------------------------------------------ prompts
def test_add_prompts_stable_ids_and_no_duplicate_rows(store):
    ids = store.add_prompts("a", ["x", "y", "x"])
    assert ids == [0, 1, 0]
    assert store.add_prompts("a", ["y", "z"]) == [1, 2]
    assert store.add_prompts("b", ["x"]) == [3]  # same text, other dataset: its own prompt
    assert [(d.name, d.prompt_count) for d in store.prompts.datasets()] == [("a", 3), ("b", 1)]
    assert [p.text for p in store.prompts.page("a")] == ["x", "y", "z"]
    reopened = Store.open(store.uri)
    assert reopened.add_prompts("a", ["z", "w"]) == [2, 4]


def test_add_prompts_labels_meta_and_catalog(store):
    store.add_prompts("lab", ["p", "q"], labels=[1, None], meta=[{"src": "t"}, None])
    store.add_prompts("nolab", ["r"])
    info = {d.name: d for d in store.prompts.datasets()}
    assert info["lab"].has_labels and not info["nolab"].has_labels
    p, q = store.prompts.page("lab")
    assert (p.label, p.meta, q.label, q.meta) == (1, {"src": "t"}, None, {})
    assert [r.text for r in store.prompts.page("lab", offset=1, limit=5)] == ["q"]
    assert store.prompts.page("lab", offset=5) == []
    np.testing.assert_array_equal(store.prompts.labels([1, 0]), [np.nan, 1.0])


@pytest.mark.parametrize(
    "args, message",
    [
        (("", ["x"]), "dataset must be a non-empty name"),
        (("d", []), "no texts given"),
        (("d", "text"), "must be a list of strings"),
        (("d", ["ok", "  "]), r"texts\[1\] is empty"),
        (("d", ["ok", 3]), r"texts\[1\] must be a string"),
        (("d", ["a", "b"], [1]), "got 1 labels for 2 texts"),
        (("d", ["a", "b"], [1, "x"]), r"labels\[1\] must be an integer"),
        (("d", ["a"], [True]), r"labels\[0\] must be an integer"),
    ],
)
def test_add_prompts_rejects_bad_input_and_stores_nothing(store, args, message):
    store.add_prompts("keep", ["kept"])
    with pytest.raises(InvalidInput, match=message):
        store.add_prompts(*args)
    assert [(d.name, d.prompt_count) for d in store.prompts.datasets()] == [("keep", 1)]


def test_prompt_catalog_errors(store):
    store.add_prompts("a", ["x"])
    with pytest.raises(NotFound, match=r"unknown dataset 'nope'; known datasets: a"):
        store.prompts.page("nope")
    with pytest.raises(InvalidInput, match="offset must be >= 0, got -1"):
        store.prompts.page("a", offset=-1)
    with pytest.raises(InvalidInput, match="limit must be >= 0, got -2"):
        store.prompts.page("a", limit=-2)
    with pytest.raises(NotFound, match=r"unknown prompt id\(s\): 99"):
        store.prompts.get([0, 99])


# -------------------------------------------------------------- activations
def test_round_trip_float32_is_bit_exact(store):
    ids, X = _setup(store, dtype="float32")
    got_ids, got = store.read_activations("m", 0)
    np.testing.assert_array_equal(got_ids, ids)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert got.tobytes() == X.tobytes()


def test_round_trip_float16_within_rounding(store):
    ids, X = _setup(store, dtype="float16")
    _, got = store.read_activations("m", 0)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, X.astype(np.float16).astype(np.float32))
    assert store.models.get("m").dtype == "float16"


def test_rows_come_back_in_prompt_id_order_and_filters(store, rng):
    ids = np.asarray(store.add_prompts("a", [f"a{i}" for i in range(6)]) + store.add_prompts("b", ["b0", "b1"]))
    X = rng.standard_normal((8, 4)).astype(np.float32)
    perm = rng.permutation(8)
    store.write_activations("m", 1, ids[perm], X[perm], n_layers=2, dtype="float32")
    got_ids, got = store.read_activations("m", 1)
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got, X)
    b_ids, b = store.read_activations("m", 1, dataset="b")
    np.testing.assert_array_equal(b_ids, ids[6:])
    np.testing.assert_array_equal(b, X[6:])
    s_ids, s = store.read_activations("m", 1, prompt_ids=[5, 2])
    np.testing.assert_array_equal(s_ids, [2, 5])
    np.testing.assert_array_equal(s, X[[2, 5]])


def test_large_id_filter_takes_the_scan_path(store, rng, monkeypatch):
    monkeypatch.setattr(tables_mod, "PUSHDOWN_IDS", 3)
    ids, X = _setup(store, n=20)
    got_ids, got = store.read_activations("m", 0, prompt_ids=ids[::2])
    np.testing.assert_array_equal(got_ids, ids[::2])
    np.testing.assert_array_equal(got, X[::2])


def test_rewrite_is_idempotent_and_upsert_replaces(store, rng):
    ids, X = _setup(store)
    store.write_activations("m", 0, ids, X)
    got_ids, got = store.read_activations("m", 0)
    assert len(got_ids) == len(ids)
    np.testing.assert_array_equal(got, X)
    new = rng.standard_normal((3, X.shape[1])).astype(np.float32)
    store.write_activations("m", 0, ids[[1, 4, 7]], new)
    got_ids, got = store.read_activations("m", 0)
    expected = X.copy()
    expected[[1, 4, 7]] = new
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got, expected)


def test_model_registered_on_first_write(store):
    _setup(store, d=8, layers=3)
    info = store.models.get("m")
    assert (info.key, info.n_layers, info.d_model, info.source, info.architecture, info.layers) == (
        "m",
        3,
        8,
        "local/m",
        "llama",
        (0,),
    )
    assert [m.key for m in store.models.list()] == ["m"]


def _bad_writes(ids, X):
    d = X.shape[1]
    nan = X.copy()
    nan[2, 1] = np.nan
    inf = X.copy()
    inf[3, 0] = -np.inf
    big = X.copy()
    big[0, 0] = 1e6
    return [
        (dict(layer=0, prompt_ids=ids, vectors=X[:, :-1]), f"have dimension {d - 1}, but model 'm' has d_model={d}"),
        (dict(layer=0, prompt_ids=ids, vectors=X[0]), r"must be 2-D \[n, d_model\]"),
        (dict(layer=0, prompt_ids=ids, vectors=nan), rf"non-finite values .* prompt id\(s\) {ids[2]}"),
        (dict(layer=0, prompt_ids=ids, vectors=inf), rf"non-finite values .* prompt id\(s\) {ids[3]}"),
        (dict(layer=0, prompt_ids=ids[:-1], vectors=X), f"got {len(X)} vectors for {len(X) - 1} prompt ids"),
        (
            dict(layer=0, prompt_ids=np.r_[ids[:-1], 999], vectors=X),
            r"unknown prompt id\(s\): 999; add the prompts first",
        ),
        (
            dict(layer=0, prompt_ids=np.r_[ids[:-1], ids[0]], vectors=X),
            rf"duplicate prompt id\(s\) in one write: {ids[0]}",
        ),
        (dict(layer=3, prompt_ids=ids, vectors=X), r"layer 3 is out of range for model 'm': allowed 0..2"),
        (dict(layer=-1, prompt_ids=ids, vectors=X), r"layer -1 is out of range"),
        (dict(layer=0, prompt_ids=ids, vectors=X, n_layers=5), "registered with n_layers=3, got n_layers=5"),
        (dict(layer=0, prompt_ids=ids, vectors=X, dtype="float16"), "model 'm' stores float32; got dtype='float16'"),
        (dict(layer=0, prompt_ids=ids.astype(float), vectors=X), "prompt_ids must be a 1-D sequence of integers"),
    ]


def test_every_bad_write_is_refused_and_leaves_the_table_untouched(store):
    ids, X = _setup(store, dtype="float32")
    before = _snapshot(store)
    for kwargs, message in _bad_writes(ids, X):
        with pytest.raises(InvalidInput, match=message):
            store.write_activations("m", **kwargs)
        after = _snapshot(store)
        assert after[0] == before[0], kwargs
        np.testing.assert_array_equal(after[2], before[2])
    assert store.models.get("m").layers == (0,)


def test_a_bad_layer_in_a_multi_layer_write_writes_no_layer(store, rng):
    ids, X = _setup(store)
    before = _snapshot(store)
    good = rng.standard_normal(X.shape).astype(np.float32)
    bad = good.copy()
    bad[-1, -1] = np.nan
    with pytest.raises(InvalidInput, match="non-finite"):
        store.activations.write("m", {0: good, 1: good, 2: bad}, ids)
    assert _snapshot(store)[0] == before[0]
    assert store.models.get("m").layers == (0,)


def test_first_write_errors(store, rng):
    ids = store.add_prompts("d", ["a", "b"])
    X = rng.standard_normal((2, 4))
    with pytest.raises(InvalidInput, match="not registered yet: pass n_layers"):
        store.write_activations("new", 0, ids, X)
    with pytest.raises(InvalidInput, match="invalid model key 'bad key'"):
        store.write_activations("bad key", 0, ids, X, n_layers=1)
    with pytest.raises(InvalidInput, match=r"dtype must be one of \['float16', 'float32'\], got 'int8'"):
        store.write_activations("new", 0, ids, X, n_layers=1, dtype="int8")
    with pytest.raises(InvalidInput, match=r"overflow float16 \(max 65504\); store this model with dtype='float32'"):
        store.write_activations("new", 0, ids, X * 1e6, n_layers=1)
    with pytest.raises(NotFound, match="unknown model 'new'"):
        store.models.get("new")
    assert store.models.list() == []


def test_read_errors(store):
    _setup(store)
    with pytest.raises(NotFound, match=r"unknown model 'zz'; known models: m"):
        store.read_activations("zz", 0)
    with pytest.raises(InvalidInput, match=r"layer 7 is out of range for model 'm': allowed 0..2"):
        store.read_activations("m", 7)
    with pytest.raises(NotFound, match=r"no activations stored for layer 2; stored layers: 0"):
        store.read_activations("m", 2)
    with pytest.raises(NotFound, match="unknown dataset 'nope'"):
        store.read_activations("m", 0, dataset="nope")
    store.add_prompts("ds", ["unstored"])
    with pytest.raises(NotFound, match=r"prompt id\(s\) 12 have no activations for model 'm' layer 0"):
        store.read_activations("m", 0, prompt_ids=[0, 12])


def test_shared_prompts(store, rng):
    ids = np.asarray(store.add_prompts("a", list("abcdef")))
    other = np.asarray(store.add_prompts("b", list("gh")))
    store.activations.write("m1", {0: rng.standard_normal((6, 4)), 1: rng.standard_normal((6, 4))}, ids, n_layers=2)
    store.write_activations("m2", 0, np.r_[ids[2:], other], rng.standard_normal((6, 5)), n_layers=1)
    np.testing.assert_array_equal(store.activations.shared("m1", "m2"), ids[2:])
    np.testing.assert_array_equal(store.activations.shared("m2", "m2", dataset="b"), other)
    # a prompt missing from one layer of m1 is not one m1 "has"
    store.add_prompts("a", ["z"])
    store.write_activations("m1", 0, [8], rng.standard_normal((1, 4)))
    np.testing.assert_array_equal(store.activations.model_ids("m1"), ids)


def test_many_small_writes_are_compacted(store, rng):
    ids = store.add_prompts("d", [f"p{i}" for i in range(60)])
    for i in range(0, 60, 2):
        store.write_activations("m", 0, ids[i : i + 2], rng.standard_normal((2, 4)), n_layers=1)
    tbl = store.tables.open("acts__m__L000")
    assert tbl.stats()["fragment_stats"]["num_fragments"] <= tables_mod.MAX_FRAGMENTS + 1
    assert len(store.read_activations("m", 0)[0]) == 60


# ---------------------------------------------------------------------- knn
def _brute_knn(X, queries, k, exclude=None, metric="cosine"):
    X = X.astype(np.float64)
    q = queries.astype(np.float64)
    if metric == "cosine":
        S = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (X / np.linalg.norm(X, axis=1, keepdims=True)).T
    elif metric == "dot":
        S = q @ X.T
    else:
        S = -np.sqrt(((q[:, None, :] - X[None]) ** 2).sum(-1))
    if exclude is not None:
        S[np.arange(len(q)), exclude] = -np.inf
    order = np.argsort(-S, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(S, order, axis=1)
    return order, (-scores if metric == "l2" else scores)


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_knn_matches_brute_force_with_self_excluded(store, rng, metric):
    n, d, k = 200, 16, 7
    ids = np.asarray(store.add_prompts("d", [f"p{i}" for i in range(n)]))
    X = rng.standard_normal((n, d)).astype(np.float32)
    store.write_activations("m", 0, ids, X, n_layers=1, dtype="float32")
    q_rows = np.arange(0, n, 9)
    got_ids, got_scores = store.knn.search("m", 0, X[q_rows], k, exclude_self_ids=ids[q_rows], metric=metric)
    exp_pos, exp_scores = _brute_knn(X, X[q_rows], k, exclude=q_rows, metric=metric)
    np.testing.assert_array_equal(got_ids, ids[exp_pos])
    np.testing.assert_allclose(got_scores, exp_scores, rtol=1e-4, atol=1e-4)
    for i, r in enumerate(q_rows):
        assert ids[r] not in got_ids[i]


def test_knn_restricted_to_a_dataset(store, rng):
    a = store.add_prompts("a", [f"a{i}" for i in range(30)])
    b = store.add_prompts("b", [f"b{i}" for i in range(30)])
    X = rng.standard_normal((60, 8)).astype(np.float32)
    store.write_activations("m", 0, a + b, X, n_layers=1, dtype="float32")
    got, _ = store.knn.search("m", 0, X[:3], 5, exclude_self_ids=a[:3], dataset="b")
    exp_pos, _ = _brute_knn(X[30:], X[:3], 5)
    np.testing.assert_array_equal(got, np.asarray(b)[exp_pos])


def test_knn_errors(store):
    ids, X = _setup(store, n=12, d=8)
    for k, n_msg in [(0, "got k=0"), (12, "got k=12"), (-3, "got k=-3")]:
        with pytest.raises(
            InvalidInput, match=rf"k must be between 1 and n - 1 = 11 \(n = 12 stored prompts\), {n_msg}"
        ):
            store.knn.search("m", 0, X[:1], k)
    with pytest.raises(InvalidInput, match=r"dimension d_model=8 of model 'm', got shape \(1, 5\)"):
        store.knn.search("m", 0, X[:1, :5], 3)
    bad = X[:1].copy()
    bad[0, 0] = np.nan
    with pytest.raises(InvalidInput, match="NaN or inf"):
        store.knn.search("m", 0, bad, 3)
    with pytest.raises(InvalidInput, match="zero query vector"):
        store.knn.search("m", 0, np.zeros(8), 3)
    with pytest.raises(InvalidInput, match=r"metric must be one of \['cosine', 'dot', 'l2'\], got 'hamming'"):
        store.knn.search("m", 0, X[:1], 3, metric="hamming")


def test_knn_index_follows_new_rows_and_is_persisted(store, rng, monkeypatch):
    ids, X = _setup(store, n=50, d=8)
    q = X[:1] * 1.0001
    first, _ = store.knn.search("m", 0, q, 1)
    assert first[0, 0] == ids[0]
    faiss_dir = store.knn.indexes.persist_dir
    v1 = store.activations.version("m", 0)
    uid, _, n1 = v1.rpartition(":")
    assert (faiss_dir / f"acts__m__L000.cosine.exact.{uid}.v{n1}.faiss").exists()
    # A new prompt whose vector is the query itself must now come first.
    (new_id,) = store.add_prompts("ds", ["newcomer"])
    store.write_activations("m", 0, [new_id], q)
    got, scores = store.knn.search("m", 0, q, 2)
    assert got[0].tolist() == [new_id, ids[0]]
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-6)
    v2 = store.activations.version("m", 0)
    assert v2.rpartition(":")[0] == uid  # same table, new version
    assert (faiss_dir / f"acts__m__L000.cosine.exact.{uid}.v{v2.rpartition(':')[2]}.faiss").exists()
    assert not (faiss_dir / f"acts__m__L000.cosine.exact.{uid}.v{n1}.faiss").exists()
    # Another process (a fresh Store) loads the persisted index instead of rebuilding.
    fresh = Store.open(store.uri)

    def no_rebuild(*args):
        raise AssertionError("the persisted index should have been loaded")

    monkeypatch.setattr("actstore.store.knn.exact.build_flat", no_rebuild)
    np.testing.assert_array_equal(fresh.knn.search("m", 0, q, 2)[0], got)


# ------------------------------------------------------------ concurrency
WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from actstore import Store
    store = Store.open(sys.argv[1])
    ids = store.prompts.ids("ds")
    for gen in range(1, 16):
        store.write_activations("m", 0, ids, np.full((len(ids), 32), float(gen), np.float32))
    print("done")
    """
)


def test_reader_sees_old_or_new_rows_never_a_mix(store):
    n = 3000
    ids = store.add_prompts("ds", [f"p{i}" for i in range(n)])
    store.write_activations("m", 0, ids, np.zeros((n, 32), np.float32), n_layers=1, dtype="float32")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, store.uri], stdout=subprocess.PIPE, text=True)
    reader = Store.open(store.uri)
    seen = set()
    try:
        while writer.poll() is None:
            got_ids, X = reader.read_activations("m", 0)
            assert len(got_ids) == n
            values = np.unique(X)
            assert len(values) == 1, f"a read mixed generations {values[:5]}"
            seen.add(float(values[0]))
    finally:
        out, _ = writer.communicate(timeout=120)
    assert writer.returncode == 0 and "done" in out
    assert len(seen) >= 2, f"the reader saw only generations {seen}"
    assert float(np.unique(reader.read_activations("m", 0)[1])[0]) == 15.0
