"""Two ingests with different keys and prompt files, started at the same moment in two
processes (issue 12: they shared 300 prompt ids in 2 of 7 rounds)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from actstore import Store
from actstore.ingest.runner import ModelRunner

try:
    from tests.tiny_models import tiny_model_dir
except ImportError:  # pragma: no cover - run from tests/
    from tiny_models import tiny_model_dir

ROUNDS = 2
PROMPTS = 24

INGESTER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from actstore.ingest.pipeline import ingest

    uri, model, key, go, *files = sys.argv[1:]
    Path(go + "." + key).touch()  # imported: ready
    while not Path(go).exists():
        time.sleep(0.005)
    for f in files:
        ingest(uri, model, Path(f).stem, prompts_file=f, key=key, device="cpu", batch_size=16)
    """
)


def test_two_ingest_processes_keep_their_prompts_apart(tmp_path):
    uri, go = tmp_path / "db", tmp_path / "go"
    models = {"ka": tiny_model_dir("gpt2", seed=0), "kb": tiny_model_dir("llama", seed=1)}
    files: dict[str, list[Path]] = {}
    texts: dict[str, list[str]] = {}
    for key in models:
        files[key] = []
        for r in range(ROUNDS):
            ds = f"{key}_r{r}"
            texts[ds] = [f"{key} round {r} prompt {i} " + "word " * (i % 5) for i in range(PROMPTS)]
            f = tmp_path / f"{ds}.jsonl"
            f.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[ds]), encoding="utf-8")
            files[key].append(f)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", INGESTER, str(uri), str(m), key, str(go), *map(str, files[key])],
            stderr=subprocess.PIPE,
            text=True,
        )
        for key, m in models.items()
    ]
    deadline = time.monotonic() + 60
    while not all(Path(f"{go}.{key}").exists() for key in models) and time.monotonic() < deadline:
        time.sleep(0.01)  # until both have imported torch and transformers
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-3000:]

    store = Store.open(uri)
    seen: set[int] = set()
    for key, model in models.items():
        runner = ModelRunner(str(model), device="cpu")
        for r in range(ROUNDS):
            ds = f"{key}_r{r}"
            ids = store.prompts.ids(ds)
            assert len(ids) == PROMPTS and not seen & set(ids.tolist())
            seen |= set(ids.tolist())
            records = store.prompts.get(ids)
            assert sorted(p.text for p in records) == sorted(texts[ds])
            got_ids, X = store.read_activations(key, 1, dataset=ds)
            np.testing.assert_array_equal(got_ids, ids)
            # the vector stored for each id is the model's vector for that id's text
            want = runner.encode([p.text for p in records[:8]], layers=[1])[1]
            np.testing.assert_allclose(X[:8], want, rtol=2e-2, atol=2e-2)
    assert len(store.prompts.all_ids()) == 2 * ROUNDS * PROMPTS
