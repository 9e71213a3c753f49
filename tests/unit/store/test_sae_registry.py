"""SAE registry, service and API: SAELens folders in both layouts load and encode, path rules
(.., absolute paths elsewhere, symlinks out of the root), d_in and architecture checks, and the
GraphQL / CLI surface end to end on planted SAEs whose B features are a permutation of A's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from starlette.testclient import TestClient
from typer.testing import CliRunner

from actstore import Store
from actstore.analysis.sae import SaeParams, encode
from actstore.api import create_app
from actstore.cli import app as cli_app
from actstore.config import Settings
from actstore.errors import InvalidInput, NotFound
from actstore.service import Service

TOKEN = "tok"
N = 240
D_A, D_B, D_SAE = 16, 24, 192


def write_saelens(
    folder: Path,
    tensors: dict[str, np.ndarray],
    *,
    layout: str,
    architecture: str = "relu",
    d_in: int,
    d_sae: int,
    k: int | None = None,
    apply_b: bool = True,
    normalize: str | bool = "none",
    hook_layer: int = 2,
    dtype=torch.float32,
    **extra,
) -> Path:
    """A SAELens folder: v6 (nested metadata, no hook_layer) or flat (pre-6 keys)."""
    folder.mkdir(parents=True, exist_ok=True)
    hook = f"blocks.{hook_layer}.hook_resid_post"
    if layout == "v6":
        cfg = {
            "architecture": {"relu": "standard"}.get(architecture, architecture),
            "d_in": d_in,
            "d_sae": d_sae,
            "dtype": "float32",
            "device": "cpu",
            "apply_b_dec_to_input": apply_b,
            "normalize_activations": normalize,
            "reshape_activations": "none",
            "metadata": {
                "model_name": "m",
                "hook_name": hook,
                "sae_lens_version": "6.5.0",
                "prepend_bos": True,
                "context_size": 128,
            },
        }
        if k is not None:
            cfg["k"] = k
    else:
        cfg = {
            "architecture": "standard" if architecture in ("relu", "standard", "topk") else architecture,
            "d_in": d_in,
            "d_sae": d_sae,
            "hook_point": hook,
            "hook_layer": hook_layer,
            "activation_fn_str": "topk" if architecture == "topk" else "relu",
            "activation_fn_kwargs": {"k": k} if k is not None else {},
            "apply_b_dec_to_input": apply_b,
            "normalize_activations": normalize,
            "model_name": "m",
            "sae_lens_training_version": "3.5.0",
            "dtype": "float32",
        }
    cfg.update(extra)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(
        {k_: torch.from_numpy(np.ascontiguousarray(v)).to(dtype) for k_, v in tensors.items()},
        str(folder / "sae_weights.safetensors"),
    )
    return folder


def _random_tensors(rng, d_in, d_sae, threshold=False):
    t = {
        "W_enc": rng.standard_normal((d_in, d_sae)).astype(np.float32),
        "W_dec": rng.standard_normal((d_sae, d_in)).astype(np.float32),
        "b_enc": (0.2 * rng.standard_normal(d_sae)).astype(np.float32),
        "b_dec": (0.2 * rng.standard_normal(d_in)).astype(np.float32),
    }
    if threshold:
        t["threshold"] = np.abs(rng.standard_normal(d_sae)).astype(np.float32)
    return t


@pytest.fixture
def world(tmp_path):
    """Model a (4 layers, d=16) and b (3 layers, d=24, a noisy orthonormal image of a) over N
    shared prompts; SAE roots with planted SAEs: B = A transported through M, features permuted."""
    rng = np.random.default_rng(7)
    store = Store.open(tmp_path / "db")
    words = ["happy", "sad", "stock", "river", "music", "table"]
    texts = [f"prompt {i} about {words[i % 6]}" for i in range(N)]
    ids = store.add_prompts("ds", texts)
    M = np.linalg.qr(rng.standard_normal((D_B, D_A)))[0].T  # [16, 24], orthonormal rows
    XA = {l: rng.standard_normal((N, D_A)) * 2 for l in range(4)}
    XB = {l: XA[l + 1] @ M + 0.05 * rng.standard_normal((N, D_B)) for l in range(3)}
    store.activations.write("a", XA, ids, n_layers=4, dtype="float32")
    store.activations.write("b", XB, ids, n_layers=3, dtype="float32")
    root = tmp_path / "saes"
    perm = rng.permutation(D_SAE)
    plan = {}
    for l in range(4):
        tA = _random_tensors(rng, D_A, D_SAE)
        tA["b_enc"] -= 1.5  # sparse-ish
        write_saelens(root / f"a_L{l}", tA, layout="v6", d_in=D_A, d_sae=D_SAE, hook_layer=l)
        if l >= 1:
            tB = {
                "W_enc": np.empty((D_B, D_SAE), np.float32),
                "b_enc": np.empty(D_SAE, np.float32),
                "W_dec": np.empty((D_SAE, D_B), np.float32),
                "b_dec": (tA["b_dec"] @ M).astype(np.float32),
            }
            tB["W_enc"][:, perm] = M.T @ tA["W_enc"]
            tB["b_enc"][perm] = tA["b_enc"]
            tB["W_dec"][perm] = tA["W_dec"] @ M
            write_saelens(root / f"b_L{l - 1}", tB, layout="flat", d_in=D_B, d_sae=D_SAE, hook_layer=l - 1)
        plan[l] = tA
    return store, root, perm, plan


# ------------------------------------------------------------------ registry
@pytest.mark.parametrize("layout", ["v6", "flat"])
@pytest.mark.parametrize("arch", ["standard", "jumprelu", "topk"])
def test_saelens_folders_load_and_encode(tmp_path, store, rng, layout, arch):
    ids = store.add_prompts("p", [f"t{i}" for i in range(20)])
    X = rng.standard_normal((20, 8)).astype(np.float32)
    store.write_activations("m", 1, ids, X, n_layers=3, dtype="float32")
    t = _random_tensors(rng, 8, 30, threshold=arch == "jumprelu")
    folder = write_saelens(
        tmp_path / "f",
        t,
        layout=layout,
        architecture=arch,
        d_in=8,
        d_sae=30,
        k=4 if arch == "topk" else None,
        apply_b=layout == "flat",
        hook_layer=1,
        dtype=torch.bfloat16 if arch == "standard" else torch.float32,
    )
    r = store.saes.register("m", 1, folder)
    assert (r.model_key, r.layer, r.d_in, r.d_sae, r.architecture) == ("m", 1, 8, 30, arch)
    assert r.cfg["layout"] == layout and r.cfg["hook_layer"] == 1 and r.notes is None
    assert r.weights_path.startswith("_saes/") and (Path(store.uri) / r.weights_path).is_file()
    assert store.saes.register("m", 1, folder).sae_id == r.sae_id  # idempotent
    assert [s.sae_id for s in store.saes.list("m")] == [r.sae_id]
    # the store's copy is self-contained: remove the source folder, encode from the store
    for f in folder.iterdir():
        f.unlink()
    rec, w = store.saes.load(r.sae_id)
    p = SaeParams(
        W_enc=w["W_enc"],
        b_enc=w["b_enc"],
        W_dec=w["W_dec"],
        b_dec=w["b_dec"],
        architecture=arch,
        threshold=w.get("threshold"),
        k=rec.cfg["k"],
        apply_b_dec_to_input=rec.cfg["apply_b_dec_to_input"],
    )
    cast = (
        (lambda a: torch.from_numpy(a).to(torch.bfloat16).float().numpy().astype(np.float64))
        if arch == "standard"
        else (lambda a: a.astype(np.float64))
    )
    x = X.astype(np.float64) - (cast(t["b_dec"]) if layout == "flat" else 0)
    pre = x @ cast(t["W_enc"]) + cast(t["b_enc"])
    want = np.maximum(pre, 0)
    if arch == "jumprelu":
        want = pre * (pre > t["threshold"])
    if arch == "topk":
        kth = -np.sort(-want, axis=1)[:, 3:4]
        want = np.where(want >= kth, want, 0)
    np.testing.assert_allclose(encode(X, p).toarray(), want, rtol=1e-4, atol=1e-4)


def test_config_details(tmp_path, store, rng):
    ids = store.add_prompts("p", ["x", "y", "z"])
    store.write_activations("m", 0, ids, rng.standard_normal((3, 8)), n_layers=4, dtype="float32")
    t = _random_tensors(rng, 8, 10)
    r = store.saes.register(
        "m", -1, write_saelens(tmp_path / "n", t, layout="flat", d_in=8, d_sae=10, normalize=True, hook_layer=1)
    )
    assert r.layer == 3 and r.cfg["normalize_activations"] == "expected_average_only_in"
    assert "hook layer 1" in r.notes and "no scaling" in r.notes
    v6 = write_saelens(tmp_path / "v", t, layout="v6", d_in=8, d_sae=10, normalize="constant_norm_rescale")
    assert "hook_layer" not in json.loads((v6 / "cfg.json").read_text())
    assert store.saes.register("m", 2, v6).cfg["normalize_activations"] == "constant_norm_rescale"


def test_refusals(tmp_path, store, rng):
    ids = store.add_prompts("p", ["x", "y", "z"])
    store.write_activations("m", 0, ids, rng.standard_normal((3, 8)), n_layers=2, dtype="float32")
    t = _random_tensors(rng, 8, 10)
    gated = {
        "W_enc": t["W_enc"],
        "W_dec": t["W_dec"],
        "b_dec": t["b_dec"],
        "b_gate": t["b_enc"].copy(),
        "r_mag": t["b_enc"].copy(),
        "b_mag": t["b_enc"].copy(),
    }
    cases = [
        (
            write_saelens(tmp_path / "g", gated, layout="v6", architecture="gated", d_in=8, d_sae=10),
            "gated SAEs .* are not supported yet; supported: sparse autoencoders with architecture standard "
            "\\(ReLU\\), jumprelu or topk, in these layouts: SAELens \\(cfg.json \\+ sae_weights.safetensors\\)",
        ),
        (
            write_saelens(tmp_path / "w", t, layout="v6", architecture="weird", d_in=8, d_sae=10),
            "architecture 'weird' are not supported yet",
        ),
        (
            write_saelens(tmp_path / "d", _random_tensors(rng, 6, 10), layout="v6", d_in=6, d_sae=10),
            "SAE d_in = 6 does not match d_model = 8 of model 'm'",
        ),
        (
            write_saelens(tmp_path / "k", t, layout="v6", architecture="topk", d_in=8, d_sae=10),
            "a topk SAE needs k in 1..d_sae=10",
        ),
        (write_saelens(tmp_path / "j", t, layout="v6", architecture="jumprelu", d_in=8, d_sae=10), "lacks threshold"),
        (write_saelens(tmp_path / "s", t, layout="v6", d_in=8, d_sae=12), "W_enc has shape \\[8, 10\\] but"),
        (tmp_path / "missing", "does not exist"),
    ]
    for folder, message in cases:
        with pytest.raises((InvalidInput, NotFound), match=message):
            store.saes.register("m", 0, folder)
    good = write_saelens(tmp_path / "ok", t, layout="v6", d_in=8, d_sae=10)
    with pytest.raises(InvalidInput, match="layer 5 is out of range for model 'm': allowed 0..1"):
        store.saes.register("m", 5, good)
    with pytest.raises(NotFound, match="unknown model 'zz'"):
        store.saes.register("zz", 0, good)
    assert store.saes.list() == []  # nothing half-written
    assert not list((Path(store.uri) / "_saes").glob("*"))


def test_paths_outside_the_root_are_refused(tmp_path, store, rng):
    ids = store.add_prompts("p", ["x", "y", "z"])
    store.write_activations("m", 0, ids, rng.standard_normal((3, 8)), n_layers=2, dtype="float32")
    root = tmp_path / "root"
    t = _random_tensors(rng, 8, 10)
    inside = write_saelens(root / "ok", t, layout="v6", d_in=8, d_sae=10)
    outside = write_saelens(tmp_path / "elsewhere", t, layout="v6", d_in=8, d_sae=10)
    (root / "link_dir").symlink_to(outside, target_is_directory=True)
    mixed = root / "mixed"
    mixed.mkdir()
    (mixed / "cfg.json").write_text((inside / "cfg.json").read_text())
    (mixed / "sae_weights.safetensors").symlink_to(outside / "sae_weights.safetensors")
    for path in ["../elsewhere", str(outside), "ok/../../elsewhere", "link_dir", "/etc"]:
        with pytest.raises(InvalidInput, match="outside the allowed SAE root"):
            store.saes.register("m", 0, path, root=root)
    with pytest.raises(InvalidInput, match="symlinks out of ACTSTORE_SAE_ROOT are refused"):
        store.saes.register("m", 0, "mixed", root=root)
    assert store.saes.list() == []
    assert store.saes.register("m", 0, "ok", root=root).d_sae == 10  # relative to the root
    assert store.saes.register("m", 0, str(inside), root=root).d_sae == 10  # absolute inside it


# --------------------------------------------------------------- service/API
def gql(client, query, variables=None, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = client.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


REGISTER = (
    "mutation($m: String!, $l: Int!, $p: String!) { registerSae(model: $m, layer: $l, path: $p) "
    "{ id model layer dIn dSae architecture hookName } }"
)
CORR = """query($a: ID!, $b: ID!, $m: Matching!, $r: Int!) {
  saeFeatureCorrelation(a: {id: $a}, b: {id: $b}, matching: $m, randomPairs: $r, seed: 3) {
    pairs meanCorrelation svcca rsa randomSvccaMean randomRsaMean pValue rsaPValue n featuresA featuresB
    droppedA droppedB svccaDimsA svccaDimsB method matching topPairs(limit: 5) { featureA featureB correlation }
  } }"""


def test_api_register_correlate_and_matrix(world):
    store, root, perm, plan = world
    service = Service(store, Settings(token=TOKEN, sae_root=str(root), max_permutations=500))
    with TestClient(create_app(service)) as client:
        body = gql(client, REGISTER, {"m": "a", "l": 2, "p": "a_L2"})
        assert body["errors"][0]["message"].startswith("this mutation needs the header")
        ids = {}
        for l in range(4):
            d = gql(client, REGISTER, {"m": "a", "l": l, "p": f"a_L{l}"}, TOKEN)["data"]["registerSae"]
            assert (d["model"], d["layer"], d["dIn"], d["dSae"], d["architecture"]) == ("a", l, D_A, D_SAE, "standard")
            ids["a", l] = d["id"]
        for l in range(3):
            ids["b", l] = gql(client, REGISTER, {"m": "b", "l": l, "p": str(root / f"b_L{l}")}, TOKEN)["data"][
                "registerSae"
            ]["id"]
        err = gql(client, REGISTER, {"m": "a", "l": 1, "p": "b_L0"}, TOKEN)["errors"][0]["message"]
        assert err.startswith("SAE d_in = 24 does not match d_model = 16 of model 'a'")
        err = gql(client, REGISTER, {"m": "a", "l": 1, "p": "../db"}, TOKEN)["errors"][0]["message"]
        assert "outside the allowed SAE root" in err
        listed = gql(client, '{ saes(model: "b") { id layer } all: saes { id } }')["data"]
        assert [s["layer"] for s in listed["saes"]] == [0, 1, 2] and len(listed["all"]) == 7
        assert "unknown model 'q'" in gql(client, '{ saes(model: "q") { id } }')["errors"][0]["message"]

        # planted: SAE b L1 = SAE a L2 transported, features permuted
        R = 49
        c = gql(client, CORR, {"a": ids["a", 2], "b": ids["b", 1], "m": "ONE_TO_ONE", "r": R})
        assert "errors" not in c, c
        c = c["data"]["saeFeatureCorrelation"]
        assert c["n"] == N and c["matching"] == "ONE_TO_ONE" and c["method"] in ("sparse", "dense")
        kept = c["featuresA"] - c["droppedA"]
        assert c["pairs"] == min(kept, c["featuresB"] - c["droppedB"]) and kept > 100
        assert (
            c["meanCorrelation"] > 0.95 and c["svcca"] > 0.99 and c["rsa"] > 0.85
        )  # Pearson centres over d_in: not rotation-invariant
        assert c["randomSvccaMean"] < 0.4 and abs(c["randomRsaMean"]) < 0.1
        assert c["pValue"] == pytest.approx(1 / (1 + R)) and c["rsaPValue"] == pytest.approx(1 / (1 + R))
        tops = c["topPairs"]
        assert len(tops) == 5 and all(perm[t["featureA"]] == t["featureB"] for t in tops)
        # the service's full answer: every matched pair is the planted one
        full = service.saes.sae_feature_correlation(
            ids["a", 2], ids["b", 1], matching="one_to_one", random_pairs=R, seed=3
        )
        assert all(perm[p.feature_a] == p.feature_b for p in full.top_pairs)
        computed = service.results.computed
        again = service.saes.sae_feature_correlation(
            ids["a", 2], ids["b", 1], matching="one_to_one", random_pairs=R, seed=3
        )
        assert service.results.computed == computed and again == full  # served from the results table

        m2 = gql(client, CORR, {"a": ids["a", 2], "b": ids["b", 1], "m": "MANY_TO_ONE", "r": 9})
        assert m2["data"]["saeFeatureCorrelation"]["pairs"] == kept

        # filters: a floor and a keyword subspace
        f = gql(
            client,
            """query($a: ID!, $b: ID!) { saeFeatureCorrelation(a: {id: $a}, b: {id: $b}, randomPairs: 9,
              minCorrelation: 0.99, keywords: ["happy", "sad"], topPrompts: 5, keywordShare: 0.6)
              { pairs featuresA featuresB topPairs(limit: 500) { featureA featureB correlation } } }""",
            {"a": ids["a", 2], "b": ids["b", 1]},
        )
        assert "errors" not in f, f
        f = f["data"]["saeFeatureCorrelation"]
        assert 3 <= f["pairs"] <= f["featuresA"] < D_SAE
        assert all(p["correlation"] >= 0.99 and perm[p["featureA"]] == p["featureB"] for p in f["topPairs"])

        for args, message in [
            ('a: {id: "nope"}, b: {id: "nope"}', "unknown SAE id 'nope'"),
            (
                f'a: {{id: "{ids["a", 2]}"}}, b: {{id: "{ids["b", 1]}"}}, randomPairs: 0',
                "randomPairs must be an integer >= 1, got 0",
            ),
            (
                f'a: {{id: "{ids["a", 2]}"}}, b: {{id: "{ids["b", 1]}"}}, minCorrelation: 2',
                "minCorrelation must be a number between -1 and 1, got 2",
            ),
            (
                f'a: {{id: "{ids["a", 2]}"}}, b: {{id: "{ids["b", 1]}"}}, keywords: ["zebra"]',
                "none of the 240 shared prompts",
            ),
            (f'a: {{id: "{ids["a", 2]}"}}, b: {{id: "{ids["b", 1]}"}}, dataset: "zz"', "unknown dataset 'zz'"),
        ]:
            e = gql(client, f"{{ saeFeatureCorrelation({args}) {{ pairs }} }}")
            assert message in e["errors"][0]["message"], e

        # SVCCA over layer pairs, with the heatmap
        mx = gql(
            client,
            """{ saeMatrix(modelA: "a", modelB: "b", randomPairs: 9) { layersA layersB values argmax
                 pValues randomSvccaMean plotUrl } }""",
        )
        assert "errors" not in mx, mx
        mx = mx["data"]["saeMatrix"]
        assert mx["layersA"] == [0, 1, 2, 3] and mx["layersB"] == [0, 1, 2]
        V = np.array(mx["values"])
        assert V[2, 1] > 0.99 and V[1, 0] > 0.99 and V[3, 2] > 0.99  # b layer l = a layer l + 1
        assert mx["argmax"][1:] == [0, 1, 2]
        png = client.get(mx["plotUrl"].replace("http://testserver", ""))
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_register_refused_without_root(world):
    store, root, *_ = world
    service = Service(store, Settings(token=TOKEN, sae_root=None))
    with TestClient(create_app(service)) as client:
        body = gql(client, REGISTER, {"m": "a", "l": 0, "p": str(root / "a_L0")}, TOKEN)
        assert "no ACTSTORE_SAE_ROOT configured" in body["errors"][0]["message"]


def test_cli_sae_add_list_correlate(world, monkeypatch):
    store, root, perm, _ = world
    runner = CliRunner()
    monkeypatch.setenv("ACTSTORE_SAE_ROOT", str(root))
    out = runner.invoke(
        cli_app, ["sae", "add", "--model", "a", "--layer", "2", "--path", str(root / "a_L2"), "--store", store.uri]
    )
    assert out.exit_code == 0, out.output
    assert "registered SAE a.L2." in out.output
    bad = runner.invoke(
        cli_app, ["sae", "add", "--model", "a", "--layer", "2", "--path", store.uri, "--store", store.uri]
    )
    assert bad.exit_code == 2 and "outside the allowed SAE root" in bad.output
    monkeypatch.delenv("ACTSTORE_SAE_ROOT")
    out = runner.invoke(
        cli_app, ["sae", "add", "--model", "b", "--layer", "1", "--path", str(root / "b_L1"), "--store", store.uri]
    )
    assert out.exit_code == 0, out.output
    listed = runner.invoke(cli_app, ["sae", "list", "--store", store.uri])
    ids = [line.split("\t")[0] for line in listed.output.strip().splitlines()]
    assert len(ids) == 2
    res = runner.invoke(
        cli_app, ["sae", "correlate", ids[0], ids[1], "--random-pairs", "9", "--top", "3", "--store", store.uri]
    )
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["svcca"] > 0.99 and d["pValue"] == pytest.approx(0.1) and len(d["topPairs"]) == 3  # the API's names
