"""The recall promise of approximate k-NN (issue 17): every approximate index measures its
recall@10 at build time on held-out stored rows, raises nprobe / the re-ranking budget until
ACTSTORE_ANN_RECALL is met, and falls back to exact search when it cannot be met within the
latency budget; the measured values are persisted with the index and reported
(``Model.indexes``, ``actstore info``).

Data: n = 20,000, d = 64, float16, cosine; *near ties* (isotropic noise around 20 centres,
1,000 rows each: the 10 nearest are separated by small margins) and *well separated*
(``synthetic_clustered``). The promise is checked on 200 fresh query vectors drawn from the
same distribution but never stored (so never in the tuning sample), against FAISS exact
search (the ``approximate=False`` path), and recall is also recomputed in float64 by brute
force for the near-tie set.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from actstore import Store
from actstore.api.app import execute
from actstore.config import Settings
from actstore.service import Service
from actstore.store.knn.ann import AnnIndex, AnnParams, synthetic_clustered, synthetic_near_ties
from actstore.store.knn.exact import TUNING_SUFFIX
from actstore.store.knn.tuning import exact_neighbours, recall_at_k

N, D, NQ = 20_000, 64, 200
TARGET = 0.98
TABLE = "acts__m__L000"
# Generous: the promise, not the machine's load, decides these tests; a separate test
# covers the latency fallback.
BUDGET_MS = 1000.0


def _id_recall(got: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(g[g >= 0], t)) / t.shape[0] for g, t in zip(got, truth)]))


def _store(path: Path, X: np.ndarray, **settings) -> Store:
    settings = {"ann_threshold": 2000, "ann_recall": TARGET, "ann_latency_ms": BUDGET_MS, **settings}
    store = Store.open(path, settings=Settings(environ={}, **settings))
    ids = store.add_prompts("d", [f"p{i}" for i in range(len(X))])
    store.write_activations("m", 0, ids, X, n_layers=1, dtype="float16")
    return store


@pytest.fixture(scope="module")
def ties(tmp_path_factory):
    X = synthetic_near_ties(N + NQ, D, seed=5)
    return _store(tmp_path_factory.mktemp("ties") / "db", X[:N]), X[:N], X[N:].astype(np.float32)


@pytest.fixture(scope="module")
def separated(tmp_path_factory):
    X = synthetic_clustered(N + NQ, D, n_clusters=40, rank=16, seed=6)
    return _store(tmp_path_factory.mktemp("sep") / "db", X[:N]), X[:N], X[N:].astype(np.float32)


def test_near_ties_are_hard_for_the_untuned_defaults(ties):
    _, X, Q = ties
    entry = AnnIndex.build("t:1", "cosine", np.arange(N, dtype=np.int64), X)
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    truth, _ = exact_neighbours(entry, Qn, 10)
    got, _ = entry.search(Q, 10)
    assert entry.params == AnnParams.choose(N, D) and entry.tuning is None
    assert _id_recall(got, truth) < 0.9  # measured 0.71: the data this issue is about


@pytest.mark.parametrize("data", ["ties", "separated"])
def test_measured_recall_meets_the_target_on_held_out_queries(data, request):
    store, X, Q = request.getfixturevalue(data)
    got, got_scores = store.knn.search("m", 0, Q, 10)
    entry = store.knn.indexes.ann_entries()[(TABLE, "cosine")]
    t = entry.tuning
    assert isinstance(entry, AnnIndex) and t is not None and not t.exact
    assert t.recall >= TARGET and t.target == TARGET and t.held_out == 256 and t.rows == N
    assert (entry.params.nprobe, entry.params.candidates(10)) == (t.nprobe, t.candidates)
    exact, exact_scores = store.knn.search("m", 0, Q, 10, approximate=False)
    assert _id_recall(got, exact) >= TARGET
    assert recall_at_k(got_scores, exact_scores, "cosine") >= TARGET
    if data == "ties":
        # the tuning had to raise the re-ranking budget above the default 256
        assert t.candidates > AnnParams.choose(N, D).candidates(10)
        # independent float64 brute force over the stored (float16) rows
        x = X.astype(np.float64)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
        truth = np.argsort(-(q @ x.T), axis=1)[:, :10]  # ids are 0..N-1 in row order
        assert _id_recall(got, truth) >= TARGET


def test_tuning_is_persisted_and_reported(ties, monkeypatch):
    store, _, Q = ties
    store.knn.search("m", 0, Q[:1], 10)
    t = store.knn.indexes.ann_entries()[(TABLE, "cosine")].tuning
    version = store.activations.version("m", 0)
    stem = store.knn.indexes.stem(TABLE, "cosine", version, "ann")
    record = json.loads(Path(f"{stem}{TUNING_SUFFIX}").read_text())
    assert record["recall"] == t.recall and record["nprobe"] == t.nprobe and record["exact"] is False
    assert TUNING_SUFFIX in json.loads(Path(f"{stem}.sha256").read_text())  # checksummed with the index

    # another process loads the tuned index: no tuning again
    def no_tune(*a, **kw):
        raise AssertionError("a persisted tuned index must not be tuned again")

    monkeypatch.setattr("actstore.store.knn.exact.tune", no_tune)
    fresh = Store.open(
        store.uri, settings=Settings(environ={}, ann_threshold=2000, ann_recall=TARGET, ann_latency_ms=BUDGET_MS)
    )
    [row] = fresh.knn.layer_indexes("m", [0])  # from the persisted record, before any search
    assert (row.layer, row.metric, row.kind, row.recall, row.exact, row.rows) == (
        0,
        "cosine",
        "ivfpq4fs+rerank",
        t.recall,
        False,
        N,
    )
    assert (row.nprobe, row.candidates, row.target) == (t.nprobe, t.candidates, TARGET)
    fresh.knn.search("m", 0, Q[:1], 10)
    assert fresh.knn.indexes.ann_entries()[(TABLE, "cosine")].tuning == t
    # a new target tunes again
    monkeypatch.undo()
    fresh.knn.recall_target = 0.995
    fresh.knn.search("m", 0, Q[:1], 10)
    t2 = fresh.knn.indexes.ann_entries()[(TABLE, "cosine")].tuning
    assert t2.target == 0.995 and t2.recall >= 0.995


def test_unreachable_within_the_budget_falls_back_to_exact(tmp_path, ties):
    _, X, Q = ties
    store = _store(tmp_path / "db", X[:5000], ann_latency_ms=1e-6)
    got = store.knn.search("m", 0, Q, 10)
    exact = store.knn.search("m", 0, Q, 10, approximate=False)
    np.testing.assert_array_equal(got[0], exact[0])
    np.testing.assert_array_equal(got[1], exact[1])
    t = store.knn.indexes.ann_entries()[(TABLE, "cosine")].tuning
    assert t.exact and t.recall == 1.0
    [row] = store.knn.layer_indexes("m", [0])
    assert (row.kind, row.exact, row.recall, row.nprobe) == ("flat", True, 1.0, None)


def test_recall_counts_ties_and_exact_neighbours_match_float64():
    true = np.array([[0.9, 0.8, 0.7]], np.float32)
    assert recall_at_k(np.array([[0.9, 0.7, 0.6]], np.float32), true, "cosine") == pytest.approx(2 / 3)
    assert recall_at_k(np.array([[0.9, 0.7, 0.7]], np.float32), true, "cosine") == 1.0  # a tie is a hit
    assert recall_at_k(np.array([[0.9, np.nan, np.nan]], np.float32), true, "cosine") == pytest.approx(1 / 3)
    assert recall_at_k(
        np.array([[1.0, 2.5, 9.0]], np.float32), np.array([[1.0, 2.0, 3.0]], np.float32), "l2"
    ) == pytest.approx(2 / 3)
    X = synthetic_clustered(3000, 32, n_clusters=10, rank=4, seed=2)
    entry = AnnIndex.build("t:1", "l2", np.arange(3000, dtype=np.int64), X)
    q = X[:5].astype(np.float32)
    pos, scores = exact_neighbours(entry, q, 4, np.arange(5), chunk=700)
    x = X.astype(np.float64)
    dist = np.sqrt(((x[:5, None, :] - x[None, :, :]) ** 2).sum(-1))
    dist[np.arange(5), np.arange(5)] = np.inf
    np.testing.assert_array_equal(pos, np.argsort(dist, axis=1)[:, :4])
    np.testing.assert_allclose(scores, np.sort(dist, axis=1)[:, :4], rtol=1e-5)


def test_graphql_and_cli_report_the_layer_index(ties, monkeypatch):
    import asyncio

    from actstore.cli import app

    store, _, Q = ties
    store.knn.search("m", 0, Q[:1], 10)
    t = store.knn.indexes.ann_entries()[(TABLE, "cosine")].tuning
    svc = Service(store, store_settings := Settings(environ={}, ann_threshold=2000))
    try:
        out = asyncio.run(
            execute(
                svc,
                '{ model(key: "m") { indexes { layer metric kind recall exact rows '
                "target nprobe candidates measuredRows } } }",
            )
        )
    finally:
        svc.close()
    assert "errors" not in out, out
    assert out["data"]["model"]["indexes"] == [
        {
            "layer": 0,
            "metric": "cosine",
            "kind": "ivfpq4fs+rerank",
            "recall": t.recall,
            "exact": False,
            "rows": N,
            "target": TARGET,
            "nprobe": t.nprobe,
            "candidates": t.candidates,
            "measuredRows": N,
        }
    ]
    assert store_settings.ann_recall == 0.98
    monkeypatch.setenv("ACTSTORE_ANN_THRESHOLD", "2000")
    r = CliRunner().invoke(app, ["info", "--store", store.uri])
    assert r.exit_code == 0, r.output
    # info reads the persisted record (an earlier test may have re-tuned this table to another target)
    [row] = Store.open(store.uri, settings=Settings(environ={}, ann_threshold=2000)).knn.layer_indexes("m", [0])
    assert row.recall is not None and row.recall >= row.target
    assert "approximate k-NN indexes" in r.output and f"{row.recall:.4f}" in r.output, r.output


def test_settings_read_the_recall_target_and_budget(tmp_path):
    s = Settings(
        environ={"ACTSTORE_ANN_RECALL": "0.95", "ACTSTORE_ANN_LATENCY_MS": "2.5", "ACTSTORE_VERSION_CHECK_S": "0"}
    )
    assert (s.ann_recall, s.ann_latency_ms, s.version_check_s) == (0.95, 2.5, 0.0)
    assert (Settings(environ={}).ann_recall, Settings(environ={}).ann_latency_ms) == (0.98, 5.0)
    with pytest.raises(Exception, match="ACTSTORE_ANN_RECALL must be in"):
        Store.open(tmp_path / "db", settings=Settings(environ={}, ann_recall=1.5))
