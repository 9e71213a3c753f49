"""The analysis commands derived from the request types: cka, cka-matrix, mutual-knn, affinity,
neighbors; tables, --json with the API's names, --plot, errors worded with flags."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.e2e.test_cli import actstore, one_error_line
from tests.reference import direct_debiased_cka

N = 40


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from actstore import Store

    rng = np.random.default_rng(3)
    s = Store.open(tmp_path_factory.mktemp("cli_analyses") / "db")
    ids = s.add_prompts("t", [f"text number {i}" for i in range(N)], labels=[i % 2 for i in range(N)])
    for model, layers, d in (("a", 4, 8), ("b", 3, 6)):
        for layer in range(layers):
            s.write_activations(
                model, layer, ids, rng.normal(size=(N, d)), n_layers=layers, source="x", architecture="llama"
            )
    return s


def test_cka_matrix_table_json_and_plot(store, tmp_path):
    S = ("--store", store.uri)
    _, X = store.read_activations("a", 2)
    _, Y = store.read_activations("b", 1)
    want = direct_debiased_cka(X.astype(np.float64), Y.astype(np.float64))
    res = actstore("cka-matrix", "a", "b", "--grid", "3", "--plot", "m.png", *S, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    row = next(line for line in res.stdout.splitlines() if re.match(r"^│\s+2 │", line))
    assert f"{want:.3f}" in row.split("│")[3], row  # row layer 2, column layer 1
    assert "largest:" in res.stdout and "datasets: t (40)" in res.stdout
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = json.loads(actstore("cka-matrix", "a", "b", "--grid", "3", "--json", *S, cwd=tmp_path).stdout)
    assert out["layersA"] == [0, 2, 3] and out["layersB"] == [0, 1, 2]
    assert out["values"][1][1] == pytest.approx(want, abs=1e-6)


def test_cka_and_neighbors(store, tmp_path):
    S = ("--store", store.uri)
    res = actstore("cka", "a:1", "b@0.5", "--permutations", "20", "--seed", "4", *S, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    _, X = store.read_activations("a", 1)
    _, Y = store.read_activations("b", 1)
    assert f"value: {direct_debiased_cka(X.astype(np.float64), Y.astype(np.float64)):.4g}" in res.stdout
    assert "permutations: 20" in res.stdout
    out = json.loads(actstore("neighbors", "a:0", "--prompt-id", "5", "--k", "3", "--json", *S, cwd=tmp_path).stdout)
    _, A = store.read_activations("a", 0)
    An = A / np.linalg.norm(A, axis=1, keepdims=True)
    sims = An @ An[5]
    sims[5] = -np.inf
    assert [r["promptId"] for r in out] == np.argsort(-sims)[:3].tolist()


def test_affinity_prints_the_diagonal_test(store, tmp_path):
    res = actstore("affinity", "a", "b", "--k", "5", "--store", store.uri, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "generalized diagonal: on" in res.stdout and "null mean (random neighbours): 0.1282" in res.stdout


def test_errors_name_the_flags(store, tmp_path):
    S = ("--store", store.uri)
    line = one_error_line(actstore("cka-matrix", "a", "b", "--outlier-threshold", "0.1", *S, cwd=tmp_path))
    assert line == (
        "error: --outlier-threshold applies only to --preprocess DROP_OUTLIER_DIMS, not NONE; leave it unset"
    )
    line = one_error_line(actstore("cka-matrix", "a", "b", "--grid", "3", "--layers-a", "0", *S, cwd=tmp_path))
    assert line == "error: give either --grid or --layers-a/--layers-b, not both"
    line = one_error_line(actstore("neighbors", "a:0", "--k", "3", *S, cwd=tmp_path))
    assert line == "error: give exactly one of --prompt-id, --vector or --text (got none)"
