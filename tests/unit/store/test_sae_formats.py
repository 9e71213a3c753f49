"""SAE layouts as they are released: each test writes a small folder with the layout's exact
file names, keys, dtypes and shapes (d_in = 16, d_sae = 32), registers it into a tiny store
and compares the encoding with a direct float64 implementation of the producer's own encode
(1e-6). Also: the SAELens TopK trainer default (rescale_acts_by_decoder_norm), refusals of
transcoders, pickles and oversized files, the path rule for every layout, records written with
the old architecture name, the registry route's message without sae-lens; and, when sae-lens is
installed, the same folders through SAELens' own loaders and encode, and a registry entry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from actstore.analysis.sae import SaeParams, encode
from actstore.cli import app as cli_app
from actstore.errors import InvalidInput
from actstore.store.sae_formats import common as sae_common
from actstore.store.sae_formats import saelens_registry

D_IN, D_SAE, LAYER = 16, 32, 2
NOT_SAE = "is not a sparse autoencoder of one activation site and cannot be registered; supported:"


@pytest.fixture
def world(store, rng):
    """Model m: 4 layers, d_model 16, 40 prompts; returns (store, X [40, 16] float32)."""
    ids = store.add_prompts("p", [f"t{i}" for i in range(40)])
    X = (2 * rng.standard_normal((40, D_IN))).astype(np.float32)
    store.write_activations("m", LAYER, ids, X, n_layers=4, dtype="float32")
    return store, X


def encoded(store, sae_id: str, X: np.ndarray) -> np.ndarray:
    """The registered SAE's encoding of X, with every option its record carries (as the service)."""
    rec, w = store.saes.load(sae_id)
    c = rec.cfg
    p = SaeParams(
        W_enc=w["W_enc"],
        b_enc=w["b_enc"],
        W_dec=w["W_dec"],
        b_dec=w["b_dec"],
        architecture=rec.architecture,
        threshold=w.get("threshold"),
        k=c.get("k"),
        apply_b_dec_to_input=c["apply_b_dec_to_input"],
        normalize_activations=c["normalize_activations"],
        norm_scaling_factor=c.get("norm_scaling_factor"),
    )
    return encode(X, p, dense=True, precision="float64")


def f64(t) -> np.ndarray:
    """A tensor or array as float64, through its stored dtype (bf16 values are exact in float64)."""
    return (t.float().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)).astype(np.float64)


def reference(X, W_enc, b_enc, *, b_dec=None, arch="standard", threshold=None, k=None, scale=1.0, dec_norm=None):
    """Direct float64 SAE encode: x' = scale * x (- b_dec); pre = x' W_enc + b_enc (* ||W_dec row||);
    standard relu(pre); jumprelu relu(pre) * (pre > threshold); topk keeps the k largest of relu(pre)."""
    x = X.astype(np.float64) * scale
    if b_dec is not None:
        x = x - f64(b_dec)
    pre = x @ f64(W_enc) + f64(b_enc)
    if dec_norm is not None:
        pre = pre * dec_norm
    f = np.maximum(pre, 0)
    if arch == "jumprelu":
        f = f * (pre > f64(threshold))
    if arch == "topk":
        kth = -np.sort(-f, axis=1)[:, k - 1 : k]
        f = np.where(f >= kth, f, 0)
    return f


def weights(rng, dtype=torch.float32):
    """W_enc [16, 32], W_dec [32, 16], b_enc [32], b_dec [16], threshold [32] as torch tensors."""
    t = {
        "W_enc": rng.standard_normal((D_IN, D_SAE)),
        "W_dec": rng.standard_normal((D_SAE, D_IN)),
        "b_enc": 0.3 * rng.standard_normal(D_SAE) - 0.5,
        "b_dec": 0.3 * rng.standard_normal(D_IN),
        "threshold": np.abs(rng.standard_normal(D_SAE)) + 0.5,
    }
    return {k: torch.from_numpy(v).to(dtype) for k, v in t.items()}


def close(got, want):
    assert (want > 0).any() and (want == 0).any()  # neither all-dead nor dense: the test can fail
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------ writers (one per layout)
def write_gemma_scope(folder: Path, t) -> Path:
    folder.mkdir(parents=True)
    np.savez(folder / "params.npz", **{k: v.numpy() for k, v in t.items()})
    return folder


