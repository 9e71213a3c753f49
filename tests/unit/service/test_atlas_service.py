"""The atlas through the service: pair by pair equal to affinityMatrix / ckaMatrix, the study's
summaries against a direct loop, incremental (a 7th model computes 6 pairs), resumable, and
invalidated exactly by a write."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from actstore import Store
from actstore.config import Settings
from actstore.errors import InvalidInput, LimitExceeded, QueryTimeout
from actstore.layers import relative_depth
from actstore.service import Service
from actstore.service.requests import AtlasRequest

N = 48
# (key, n_layers, d): six small "models" with different depths and widths
MODELS = [("m0", 4, 8), ("m1", 6, 10), ("m2", 3, 6), ("m3", 5, 12), ("m4", 4, 7), ("m5", 7, 9)]


def _write(store: Store, key: str, n_layers: int, d: int, ids: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    Z = np.random.default_rng(99).standard_normal((N, 5))  # shared structure across models
    for layer in range(n_layers):
        X = Z @ rng.standard_normal((5, d)) * (1 + layer / n_layers) + 0.7 * rng.standard_normal((N, d))
        store.write_activations(
            key, layer, ids, X, n_layers=n_layers, source=f"x/{key}", architecture="llama", dtype="float32"
        )


def _service(path, models=MODELS) -> Service:
    store = Store.open(path)
    ids = store.add_prompts("t", [f"text {i}" for i in range(N)])
    for s, (key, L, d) in enumerate(models):
        _write(store, key, L, d, ids, s)
    return Service(store, Settings(environ={}))


@pytest.fixture()
def service(tmp_path):
    return _service(tmp_path / "db")


def _resize_rows(layers, L, size):
    """Direct: nearest stored layer to floor(j (L - 1) / (size - 1) + 1/2), ties deeper."""
    out = []
    for j in range(size):
        target = int(np.floor(j * (L - 1) / (size - 1) + 0.5))
        dist = [(abs(l_ - target), -l_) for l_ in layers]
        out.append(int(np.argmin([d * 1000 + t for d, t in dist])))
    return out


def test_mutual_knn_atlas_equals_affinity_matrices(service):
    keys = [k for k, _, _ in MODELS]
    at = service.atlas.atlas(keys, k=5, resize=5)
    assert [(p.model_a, p.model_b) for p in at.pairs] == [(a, b) for i, a in enumerate(keys) for b in keys[i + 1 :]]
    resized = []
    for p in at.pairs:
        ref = service.similarity.affinity_matrix(p.model_a, p.model_b, k=5)
        np.testing.assert_array_equal(p.values, ref.values)  # exactly: counts / (k n)
        assert p.argmax == ref.argmax and p.layers_a == ref.layers_a
        assert p.argmax_depths == [ref.depths_b[j] for j in ref.argmax]
        if p.diagonal is not None:
            assert p.diagonal.p_value == pytest.approx(ref.diagonal.p_value, abs=1e-12)
            assert p.diagonal.on_diagonal_mean == pytest.approx(ref.diagonal.on_diagonal_mean, abs=1e-12)
        La = dict((k, L) for k, L, _ in MODELS)
        rows = _resize_rows(p.layers_a, La[p.model_a], 5)
        cols = _resize_rows(p.layers_b, La[p.model_b], 5)
        resized.append(np.asarray(ref.values)[np.ix_(rows, cols)])
    np.testing.assert_allclose(at.mean_resized, np.mean(resized, axis=0), atol=1e-12)
    assert np.isnan(np.diag(at.max_similarity)).all()
    assert at.max_similarity[0, 5] == at.max_similarity[5, 0] == np.max(at.pairs[4].values)
    assert service.atlas.pairs_computed == 15 and at.n == N


def test_cka_atlas_equals_cka_matrices(service):
    at = service.atlas.atlas(["m0", "m1", "m2"], measure="unbiased_cka", grid=3)
    for p in at.pairs:
        ref = service.similarity.cka_matrix(p.model_a, p.model_b, grid=3)
        np.testing.assert_allclose(p.values, ref.values, atol=1e-6)
        assert p.layers_a == ref.layers_a and p.layers_b == ref.layers_b
        assert p.depths_a == [relative_depth(l_, dict((k, L) for k, L, _ in MODELS)[p.model_a]) for l_ in p.layers_a]


def test_a_seventh_model_computes_six_pairs_and_equals_a_full_recompute(service, tmp_path):
    keys = [k for k, _, _ in MODELS]
    service.atlas.atlas(keys, k=5)
    assert service.atlas.pairs_computed == 15
    ids = service.store.prompts.ids("t").tolist()
    _write(service.store, "m6", 5, 11, ids, 6)
    grown = service.atlas.atlas([*keys, "m6"], k=5)
    assert service.atlas.pairs_computed == 15 + 6
    fresh = _service(tmp_path / "fresh", [*MODELS, ("m6", 5, 11)])  # the same seven models, nothing cached
    again = fresh.atlas.atlas([*keys, "m6"], k=5)
    assert fresh.atlas.pairs_computed == 21
    for a, b in zip(grown.pairs, again.pairs):
        np.testing.assert_array_equal(a.values, b.values)
    # a write to one model invalidates exactly its pairs
    _write(service.store, "m2", 3, 6, ids, 42)
    service.atlas.atlas([*keys, "m6"], k=5)
    assert service.atlas.pairs_computed == 21 + 6


def test_a_stopped_atlas_resumes_without_recomputing(service):
    keys = [k for k, _, _ in MODELS]
    stop = threading.Event()
    done = []

    def progress(d: int, total: int) -> None:
        done.append(d)
        if d >= 7:
            stop.set()

    with pytest.raises(QueryTimeout):
        service.run_cancellable(stop, service.atlas.run, AtlasRequest(tuple(keys), k=5), progress)
    first = service.atlas.pairs_computed
    assert 7 <= first < 15
    at = service.atlas.run(AtlasRequest(tuple(keys), k=5))
    assert service.atlas.pairs_computed == 15  # only the missing ones
    for p in at.pairs:
        np.testing.assert_array_equal(p.values, service.similarity.affinity_matrix(p.model_a, p.model_b, k=5).values)


def test_errors_and_the_budget(service):
    with pytest.raises(InvalidInput, match=r"^models must be at least 2 model keys, got \['m0'\]$"):
        service.atlas.atlas(["m0"])
    with pytest.raises(InvalidInput, match=r"^unknown measure 'nope'; registered measures: mutual_knn, "):
        service.atlas.atlas(["m0", "m1"], measure="nope")
    tight = Service(service.store, Settings(environ={}, max_cost=10.0))
    with pytest.raises(LimitExceeded, match=r"run it as a job with the run_atlas mutation"):
        tight.atlas.atlas(["m0", "m1"], k=5)
