"""Two different models under one key (issue 12): a fingerprint of weights, tokenizer and
extraction spec is recorded per model, and a write with another one is refused."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from actstore import Store
from actstore.errors import Conflict
from actstore.ingest.fingerprint import folder_digests
from actstore.ingest.importer import import_activations
from actstore.ingest.pipeline import ingest
from actstore.store.models import MODELS, MODELS_SCHEMA

try:
    from tests.tiny_models import tiny_model_dir
except ImportError:  # pragma: no cover - run from tests/
    from tiny_models import tiny_model_dir

FP = r"[0-9a-f]{12}-[0-9a-f]{8}-[0-9a-f]{8}"


def _jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def _same_name(tmp_path: Path, where: str, seed: int) -> Path:
    """A tiny GPT-2 (weights from ``seed``) in ``tmp_path/where/tiny-gpt2``."""
    dest = tmp_path / where / "tiny-gpt2"
    shutil.copytree(tiny_model_dir("gpt2", seed=seed), dest)
    return dest


def _snapshot(store: Store) -> tuple:
    models = [(m.key, m.source, m.fingerprint, m.layers) for m in store.models.list()]
    tables = {n: store.tables.version(n) for n in store.tables.names()}
    return models, [(d.name, d.prompt_count) for d in store.prompts.datasets()], tables


def test_a_second_model_with_the_same_folder_name_is_refused_and_stores_nothing(tmp_path):
    a, b = _same_name(tmp_path, "a", seed=0), _same_name(tmp_path, "b", seed=1)
    assert folder_digests(a)[0] != folder_digests(b)[0]  # different weights
    assert folder_digests(a)[1] == folder_digests(b)[1]  # same tokenizer
    store = Store.open(tmp_path / "db")
    first = ingest(store, str(a), "d", prompts_file=_jsonl(tmp_path / "p.jsonl", ["one", "two"]), device="cpu")
    assert first.model_key == "tiny-gpt2"
    fp_a = store.models.get("tiny-gpt2").fingerprint
    assert re.fullmatch(FP, fp_a)
    before = _snapshot(store)

    with pytest.raises(Conflict) as err:
        ingest(store, str(b), "other", prompts_file=_jsonl(tmp_path / "q.jsonl", ["three"]), device="cpu")
    after = _snapshot(store)
    assert after == before  # no prompt, no row, no table version changed

    fp_b = (
        ingest(store, str(b), "other", prompts_file=tmp_path / "q.jsonl", key="tiny-gpt2-b", device="cpu")
        and store.models.get("tiny-gpt2-b").fingerprint
    )
    assert re.fullmatch(FP, fp_b) and fp_b[12:] == fp_a[12:] and fp_b[:12] != fp_a[:12]
    assert str(err.value) == (
        f"model key 'tiny-gpt2' holds activations of {a} (fingerprint {fp_a}); {b} has fingerprint "
        f"{fp_b} (different weights): ingest it under another key"
    )


def test_the_same_model_from_another_folder_is_accepted_but_another_max_tokens_is_not(tmp_path):
    a = _same_name(tmp_path, "a", seed=0)
    moved = _same_name(tmp_path, "moved", seed=0)
    store = Store.open(tmp_path / "db")
    ingest(store, str(a), "d", prompts_file=_jsonl(tmp_path / "p.jsonl", ["one", "two"]), device="cpu")
    fp = store.models.get("tiny-gpt2").fingerprint
    done = ingest(store, str(moved), "e", prompts_file=_jsonl(tmp_path / "q.jsonl", ["three"]), device="cpu")
    assert (done.encoded, store.models.get("tiny-gpt2").fingerprint) == (1, fp)
    with pytest.raises(Conflict, match=r"\(different extraction spec\): ingest it under another key"):
        ingest(store, str(a), "f", prompts_file=_jsonl(tmp_path / "r.jsonl", ["four"]), max_tokens=8, device="cpu")
    assert [d.name for d in store.prompts.datasets()] == ["d", "e"]


def test_store_writes_check_the_fingerprint(tmp_path):
    store = Store.open(tmp_path / "db")
    ids = store.add_prompts("d", ["a", "b"])
    X = np.ones((2, 4), np.float32)
    store.write_activations("m", 0, ids, X, n_layers=2, source="/models/m", fingerprint="f1")
    assert store.models.get("m").fingerprint == "f1"
    store.write_activations("m", 1, ids, X, source="/elsewhere/m", fingerprint="f1")  # same model, moved
    with pytest.raises(
        Conflict,
        match=r"^model key 'm' holds activations of /models/m \(fingerprint f1\); "
        r"/other/m has fingerprint f2: ingest it under another key$",
    ):
        store.write_activations("m", 0, ids, X, source="/other/m", fingerprint="f2")
    with pytest.raises(
        Conflict,
        match=r"^model key 'm' holds activations of /models/m \(fingerprint f1\); a write "
        r"from /other/m without a fingerprint cannot be checked against it",
    ):
        store.write_activations("m", 0, ids, X, source="/other/m")
    store.write_activations("m", 0, ids, 2 * X, source="/models/m")  # an import from the same source
    np.testing.assert_array_equal(store.read_activations("m", 0)[1], 2 * X)

    # a model stored without a fingerprint adopts the first one written from its own source
    store.write_activations("legacy", 0, ids, X, n_layers=1, source="/models/legacy")
    assert store.models.get("legacy").fingerprint is None
    with pytest.raises(
        Conflict,
        match=r"^model key 'legacy' holds activations of /models/legacy \(stored without a "
        r"fingerprint\); /x/legacy has fingerprint f9 and cannot be shown",
    ):
        store.write_activations("legacy", 0, ids, X, source="/x/legacy", fingerprint="f9")
    store.write_activations("legacy", 0, ids, X, source="/models/legacy", fingerprint="f3")
    assert Store.open(tmp_path / "db").models.get("legacy").fingerprint == "f3"


def test_a_models_table_without_the_fingerprint_column_keeps_working(tmp_path):
    store = Store.open(tmp_path / "db")
    ids = store.add_prompts("d", ["a", "b"])
    old_schema = pa.schema([f for f in MODELS_SCHEMA if f.name != "fingerprint"])
    row = {
        "key": "old",
        "source": "/models/old",
        "revision": None,
        "architecture": "gpt2",
        "n_layers": 1,
        "d_model": 4,
        "dtype": "float16",
        "site": "resid_post",
        "token": "last_non_padding",
        "created_at": None,
    }
    store.tables.add(MODELS, pa.Table.from_pylist([row], schema=old_schema), old_schema)
    assert store.models.get("old").fingerprint is None
    store.write_activations("new", 0, ids, np.ones((2, 4)), n_layers=1, source="/models/new", fingerprint="f1")
    reopened = Store.open(tmp_path / "db")
    assert [(m.key, m.fingerprint) for m in reopened.models.list()] == [("new", "f1"), ("old", None)]


def test_import_onto_an_ingested_model_needs_its_source(tmp_path):
    a = _same_name(tmp_path, "a", seed=0)
    store = Store.open(tmp_path / "db")
    ingest(store, str(a), "d", prompts_file=_jsonl(tmp_path / "p.jsonl", ["one", "two"]), device="cpu")
    arr = tmp_path / "acts.npy"
    np.save(arr, np.ones((1, 2, 32), np.float32))
    prompts = _jsonl(tmp_path / "q.jsonl", ["three"])
    before = _snapshot(store)
    with pytest.raises(Conflict, match=r"a write from .*acts\.npy without a fingerprint cannot be checked against it"):
        import_activations(store, model_key="tiny-gpt2", dataset="imp", prompts_file=prompts, arrays=[arr])
    assert _snapshot(store) == before
    done = import_activations(
        store, model_key="tiny-gpt2", dataset="imp", prompts_file=prompts, arrays=[arr], source=str(a)
    )
    assert done.layers == (0, 1) and store.read_activations("tiny-gpt2", 0, dataset="imp")[1].shape == (1, 32)


def test_a_model_without_files_at_hand_is_fingerprinted_from_its_tensors(tmp_path):
    from actstore.ingest.fingerprint import model_fingerprint
    from actstore.ingest.runner import ModelRunner

    prints = []
    for seed in (0, 0, 1):
        runner = ModelRunner(str(tiny_model_dir("gpt2", seed=seed)), device="cpu")
        from_files = model_fingerprint(runner, 512)
        runner.source = "nobody/not-in-the-cache"  # a hub id whose files cannot be found
        prints.append(model_fingerprint(runner, 512))
        assert re.fullmatch(FP, prints[-1]) and prints[-1] != from_files
    assert prints[0] == prints[1] != prints[2]


def test_a_key_registered_twice_at_once_is_the_earliest_registration(tmp_path):
    from datetime import datetime

    store = Store.open(tmp_path / "db")
    base = {
        "revision": None,
        "architecture": "gpt2",
        "n_layers": 1,
        "d_model": 4,
        "dtype": "float16",
        "site": "resid_post",
        "token": "last_non_padding",
    }
    rows = [
        dict(base, key="k", source="/early/k", fingerprint="f-early", created_at=datetime(2026, 1, 1, tzinfo=UTC)),
        dict(base, key="k", source="/late/k", fingerprint="f-late", created_at=datetime(2026, 1, 2, tzinfo=UTC)),
    ]
    for row in rows:  # two commits: the later registration is read last
        store.tables.add(MODELS, pa.Table.from_pylist([row], schema=MODELS_SCHEMA), MODELS_SCHEMA)
    assert (store.models.get("k").source, store.models.get("k").fingerprint) == ("/early/k", "f-early")
    store.tables.optimize(MODELS)
    assert Store.open(tmp_path / "db").models.get("k").source == "/early/k"