def write_gemma_scope_2(folder: Path, t, **cfg) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps(
            {
                "architecture": "jump_relu",
                "model_name": "gemma-v3-1b-pt",
                "hf_hook_point_in": f"model.layers.{LAYER}.output",
                **cfg,
            }
        )
    )
    save_file(
        {
            "w_enc": t["W_enc"],
            "w_dec": t["W_dec"],
            "b_enc": t["b_enc"],
            "b_dec": t["b_dec"],
            "threshold": t["threshold"],
        },
        str(folder / "params.safetensors"),
    )
    return folder


LLAMA_HP = {
    "d_model": D_IN,
    "d_sae": D_SAE,
    "hook_point_in": f"blocks.{LAYER}.hook_resid_post",
    "hook_point_out": f"blocks.{LAYER}.hook_resid_post",
    "jump_relu_threshold": 0.4,
    "act_fn": "jumprelu",
    "norm_activation": "dataset-wise",
    "dataset_average_activation_norm": {"in": 6.0, "out": 6.0},
    "expansion_factor": 2,
    "top_k": 8,
    "sparsity_include_decoder_norm": True,
}


def write_llama_scope(folder: Path, t, **hp) -> Path:
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "hyperparams.json").write_text(json.dumps({**LLAMA_HP, **hp}))
    save_file(
        {
            "encoder.weight": t["W_enc"].T.contiguous(),
            "encoder.bias": t["b_enc"],
            "decoder.weight": t["W_dec"].T.contiguous(),
            "decoder.bias": t["b_dec"],
        },
        str(folder / "checkpoints" / "final.safetensors"),
    )
    return folder


def write_sparsify(folder: Path, t, **cfg) -> Path:
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(
        json.dumps(
            {
                "activation": "topk",
                "expansion_factor": 32,
                "normalize_decoder": True,
                "num_latents": D_SAE,
                "k": 5,
                "multi_topk": False,
                "skip_connection": False,
                "transcode": False,
                "d_in": D_IN,
                **cfg,
            }
        )
    )
    save_file(
        {
            "encoder.weight": t["W_enc"].T.contiguous(),
            "encoder.bias": t["b_enc"],
            "W_dec": t["W_dec"],
            "b_dec": t["b_dec"],
        },
        str(folder / "sae.safetensors"),
    )
    return folder


def dl_state(cls: str, t) -> dict:
    """The state dict dictionary_learning's ``cls`` saves (its own key names and shapes)."""
    linear = {
        "encoder.weight": t["W_enc"].T.contiguous(),
        "encoder.bias": t["b_enc"],
        "decoder.weight": t["W_dec"].T.contiguous(),
    }
    if cls == "AutoEncoder":
        return {**linear, "bias": t["b_dec"]}
    if cls == "AutoEncoderNew":
        return {**linear, "decoder.bias": t["b_dec"]}
    if cls == "AutoEncoderTopK":
        return {**linear, "b_dec": t["b_dec"], "k": torch.tensor(6, dtype=torch.int), "threshold": torch.tensor(0.7)}
    if cls == "BatchTopKSAE":
        return {**linear, "b_dec": t["b_dec"], "k": torch.tensor(6, dtype=torch.int), "threshold": torch.tensor(0.7)}
    if cls == "MatryoshkaBatchTopKSAE":
        return {
            "W_enc": t["W_enc"],
            "b_enc": t["b_enc"],
            "W_dec": t["W_dec"],
            "b_dec": t["b_dec"],
            "k": torch.tensor(6, dtype=torch.int),
            "threshold": torch.tensor(0.7),
            "group_sizes": torch.tensor([8, 24]),
        }
    if cls == "JumpReluAutoEncoder":
        return {
            "W_enc": t["W_enc"],
            "b_enc": t["b_enc"],
            "W_dec": t["W_dec"],
            "b_dec": t["b_dec"],
            "threshold": t["threshold"],
        }
    raise AssertionError(cls)


