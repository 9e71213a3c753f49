"""``similarity`` and ``similarityMatrix`` for every registered measure through the service:
values against the registry and the direct float64 formulas on the same stored rows, the
permutation p-value (literal and stratified), byDataset, PLATONIC preprocessing, the cache,
and the errors."""

from __future__ import annotations

import importlib.util
import inspect
import json
from pathlib import Path

import numpy as np
import pytest

from actstore import Store
from actstore.analysis import measures as registry
from actstore.analysis.permutation import stratified_permutations
from actstore.config import Settings
from actstore.errors import InvalidInput
from actstore.layers import LayerRef
from actstore.service import Service

K = 4
N_X, N_Y = 22, 14
N = N_X + N_Y
REFERENCES = Path(__file__).resolve().parents[1] / "analysis" / "measures"


def direct_formulas() -> dict:
    """Every ``DIRECT`` dict of tests/unit/analysis/measures/reference_*.py, merged."""
    out: dict = {}
    for path in sorted(REFERENCES.glob("reference_*.py")):
        spec = importlib.util.spec_from_file_location(f"_measure_ref_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        out.update(getattr(module, "DIRECT", {}))
    return out


DIRECT = direct_formulas()


def direct(name: str, X: np.ndarray, Y: np.ndarray, opts: dict) -> float:
    """The direct formula of ``name`` called with the options its signature takes."""
    fn = DIRECT[name]
    params = inspect.signature(fn).parameters
    return float(
        fn(np.asarray(X, np.float64), np.asarray(Y, np.float64), **{k: v for k, v in opts.items() if k in params})
    )


def k_of(m: registry.Measure) -> int | None:
    return K if m.uses_k else None


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    z = rng.standard_normal((N, 3))
    a0 = z @ rng.standard_normal((3, 7)) + 0.4 * rng.standard_normal((N, 7))
    a1 = np.tanh(a0 @ rng.standard_normal((7, 7))) + 0.3 * rng.standard_normal((N, 7))
    b0 = z @ rng.standard_normal((3, 8)) + 0.6 * rng.standard_normal((N, 8))
    b1 = rng.standard_normal((N, 8))
    b1[:, 2] *= 12.0  # one large dimension: the platonic clip matters
    cast = lambda x: x.astype(np.float32)
    return {"a": {0: cast(a0), 1: cast(a1)}, "b": {0: cast(b0), 1: cast(b1)}}


@pytest.fixture(scope="module")
def service(tmp_path_factory, data):
    store = Store.open(tmp_path_factory.mktemp("measures") / "db")
    ids = np.concatenate(
        [store.add_prompts("x", [f"x {i}" for i in range(N_X)]), store.add_prompts("y", [f"y {i}" for i in range(N_Y)])]
    )
    for key, layers in data.items():
        store.activations.write(
            key, layers, ids, n_layers=2, dtype="float32", architecture="llama", source=f"nowhere/{key}"
        )
    return Service(store, Settings(token="t"))


LABELS = np.array(["x"] * N_X + ["y"] * N_Y, dtype=object)
NAMES = registry.names()


# ------------------------------------------------------------------ values
@pytest.mark.parametrize("name", NAMES)
def test_similarity_of_every_measure_equals_the_registry_and_its_direct_formula(service, data, name):
    m = registry.get(name)
    r = service.measures.similarity(LayerRef("a", 0), LayerRef("b", 0), name, k=k_of(m))
    X, Y = data["a"][0], data["b"][0]
    opts = m.options_for({"k": K} if m.uses_k else {})
    assert name in DIRECT, f"no direct formula for {name} in {REFERENCES}/reference_*.py"
    assert r.value == registry.similarity(X, Y, name, opts)
    assert r.value == pytest.approx(direct(name, X, Y, opts), abs=1e-6)
    assert (r.measure, r.direction, r.n, r.k, r.p_value, r.layer_a, r.layer_b) == (
        name,
        m.direction,
        N,
        k_of(m),
        None,
        0,
        0,
    )
    assert json.loads(r.options) == {k: v for k, v in opts.items() if k != "k"}
    assert [(d.name, d.n) for d in r.datasets] == [("x", N_X), ("y", N_Y)]
    assert len(r.warnings) == 1 and r.warnings[0].startswith("mixes 2 datasets")


@pytest.mark.parametrize("name", NAMES)
def test_similarity_matrix_of_every_measure_equals_each_pair(service, data, name):
    m = registry.get(name)
    r = service.measures.similarity_matrix("a", "b", name, k=k_of(m))
    opts = m.options_for({"k": K} if m.uses_k else {})
    want = np.array([[direct(name, data["a"][i], data["b"][j], opts) for j in (0, 1)] for i in (0, 1)])
    np.testing.assert_allclose(r.values, want, atol=1e-6, rtol=0)
    assert (r.layers_a, r.layers_b, r.n, r.measure, r.k) == ([0, 1], [0, 1], N, name, k_of(m))
    best = want.argmax(1) if m.direction == "similarity" else want.argmin(1)
    assert r.argmax == best.tolist()
    assert r.debiased is (name == "unbiased_cka")


def test_options_change_the_value_as_the_formula_says(service, data):
    r = service.measures.similarity(LayerRef("a", 1), LayerRef("b", 0), "cknna", k=5, options={"unbiased": False})
    assert r.value == pytest.approx(DIRECT["cknna"](data["a"][1], data["b"][0], 5, unbiased=False), abs=1e-9)
    text = service.measures.similarity(LayerRef("a", 1), LayerRef("b", 0), "cknna", k=5, options='{"unbiased": false}')
    assert text.value == r.value and json.loads(r.options) == {"eps": 0.0, "unbiased": False}


def test_ckamatrix_and_similaritymatrix_agree_for_cka(service):
    old = service.similarity.cka_matrix("a", "b", debiased=True)
    new = service.measures.similarity_matrix("a", "b", "unbiased_cka")
    np.testing.assert_allclose(new.values, old.values, atol=1e-12, rtol=0)
    assert (old.measure, old.direction, old.k, json.loads(old.options)) == (
        "unbiased_cka",
        "similarity",
        None,
        {"eps": 0.0},
    )
    assert service.similarity.cka_matrix("a", "b", debiased=False).measure == "cka"


# ------------------------------------------------------------------ permutations
def test_permutation_p_value_literal_for_identical_layers(service):
    # a layer against itself: mutual k-NN is 1 and no permutation of 36 prompts keeps every
    # neighbour set, so none of the 19 null values reaches it: p = 1 / (1 + 19)
    r = service.measures.similarity(LayerRef("a", 0), LayerRef("a", 0), "mutual_knn", k=K, permutations=19, seed=3)
    assert (r.value, r.p_value, r.permutations, r.seed) == (1.0, 0.05, 19, 3)


@pytest.mark.parametrize("name", ["mutual_knn", "unbiased_cka"])
def test_permutation_null_is_stratified_by_dataset(service, data, name):
    m = registry.get(name)
    opts = m.options_for({"k": K} if m.uses_k else {})
    X, Y = data["a"][1], data["b"][0]
    P, seed = 30, 7
    r = service.measures.similarity(LayerRef("a", 1), LayerRef("b", 0), name, k=k_of(m), permutations=P, seed=seed)
    value = direct(name, X, Y, opts)
    # the draws permute rows only within each dataset (x: the first 22 rows, y: the last 14)
    null = []
    for pi in stratified_permutations(N, P, seed, LABELS):
        assert sorted(pi[:N_X]) == list(range(N_X))
        null.append(direct(name, X, Y[pi], opts))
    want = (1 + sum(v >= value - 1e-12 for v in null)) / (1 + P)
    assert r.value == pytest.approx(value, abs=1e-6)
    assert r.p_value == pytest.approx(want, abs=1e-12)
    one = service.measures.similarity(
        LayerRef("a", 1), LayerRef("b", 0), name, k=k_of(m), permutations=P, seed=seed, dataset="x"
    )
    assert one.warnings == () and one.warning is None and one.n == N_X


def test_by_dataset_is_each_dataset_on_its_own_prompts(service, data):
    r = service.measures.similarity(LayerRef("a", 0), LayerRef("b", 1), "cycle_knn", k=K, by_dataset=True)
    X, Y = data["a"][0], data["b"][1]
    got = {d.dataset: (d.n, d.value) for d in r.by_dataset}
    assert got["x"][0] == N_X and got["x"][1] == pytest.approx(DIRECT["cycle_knn"](X[:N_X], Y[:N_X], K), abs=1e-12)
    assert got["y"][0] == N_Y and got["y"][1] == pytest.approx(DIRECT["cycle_knn"](X[N_X:], Y[N_X:], K), abs=1e-12)
    big = service.measures.similarity(LayerRef("a", 0), LayerRef("b", 1), "mutual_knn", k=15, by_dataset=True)
    assert [(d.dataset, d.value) for d in big.by_dataset][1] == ("y", None)  # 14 prompts: no 15 neighbours
    M = service.measures.similarity_matrix("a", "b", "cka", by_dataset=True)
    y = next(d for d in M.by_dataset if d.dataset == "y")
    assert y.values[1, 0] == pytest.approx(DIRECT["cka"](data["a"][1][N_X:], data["b"][0][N_X:]), abs=1e-9)


# ------------------------------------------------------------------ platonic preprocessing
def platonic_model_rows(layers: dict, layer: int, q: float = 0.95) -> np.ndarray:
    """platonic-rep's measure_alignment on a model's [n, L, d] features: c = mean over prompts
    of the q-quantile of |x| over all of the prompt's layers, clip, then unit rows."""
    allx = np.abs(np.concatenate([np.asarray(v, np.float64) for _, v in sorted(layers.items())], axis=1))
    c = float(np.mean([np.quantile(row, q) for row in allx]))
    x = np.clip(np.asarray(layers[layer], np.float64), -c, c)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("name", ["mutual_knn", "cka", "unbiased_cka", "cknna"])
def test_platonic_preprocessing_clips_per_model_then_unit_rows(service, data, name):
    m = registry.get(name)
    opts = m.options_for({"k": K} if m.uses_k else {})
    r = service.measures.similarity(LayerRef("a", 1), LayerRef("b", 1), name, k=k_of(m), preprocess="platonic")
    want = direct(name, platonic_model_rows(data["a"], 1), platonic_model_rows(data["b"], 1), opts)
    assert r.value == pytest.approx(want, abs=1e-9)
    assert (r.preprocess, r.dropped_a, r.dropped_b) == ("platonic", (), ())
    # the clip is the model's, not the layer's: clipping b's layer 1 alone gives another value
    alone = platonic_model_rows({1: data["b"][1]}, 1)
    assert direct(name, platonic_model_rows(data["a"], 1), alone, opts) != pytest.approx(want, abs=1e-9)
    M = service.measures.similarity_matrix("a", "b", name, k=k_of(m), preprocess="platonic")
    assert M.values[1, 1] == pytest.approx(want, abs=1e-9)


def test_platonic_for_the_cka_query_too_and_refused_for_bridges(service, data):
    r = service.similarity.cka(LayerRef("a", 0), LayerRef("b", 1), debiased=False, preprocess="platonic")
    assert r.value == pytest.approx(
        DIRECT["cka"](platonic_model_rows(data["a"], 0), platonic_model_rows(data["b"], 1)), abs=1e-9
    )
    with pytest.raises(InvalidInput, match=r"^preprocess PLATONIC applies to similarity queries only"):
        service.bridges.bridge(LayerRef("a", 0), LayerRef("b", 1), preprocess="platonic")


# ------------------------------------------------------------------ cache
def test_a_cached_answer_computes_nothing(service):
    ask = {"a": LayerRef("a", 1), "b": LayerRef("b", 1), "measure": "lcs_knn", "k": 3}
    first = service.measures.similarity(**ask)
    before = service.results.computed
    assert service.measures.similarity(**ask) == first
    assert service.results.computed == before
    service.measures.similarity(**{**ask, "k": 2})
    assert service.results.computed == before + 1
    M = service.measures.similarity_matrix("a", "b", "edit_distance_knn", k=3, layers_a=[1])
    before = service.results.computed
    assert service.measures.similarity_matrix("a", "b", "edit_distance_knn", k=3, layers_a=[1]) == M
    assert service.results.computed == before


# ------------------------------------------------------------------ errors
def test_errors_name_the_value_and_what_is_allowed(service):
    a, b = LayerRef("a", 0), LayerRef("b", 0)
    with pytest.raises(
        InvalidInput, match=r"^unknown measure 'svd'; registered measures: mutual_knn, cycle_knn, "
    ) as e:
        service.measures.similarity(a, b, "svd")
    assert e.value.field == "measure"
    with pytest.raises(
        InvalidInput, match=r"^measure 'mutual_knn' needs k \(neighbours per prompt, an integer >= 1\)$"
    ):
        service.measures.similarity(a, b, "mutual_knn")
    with pytest.raises(
        InvalidInput,
        match=r"^k applies only to the k-NN measures \(mutual_knn, .*\), not 'cka'; "
        r"leave it unset$",
    ):
        service.measures.similarity_matrix("a", "b", "cka", k=5)
    with pytest.raises(
        InvalidInput, match=r"^measure 'cknna' has no option 'unbiasd' \(its options: eps, k, unbiased\)$"
    ):
        service.measures.similarity(a, b, "cknna", k=5, options={"unbiasd": False})
    with pytest.raises(InvalidInput, match=r"^option 'unbiased' of measure 'cknna' must be true or false, got 1$"):
        service.measures.similarity(a, b, "cknna", k=5, options={"unbiased": 1})
    with pytest.raises(InvalidInput, match=r"^give k as the k argument, not inside options$"):
        service.measures.similarity(a, b, "mutual_knn", k=5, options={"k": 5})
    with pytest.raises(InvalidInput, match=r"^options must be a JSON object \(not valid JSON: "):
        service.measures.similarity(a, b, "cka", options="{unbiased: false")
    with pytest.raises(InvalidInput, match=r"^options must be a JSON object of option names and values, got \[1\]$"):
        service.measures.similarity(a, b, "cka", options=[1])
    with pytest.raises(
        InvalidInput,
        match=r"^k must be between 1 and n - 1 = 13 for measure 'mutual_knn' over "
        r"n = 14 prompts, got k=14$",
    ):
        service.measures.similarity(a, b, "mutual_knn", k=14, dataset="y")
    with pytest.raises(InvalidInput, match=r"^permutations must be at most"):
        service.measures.similarity(a, b, "cka", permutations=10**9)


# ------------------------------------------------------------------ the notebook face
def test_session_methods(service, data):
    import actstore

    s = actstore.open(service.store)
    table = s.measures()
    assert [m.name for m in table] == NAMES and table.to_pandas()["sensitive_to"].tolist() == [
        m.sensitive_to for m in registry.measures()
    ]
    r = s.similarity(("a", 1.0), "b:0", "unbiased_cka")
    assert (r.layer_a, r.value) == (1, pytest.approx(DIRECT["unbiased_cka"](data["a"][1], data["b"][0]), abs=1e-9))
    M = s.similarity_matrix("a", "b", "mutual_knn", k=K, layers_b=[1])
    assert M.values.shape == (2, 1) and M.to_dict()["measure"] == "mutual_knn"


def test_cost_is_the_measures_formula_and_over_the_budget_is_refused(service):
    from actstore.errors import LimitExceeded
    from actstore.service.requests import SimilarityRequest

    m = registry.get("cknna")
    opts = m.options_for({"k": K})
    req = SimilarityRequest(LayerRef("a", 0), LayerRef("b", 1), "cknna", k=K, permutations=5, dataset="x")
    cost = service.measures.plan(req).cost()
    want = m.cost(N_X, [7], [8], opts) + 5 * (m.prepare_cost(N_X, 8, opts) + m.compare_cost(N_X, 7, 8, opts))
    assert cost.flops == pytest.approx(want, rel=1e-12)
    assert cost.what == "cknna over n = 22 prompts (d = 7, 8) with 5 permutations"
    small = Service(service.store, Settings(token="t", max_cost=want / 2))
    with pytest.raises(
        LimitExceeded,
        match=r"^cknna over n = 22 prompts \(d = 7, 8\) with 5 permutations has an "
        r"estimated cost of",
    ):
        small.measures.similarity(LayerRef("a", 0), LayerRef("b", 1), "cknna", k=K, permutations=5, dataset="x")
