"""``actstore similarity``, ``similarity-matrix`` and ``measures`` on the command line: values
against the direct formulas, --options as JSON, --json with the API's names, errors worded
with flags."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.e2e.test_cli import actstore, one_error_line
from tests.unit.analysis.measures.reference_platonic import DIRECT

N = 30


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from actstore import Store

    rng = np.random.default_rng(8)
    s = Store.open(tmp_path_factory.mktemp("cli_measures") / "db")
    ids = s.add_prompts("t", [f"text {i}" for i in range(N)])
    Z = rng.normal(size=(N, 3))
    for model, layers, d in (("a", 3, 7), ("b", 2, 5)):
        for layer in range(layers):
            X = Z @ rng.normal(size=(3, d)) + 0.7 * rng.normal(size=(N, d))
            s.write_activations(model, layer, ids, X, n_layers=layers, source="x", architecture="llama")
    return s


def f64(store, model, layer):
    return store.read_activations(model, layer)[1].astype(np.float64)


def test_similarity_with_options_and_json(store, tmp_path):
    S = ("--store", store.uri)
    res = actstore(
        "similarity", "a:1", "b:0", "cknna", "--k", "5", "--options", '{"unbiased": false}', *S, cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    want = DIRECT["cknna"](f64(store, "a", 1), f64(store, "b", 0), 5, unbiased=False)
    assert f"value: {want:.4g}" in res.stdout and "measure: cknna" in res.stdout and "k: 5" in res.stdout
    out = json.loads(
        actstore(
            "similarity-matrix", "a", "b", "lcs_knn", "--k", "3", "--layers-a", "0,2", "--json", *S, cwd=tmp_path
        ).stdout
    )
    assert (out["measure"], out["k"], out["layersA"], out["layersB"]) == ("lcs_knn", 3, [0, 2], [0, 1])
    assert out["options"] == {} and "key" not in out
    assert out["values"][1][0] == pytest.approx(DIRECT["lcs_knn"](f64(store, "a", 2), f64(store, "b", 0), 3), abs=1e-9)


def test_measures_listing_and_errors(store, tmp_path):
    res = actstore("measures", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    listing = json.loads(res.stdout)
    assert [m["name"] for m in listing][:7] == [
        "mutual_knn",
        "cycle_knn",
        "lcs_knn",
        "edit_distance_knn",
        "cknna",
        "cka",
        "unbiased_cka",
    ]
    assert all(m["sensitiveTo"] and m["direction"] in ("similarity", "distance") for m in listing)
    err = one_error_line(actstore("similarity", "a:0", "b:0", "mutual_knn", "--store", store.uri, cwd=tmp_path))
    assert err == "error: --measure 'mutual_knn' needs --k (neighbours per prompt, an integer >= 1)"
    err = one_error_line(
        actstore("similarity", "a:0", "b:0", "cka", "--options", "{eps: 1}", "--store", store.uri, cwd=tmp_path)
    )
    assert err.startswith("error: --options must be a JSON object (not valid JSON: ")