def write_dictionary_learning(folder: Path, cls: str, state: dict, **trainer) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps(
            {
                "trainer": {
                    "trainer_class": "X",
                    "dict_class": cls,
                    "activation_dim": D_IN,
                    "dict_size": D_SAE,
                    "k": 6,
                    "layer": LAYER,
                    "lm_name": "EleutherAI/pythia-70m-deduped",
                    "submodule_name": f"resid_post_layer_{LAYER}",
                    **trainer,
                },
                "buffer": {"d_submodule": D_IN, "io": "out", "n_ctxs": 10, "ctx_len": 128},
            }
        )
    )
    torch.save(state, folder / "ae.pt")
    return folder


# ------------------------------------------------------------------- layouts
def test_gemma_scope_params_npz(world, rng, tmp_path):
    store, X = world
    t = weights(rng)
    folder = write_gemma_scope(
        tmp_path
        / "models--google--gemma-scope-2b-pt-res"
        / "snapshots"
        / "abc"
        / f"layer_{LAYER}"
        / "width_16k"
        / "average_l0_71",
        t,
    )
    r = store.saes.register("m", LAYER, folder)
    assert (r.architecture, r.d_in, r.d_sae, r.cfg["format"]) == ("jumprelu", 16, 32, "gemma_scope")
    assert r.cfg["hook_name"] == "blocks.2.hook_resid_post" and r.notes is None
    close(encoded(store, r.sae_id, X), reference(X, t["W_enc"], t["b_enc"], arch="jumprelu", threshold=t["threshold"]))
    # without a repo name in the path the hook is unknown: recorded as a note
    bare = write_gemma_scope(tmp_path / "plain", t)
    assert "does not say which hook" in store.saes.register("m", 3, bare).notes


def test_gemma_scope_2(world, rng, tmp_path):
    store, X = world
    t = weights(rng)
    r = store.saes.register("m", LAYER, write_gemma_scope_2(tmp_path / "resid_post" / "layer_2_width_16k_l0_small", t))
    assert (r.architecture, r.cfg["format"], r.cfg["hook_name"]) == (
        "jumprelu",
        "gemma_scope_2",
        "blocks.2.hook_resid_post",
    )
    assert r.cfg["model_name"] == "gemma-v3-1b-pt" and r.notes is None
    close(encoded(store, r.sae_id, X), reference(X, t["W_enc"], t["b_enc"], arch="jumprelu", threshold=t["threshold"]))


def test_llama_scope(world, rng, tmp_path):
    store, X = world
    t = weights(rng)
    r = store.saes.register("m", LAYER, write_llama_scope(tmp_path / "Llama3_1-8B-Base-L2R-8x", t))
    s = 4.0 / 6.0  # sqrt(d_model) / dataset_average_activation_norm.in
    assert (r.architecture, r.cfg["format"], r.cfg["normalize_activations"]) == (
        "jumprelu",
        "llama_scope",
        "expected_average_only_in",
    )
    assert r.cfg["norm_scaling_factor"] == pytest.approx(s, rel=1e-15) and r.notes is None
    want = reference(X, t["W_enc"], t["b_enc"], arch="jumprelu", threshold=np.full(D_SAE, 0.4 * s), scale=s)
    close(encoded(store, r.sae_id, X), want)


def test_sparsify_bf16(world, rng, tmp_path):
    store, X = world
    t = weights(rng, torch.bfloat16)
    r = store.saes.register("m", LAYER, write_sparsify(tmp_path / "EleutherAI" / "sae-x" / "layers.2", t))
    assert (r.architecture, r.cfg["k"], r.cfg["format"], r.cfg["hook_name"]) == (
        "topk",
        5,
        "sparsify",
        "blocks.2.hook_resid_post",
    )
    close(encoded(store, r.sae_id, X), reference(X, t["W_enc"], t["b_enc"], b_dec=t["b_dec"], arch="topk", k=5))


