"""``measures``, ``similarity`` and ``similarityMatrix`` over GraphQL: the names the contract
reserves for them (its commented block, read from tests/api/schema.graphql), values equal to
the service's answers and the direct formulas, JSON options, plots and errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from graphql import build_schema as parse_sdl
from graphql import extend_schema, parse
from starlette.testclient import TestClient

from actstore import Store
from actstore.analysis import measures as registry
from actstore.api import create_app
from actstore.config import Settings
from actstore.layers import LayerRef
from actstore.service import Service

SCHEMA_FILE = Path(__file__).with_name("schema.graphql")
N = 30


def reserved_sdl() -> str:
    """The commented Measure / Similarity types and the measures, similarity and similarityMatrix
    root fields of the contract, as SDL extending it."""
    text = SCHEMA_FILE.read_text()
    block = "\n".join(
        line[2:] if line.startswith("# ") else line[1:]
        for line in text[text.index("# ---- Names for what the open issues add") :].splitlines()
        if line.startswith("#")
    )
    types = [
        re.search(r"type Measure \{.*?\}", block, re.DOTALL).group(0),
        re.search(r"type Similarity \{.*?\}", block, re.DOTALL).group(0),
    ]
    query = block[block.index("  measures:") : block.index("  atlas(")]
    # types the block names that the contract defines nowhere yet (stand-ins, compared by name)
    stand_ins = "scalar JSON\nenum Preprocess { NONE }\ntype DatasetCount { name: String! n: Int! }\n"
    return stand_ins + "\n".join(types) + "\nextend type Query {\n" + query + "}\n"


def test_the_reserved_names_exist_with_the_contract_types():
    from actstore.api.app import build_schema

    ours = parse_sdl(build_schema(Settings()).as_str())
    base = parse_sdl(SCHEMA_FILE.read_text())
    want = extend_schema(base, parse(reserved_sdl()))
    for tname in ("Measure", "Similarity"):
        for fname, field in want.type_map[tname].fields.items():
            assert fname in ours.type_map[tname].fields, f"{tname}.{fname} missing"
            assert str(ours.type_map[tname].fields[fname].type) == str(field.type), f"{tname}.{fname}"
    for name in ("measures", "similarity", "similarityMatrix"):
        spec, got = want.type_map["Query"].fields[name], ours.type_map["Query"].fields[name]
        assert str(got.type) == str(spec.type), name
        for arg, a in spec.args.items():
            assert arg in got.args, f"Query.{name}({arg}) missing"
            assert str(got.args[arg].type) == str(a.type), f"Query.{name}({arg})"
            if a.default_value is not None:
                assert got.args[arg].default_value == a.default_value, f"Query.{name}({arg}) default"


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(3)
    Z = rng.standard_normal((N, 4))
    a = {
        l: (Z @ rng.standard_normal((4, 10)) + 0.5 * rng.standard_normal((N, 10))).astype(np.float32) for l in range(3)
    }
    b = {l: (Z @ rng.standard_normal((4, 6)) + 0.8 * rng.standard_normal((N, 6))).astype(np.float32) for l in range(2)}
    return {"a": a, "b": b}


@pytest.fixture(scope="module")
def client(tmp_path_factory, arrays):
    store = Store.open(tmp_path_factory.mktemp("mapi") / "db")
    ids = store.add_prompts("ds", [f"p {i}" for i in range(N)])
    for key, layers in arrays.items():
        store.activations.write(
            key, layers, ids, n_layers=len(layers), dtype="float32", architecture="llama", source=f"nowhere/{key}"
        )
    service = Service(store, Settings(token="t"))
    with TestClient(create_app(service)) as c:
        c.service = service
        yield c


def gql(client, query, variables=None):
    r = client.post("/graphql", json={"query": query, "variables": variables or {}})
    assert r.status_code == 200, r.text
    return r.json()


def test_measures_lists_the_registry(client):
    d = gql(client, "{ measures { name direction options reference sensitiveTo definition family defaults } }")["data"]
    assert [m["name"] for m in d["measures"]] == registry.names()
    cknna = next(m for m in d["measures"] if m["name"] == "cknna")
    m = registry.get("cknna")
    assert (cknna["options"], cknna["sensitiveTo"], cknna["defaults"]) == (
        ["k", "unbiased", "eps"],
        m.sensitive_to,
        {"unbiased": True, "eps": 0.0},
    )


def test_similarity_with_json_options_equals_the_service(client, arrays):
    q = """query($o: JSON) { similarity(a: {model: "a", layer: 1}, b: {model: "b", depth: 1.0}, measure: "cknna",
             k: 5, options: $o, permutations: 9, seed: 2) { value measure k n pValue options direction layerB
             datasets { name n } warnings } }"""
    s = gql(client, q, {"o": {"unbiased": False}})["data"]["similarity"]
    want = client.service.measures.similarity(
        LayerRef("a", 1), LayerRef("b", 1), "cknna", k=5, options={"unbiased": False}, permutations=9, seed=2
    )
    assert s == {
        "value": want.value,
        "measure": "cknna",
        "k": 5,
        "n": N,
        "pValue": want.p_value,
        "options": {"unbiased": False, "eps": 0.0},
        "direction": "similarity",
        "layerB": 1,
        "datasets": [{"name": "ds", "n": N}],
        "warnings": [],
    }
    X, Y = arrays["a"][1].astype(np.float64), arrays["b"][1].astype(np.float64)
    assert s["value"] == pytest.approx(registry.similarity(X, Y, "cknna", {"k": 5, "unbiased": False}), abs=1e-12)


def test_similarity_matrix_and_its_plot(client, arrays):
    q = """{ similarityMatrix(modelA: "a", modelB: "b", measure: "mutual_knn", k: 4, layersA: [0, 2])
             { values argmax measure k options direction layersA plotUrl } }"""
    m = gql(client, q)["data"]["similarityMatrix"]
    want = registry.similarity_matrix(
        [arrays["a"][0], arrays["a"][2]], [arrays["b"][0], arrays["b"][1]], "mutual_knn", {"k": 4}
    )
    np.testing.assert_allclose(m["values"], want, atol=0, rtol=0)
    assert (m["measure"], m["k"], m["options"], m["layersA"]) == ("mutual_knn", 4, {}, [0, 2])
    assert m["argmax"] == want.argmax(1).tolist()
    png = client.get(m["plotUrl"])
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    cka = gql(client, '{ ckaMatrix(modelA: "a", modelB: "b") { measure options debiased } }')["data"]["ckaMatrix"]
    assert cka == {"measure": "unbiased_cka", "options": {"eps": 0.0}, "debiased": True}


def test_errors_are_graphql_errors_with_graphql_names(client):
    def message(query):
        body = gql(client, query)
        assert body.get("errors") and "Traceback" not in body["errors"][0]["message"], body
        return body["errors"][0]["message"]

    assert message(
        '{ similarity(a: {model: "a", layer: 0}, b: {model: "b", layer: 0}, measure: "nope") { value } }'
    ).startswith("unknown measure 'nope'; registered measures: mutual_knn, ")
    assert message('{ similarityMatrix(modelA: "a", modelB: "b", measure: "cka", k: 3) { n } }').startswith(
        "k applies only to the k-NN measures"
    )
    assert message(
        '{ similarity(a: {model: "a", layer: 0}, b: {model: "b", layer: 0}, measure: "cka", '
        "preprocess: PLATONIC, outlierThreshold: 0.1) { value } }"
    ) == ("outlierThreshold applies only to preprocess DROP_OUTLIER_DIMS, not PLATONIC; leave it unset")
    assert message(
        '{ similarity(a: {model: "a", layer: 0}, b: {model: "b", layer: 0}, measure: "cka", '
        "options: {eps: -1}) { value } }"
    ) == ("option 'eps' of measure 'cka' must be in [0, inf], got -1")


def test_platonic_preprocess_over_graphql(client):
    d = gql(
        client,
        '{ similarity(a: {model: "a", layer: 2}, b: {model: "b", layer: 0}, measure: "unbiased_cka", '
        "preprocess: PLATONIC, byDataset: null) { value } }",
    )
    assert "errors" not in d, d
    want = client.service.measures.similarity(LayerRef("a", 2), LayerRef("b", 0), "unbiased_cka", preprocess="platonic")
    assert d["data"]["similarity"]["value"] == want.value and json.dumps(want.preprocess) == '"platonic"'
