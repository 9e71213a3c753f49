"""The notebook face: act.open(...) as a context manager, analyses as methods, arrays that render."""

from __future__ import annotations

import numpy as np
import pytest

import actstore as act
from actstore.errors import InvalidInput
from actstore.layers import LayerRef
from actstore.session import layer_ref
from tests.reference import direct_debiased_cka

N, D = 30, 6


@pytest.fixture()
def session(tmp_path):
    rng = np.random.default_rng(7)
    with act.open(tmp_path / "db") as s:
        ids = s.store.add_prompts("t", [f"text {i}" for i in range(N)], labels=[i % 2 for i in range(N)])
        s.store.add_prompts("u", ["only a has this"])
        for model, layers in (("a", 4), ("b", 3)):
            for layer in range(layers):
                s.store.write_activations(
                    model, layer, ids, rng.normal(size=(N, D)), n_layers=layers, source="x", architecture="llama"
                )
        yield s


def test_layer_refs_in_every_form():
    assert layer_ref(("a", 5)) == LayerRef("a", layer=5)
    assert layer_ref(("a", 0.5)) == LayerRef("a", depth=0.5)
    assert layer_ref("org/model:-1") == LayerRef("org/model", layer=-1)
    assert layer_ref("a@0.25") == LayerRef("a", depth=0.25)
    with pytest.raises(
        InvalidInput,
        match=r"^a must be a layer: \(model, layer\), \(model, depth\), 'model:layer' or "
        r"'model@depth', got 'nolayer'$",
    ):
        layer_ref("nolayer", "a")


def test_cka_matrix_is_an_array_that_renders(session):
    r = session.cka_matrix("a", "b", grid=3)
    assert isinstance(r.values, np.ndarray) and r.values.shape == (3, 3)
    assert r.layers_a == [0, 2, 3] and r.layers_b == [0, 1, 2]  # 4 layers, grid 3: floor((2i*3 + 2) / 4)
    _, X, Y = session.aligned("a", 2, "b", 1)
    assert r.values[1, 1] == pytest.approx(direct_debiased_cka(X.astype(np.float64), Y.astype(np.float64)), abs=1e-6)
    df = r.to_pandas()
    assert list(df.index) == [0, 2, 3] and list(df.columns) == [0, 1, 2] and df.index.name == "a layer"
    assert df.iloc[1, 1] == r.values[1, 1]
    assert r._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
    assert r._repr_html_() is None  # Jupyter would show HTML before PNG: a matrix is drawn
    from actstore.service.display import use_png_renderer

    use_png_renderer(None)
    try:
        assert f"{r.values[0, 0]:.4g}" in r._repr_html_()  # without a plotting stack: the numbers
    finally:
        session.close()
    d = r.to_dict()
    assert d["values"] == r.values.tolist() and d["model_a"] == "a"


def test_aligned_rows_are_the_shared_prompts_in_id_order(session):
    ids, X, Y = session.aligned("a", -1, "b", 0.5)
    assert ids.tolist() == list(range(N))  # "u" holds a prompt neither model stored
    all_ids, XA = session.activations("a", 3)
    _, YB = session.activations("b", 1)
    assert X.dtype == np.float32 and Y.dtype == np.float32
    np.testing.assert_array_equal(X, XA[np.searchsorted(all_ids, ids)])
    np.testing.assert_array_equal(Y, YB)


def test_neighbours_are_a_table(session):
    rows = session.neighbors(("a", 0), prompt_id=0, k=3)
    _, X = session.activations("a", 0)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    sims = Xn @ Xn[0]
    sims[0] = -np.inf
    expected = np.argsort(-sims)[:3]
    assert [r.prompt_id for r in rows] == expected.tolist()
    assert [r.score for r in rows] == pytest.approx(sims[expected].tolist(), abs=1e-5)
    assert list(rows.to_pandas().columns[:3]) == ["rank", "prompt_id", "score"]
    assert "<caption>nearest neighbours</caption>" in rows._repr_html_()


def test_scalar_answers_convert(session):
    r = session.cka("a:1", ("b", 1), permutations=20, seed=3)
    assert r.to_pandas().loc[0, "value"] == r.value
    assert r._repr_png_() is None  # a single value has no plot
    assert "<td>20</td>" in r._repr_html_()


def test_the_session_closes(tmp_path):
    s = act.open(tmp_path / "db2")
    with s:
        assert s.models() == [] and s.datasets() == []
    with pytest.raises(InvalidInput, match=r"^k must be an integer >= 1, got 0$"):
        s.mutual_knn(("a", 0), ("b", 0), k=0)