@pytest.mark.parametrize(
    "cls, arch, apply_b",
    [
        ("AutoEncoder", "standard", True),
        ("AutoEncoderNew", "standard", False),
        ("AutoEncoderTopK", "topk", True),
        ("BatchTopKSAE", "jumprelu", True),
        ("MatryoshkaBatchTopKSAE", "jumprelu", True),
        ("JumpReluAutoEncoder", "jumprelu", False),
    ],
)
def test_dictionary_learning(world, rng, tmp_path, cls, arch, apply_b):
    store, X = world
    t = weights(rng)
    r = store.saes.register("m", LAYER, write_dictionary_learning(tmp_path / "trainer_0", cls, dl_state(cls, t)))
    assert (r.architecture, r.cfg["format"], r.cfg["layout"], r.cfg["apply_b_dec_to_input"]) == (
        arch,
        "dictionary_learning",
        cls,
        apply_b,
    )
    thr = t["threshold"] if cls == "JumpReluAutoEncoder" else np.full(D_SAE, 0.7, np.float32)
    want = reference(X, t["W_enc"], t["b_enc"], b_dec=t["b_dec"] if apply_b else None, arch=arch, threshold=thr, k=6)
    close(encoded(store, r.sae_id, X), want)


@pytest.mark.parametrize("unit_rows", [True, False])
def test_saelens_topk_trainer_default_rescale(world, rng, tmp_path, unit_rows):
    """SAELens' TopK trainer saves rescale_acts_by_decoder_norm: true (decoder rows of norm 1):
    it loads; encoding multiplies pre-activations by the decoder row norms before the top k."""
    store, X = world
    t = weights(rng)
    if unit_rows:
        t["W_dec"] = t["W_dec"] / t["W_dec"].norm(dim=-1, keepdim=True)
    folder = tmp_path / "topk"
    folder.mkdir()
    (folder / "cfg.json").write_text(
        json.dumps(
            {
                "architecture": "topk",
                "d_in": D_IN,
                "d_sae": D_SAE,
                "k": 7,
                "rescale_acts_by_decoder_norm": True,
                "apply_b_dec_to_input": True,
                "normalize_activations": "none",
                "dtype": "float32",
                "reshape_activations": "none",
                "metadata": {"sae_lens_version": "6.54.12", "hook_name": "blocks.2.hook_resid_post", "model_name": "m"},
            }
        )
    )
    save_file({k: t[k] for k in ("W_enc", "W_dec", "b_enc", "b_dec")}, str(folder / "sae_weights.safetensors"))
    r = store.saes.register("m", LAYER, folder)
    assert r.architecture == "topk" and "rescale_acts_by_decoder_norm folded" in r.notes
    norms = np.linalg.norm(f64(t["W_dec"]), axis=1)
    want = reference(X, t["W_enc"], t["b_enc"], b_dec=t["b_dec"], arch="topk", k=7, dec_norm=norms)
    close(encoded(store, r.sae_id, X), want)
    _, w = store.saes.load(r.sae_id)
    np.testing.assert_allclose(np.linalg.norm(w["W_dec"].astype(np.float64), axis=1), 1.0, rtol=1e-6)


# ----------------------------------------------------------------- refusals
def test_transcoders_and_other_dictionaries_are_refused(world, rng, tmp_path):
    store, _ = world
    t = weights(rng)
    cases = [
        write_sparsify(tmp_path / "tc" / "layers.2", t, transcode=True),
        write_gemma_scope_2(tmp_path / "g2", t, hf_hook_point_out="model.layers.2.post_feedforward_layernorm.output"),
        write_llama_scope(tmp_path / "ls", t, hook_point_out="blocks.2.hook_mlp_out"),
        write_gemma_scope(tmp_path / "gemma-scope-2b-pt-transcoders" / "layer_2" / "width_16k" / "average_l0_9", t),
    ]
    saelens_tc = tmp_path / "sl_tc"
    saelens_tc.mkdir()
    (saelens_tc / "cfg.json").write_text(
        json.dumps({"architecture": "jumprelu_transcoder", "d_in": D_IN, "d_sae": D_SAE, "d_out": D_IN, "metadata": {}})
    )
    save_file({"W_enc": t["W_enc"]}, str(saelens_tc / "sae_weights.safetensors"))
    cases.append(saelens_tc)
    for folder in cases:
        with pytest.raises(InvalidInput, match=NOT_SAE) as e:
            store.saes.register("m", LAYER, folder)
        assert "Gemma Scope (params.npz)" in str(e.value) and "dictionary_learning (config.json + ae.pt)" in str(
            e.value
        )
    gated = write_dictionary_learning(tmp_path / "gated", "GatedAutoEncoder", {"encoder.weight": t["W_enc"].T})
    with pytest.raises(InvalidInput, match=r"gated SAEs \(GatedAutoEncoder\) are not supported yet; supported:"):
        store.saes.register("m", LAYER, gated)
    groupmax = write_sparsify(tmp_path / "gm" / "layers.2", t, activation="groupmax")
    with pytest.raises(InvalidInput, match="sparsify activation 'groupmax' is not supported; supported:"):
        store.saes.register("m", LAYER, groupmax)
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "cfg.json").write_text("{}")
    with pytest.raises(
        InvalidInput,
        match=r"is in no supported layout \(it holds: cfg.json\); SAELens needs "
        r"cfg.json \+ sae_weights.safetensors; EleutherAI sparsify needs",
    ):
        store.saes.register("m", LAYER, tmp_path / "odd")
    assert store.saes.list() == []


