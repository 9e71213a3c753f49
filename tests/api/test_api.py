"""The GraphQL API in-process: schema contract, every field against direct analysis calls,
every error case of DESIGN.md, masking, tokens, caching."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest
from graphql import build_schema as parse_sdl
from starlette.testclient import TestClient

from actstore import Store, analysis
from actstore.api import create_app
from actstore.config import Settings
from actstore.layers import LayerRef
from actstore.service import Service

# The contract: a copy kept in the repository (so the test runs in any clone), checked
# against ../shared/schema.graphql where that exists.
SCHEMA_FILE = Path(__file__).with_name("schema.graphql")
SHARED_SCHEMA = Path(__file__).resolve().parents[3] / "shared" / "schema.graphql"
TOKEN = "s3cret-token"
N = 48


def _layers(rng, Z, n_layers, d, noise=0.3):
    return {
        l: Z @ rng.standard_normal((Z.shape[1], d)) + noise * (1 + l) * rng.standard_normal((len(Z), d))
        for l in range(n_layers)
    }


@pytest.fixture
def populated(tmp_path) -> Store:
    """Models a (4 layers, d=16) and b (6 layers, d=24) over 48 shared prompts of 'ds'
    with planted shared structure; 'other' (10 prompts) is stored for a only."""
    rng = np.random.default_rng(1)
    store = Store.open(tmp_path / "db")
    ids = store.add_prompts("ds", [f"prompt {i}" for i in range(N)], labels=[i % 3 for i in range(N)])
    other = store.add_prompts("other", [f"other {i}" for i in range(10)])
    Z = rng.standard_normal((N + 10, 5))
    store.activations.write(
        "a", _layers(rng, Z, 4, 16), ids + other, n_layers=4, dtype="float32", architecture="llama", source="nowhere/a"
    )
    store.activations.write(
        "b",
        {l: v[:N] for l, v in _layers(rng, Z, 6, 24).items()},
        ids,
        n_layers=6,
        dtype="float32",
        architecture="gpt2",
        source="nowhere/b",
    )
    return store


@pytest.fixture
def client(populated):
    service = Service(populated, Settings(token=TOKEN, max_permutations=500))
    with TestClient(create_app(service)) as c:
        c.service = service
        yield c


def gql(client, query, variables=None, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = client.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def data(client, query, variables=None, token=None):
    body = gql(client, query, variables, token)
    assert "errors" not in body, body["errors"]
    return body["data"]


def error(client, query, variables=None, token=None) -> str:
    body = gql(client, query, variables, token)
    assert body.get("errors"), body
    message = body["errors"][0]["message"]
    assert "Traceback" not in message
    return message


# ------------------------------------------------------------------ contract
def _type_str(t) -> str:
    return str(t)


@pytest.mark.skipif(not SHARED_SCHEMA.exists(), reason="no ../shared next to this clone")
def test_the_contract_copy_is_the_shared_contract():
    assert SCHEMA_FILE.read_text() == SHARED_SCHEMA.read_text(), (
        f"{SCHEMA_FILE} differs from {SHARED_SCHEMA}: copy the shared contract into the repository"
    )


def test_printed_schema_contains_the_contract_for_this_issue():
    from actstore.api.app import build_schema

    printed = build_schema(Settings()).as_str()
    print(printed)
    ours = parse_sdl(printed)
    contract = parse_sdl(SCHEMA_FILE.read_text())
    covered_query = [
        "models",
        "model",
        "datasets",
        "prompts",
        "job",
        "nearestNeighbors",
        "mutualKnn",
        "affinityMatrix",
        "cka",
        "ckaMatrix",
        "saes",
        "saeFeatureCorrelation",
        "bridge",
        "probeTransfer",
    ]
    covered_mutation = ["ingest", "addPrompts", "registerSae"]
    covered_types = [
        "Model",
        "Dataset",
        "Prompt",
        "Neighbor",
        "MutualKnn",
        "SimilarityMatrix",
        "DiagonalTest",
        "AffinityMatrix",
        "Cka",
        "Job",
        "LayerRef",
        "Sae",
        "FeaturePair",
        "SaeCorrelation",
        "SaeRef",
        "Bridge",
        "ProbeTransfer",
    ]
    for root, fields in (("Query", covered_query), ("Mutation", covered_mutation)):
        for name in fields:
            want = contract.type_map[root].fields[name]
            got = ours.type_map[root].fields.get(name)
            assert got is not None, f"{root}.{name} missing"
            assert _type_str(got.type) == _type_str(want.type), f"{root}.{name}"
            for arg, spec in want.args.items():
                assert arg in got.args, f"{root}.{name}({arg}) missing"
                assert _type_str(got.args[arg].type) == _type_str(spec.type), f"{root}.{name}({arg})"
                if spec.default_value is not None:
                    assert got.args[arg].default_value == spec.default_value, f"{root}.{name}({arg}) default"
    for tname in covered_types:
        want = contract.type_map[tname]
        got = ours.type_map.get(tname)
        assert got is not None, f"type {tname} missing"
        for fname, field in want.fields.items():
            assert fname in got.fields, f"{tname}.{fname} missing"
            assert _type_str(got.fields[fname].type) == _type_str(field.type), f"{tname}.{fname}"
    for enum in ("Metric", "JobState", "Matching", "BridgeMethod"):
        assert set(ours.type_map[enum].values) == set(contract.type_map[enum].values)
    top_pairs = ours.type_map["SaeCorrelation"].fields["topPairs"].args["limit"]
    assert _type_str(top_pairs.type) == "Int!" and top_pairs.ast_node.default_value.value == "20"


# ------------------------------------------------------------------- catalog
def test_catalog_fields(client):
    d = data(
        client,
        """{ models { key source architecture nLayers dModel dtype datasets promptCount layers }
                        model(key: "b") { key nLayers } missing: model(key: "nope") { key }
                        datasets { name promptCount hasLabels }
                        prompts(dataset: "ds", offset: 2, limit: 2) { id dataset text label } }""",
    )
    a, b = d["models"]
    assert a == {
        "key": "a",
        "source": "nowhere/a",
        "architecture": "llama",
        "nLayers": 4,
        "dModel": 16,
        "dtype": "float32",
        "datasets": ["ds", "other"],
        "promptCount": N + 10,
        "layers": [0, 1, 2, 3],
    }
    assert (b["datasets"], b["promptCount"], b["dModel"]) == (["ds"], N, 24)
    assert d["model"] == {"key": "b", "nLayers": 6} and d["missing"] is None
    assert d["datasets"] == [
        {"name": "ds", "promptCount": N, "hasLabels": True},
        {"name": "other", "promptCount": 10, "hasLabels": False},
    ]
    assert d["prompts"] == [
        {"id": "2", "dataset": "ds", "text": "prompt 2", "label": 2},
        {"id": "3", "dataset": "ds", "text": "prompt 3", "label": 0},
    ]


# ------------------------------------------------------------------- queries
def _direct_knn(X, q, k, exclude=None):
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    s = Xn @ (q / np.linalg.norm(q))
    if exclude is not None:
        s[exclude] = -np.inf
    order = np.argsort(-s, kind="stable")[:k]
    return order, s[order]


def test_nearest_neighbors_by_prompt_vector_and_dataset(client, populated):
    ids, X = populated.read_activations("a", 3)
    d = data(
        client,
        '{ nearestNeighbors(at: {model: "a", layer: -1}, promptId: "5", k: 4) '
        "{ rank promptId score text label dataset } }",
    )
    order, scores = _direct_knn(X, X[5], 4, exclude=5)
    got = d["nearestNeighbors"]
    assert [r["rank"] for r in got] == [1, 2, 3, 4]
    assert [int(r["promptId"]) for r in got] == ids[order].tolist()
    np.testing.assert_allclose([r["score"] for r in got], scores, atol=1e-5)
    assert got[0]["text"] == populated.prompts.get([ids[order[0]]])[0].text
    # the fixture labels the i-th prompt of "ds" i % 3 and leaves "other" unlabelled
    truth = {int(pid): (i % 3, "ds") for i, pid in enumerate(populated.prompts.ids("ds"))}
    truth |= {int(pid): (None, "other") for pid in populated.prompts.ids("other")}
    assert [(r["label"], r["dataset"]) for r in got] == [truth[int(i)] for i in ids[order]]

    vec = (X[7] * 2).tolist()
    d = data(
        client,
        'query($v: [Float!]) { nearestNeighbors(at: {model: "a", depth: 1.0}, vector: $v, k: 3) { promptId score } }',
        {"v": vec},
    )
    order, scores = _direct_knn(X, X[7], 3)
    assert [int(r["promptId"]) for r in d["nearestNeighbors"]] == ids[order].tolist()
    assert d["nearestNeighbors"][0]["score"] == pytest.approx(1.0, abs=1e-5)

    d = data(
        client, '{ nearestNeighbors(at: {model: "a", layer: 0}, promptId: "0", k: 3, dataset: "other") { promptId } }'
    )
    assert {int(r["promptId"]) for r in d["nearestNeighbors"]} <= set(populated.prompts.ids("other").tolist())

    d = data(
        client, '{ nearestNeighbors(at: {model: "a", layer: 0}, promptId: "0", k: 2, metric: L2) { promptId score } }'
    )
    _, X0 = populated.read_activations("a", 0)
    dist = np.linalg.norm(X0 - X0[0], axis=1)
    dist[0] = np.inf
    assert [int(r["promptId"]) for r in d["nearestNeighbors"]] == ids[np.argsort(dist)[:2]].tolist()
    np.testing.assert_allclose([r["score"] for r in d["nearestNeighbors"]], np.sort(dist)[:2], rtol=1e-5)


def _joined(store, la, lb, dataset=None):
    ids = store.activations.shared("a", "b", dataset)
    return store.read_activations("a", la, prompt_ids=ids)[1], store.read_activations("b", lb, prompt_ids=ids)[1]


def test_cka_against_direct_analysis(client, populated):
    X, Y = _joined(populated, 1, 3)
    d = data(
        client,
        """{ d: cka(a: {model: "a", layer: 1}, b: {model: "b", depth: 0.6}) { value debiased n layerA layerB permutations pValue }
                         b: cka(a: {model: "a", layer: 1}, b: {model: "b", layer: 3}, debiased: false) { value debiased } }""",
    )
    assert d["d"]["layerB"] == 3  # depth 0.6 of 6 layers: 0.6 * 5 = 3
    assert d["d"]["value"] == pytest.approx(analysis.linear_cka(X, Y, debiased=True), abs=1e-9)
    assert d["d"]["n"] == N and d["d"]["pValue"] is None and d["d"]["permutations"] == 0
    assert d["b"]["value"] == pytest.approx(analysis.linear_cka(X, Y, debiased=False), abs=1e-9)

    d = data(
        client,
        '{ cka(a: {model: "a", layer: 1}, b: {model: "b", layer: 3}, permutations: 99, seed: 7) { value pValue permutations } }',
    )
    direct = analysis.cka_permutation_test(X, Y, permutations=99, seed=7)
    assert d["cka"]["pValue"] == pytest.approx(direct.p_value) and d["cka"]["permutations"] == 99
    assert d["cka"]["pValue"] == pytest.approx(0.01)  # planted structure: no permutation reaches it


def test_cka_matrix_layers_and_grid(client, populated):
    d = data(
        client,
        '{ ckaMatrix(modelA: "a", modelB: "b") { modelA modelB layersA layersB values n argmax depthsA plotUrl } }',
    )
    m = d["ckaMatrix"]
    xs = [populated.read_activations("a", l, dataset="ds")[1] for l in range(4)]
    ys = [populated.read_activations("b", l)[1] for l in range(6)]
    direct = analysis.cka_matrix(xs, ys)
    np.testing.assert_allclose(m["values"], direct, atol=1e-9)
    assert m["argmax"] == np.argmax(direct, axis=1).tolist()
    assert (m["layersA"], m["layersB"], m["n"]) == ([0, 1, 2, 3], list(range(6)), N)
    assert m["depthsA"] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    png = client.get(m["plotUrl"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"

    d = data(client, '{ ckaMatrix(modelA: "a", modelB: "b", grid: 3, debiased: false) { layersA layersB values } }')
    assert d["ckaMatrix"]["layersA"] == [0, 2, 3]  # 4 layers: 0, 1.5 -> 2, 3
    assert d["ckaMatrix"]["layersB"] == [0, 3, 5]  # 6 layers: 0, 2.5 -> 3, 5
    xs = [populated.read_activations("a", l, dataset="ds")[1] for l in d["ckaMatrix"]["layersA"]]
    ys = [populated.read_activations("b", l)[1] for l in d["ckaMatrix"]["layersB"]]
    np.testing.assert_allclose(d["ckaMatrix"]["values"], analysis.cka_matrix(xs, ys, debiased=False), atol=1e-9)

    d = data(client, '{ ckaMatrix(modelA: "a", modelB: "b", layersA: [-1, 0], layersB: [5]) { layersA layersB } }')
    assert (d["ckaMatrix"]["layersA"], d["ckaMatrix"]["layersB"]) == ([3, 0], [5])


def test_mutual_knn_and_affinity_against_direct(client, populated):
    k = 5
    X, Y = _joined(populated, 2, 4)
    d = data(
        client,
        '{ mutualKnn(a: {model: "a", layer: 2}, b: {model: "b", layer: 4}, k: 5) { value k n nullMean layerA layerB } }',
    )
    direct = analysis.mutual_knn(analysis.knn_graph(X, k), analysis.knn_graph(Y, k))
    assert d["mutualKnn"] == {
        "value": pytest.approx(direct),
        "k": 5,
        "n": N,
        "nullMean": pytest.approx(5 / (N - 1)),
        "layerA": 2,
        "layerB": 4,
    }

    d = data(
        client,
        """{ affinityMatrix(modelA: "a", modelB: "b", k: 5) { layersA layersB values n argmax k nullMean
                          diagonal { onDiagonalMean offDiagonalMean tStatistic pValue } plotUrl } }""",
    )
    m = d["affinityMatrix"]
    ga = [analysis.knn_graph(populated.read_activations("a", l, dataset="ds")[1], k) for l in range(4)]
    gb = [analysis.knn_graph(populated.read_activations("b", l)[1], k) for l in range(6)]
    M = analysis.affinity_matrix(ga, gb)
    np.testing.assert_allclose(m["values"], M, atol=1e-12)
    t = analysis.diagonal_test(M)
    assert m["diagonal"] == {
        "onDiagonalMean": pytest.approx(t.on_diagonal_mean),
        "offDiagonalMean": pytest.approx(t.off_diagonal_mean),
        "tStatistic": pytest.approx(t.t_statistic),
        "pValue": pytest.approx(t.p_value),
    }
    assert m["argmax"] == analysis.argmax_path(M) and m["nullMean"] == pytest.approx(5 / (N - 1))
    assert client.get(m["plotUrl"]).content[:4] == b"\x89PNG"

    msg = error(client, '{ affinityMatrix(modelA: "a", modelB: "b", k: 5, layersA: [0]) { diagonal { pValue } } }')
    assert "generalized-diagonal test needs at least 2 layers" in msg


# -------------------------------------------------------------------- errors
ERRORS = [
    (
        '{ cka(a: {model: "zz", layer: 0}, b: {model: "b", layer: 0}) { value } }',
        "unknown model 'zz'; known models: a, b",
    ),
    ('{ ckaMatrix(modelA: "a", modelB: "b", dataset: "nope") { n } }', "unknown dataset 'nope'"),
    (
        '{ nearestNeighbors(at: {model: "a", layer: 0}, promptId: "9999") { rank } }',
        r"prompt id\(s\) 9999 have no activations",
    ),
    (
        '{ nearestNeighbors(at: {model: "a", layer: 0}, promptId: "abc") { rank } }',
        "promptId must be an integer id, got 'abc'",
    ),
    (
        '{ cka(a: {model: "a", layer: 4}, b: {model: "b", layer: 0}) { value } }',
        r"layer 4 is out of range for model 'a': allowed 0..3 or -4..-1",
    ),
    ('{ cka(a: {model: "a", layer: -5}, b: {model: "b", layer: 0}) { value } }', r"layer -5 is out of range"),
    (
        '{ cka(a: {model: "a", depth: 1.5}, b: {model: "b", layer: 0}) { value } }',
        r"depth must be in \[0, 1\], got 1.5",
    ),
    (
        '{ cka(a: {model: "a", depth: -0.1}, b: {model: "b", layer: 0}) { value } }',
        r"depth must be in \[0, 1\], got -0.1",
    ),
    (
        '{ cka(a: {model: "a", layer: 1, depth: 0.5}, b: {model: "b", layer: 0}) { value } }',
        "give exactly one of layer or depth",
    ),
    ('{ cka(a: {model: "a"}, b: {model: "b", layer: 0}) { value } }', "give exactly one of layer or depth"),
    (
        '{ mutualKnn(a: {model: "a", layer: 0}, b: {model: "b", layer: 0}, k: 0) { value } }',
        r"^k must be an integer >= 1, got 0$",
    ),
    (
        '{ mutualKnn(a: {model: "a", layer: 0}, b: {model: "b", layer: 0}, k: 48) { value } }',
        r"^k must be between 1 and min\(1000, n - 1 = 47\) for n = 48 prompts, got k=48$",
    ),
    ('{ mutualKnn(a: {model: "a", layer: 0}, b: {model: "b", layer: 0}, k: 48) { value } }', "got k=48"),
    ('{ affinityMatrix(modelA: "a", modelB: "b", k: 48) { n } }', "got k=48"),
    (
        '{ nearestNeighbors(at: {model: "a", layer: 0}, promptId: "1", k: 0) { rank } }',
        "^k must be an integer >= 1, got 0$",
    ),
    (
        '{ nearestNeighbors(at: {model: "a", layer: 0}, promptId: "1", k: 1001) { rank } }',
        r"^k must be at most 1000 on this server \(ACTSTORE_MAX_K\), got 1001$",
    ),
    (
        '{ nearestNeighbors(at: {model: "a", layer: 0}, promptId: "1", k: 58) { rank } }',
        r"k must be between 1 and n - 1 = 57",
    ),
    ('{ prompts(dataset: "ds", offset: -1) { id } }', "offset must be >= 0, got -1"),
    ('{ prompts(dataset: "ds", limit: -1) { id } }', "limit must be >= 0, got -1"),
    ('{ prompts(dataset: "nope") { id } }', "unknown dataset 'nope'"),
    ('{ ckaMatrix(modelA: "a", modelB: "b", grid: 1) { n } }', "grid"),
    (
        '{ ckaMatrix(modelA: "a", modelB: "b", grid: 5) { n } }',
        r"grid 5 asks for more layers than model 'a' has \(4\); use grid <= 4",
    ),
    (
        '{ ckaMatrix(modelA: "a", modelB: "b", grid: 3, layersA: [0]) { n } }',
        "give either grid or layersA/layersB, not both",
    ),
    (
        '{ cka(a: {model: "a", layer: 0}, b: {model: "b", layer: 0}, permutations: -1) { value } }',
        "^permutations must be an integer >= 0, got -1$",
    ),
    (
        '{ cka(a: {model: "a", layer: 0}, b: {model: "b", layer: 0}, permutations: 501) { value } }',
        r"^permutations must be at most 500 on this server \(ACTSTORE_MAX_PERMUTATIONS\), got 501$",
    ),
    (
        '{ nearestNeighbors(at: {model: "a", layer: 0}) { rank } }',
        "give exactly one of promptId, vector or text \\(got none\\)",
    ),
    ('{ nearestNeighbors(at: {model: "a", layer: 0}, promptId: "1", text: "x") { rank } }', "got promptId, text"),
    (
        '{ cka(a: {model: "a", layer: 0}, b: {model: "b", layer: 0}, dataset: "other") { value } }',
        "models 'a' and 'b' share no stored prompts in dataset 'other'",
    ),
    (
        '{ nearestNeighbors(at: {model: "a", layer: 0}, vector: [1.0, 2.0]) { rank } }',
        "vector has 2 values, but model 'a' has d_model=16",
    ),
    ('{ nearestNeighbors(at: {model: "a", layer: 0}, text: "hello") { rank } }', "cannot encode text with model 'a'"),
    (
        '{ ckaMatrix(modelA: "a", modelB: "b", layersA: []) { n } }',
        "^layersA is empty; give at least one layer or leave it unset$",
    ),
]


@pytest.mark.parametrize("query, message", ERRORS, ids=[m[:40] for _, m in ERRORS])
def test_every_error_is_a_graphql_error_with_its_message(client, query, message):
    import re

    got = error(client, query)
    assert re.search(message, got), got


def test_non_finite_query_vectors_are_refused(client):
    # JSON has no NaN, but Python's parser (and so a careless client) accepts it: the GraphQL
    # Float coercion refuses it before any resolver runs.
    body = (
        '{"query": "query($v: [Float!]) { nearestNeighbors(at: {model: \\"a\\", layer: 0}, vector: $v) { rank } }", '
        '"variables": {"v": [NaN' + ", 1.0" * 15 + "]}}"
    )
    r = client.post("/graphql", content=body, headers={"content-type": "application/json"})
    assert r.status_code < 500
    message = r.json()["errors"][0]["message"]
    assert "Float cannot represent non numeric value: nan" in message


def test_unexpected_errors_are_masked_and_logged(client, caplog, monkeypatch):
    def boom():
        raise RuntimeError("secret internals at /srv/x")

    monkeypatch.setattr(client.service.catalog, "datasets", boom)
    with caplog.at_level(logging.ERROR, logger="actstore.api"):
        msg = error(client, "{ datasets { name } }")
    assert msg == "Unexpected error."
    assert "secret internals" in caplog.text and "RuntimeError" in caplog.text


def test_expected_errors_are_not_logged_as_errors(client, caplog):
    with caplog.at_level(logging.WARNING):
        error(client, '{ model(key: "a") { key } prompts(dataset: "nope") { id } }')
    assert "Traceback" not in caplog.text and "nope" not in caplog.text


def test_query_depth_is_limited(populated):
    service = Service(populated, Settings(max_query_depth=1))
    with TestClient(create_app(service)) as c:
        msg = error(c, '{ affinityMatrix(modelA: "a", modelB: "b", k: 3) { diagonal { pValue } } }')
    assert "exceeds maximum operation depth of 1" in msg


def test_request_time_limit(populated, monkeypatch):
    import time

    service = Service(populated, Settings(request_timeout_s=0.2))
    monkeypatch.setattr(service.catalog, "datasets", lambda: time.sleep(1.0) or [])
    with TestClient(create_app(service)) as c:
        msg = error(c, "{ datasets { name } }")
    assert "ran past the server's time limit of 0.2 s" in msg


# ----------------------------------------------------------------- mutations
ADD = 'mutation { addPrompts(dataset: "new", texts: ["alpha", "beta"], labels: [1, 0]) { name promptCount hasLabels } }'


def test_mutations_need_the_token(client, populated):
    assert "needs the header 'Authorization: Bearer TOKEN'" in error(client, ADD)
    assert "needs the header" in error(client, ADD, token="wrong")
    assert "new" not in [d.name for d in populated.prompts.datasets()]
    d = data(client, ADD, token=TOKEN)
    assert d["addPrompts"] == {"name": "new", "promptCount": 2, "hasLabels": True}


def test_mutations_refused_without_a_configured_token(populated):
    with TestClient(create_app(Service(populated, Settings(token=None)))) as c:
        assert "mutations are disabled on this server" in error(c, ADD, token="anything")


def test_add_prompts_errors_through_graphql(client):
    msg = error(client, 'mutation { addPrompts(dataset: "x", texts: ["a", "b"], labels: [1]) { name } }', token=TOKEN)
    assert "got 1 labels for 2 texts" in msg
    msg = error(client, 'mutation { ingest(model: "m", dataset: "nope") { id } }', token=TOKEN)
    assert "unknown dataset 'nope'" in msg


# ------------------------------------------------------------------- caching
def test_answers_are_cached_and_invalidated_by_new_rows(client, populated, monkeypatch):
    q = '{ cka(a: {model: "a", layer: 1}, b: {model: "b", layer: 2}) { value n } }'
    first = data(client, q)["cka"]
    computed = client.service.results.computed
    assert data(client, q)["cka"] == first
    assert client.service.results.computed == computed  # served from the results table
    # a fresh service over a freshly opened store (a restarted server) still hits the cache,
    # and the cached answer costs no scan of any activation table (its key needs none)
    restarted = Store.open(populated.uri, create=False)
    scanned = []
    real_scan = restarted.tables.scan
    monkeypatch.setattr(
        restarted.tables, "scan", lambda tbl, *a, **k: scanned.append(tbl.name) or real_scan(tbl, *a, **k)
    )
    monkeypatch.setattr(restarted.activations, "read", lambda *a, **k: pytest.fail("read an activation table"))
    fresh = Service(restarted)
    assert fresh.similarity.cka(LayerRef("a", 1), LayerRef("b", 2)).value == pytest.approx(first["value"])
    assert fresh.results.computed == 0
    assert [name for name in scanned if name.startswith("acts__")] == []
    # new rows in a table the answer read: the cached answer no longer applies
    (new_id,) = populated.add_prompts("ds", ["one more prompt"])
    rng = np.random.default_rng(5)
    populated.activations.write("a", {l: rng.standard_normal((1, 16)) for l in range(4)}, [new_id])
    populated.activations.write("b", {l: rng.standard_normal((1, 24)) for l in range(6)}, [new_id])
    again = data(client, q)["cka"]
    assert client.service.results.computed == computed + 1
    assert again["n"] == N + 1 and again["value"] != first["value"]


def test_identical_heavy_queries_arriving_together_compute_once(populated, monkeypatch):
    service = Service(populated)
    calls = []
    real = analysis.cka_matrix
    gate = threading.Event()

    def slow(*args, **kwargs):
        calls.append(1)
        gate.wait(5)
        return real(*args, **kwargs)

    monkeypatch.setattr(analysis, "cka_matrix", slow)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(service.similarity.cka_matrix("a", "b"))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    import time

    time.sleep(0.5)
    gate.set()
    for t in threads:
        t.join(30)
    assert len(calls) == 1 and len(results) == 4
    assert all(np.array_equal(r.values, results[0].values) for r in results)
