"""The ``preprocess`` argument of similarity and bridge queries and Procrustes ``scale``, through
the service and GraphQL, against direct float64 formulas on the stored rows."""

from __future__ import annotations

import numpy as np
import pytest
from starlette.testclient import TestClient

from actstore import Store
from actstore.api import create_app
from actstore.config import Settings
from actstore.errors import InvalidInput
from actstore.layers import LayerRef
from actstore.service import Service
from tests.reference import direct_debiased_cka

N_TR, N_EV = 40, 16
N = N_TR + N_EV


def _massive(rng, d, col):
    X = rng.standard_normal((N, d)) + 0.5
    X[:, col] = X[:, col] * 30.0 + 50.0
    return X.astype(np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    a0 = (rng.standard_normal((N, 12)) * np.arange(1, 13) / 4 + 3.0).astype(np.float32)
    a1 = _massive(rng, 12, 7)
    b0 = _massive(rng, 9, 2)
    b0[:, :6] += 0.8 * a1[:, :6]  # shared structure outside the massive columns
    R, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    c0 = (2.5 * a0.astype(np.float64) @ R + 1.0).astype(np.float32)
    return {"a": {0: a0, 1: a1}, "b": {0: b0}, "c": {0: c0}}


@pytest.fixture
def service(tmp_path, data):
    store = Store.open(tmp_path / "db")
    ids = np.concatenate(
        [
            store.add_prompts("tr", [f"train {i}" for i in range(N_TR)]),
            store.add_prompts("ev", [f"eval {i}" for i in range(N_EV)]),
        ]
    )
    for key, layers in data.items():
        store.activations.write(
            key, layers, ids, n_layers=len(layers), dtype="float32", architecture="llama", source=f"nowhere/{key}"
        )
    return Service(store, Settings(token="t"))


def f64(x):
    return np.asarray(x, dtype=np.float64)


def zscore(X, ref=None):
    ref = X if ref is None else ref
    return (X - ref.mean(0)) / ref.std(0)


def direct_mutual_knn(X, Y, k):
    def nbrs(Z):
        Z = Z / np.linalg.norm(Z, axis=1, keepdims=True)
        S = Z @ Z.T
        np.fill_diagonal(S, -np.inf)
        return [set(np.argsort(-row)[:k]) for row in S]

    return float(np.mean([len(p & q) for p, q in zip(nbrs(X), nbrs(Y))]) / k)


def test_cka_standardize_equals_hand_cka_of_zscored_rows(service, data):
    r = service.similarity.cka(LayerRef("a", 1), LayerRef("b", 0), preprocess="standardize")
    want = direct_debiased_cka(zscore(f64(data["a"][1])), zscore(f64(data["b"][0])))
    assert r.value == pytest.approx(want, abs=1e-6)
    assert (r.preprocess, r.dropped_a, r.dropped_b) == ("standardize", (), ())


def test_cka_drop_outlier_dims_drops_the_planted_dimensions_and_reports_them(service, data):
    r = service.similarity.cka(LayerRef("a", 1), LayerRef("b", 0), preprocess="DROP_OUTLIER_DIMS")
    assert (r.preprocess, r.dropped_a, r.dropped_b) == ("drop_outlier_dims", (7,), (2,))
    want = direct_debiased_cka(np.delete(f64(data["a"][1]), 7, 1), np.delete(f64(data["b"][0]), 2, 1))
    assert r.value == pytest.approx(want, abs=1e-6)
    m = service.similarity.cka_matrix("a", "b", layers_a=[1], preprocess="drop_outlier_dims")
    assert (m.dropped_a, m.dropped_b) == ([[7]], [[2]])
    assert m.values[0][0] == pytest.approx(want, abs=1e-6)


def test_the_cache_key_differs_per_preprocess(service):
    sim, results = service.similarity, service.results
    before = results.computed
    plain = sim.cka(LayerRef("a", 1), LayerRef("b", 0))
    std = sim.cka(LayerRef("a", 1), LayerRef("b", 0), preprocess="standardize")
    assert results.computed == before + 2
    assert (plain.preprocess, std.preprocess) == ("none", "standardize")
    assert abs(plain.value - std.value) > 0.01
    again = sim.cka(LayerRef("a", 1), LayerRef("b", 0), preprocess="standardize")
    assert results.computed == before + 2 and again.value == std.value
    choices = ("none", "standardize", "drop_outlier_dims")
    keys = {sim.cka_matrix("a", "b", layers_a=[1], preprocess=p).key for p in choices}
    assert len(keys) == 3 and results.computed == before + 5


def test_mutual_knn_and_affinity_with_drop_outlier_dims(service, data):
    r = service.similarity.mutual_knn(LayerRef("a", 1), LayerRef("b", 0), k=5, preprocess="drop_outlier_dims")
    assert (r.dropped_a, r.dropped_b, r.recall) == ((7,), (2,), None)
    want = direct_mutual_knn(np.delete(f64(data["a"][1]), 7, 1), np.delete(f64(data["b"][0]), 2, 1), 5)
    assert r.value == pytest.approx(want, abs=1e-6)
    m = service.similarity.affinity_matrix("a", "b", k=5, layers_a=[1], preprocess="drop_outlier_dims")
    assert (m.dropped_a, m.dropped_b, m.values[0][0]) == ([[7]], [[2]], pytest.approx(want, abs=1e-6))


def test_bridge_r2_with_standardize_equals_a_hand_computation(service, data):
    r = service.bridges.bridge(
        LayerRef("a", 1),
        LayerRef("b", 0),
        method="ridge",
        alpha=3.0,
        train_dataset="tr",
        eval_dataset="ev",
        preprocess="standardize",
    )
    S, T = f64(data["a"][1]), f64(data["b"][0])
    Str, Ste = zscore(S[:N_TR]), zscore(S[N_TR:], S[:N_TR])  # training-split statistics for both
    Ttr, Tte = zscore(T[:N_TR]), zscore(T[N_TR:], T[:N_TR])
    W = np.linalg.solve(Str.T @ Str + 3.0 * np.eye(12), Str.T @ Ttr)
    r2 = 1 - ((Tte - Ste @ W) ** 2).sum() / (Tte**2).sum()
    assert r.r2 == pytest.approx(r2, abs=1e-6)
    assert (r.preprocess, r.n_train, r.n_test, r.scale) == ("standardize", N_TR, N_EV, None)


def test_procrustes_scale_through_the_service(service):
    r = service.bridges.bridge(LayerRef("a", 0), LayerRef("c", 0), method="procrustes", scale=True)
    assert (r.method, r.scale, r.r2) == ("procrustes", pytest.approx(2.5, rel=1e-5), pytest.approx(1.0, abs=1e-6))
    plain = service.bridges.bridge(LayerRef("a", 0), LayerRef("c", 0), method="procrustes")
    assert (plain.scale, plain.r2) == (None, pytest.approx(0.64, abs=1e-5))
    with pytest.raises(InvalidInput, match="scale applies only to method PROCRUSTES, not RIDGE; leave it unset"):
        service.bridges.bridge(LayerRef("a", 0), LayerRef("c", 0), scale=True)


def test_preprocess_argument_errors(service):
    with pytest.raises(
        InvalidInput, match="preprocess must be one of NONE, STANDARDIZE, DROP_OUTLIER_DIMS, PLATONIC, got 'pca'"
    ):
        service.similarity.cka(LayerRef("a", 1), LayerRef("b", 0), preprocess="pca")
    with pytest.raises(
        InvalidInput,
        match="outlier_threshold applies only to preprocess DROP_OUTLIER_DIMS, not STANDARDIZE; leave it unset",
    ):
        service.bridges.bridge(LayerRef("a", 1), LayerRef("b", 0), preprocess="standardize", outlier_threshold=0.1)
    with pytest.raises(InvalidInput, match="outlier_threshold must be a number strictly between 0 and 1, got 0"):
        service.similarity.cka(LayerRef("a", 1), LayerRef("b", 0), preprocess="drop_outlier_dims", outlier_threshold=0)


def test_graphql_preprocess_enum_and_procrustes_scale(service):
    query = """{
      cka(a: {model: "a", layer: 1}, b: {model: "b", layer: 0}, preprocess: DROP_OUTLIER_DIMS) {
        value preprocess droppedA droppedB }
      bridge(source: {model: "a", layer: 0}, target: {model: "c", layer: 0}, method: PROCRUSTES, scale: true,
             preprocess: NONE) { method scale r2 preprocess droppedSource }
      probeTransfer: bridgeSweep(source: {model: "a", layer: 1}, target: {model: "b", layer: 0}, ranks: [1, 2],
             preprocess: STANDARDIZE) { preprocess droppedSource droppedTarget }
    }"""
    with TestClient(create_app(service)) as client:
        body = client.post("/graphql", json={"query": query}).json()
    assert "errors" not in body, body
    d = body["data"]
    assert (d["cka"]["preprocess"], d["cka"]["droppedA"], d["cka"]["droppedB"]) == ("drop_outlier_dims", [7], [2])
    assert (d["bridge"]["method"], d["bridge"]["preprocess"], d["bridge"]["droppedSource"]) == (
        "PROCRUSTES",
        "none",
        [],
    )
    assert d["bridge"]["scale"] == pytest.approx(2.5, rel=1e-5)
    assert d["probeTransfer"] == {"preprocess": "standardize", "droppedSource": [], "droppedTarget": []}