class NotATensor:
    """A pickled object that torch.load(weights_only=True) must refuse."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickles_are_never_unpickled(world, rng, tmp_path, capsys):
    store, _ = world
    t = weights(rng)
    folder = write_dictionary_learning(
        tmp_path / "evil", "AutoEncoder", {**dl_state("AutoEncoder", t), "x": NotATensor()}
    )
    with pytest.raises(
        InvalidInput,
        match=r"ae.pt in .* cannot be read with torch.load\(weights_only=True\) .*; "
        r"actstore never unpickles arbitrary objects",
    ):
        store.saes.register("m", LAYER, folder)
    assert "this must never run" not in capsys.readouterr().out


def test_sizes_beyond_memory_are_refused_before_reading(world, rng, tmp_path, monkeypatch):
    store, _ = world
    t = weights(rng)
    huge = tmp_path / "huge"
    huge.mkdir()
    (huge / "cfg.json").write_text(
        json.dumps({"architecture": "standard", "d_in": D_IN, "d_sae": 2**40, "metadata": {}})
    )
    (huge / "sae_weights.safetensors").write_bytes(b"not read")
    with pytest.raises(
        InvalidInput,
        match=r"cfg.json in .* declares tensors \(W_enc \[16, 1099511627776\], W_dec "
        r"\[1099511627776, 16\]\) that need about 196608.00 GiB of memory to read, "
        r"but this machine has .* available; refused before reading them",
    ):
        store.saes.register("m", LAYER, huge)
    # header sizes (no config): a params.npz whose arrays need more than is available
    npz = write_gemma_scope(tmp_path / "npz", t)
    monkeypatch.setattr(sae_common, "available_memory", lambda: 5_000)
    with pytest.raises(
        InvalidInput,
        match=r"params.npz in .* declares tensors \(W_enc \[16, 32\], .*\) that need "
        r"about 8832 bytes of memory to read, but this machine has 5000 bytes",
    ):
        store.saes.register("m", LAYER, npz)
    ae = write_dictionary_learning(tmp_path / "ae", "AutoEncoder", dl_state("AutoEncoder", t))
    with pytest.raises(InvalidInput, match="config.json in .* declares tensors"):
        store.saes.register("m", LAYER, ae)


def test_path_rule_and_d_in_for_every_layout(world, rng, tmp_path):
    store, _ = world
    root, out = tmp_path / "root", tmp_path / "out"
    writers = {
        "gemma_scope": write_gemma_scope,
        "gemma_scope_2": write_gemma_scope_2,
        "llama_scope": write_llama_scope,
        "sparsify": write_sparsify,
        "dictionary_learning": lambda f, t: write_dictionary_learning(f, "AutoEncoder", dl_state("AutoEncoder", t)),
    }
    for name, write in writers.items():
        t = weights(rng)  # different weights each: the same tensors would be the same SAE id
        inside, outside = write(root / name, t), write(out / name, t)
        with pytest.raises(InvalidInput, match="outside the allowed SAE root"):
            store.saes.register("m", LAYER, str(outside), root=root)
        # the weights file swapped for a symlink out of the root
        weight = next(p for p in sorted(inside.rglob("*")) if p.suffix in (".npz", ".safetensors", ".pt"))
        weight.unlink()
        weight.symlink_to(outside / weight.relative_to(inside))
        with pytest.raises(InvalidInput, match="symlinks out of ACTSTORE_SAE_ROOT are refused"):
            store.saes.register("m", LAYER, name, root=root)
        r = store.saes.register("m", LAYER, str(outside))  # no root: any readable folder
        assert r.cfg["format"] == name and r.d_in == D_IN
        # the copy in the store is self-contained
        assert (Path(store.uri) / r.weights_path).is_file() and r.source_path == str(outside.resolve())
    ids = store.add_prompts("q", ["a", "b"])
    store.write_activations("small", 0, ids, rng.standard_normal((2, 8)), n_layers=3, dtype="float32")
    with pytest.raises(InvalidInput, match="SAE d_in = 16 does not match d_model = 8 of model 'small'"):
        store.saes.register("small", 0, out / "llama_scope")


def test_old_records_named_relu_read_as_standard(world, rng, tmp_path):
    store, X = world
    t = weights(rng)
    r = store.saes.register(
        "m", LAYER, write_dictionary_learning(tmp_path / "a", "AutoEncoder", dl_state("AutoEncoder", t))
    )
    old_cfg = json.dumps({**r.cfg, "architecture": "relu"})
    store.tables.open("saes").update(where="true", values={"architecture": "relu", "cfg": old_cfg})
    old = store.saes.get(r.sae_id)
    assert old.architecture == "standard" and old.cfg["architecture"] == "standard"
    close(encoded(store, r.sae_id, X), reference(X, t["W_enc"], t["b_enc"], b_dec=t["b_dec"]))


def test_api_registers_every_layout_under_the_root(world, rng, tmp_path):
    from starlette.testclient import TestClient

    from actstore.api import create_app
    from actstore.config import Settings
    from actstore.service import Service

    store, _ = world
    root = tmp_path / "root"
    write_gemma_scope(root / "gemma-scope-2b-pt-res" / "layer_2" / "width_16k" / "average_l0_71", weights(rng))
    write_dictionary_learning(root / "dl", "AutoEncoderTopK", dl_state("AutoEncoderTopK", weights(rng)))
    mutation = 'mutation($p: String!) { registerSae(model: "m", layer: 2, path: $p) { architecture format dIn } }'
    with TestClient(create_app(Service(store, Settings(token="t", sae_root=str(root))))) as client:
        got = [
            client.post(
                "/graphql", json={"query": mutation, "variables": {"p": p}}, headers={"Authorization": "Bearer t"}
            ).json()
            for p in ("gemma-scope-2b-pt-res/layer_2/width_16k/average_l0_71", "dl", "../")
        ]
        assert [g["data"]["registerSae"] for g in got[:2]] == [
            {"architecture": "jumprelu", "format": "gemma_scope", "dIn": 16},
            {"architecture": "topk", "format": "dictionary_learning", "dIn": 16},
        ]
        assert "outside the allowed SAE root" in got[2]["errors"][0]["message"]
        listed = client.post("/graphql", json={"query": '{ saes(model: "m") { format } }'}).json()["data"]["saes"]
        assert sorted(x["format"] for x in listed) == ["dictionary_learning", "gemma_scope"]


def test_cli_release_route_without_sae_lens(world, monkeypatch):
    store, _ = world
    monkeypatch.setattr(saelens_registry, "registry_available", lambda: False)
    runner = CliRunner()
    out = runner.invoke(
        cli_app,
        [
            "sae",
            "add",
            "--model",
            "m",
            "--layer",
            "2",
            "--release",
            "gemma-scope-2b-pt-res",
            "--sae-id",
            "layer_2/width_16k/average_l0_71",
            "--store",
            store.uri,
        ],
    )
    assert out.exit_code == 2
    assert (
        "the sae-lens package is not installed (pip install sae-lens); without it these registry settings "
        "cannot be seen: norm_scaling_factor, config_overrides (e.g. normalize_activations)"
        in " ".join(out.output.split())
    )
    both = runner.invoke(
        cli_app,
        [
            "sae",
            "add",
            "--model",
            "m",
            "--layer",
            "2",
            "--path",
            "x",
            "--release",
            "r",
            "--sae-id",
            "i",
            "--store",
            store.uri,
        ],
    )
    assert both.exit_code == 2 and "give either --path FOLDER or --release R --sae-id ID" in both.output


# ------------------------------------------------- against SAELens itself (needs sae-lens)
# SAELens' Hub loaders run on local files: ``hf_hub_download`` (and the header-shape probe of
# the Gemma Scope 2 loader) are replaced by a lookup in a folder laid out as the Hub repo, so
# nothing touches the network. Not compared: sparsify (SAELens 6.54's sparsify loader
# transposes W_dec to [d_in, d_sae] and cannot load a folder written by sparsify itself) and
# Gemma Scope 1 (SAELens takes d_in from the repo name: 2304 for Gemma-2 2B, too large here);
# both are checked against the formulas above.
@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """A folder standing in for the Hugging Face Hub: <hub>/<repo_id>/<path in the repo>
    (skips the test without sae-lens)."""
    loaders = pytest.importorskip("sae_lens.loading.pretrained_sae_loaders")
    from huggingface_hub.utils import EntryNotFoundError

    base = tmp_path / "hub"

    def download(repo_id, filename, subfolder=None, force_download=False, **_):
        p = base / repo_id / (f"{subfolder}/{filename}" if subfolder else filename)
        if not p.is_file():
            raise EntryNotFoundError(f"{repo_id}: {filename} is not in the test hub")
        return str(p)

    def shapes(repo_id, filename):
        with safe_open(str(base / repo_id / filename), framework="pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118

    monkeypatch.setattr(loaders, "hf_hub_download", download)
    monkeypatch.setattr(loaders, "get_safetensors_tensor_shapes", shapes)
    return base


def saelens_encode(conversion: str, repo_id: str, folder: str, X: np.ndarray, norm_scaling_factor=None) -> np.ndarray:
    """SAELens' encode of X for the SAE its ``conversion`` loader reads (as from_pretrained builds it)."""
    from sae_lens import SAE
    from sae_lens.loading import pretrained_sae_loaders as loaders

    cfg, state, _ = loaders.NAMED_PRETRAINED_SAE_LOADERS[conversion](
        repo_id=repo_id, folder_name=folder, device="cpu", cfg_overrides={"device": "cpu", "dtype": "float32"}
    )
    cfg = loaders.handle_config_defaulting(cfg)
    sae_cfg = SAE.get_sae_config_class_for_architecture(cfg["architecture"]).from_dict(cfg)
    sae = SAE.get_sae_class_for_architecture(sae_cfg.architecture())(sae_cfg)
    sae.process_state_dict_for_loading(state)
    sae.load_state_dict(state, assign=True)
    if norm_scaling_factor is not None:
        sae.fold_activation_norm_scaling_factor(norm_scaling_factor)
    with torch.no_grad():
        return sae.encode(torch.from_numpy(X)).double().numpy()


