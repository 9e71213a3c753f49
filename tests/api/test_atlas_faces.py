"""The atlas's faces: the PNG renderer (also served at /plots/KEY.png and drawn by the session),
``actstore atlas`` (table, Bonferroni summary, --out JSON, --plot, errors) and the summary line."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from actstore import Store
from actstore.api import create_app
from actstore.cli.app import app
from actstore.config import Settings
from actstore.plots import render_png, renderer_for
from actstore.plots.atlas import atlas_png
from actstore.service import Service
from actstore.service.atlas_summary import summarize
from actstore.service.requests import AtlasRequest
from actstore.session import Session

PNG = b"\x89PNG\r\n\x1a\n"
N = 40
MODELS = [("m0", 4, 8), ("m1", 5, 10), ("m2", 3, 6)]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("atlas") / "db"
    store = Store.open(path)
    ids = store.add_prompts("t", [f"text {i}" for i in range(N)])
    Z = np.random.default_rng(99).standard_normal((N, 4))
    for s, (key, L, d) in enumerate(MODELS):
        rng = np.random.default_rng(s)
        for layer in range(L):
            X = Z @ rng.standard_normal((4, d)) * (1 + layer) + 0.8 * rng.standard_normal((N, d))
            store.write_activations(
                key, layer, ids, X, n_layers=L, source=f"x/{key}", architecture="llama", dtype="float32"
            )
    return path


@pytest.fixture(scope="module")
def answer(store_path):
    return Service(Store.open(store_path), Settings(environ={})).atlas.run(
        AtlasRequest(models=("m0", "m1", "m2"), k=4, resize=5)
    )


def test_the_renderer_is_registered_and_draws_a_png(answer):
    assert renderer_for(answer) is atlas_png
    png = render_png(answer)
    assert png.startswith(PNG) and len(png) > 10_000


def test_summary_against_a_direct_bonferroni(answer):
    p = np.array([pair.diagonal.p_value for pair in answer.pairs], dtype=np.float64)
    on = np.array([pair.diagonal.on_diagonal_mean for pair in answer.pairs])
    off = np.array([pair.diagonal.off_diagonal_mean for pair in answer.pairs])
    adjusted = np.minimum(1.0, p * 3)
    s = summarize(answer)
    assert (s.models, s.pairs, s.tested) == (3, 3, 3)
    np.testing.assert_allclose(s.adjusted, adjusted, rtol=0, atol=1e-12)
    assert s.on_above_off == int((on > off).sum())
    assert s.significant == int(((on > off) & (adjusted < 0.05)).sum())
    assert s.line() == (
        f"atlas of 3 models (3 pairs): {s.on_above_off} pairs with on > off, {s.significant} "
        "significant (Bonferroni p < 0.05)"
    )


def test_summary_counts_untested_pairs_out():
    class D:
        def __init__(self, on, off, p):
            self.on_diagonal_mean, self.off_diagonal_mean, self.p_value = on, off, p

    class P:
        def __init__(self, d):
            self.diagonal = d

    class R:
        models = ["a", "b", "c"]
        pairs = (P(D(0.5, 0.2, 0.01)), P(None), P(D(0.1, 0.3, 0.02)))

    s = summarize(R())
    assert (s.tested, s.on_above_off, s.significant) == (2, 1, 1)
    assert s.adjusted[0] == 0.02 and np.isnan(s.adjusted[1]) and s.adjusted[2] == 0.04


def test_cli_prints_the_pairs_writes_json_and_plot(store_path, answer, tmp_path):
    out, plot = tmp_path / "atlas.json", tmp_path / "atlas.png"
    r = CliRunner().invoke(
        app,
        [
            "atlas",
            "--models",
            "m0,m1,m2",
            "--k",
            "4",
            "--resize",
            "5",
            "--store",
            str(store_path),
            "--out",
            str(out),
            "--plot",
            str(plot),
        ],
    )
    assert r.exit_code == 0, r.output
    for pair in answer.pairs:
        d = pair.diagonal
        row = re.search(rf"{pair.model_a}\s*│\s*{pair.model_b}\s*│([^\n]*)", r.output).group(1)
        cells = [c.strip() for c in row.split("│")]
        assert cells[:3] == [f"{pair.max_value:.4f}", f"{d.on_diagonal_mean:.4f}", f"{d.off_diagonal_mean:.4f}"]
    assert summarize(answer).line() in r.output
    data = json.loads(out.read_text())
    assert data["models"] == ["m0", "m1", "m2"] and "key" not in data
    np.testing.assert_allclose(data["meanResized"], answer.mean_resized, rtol=0, atol=1e-12)
    np.testing.assert_allclose(data["pairs"][1]["values"], answer.pairs[1].values, rtol=0, atol=1e-12)
    assert data["maxSimilarity"][0][0] is None
    assert plot.read_bytes().startswith(PNG)


def test_cli_all_is_every_stored_model(store_path):
    r = CliRunner().invoke(app, ["atlas", "--all", "--k", "4", "--store", str(store_path)])
    assert r.exit_code == 0, r.output
    assert "atlas of 3 models (3 pairs)" in r.output


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "error: give the models with --models a,b,c or every stored model with --all (one of the two)"),
        (
            ["--models", "m0,m1", "--all"],
            "error: give the models with --models a,b,c or every stored model with --all (one of the two)",
        ),
        (["--models", "m0"], "error: --models must be at least 2 model keys, got ['m0']"),
        (
            ["--models", "m0,m1", "--preprocess", "bogus"],
            "error: --preprocess must be one of NONE, STANDARDIZE, DROP_OUTLIER_DIMS, PLATONIC, got 'bogus'",
        ),
    ],
)
def test_cli_errors_are_one_line(store_path, args, message):
    r = CliRunner().invoke(app, ["atlas", "--store", str(store_path), *args])
    assert r.exit_code == 2
    assert r.output.strip() == message


def test_plot_url_serves_the_atlas_png_and_the_session_draws_it(store_path):
    service = Service(Store.open(store_path), Settings(environ={}))
    with TestClient(create_app(service)) as c:
        r = c.post("/graphql", json={"query": '{ atlas(models: ["m0", "m1"], k: 4) { models plotUrl } }'})
        body = r.json()
        assert "errors" not in body, body
        url = body["data"]["atlas"]["plotUrl"]
        png = c.get("/plots/" + url.rsplit("/plots/", 1)[1])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content.startswith(PNG)
    at = Session(str(store_path)).atlas(["m0", "m1"], k=4)
    assert at._repr_png_().startswith(PNG)


def test_the_progress_bar_counts_pairs():
    import io

    from rich.console import Console

    from actstore.cli.progress import ProgressBar

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    with ProgressBar(console, unit="pairs") as bar:
        bar.update("atlas of 3 models", 0, 3)
        bar.update("atlas of 3 models", 3, 3)
    out = buf.getvalue()
    assert "atlas of 3 models" in out and "3/3" in out and "pairs/s" in out and "prompts/s" not in out
