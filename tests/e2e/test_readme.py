"""The README's examples run as written (issue 25, items 3, 6 and 7).

Extracted from README.md: every fenced ``python`` block (run as a script in an empty folder),
every query of a ``graphql`` block marked ``<!-- checked: ... -->`` and every ``actstore ...``
line of an ``sh`` block so marked (run against a small store named and shaped like the
offline demo's: ``smollm2-135m`` (30 blocks, grid:7 stored) and ``minilm-l6`` (6 blocks) over
``demo-text`` and ``demo-topic``, random activations with shared structure).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
ACTSTORE = Path(sys.executable).parent / "actstore"
FENCE = re.compile(r"(?P<before>[^\n]*)\n```(?P<lang>\w*)\n(?P<body>.*?)\n```", re.S)
SMOL_LAYERS, MINI_LAYERS = [0, 5, 10, 15, 19, 24, 29], [0, 1, 2, 3, 4, 5]


def blocks(lang: str, checked_only: bool) -> list[str]:
    """Bodies of the README's ``lang`` blocks (those preceded by a ``<!-- checked`` line)."""
    out = [
        m["body"]
        for m in FENCE.finditer(README.read_text())
        if m["lang"] == lang and (not checked_only or m["before"].startswith("<!-- checked"))
    ]
    assert out, f"no {lang} block{' marked <!-- checked -->' if checked_only else ''} in README.md"
    return out


def debiased_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """METHODS.md's debiased linear CKA, straight from the HSIC1 formula in float64."""
    n = len(X)

    def hsic1(K: np.ndarray, L: np.ndarray) -> float:
        K, L = K.copy(), L.copy()
        np.fill_diagonal(K, 0.0)
        np.fill_diagonal(L, 0.0)
        one = np.ones(n)
        return float(
            (
                np.trace(K @ L)
                + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
                - 2.0 / (n - 2) * (one @ K @ L @ one)
            )
            / (n * (n - 3))
        )

    K, L = X.astype(np.float64) @ X.T.astype(np.float64), Y.astype(np.float64) @ Y.T.astype(np.float64)
    return hsic1(K, L) / np.sqrt(hsic1(K, K) * hsic1(L, L))


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    """A folder holding ``demo-store``, shaped like the offline demo's store."""
    from actstore import Store

    root = tmp_path_factory.mktemp("readme")
    store = Store.open(root / "demo-store")
    rng = np.random.default_rng(0)
    text = store.add_prompts("demo-text", [f"a general text about scene {i}" for i in range(40)])
    topic = store.add_prompts(
        "demo-topic", [f"a news sentence on topic {i}" for i in range(12)], labels=[i % 4 for i in range(12)]
    )
    ids = text + topic
    Z = rng.standard_normal((len(ids), 6))
    Z[len(text) :] += 4.0  # the second corpus sits apart, as real corpora do
    for key, n_layers, layers, d in (("smollm2-135m", 30, SMOL_LAYERS, 24), ("minilm-l6", 6, MINI_LAYERS, 16)):
        for layer in layers:
            X = Z @ rng.standard_normal((6, d)) + 0.5 * rng.standard_normal((len(ids), d))
            store.write_activations(
                key, layer, ids, X, n_layers=n_layers, source=f"/models/{key}", architecture="llama", dtype="float32"
            )
    return root, store


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(
        {k: v for k, v in os.environ.items() if not k.startswith("ACTSTORE_")}, HF_HUB_OFFLINE="1", COLUMNS="200"
    )
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_python_blocks_run_as_written_and_print_debiased_cka(tmp_path):
    for i, code in enumerate(blocks("python", checked_only=False)):
        (tmp_path / f"block{i}.py").write_text(code)
        res = run([sys.executable, f"block{i}.py"], cwd=tmp_path)
        assert res.returncode == 0, (code, res.stderr)
    # the first block's printed CKA is the formula's value on what it stored
    from actstore import Store

    store = Store.open(tmp_path / "actstore-data")
    _, X = store.read_activations("model-a", 2)  # depth 0.5 of 4 blocks rounds up to layer 2
    _, Y = store.read_activations("model-b", 3)  # layer -1
    want = debiased_cka(X, Y)
    line = next(l for l in res.stdout.splitlines() if l.startswith("debiased CKA"))
    assert line == f"debiased CKA {want:.3f} over n = 40 prompts", (line, want)
    assert "[0, 2, 3] [0, 2, 3]" in res.stdout