def agree(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert (theirs > 0).any() and (theirs == 0).any()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_saelens_topk_rescale_folder(world, rng, tmp_path):
    SAE = pytest.importorskip("sae_lens").SAE

    store, X = world
    t = weights(rng)
    folder = tmp_path / "topk"
    folder.mkdir()
    (folder / "cfg.json").write_text(
        json.dumps(
            {
                "architecture": "topk",
                "d_in": D_IN,
                "d_sae": D_SAE,
                "k": 7,
                "rescale_acts_by_decoder_norm": True,
                "apply_b_dec_to_input": True,
                "normalize_activations": "none",
                "dtype": "float32",
                "device": "cpu",
                "reshape_activations": "none",
                "metadata": {"sae_lens_version": "6.54.12", "hook_name": "blocks.2.hook_resid_post", "model_name": "m"},
            }
        )
    )
    save_file({k: t[k] for k in ("W_enc", "W_dec", "b_enc", "b_dec")}, str(folder / "sae_weights.safetensors"))
    r = store.saes.register("m", LAYER, folder)
    with torch.no_grad():
        theirs = SAE.load_from_disk(folder).encode(torch.from_numpy(X)).double().numpy()
    agree(encoded(store, r.sae_id, X), theirs)


def test_llama_scope_against_saelens(world, rng, hub):
    store, X = world
    t = weights(rng)
    repo, sub = "fnlp/Llama3_1-8B-Base-LXR-8x", "Llama3_1-8B-Base-L2R-8x"
    folder = write_llama_scope(hub / repo / sub, t)
    r = store.saes.register("m", LAYER, folder)
    # the registry's norm_scaling_factor for Llama Scope is sqrt(d_model) / dataset_average_activation_norm.in
    agree(encoded(store, r.sae_id, X), saelens_encode("llama_scope", repo, sub, X, norm_scaling_factor=4.0 / 6.0))


def test_gemma_scope_2_against_saelens(world, rng, hub):
    store, X = world
    t = weights(rng)
    repo, sub = "google/gemma-scope-2-1b-pt", "resid_post/layer_2_width_16k_l0_small"
    folder = write_gemma_scope_2(hub / repo / sub, t)
    r = store.saes.register("m", LAYER, folder)
    agree(encoded(store, r.sae_id, X), saelens_encode("gemma_3", repo, sub, X))


@pytest.mark.parametrize("cls", ["AutoEncoder", "AutoEncoderTopK", "BatchTopKSAE", "JumpReluAutoEncoder"])
def test_dictionary_learning_against_saelens(world, rng, hub, cls):
    store, X = world
    t = weights(rng)
    repo, sub = "canrager/lm_sae", f"pythia70m/resid_post_layer_2/trainer_{cls}"
    folder = write_dictionary_learning(hub / repo / sub, cls, dl_state(cls, t))
    r = store.saes.register("m", LAYER, folder)
    agree(encoded(store, r.sae_id, X), saelens_encode("dictionary_learning_1", repo, sub, X))


@pytest.mark.filterwarnings("ignore::UserWarning")  # SAELens: "non-empty model_from_pretrained_kwargs"
def test_registry_only_norm_scaling_factor(world, rng, hub):
    """gpt2-small-mlp-tm keeps norm_scaling_factor only in SAELens' registry: a folder cannot
    show it (a note says so); --release/--sae-id applies it, as SAE.from_pretrained does."""
    from sae_lens import SAE

    store, X = world
    t = weights(rng)
    release, sae_id = "gpt2-small-mlp-tm", "blocks.0.hook_mlp_out"
    folder = hub / "tommmcgrath/gpt2-small-mlp-out-saes" / "sae_group_gpt2_blocks.0.hook_mlp_out_24576:v1"
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(
        json.dumps(
            {
                "architecture": "standard",
                "d_in": D_IN,
                "d_sae": D_SAE,
                "hook_point": "blocks.0.hook_mlp_out",
                "hook_point_layer": 0,
                "activation_fn_str": "relu",
                "apply_b_dec_to_input": True,
                "normalize_activations": "expected_average_only_in",
                "model_name": "gpt2-small",
                "dtype": "float32",
                "sae_lens_training_version": "3.13.0",
                "context_size": 128,
                "dataset_path": "x",
                "prepend_bos": True,
            }
        )
    )
    save_file({k: t[k] for k in ("W_enc", "W_dec", "b_enc", "b_dec")}, str(folder / "sae_weights.safetensors"))
    plain = store.saes.register("m", 1, folder)
    assert plain.cfg["norm_scaling_factor"] is None and "only in SAELens' registry" in plain.notes
    out = CliRunner().invoke(
        cli_app,
        ["sae", "add", "--model", "m", "--layer", "2", "--release", release, "--sae-id", sae_id, "--store", store.uri],
    )
    assert out.exit_code == 0, out.output
    assert "(saelens_registry)" in out.output
    r = next(s for s in store.saes.list("m") if s.layer == LAYER)
    assert r.cfg["norm_scaling_factor"] == 1.049317316132615 and r.source_path == f"saelens:{release}/{sae_id}"
    ours = encoded(store, r.sae_id, X)
    # x' = s x, then - b_dec: SAELens folds s into W_enc (and b_dec / s), which encodes the same
    np.testing.assert_allclose(
        ours, reference(X, t["W_enc"], t["b_enc"], b_dec=t["b_dec"], scale=1.049317316132615), rtol=1e-6, atol=1e-6
    )
    theirs = SAE.from_pretrained(release, sae_id, device="cpu")
    with torch.no_grad():
        agree(ours, theirs.encode(torch.from_numpy(X)).double().numpy())
