"""Issue 11's bug, as a user met it: a 6-layer model ingested with ``--layers grid:3`` stored
layers [0, 2, 5] while ``ckaMatrix(grid: 3)`` asked for [0, 3, 5] and failed with "not found".
Both now go through actstore.layers; the layers are written here as literals."""

from __future__ import annotations

import numpy as np

from actstore import Store
from actstore.analysis import cka_matrix
from actstore.ingest.pipeline import ingest
from actstore.layers import LayerRef
from actstore.service import Service
from tests.tiny_models import tiny_model_dir

TEXTS = [
    f"sentence number {i} is about {w}"
    for i, w in enumerate(
        ["cats", "dogs", "rain", "tea", "ships", "glass", "music", "sand", "paper", "wolves", "salt", "bread"]
    )
]


def test_ingest_grid_then_query_grid_on_a_six_layer_model(tmp_path):
    model = tiny_model_dir("gpt2", n_layers=6)
    store = Store.open(tmp_path / "db")
    store.add_prompts("ds", TEXTS)
    summary = ingest(store, model, "ds", key="six", layers="grid:3", batch_size=4)
    assert summary.layers == [0, 3, 5]
    assert store.models.get("six").layers == (0, 3, 5)

    service = Service(store)
    m = service.similarity.cka_matrix("six", "six", grid=3, debiased=False)
    assert (m.layers_a, m.layers_b) == ([0, 3, 5], [0, 3, 5])
    xs = [store.read_activations("six", l_)[1] for l_ in (0, 3, 5)]
    np.testing.assert_allclose(m.values, cka_matrix(xs, xs, debiased=False), atol=1e-9)
    # depth 0.5 of 6 layers is 2.5, which rounds up to the stored layer 3
    assert service.reads.resolve(LayerRef("six", depth=0.5))[1] == 3
