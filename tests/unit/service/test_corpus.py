"""Corpus awareness and precision of similarity answers (issue 13): datasets and counts, the
mixed-corpus warning, the stratified permutation null, byDataset and precision, against
direct float64 formulas on the stored rows."""

from __future__ import annotations

import numpy as np
import pytest

from actstore import Store
from actstore.config import Settings
from actstore.errors import InvalidInput
from actstore.layers import LayerRef
from actstore.service import CkaByDataset, DatasetCount, Service
from tests.reference import direct_debiased_cka

N_S, N_N = 24, 16  # prompts of dataset "sst" and of dataset "news"
WARNING = (
    "mixes 2 datasets; cross-model similarity over mixed corpora is inflated by between-corpus "
    "differences; the permutation null is stratified by dataset; ask byDataset: true for per-dataset values"
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    rng = np.random.default_rng(4)
    store = Store.open(tmp_path_factory.mktemp("corpus") / "db")
    sst = store.add_prompts("sst", [f"review {i}" for i in range(N_S)])
    news = store.add_prompts("news", [f"story {i}" for i in range(N_N)])
    ids = np.concatenate([sst, news])
    shift = np.concatenate([np.zeros(N_S), np.full(N_N, 4.0)])[:, None]  # between-corpus difference
    z = rng.standard_normal((len(ids), 2))
    a0 = rng.standard_normal((len(ids), 6)) + shift
    a1 = np.concatenate([z, rng.standard_normal((len(ids), 4))], axis=1) + shift
    b0 = np.concatenate([z @ rng.standard_normal((2, 2)), rng.standard_normal((len(ids), 3))], axis=1) + shift
    rows = {"a": {0: a0.astype(np.float32), 1: a1.astype(np.float32)}, "b": {0: b0.astype(np.float32)}}
    for key, layers in rows.items():
        store.activations.write(
            key, layers, ids, n_layers=len(layers), dtype="float32", architecture="llama", source=f"nowhere/{key}"
        )
    order = np.argsort(ids)
    names = np.array(["sst"] * N_S + ["news"] * N_N)[order]
    stored = {
        k: {l_: np.asarray(v, dtype=np.float32)[order].astype(np.float64) for l_, v in layers.items()}
        for k, layers in rows.items()
    }
    return Service(store, Settings(token="t")), stored, names


def direct_stratified_p(X, Y, names, P, seed):
    """p of the stratified null by hand: per draw, each dataset (in order of first appearance
    among the rows) shuffled with default_rng(seed).permutation of its size."""
    rng = np.random.default_rng(seed)
    obs = direct_debiased_cka(X, Y)
    groups = [np.flatnonzero(names == g) for g in dict.fromkeys(names.tolist())]
    null = []
    for _ in range(P):
        pi = np.arange(len(Y))
        for idx in groups:
            pi[idx] = idx[rng.permutation(len(idx))]
        null.append(direct_debiased_cka(X, Y[pi]))
    return obs, (1 + np.sum(np.array(null) >= obs - 1e-12)) / (1 + P)


def test_cka_reports_datasets_warns_and_stratifies_the_null(built):
    svc, rows, names = built
    r = svc.similarity.cka(LayerRef("a", 0), LayerRef("b", 0), permutations=30, seed=5)
    assert r.datasets == (DatasetCount("news", 16), DatasetCount("sst", 24))
    assert r.warning == WARNING
    obs, p = direct_stratified_p(rows["a"][0], rows["b"][0], names, 30, 5)
    assert r.value == pytest.approx(obs, abs=1e-6)
    assert r.p_value == pytest.approx(p, abs=1e-12)
    assert p > 0.2  # a0 and b0 share only the corpus shift: an unstratified null gives 1/31
    assert r.by_dataset is None and r.precision == "auto"


def test_one_dataset_has_no_warning(built):
    svc, rows, names = built
    r = svc.similarity.cka(LayerRef("a", 1), LayerRef("b", 0), dataset="sst")
    assert r.datasets == (DatasetCount("sst", 24),) and r.warning is None
    m = names == "sst"
    assert r.value == pytest.approx(direct_debiased_cka(rows["a"][1][m], rows["b"][0][m]), abs=1e-6)


def test_by_dataset_equals_cka_per_dataset_by_hand(built):
    svc, rows, names = built
    r = svc.similarity.cka(LayerRef("a", 0), LayerRef("b", 0), by_dataset=True)
    X, Y = rows["a"][0], rows["b"][0]
    assert r.value == pytest.approx(direct_debiased_cka(X, Y), abs=1e-6)
    assert [(d.dataset, d.n, d.p_value) for d in r.by_dataset] == [("news", 16, None), ("sst", 24, None)]
    for d in r.by_dataset:
        m = names == d.dataset
        assert d.value == pytest.approx(direct_debiased_cka(X[m], Y[m]), abs=1e-6)
    # the pooled value is inflated by the corpus shift: above every per-dataset value
    assert r.value > max(d.value for d in r.by_dataset) + 0.3
    # byDataset is part of the cache key: the plain answer has no breakdown
    assert svc.similarity.cka(LayerRef("a", 0), LayerRef("b", 0)).by_dataset is None
    assert isinstance(r.by_dataset[0], CkaByDataset)


def test_matrix_and_knn_answers_report_datasets(built):
    svc, _, _ = built
    both = (DatasetCount("news", 16), DatasetCount("sst", 24))
    m = svc.similarity.cka_matrix("a", "b")
    assert (m.datasets, m.warning) == (both, WARNING)
    k = svc.similarity.mutual_knn(LayerRef("a", 0), LayerRef("b", 0), k=3)
    assert (k.datasets, k.warning) == (both, WARNING)
    am = svc.similarity.affinity_matrix("a", "b", k=3, dataset="news")
    assert (am.datasets, am.warning) == ((DatasetCount("news", 16),), None)


def test_precision_float32_and_float64_agree(built):
    svc, rows, _ = built
    v32 = svc.similarity.cka(LayerRef("a", 1), LayerRef("b", 0), precision="float32")
    v64 = svc.similarity.cka(LayerRef("a", 1), LayerRef("b", 0), precision="float64")
    assert (v32.precision, v64.precision) == ("float32", "float64")
    assert v64.value == pytest.approx(direct_debiased_cka(rows["a"][1], rows["b"][0]), abs=1e-9)
    assert abs(v32.value - v64.value) < 1e-5
    m32 = svc.similarity.cka_matrix("a", "b", precision="float32")
    m64 = svc.similarity.cka_matrix("a", "b", precision="float64")
    np.testing.assert_allclose(m32.values, m64.values, atol=1e-5)
    assert m64.values[1][0] == pytest.approx(v64.value, abs=1e-9)


def test_bad_precision_and_by_dataset_are_refused(built):
    svc, _, _ = built
    with pytest.raises(InvalidInput, match=r"^precision must be one of AUTO, FLOAT32, FLOAT64, got 'float16'$"):
        svc.similarity.cka(LayerRef("a", 1), LayerRef("b", 0), precision="float16")
    with pytest.raises(InvalidInput, match=r"^by_dataset must be true or false, got 1$"):
        svc.similarity.cka(LayerRef("a", 1), LayerRef("b", 0), by_dataset=1)


def test_graphql_by_dataset_precision_and_underflow_fields(built):
    import asyncio

    from actstore.api import execute  # imported here: the service tests above need no API

    svc, rows, names = built
    q = """{ cka(a: {model: "a", layer: 0}, b: {model: "b", layer: 0}, byDataset: true, precision: FLOAT64) {
               value precision warning datasets { name n } byDataset { dataset n value pValue } }
             affinityMatrix(modelA: "a", modelB: "b", k: 3, dataset: "sst") { datasets { name n } warning }
             ckaMatrix(modelA: "a", modelB: "b", byDataset: true, precision: FLOAT32) {
               precision byDataset { dataset n } } }"""
    out = asyncio.run(execute(svc, q))
    assert "errors" not in out, out
    cka = out["data"]["cka"]
    assert cka["precision"] == "float64" and cka["warning"] == WARNING
    assert cka["datasets"] == [{"name": "news", "n": 16}, {"name": "sst", "n": 24}]
    m = names == "news"
    assert cka["byDataset"][0]["dataset"] == "news" and cka["byDataset"][0]["pValue"] is None
    assert cka["byDataset"][0]["value"] == pytest.approx(
        direct_debiased_cka(rows["a"][0][m], rows["b"][0][m]), abs=1e-6
    )
    assert out["data"]["affinityMatrix"] == {"datasets": [{"name": "sst", "n": 24}], "warning": None}
    assert out["data"]["ckaMatrix"] == {
        "precision": "float32",
        "byDataset": [{"dataset": "news", "n": 16}, {"dataset": "sst", "n": 24}],
    }
    from actstore.api.app import build_schema

    printed = build_schema(svc.settings).as_str()
    assert "  log10P: Float\n" in printed and "  pValueIsBound: Boolean!\n" in printed
    bad = asyncio.run(
        execute(svc, '{ cka(a: {model: "a", layer: 0}, b: {model: "b", layer: 0}, precision: HALF) { value } }')
    )
    assert "Value 'HALF' does not exist in 'Precision' enum" in bad["errors"][0]["message"]


def test_cka_matrix_by_dataset_equals_cka_per_dataset_by_hand(built):
    svc, rows, names = built
    r = svc.similarity.cka_matrix("a", "b", by_dataset=True, precision="float64")
    assert [(d.dataset, d.n) for d in r.by_dataset] == [("news", 16), ("sst", 24)]
    for d in r.by_dataset:
        m = names == d.dataset
        want = [[direct_debiased_cka(rows["a"][la][m], rows["b"][0][m])] for la in (0, 1)]
        np.testing.assert_allclose(d.values, want, atol=1e-6)
    assert svc.similarity.cka_matrix("a", "b", precision="float64").by_dataset is None


def direct_mutual_knn(X, Y, k):
    """Mutual k-NN by hand (METHODS.md): cosine neighbours excluding self, float64, mean over
    rows of |N_X(i) & N_Y(i)| / k."""

    def neighbours(Z):
        Zn = Z / np.linalg.norm(Z, axis=1, keepdims=True)
        S = Zn @ Zn.T
        np.fill_diagonal(S, -np.inf)
        return [set(np.argsort(-S[i], kind="stable")[:k].tolist()) for i in range(len(Z))]

    na, nb = neighbours(X), neighbours(Y)
    return float(np.mean([len(a & b) / k for a, b in zip(na, nb)]))


def test_mutual_knn_and_affinity_by_dataset_equal_within_dataset_values_by_hand(built):
    svc, rows, names = built
    r = svc.similarity.mutual_knn(LayerRef("a", 1), LayerRef("b", 0), k=3, by_dataset=True)
    assert [(d.dataset, d.n) for d in r.by_dataset] == [("news", 16), ("sst", 24)]
    for d in r.by_dataset:
        m = names == d.dataset
        assert d.value == pytest.approx(direct_mutual_knn(rows["a"][1][m], rows["b"][0][m], 3), abs=1e-12)
    assert [d.null_mean for d in r.by_dataset] == [pytest.approx(3 / 15), pytest.approx(3 / 23)]
    assert r.value == pytest.approx(direct_mutual_knn(rows["a"][1], rows["b"][0], 3), abs=1e-12)
    assert svc.similarity.mutual_knn(LayerRef("a", 1), LayerRef("b", 0), k=3).by_dataset is None

    am = svc.similarity.affinity_matrix("a", "b", k=3, by_dataset=True)
    for d in am.by_dataset:
        m = names == d.dataset
        want = [[direct_mutual_knn(rows["a"][la][m], rows["b"][0][m], 3)] for la in (0, 1)]
        np.testing.assert_allclose(d.values, want, atol=1e-12)
        assert d.argmax == [0, 0]
    # k = 16 leaves "news" (16 prompts) without 16 neighbours: no value, said as null
    big = svc.similarity.mutual_knn(LayerRef("a", 1), LayerRef("b", 0), k=16, by_dataset=True)
    assert (big.by_dataset[0].dataset, big.by_dataset[0].value, big.by_dataset[0].null_mean) == ("news", None, None)
    assert big.by_dataset[1].value == pytest.approx(
        direct_mutual_knn(rows["a"][1][names == "sst"], rows["b"][0][names == "sst"], 16), abs=1e-12
    )


def test_graphql_mutual_knn_and_affinity_by_dataset(built):
    import asyncio

    from actstore.api import execute

    svc, rows, names = built
    q = """{ mutualKnn(a: {model: "a", layer: 0}, b: {model: "b", layer: 0}, k: 4, byDataset: true) {
               value byDataset { dataset n value nullMean } }
             affinityMatrix(modelA: "a", modelB: "b", k: 4, byDataset: true) { byDataset { dataset n values argmax } } }"""
    out = asyncio.run(execute(svc, q))
    assert "errors" not in out, out
    per = out["data"]["mutualKnn"]["byDataset"]
    assert [(d["dataset"], d["n"]) for d in per] == [("news", 16), ("sst", 24)]
    m = names == "sst"
    assert per[1]["value"] == pytest.approx(direct_mutual_knn(rows["a"][0][m], rows["b"][0][m], 4), abs=1e-12)
    assert per[1]["nullMean"] == pytest.approx(4 / 23)
    aff = out["data"]["affinityMatrix"]["byDataset"]
    assert aff[1]["values"][0][0] == pytest.approx(per[1]["value"], abs=1e-12)
