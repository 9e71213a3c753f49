"""`actstore import` and `actstore info`: pre-extracted activations into the store."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from actstore import Store
from actstore.cli import app

runner = CliRunner()


def _prompts(path: Path, n: int) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"text": f"prompt number {i}", "label": i % 3}) + "\n")
    return path


def _run(*args: str):
    return runner.invoke(app, list(args))


def test_import_npy_n_l_d(tmp_path, rng):
    acts = rng.standard_normal((10, 4, 6)).astype(np.float32)
    np.save(tmp_path / "acts.npy", acts)
    db = str(tmp_path / "db")
    res = _run(
        "import",
        str(tmp_path / "acts.npy"),
        "--model",
        "ext",
        "--dataset",
        "d",
        "--prompts",
        str(_prompts(tmp_path / "p.jsonl", 10)),
        "--dtype",
        "float32",
        "--store",
        db,
    )
    assert res.exit_code == 0, res.output
    assert "imported 10 prompts x 4 layers (d=6)" in res.output
    store = Store.open(db)
    info = store.models.get("ext")
    assert (info.n_layers, info.d_model, info.layers) == (4, 6, (0, 1, 2, 3))
    texts = [p.text for p in store.prompts.page("d", limit=100)]
    for layer in range(4):
        ids, X = store.read_activations("ext", layer)
        order = [texts.index(f"prompt number {i}") for i in range(10)]
        np.testing.assert_array_equal(X[order], acts[:, layer])
    assert store.prompts.labels(ids).tolist() == [i % 3 for i in range(10)]


def test_import_safetensors_and_per_layer_npy(tmp_path, rng):
    a = {
        name: torch.from_numpy(rng.standard_normal((5, 3)).astype(np.float32))
        for name in ("blocks.2.hook_resid_post", "blocks.7.hook_resid_post")
    }
    save_file(a, tmp_path / "acts.safetensors")
    prompts = _prompts(tmp_path / "p.jsonl", 5)
    db = str(tmp_path / "db")
    res = _run(
        "import",
        str(tmp_path / "acts.safetensors"),
        "--model",
        "st",
        "--dataset",
        "d",
        "--prompts",
        str(prompts),
        "--n-layers",
        "12",
        "--store",
        db,
    )
    assert res.exit_code == 0, res.output
    store = Store.open(db)
    assert store.models.get("st").layers == (2, 7) and store.models.get("st").n_layers == 12
    _, X = store.read_activations("st", 7)
    np.testing.assert_array_equal(X, a["blocks.7.hook_resid_post"].numpy().astype(np.float16).astype(np.float32))

    np.save(tmp_path / "layer_03.npy", rng.standard_normal((5, 3)))
    np.save(tmp_path / "layer_05.npy", rng.standard_normal((5, 3)))
    res = _run(
        "import",
        str(tmp_path / "layer_03.npy"),
        str(tmp_path / "layer_05.npy"),
        "--model",
        "np",
        "--dataset",
        "d",
        "--prompts",
        str(prompts),
        "--store",
        db,
    )
    assert res.exit_code == 0, res.output
    assert Store.open(db).models.get("np").layers == (3, 5)


@pytest.mark.parametrize(
    "shape, extra, message",
    [
        ((7, 2, 4), [], "layer 0 has 7 rows but .* has 6 prompts"),
        ((6, 2, 4), ["--layers", "1"], "1 layers given for an array of 2 layers"),
        ((6, 2, 4), ["--n-layers", "1"], "layer 1 is out of range for --n-layers=1"),
    ],
)
def test_import_errors_store_nothing(tmp_path, rng, shape, extra, message):
    np.save(tmp_path / "acts.npy", rng.standard_normal(shape))
    db = str(tmp_path / "db")
    res = _run(
        "import",
        str(tmp_path / "acts.npy"),
        "--model",
        "bad",
        "--dataset",
        "d",
        "--prompts",
        str(_prompts(tmp_path / "p.jsonl", 6)),
        "--store",
        db,
        *extra,
    )
    assert res.exit_code == 2
    assert res.output.startswith("error: ")
    assert re.search(message, res.output), res.output
    store = Store.open(db)
    assert store.models.list() == [] and store.prompts.datasets() == []


def test_import_rejects_nan_and_duplicate_texts(tmp_path, rng):
    acts = rng.standard_normal((4, 1, 3))
    acts[2, 0, 1] = np.nan
    np.save(tmp_path / "acts.npy", acts)
    db = str(tmp_path / "db")
    res = _run(
        "import",
        str(tmp_path / "acts.npy"),
        "--model",
        "m",
        "--dataset",
        "d",
        "--prompts",
        str(_prompts(tmp_path / "p.jsonl", 4)),
        "--store",
        db,
    )
    assert res.exit_code == 2 and "layer 0 contains NaN or inf" in res.output
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "a"}\n', encoding="utf-8")
    np.save(tmp_path / "ok.npy", rng.standard_normal((3, 1, 3)))
    res = _run(
        "import", str(tmp_path / "ok.npy"), "--model", "m", "--dataset", "d", "--prompts", str(dup), "--store", db
    )
    assert res.exit_code == 2 and "same text at prompts 0 and 2" in res.output
    assert Store.open(db).prompts.datasets() == []


def test_info_lists_models_and_datasets(tmp_path, rng):
    store = Store.open(tmp_path / "db")
    ids = store.add_prompts("sst", ["good", "bad", "fine"], labels=[1, 0, 1])
    source = "/models/some-organisation/a-rather-long-model-name-that-rich-would-cut/at-80-columns.gguf"
    store.activations.write(
        "tiny",
        {0: rng.standard_normal((3, 4)), 1: rng.standard_normal((3, 4)), 3: rng.standard_normal((3, 4))},
        ids,
        n_layers=4,
        architecture="llama",
        source=source,
    )
    # piped (no terminal, no COLUMNS): nothing is cut to 80 columns
    res = subprocess.run(
        [sys.executable, "-m", "actstore.cli", "info", "--store", store.uri],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": ""},
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "tiny" in out and "llama" in out and "3/4 (0-1, 3)" in out and source in out
    assert "sst" in out and "yes" in out