def test_the_graphql_examples_name_one_dataset_and_answer_on_it(demo_store):
    import asyncio

    from actstore.api import execute
    from actstore.config import Settings
    from actstore.service import Service

    _, store = demo_store
    queries = [l for b in blocks("graphql", checked_only=True) for l in b.splitlines() if l.startswith("{")]
    assert len(queries) == 3, queries
    service = Service(store, Settings(environ={}))
    answers = []
    for q in queries:
        if "Matrix(" in q:  # item 3: the headline matrices name their dataset
            assert 'dataset: "demo-text"' in q, q
        out = asyncio.run(execute(service, q))
        assert not out.get("errors"), (q, out)
        answers.append(out["data"])
    assert len(answers[0]["nearestNeighbors"]) == 5
    cka = answers[1]["ckaMatrix"]
    assert cka["layersA"] == [0, 10, 19, 29] and cka["layersB"] == [0, 2, 3, 5]
    _, X = store.read_activations("smollm2-135m", cka["best"]["layerA"], dataset="demo-text")
    _, Y = store.read_activations("minilm-l6", cka["best"]["layerB"], dataset="demo-text")
    assert len(X) == 40  # demo-text only, not the pooled 52
    assert cka["best"]["value"] == pytest.approx(debiased_cka(X, Y), abs=1e-6)
    values = np.array(cka["values"])
    assert cka["best"]["value"] == values.max()
    assert cka["plotUrl"].startswith("/plots/") and cka["plotUrl"].endswith(".png")
    aff = answers[2]["affinityMatrix"]
    assert aff["best"]["value"] == np.array(aff["values"]).max()
    assert aff["nullMean"] == pytest.approx(10 / 39)  # k / (n - 1) on demo-text's 40 prompts


def test_the_shell_lines_run_as_written(demo_store):
    root, store = demo_store
    lines = [l.split("  #")[0].strip() for b in blocks("sh", checked_only=True) for l in b.splitlines()]
    assert lines[0].startswith(". .venv/bin/activate"), lines  # item 7: said before the first command
    commands = [l for l in lines if l.startswith("actstore ")]
    assert len(commands) >= 3, commands
    outputs = []
    for line in commands:
        res = run([str(ACTSTORE), *shlex.split(line)[1:]], cwd=root)
        assert res.returncode == 0, (line, res.stderr)
        outputs.append(res.stdout)
    assert "smollm2-135m" in outputs[0] and "minilm-l6" in outputs[0] and "demo-text" in outputs[0]
    models = json.loads(outputs[1])["data"]["models"]
    assert {m["key"]: m["nLayers"] for m in models} == {"smollm2-135m": 30, "minilm-l6": 6}
    answer = json.loads(outputs[2])["data"]["ckaMatrix"]
    png = Path(answer["plotUrl"])
    assert png.is_absolute() and png.parent == root / "plots" and png.read_bytes()[:4] == b"\x89PNG"
    _, X = store.read_activations("smollm2-135m", answer["best"]["layerA"], dataset="demo-text")
    _, Y = store.read_activations("minilm-l6", answer["best"]["layerB"], dataset="demo-text")
    assert answer["best"]["value"] == pytest.approx(debiased_cka(X, Y), abs=1e-6)


def test_the_readme_says_how_to_reach_actstore_before_the_first_command():
    text = README.read_text()
    first = text.index("actstore info")
    assert text.index(". .venv/bin/activate") < first
    assert "make demo PORT=" in text and "1,024 prompts" in text  # items 2 and 10 documented
