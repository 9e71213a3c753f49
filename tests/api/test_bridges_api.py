"""Bridges and probe transfer through the service, GraphQL, the plot route and the CLI;
next tokens stored at ingest; one end-to-end run of tiny models over SST-2."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from actstore import Store
from actstore.analysis import bridges as B
from actstore.analysis import probes as P
from actstore.api import create_app
from actstore.config import Settings
from actstore.layers import LayerRef
from actstore.service import Service

N_TASK, N_GEN = 120, 160


@pytest.fixture
def linked(tmp_path) -> Store:
    """Models a (2 layers, d=16) and b (3 layers, d=24) linked through shared latents over
    'task' (labelled 0/1, 120 prompts), 'general' (160 unlabelled) and 'nolabels' (20)."""
    rng = np.random.default_rng(7)
    store = Store.open(tmp_path / "db")
    n = N_TASK + N_GEN + 20
    Z = rng.standard_normal((n, 6))
    y = (Z[:N_TASK, 0] > 0).astype(int).tolist()
    ids = store.add_prompts("task", [f"task {i}" for i in range(N_TASK)], labels=y)
    ids += store.add_prompts("general", [f"general {i}" for i in range(N_GEN)])
    ids += store.add_prompts("nolabels", [f"nolabel {i}" for i in range(20)])
    store.add_prompts("oneclass", [f"one {i}" for i in range(5)], labels=[1] * 5)

    def layers(n_layers, d):
        return {l: Z @ rng.standard_normal((6, d)) + 0.2 * rng.standard_normal((n, d)) for l in range(n_layers)}

    store.activations.write("a", layers(2, 16), ids, n_layers=2, dtype="float32", architecture="llama")
    store.activations.write("b", layers(3, 24), ids, n_layers=3, dtype="float32", architecture="gpt2")
    return store


@pytest.fixture
def client(linked):
    service = Service(linked, Settings())
    with TestClient(create_app(service)) as c:
        c.service = service
        yield c


def gql(client, query, variables=None):
    r = client.post("/graphql", json={"query": query, "variables": variables or {}})
    assert r.status_code == 200, r.text
    return r.json()


def data(client, query, variables=None):
    body = gql(client, query, variables)
    assert "errors" not in body, body["errors"]
    return body["data"]


def error(client, query, variables=None) -> str:
    body = gql(client, query, variables)
    assert body.get("errors"), body
    assert "Traceback" not in body["errors"][0]["message"]
    return body["errors"][0]["message"]


def arrays(store, model, layer, ids):
    got, X = store.read_activations(model, layer, prompt_ids=ids)
    assert np.array_equal(got, ids)
    return X


BRIDGE = """query($m: BridgeMethod!, $rank: Int, $alpha: Float, $tf: Float!) {
  bridge(source: {model: "a", layer: 1}, target: {model: "b", depth: 1.0}, method: $m, rank: $rank,
         alpha: $alpha, testFraction: $tf, seed: 3) { method rank alpha nTrain nTest r2 meanCosine layerTarget } }"""


@pytest.mark.parametrize(
    "method, rank, alpha",
    [
        ("RIDGE", None, None),
        ("RIDGE", None, 2.0),
        ("LOW_RANK", 3, None),
        ("PROCRUSTES", None, None),
        ("LASSO", None, 0.05),
    ],
)
def test_bridge_field_against_direct(client, linked, method, rank, alpha):
    got = data(client, BRIDGE, {"m": method, "rank": rank, "alpha": alpha, "tf": 0.25})["bridge"]
    ids = linked.activations.shared("a", "b")
    tr, te = P.split_indices(len(ids), 0.25, 3)
    S, T = arrays(linked, "a", 1, ids), arrays(linked, "b", 2, ids)
    want = B.evaluate_bridge(S[tr], T[tr], S[te], T[te], method.lower(), rank=rank, alpha=alpha)
    assert got["method"] == method and got["rank"] == rank and got["layerTarget"] == 2
    assert (got["nTrain"], got["nTest"]) == (len(tr), len(te))
    assert got["r2"] == pytest.approx(want.r2, abs=1e-6)
    assert got["meanCosine"] == pytest.approx(want.mean_cosine, abs=1e-6)
    if alpha is None and method != "PROCRUSTES":
        assert got["alpha"] == pytest.approx(want.alpha)
    if method in ("RIDGE", "LOW_RANK"):
        assert got["r2"] > 0.5


PT = """query($task: String!, $bridge: String, $m: BridgeMethod!, $rank: Int, $tf: Float!) {
  probeTransfer(source: {model: "a", layer: 1}, target: {model: "b", layer: 2}, taskDataset: $task,
                bridgeDataset: $bridge, method: $m, rank: $rank, testFraction: $tf, seed: 1) {
    sourceNative targetNative transferred taskSpecific chance nTrain nTest nBridge nClasses } }"""


def test_bridge_precision_argument(client, linked):
    q = """query($p: Precision!) { bridge(source: {model: "a", layer: 1}, target: {model: "b", layer: 2},
             alpha: 2.0, testFraction: 0.25, seed: 3, precision: $p) { r2 precision } }"""
    f32, f64 = data(client, q, {"p": "FLOAT32"})["bridge"], data(client, q, {"p": "FLOAT64"})["bridge"]
    auto = data(client, q, {"p": "AUTO"})["bridge"]
    assert (f32["precision"], f64["precision"], auto["precision"]) == ("float32", "float64", "auto")
    ids = linked.activations.shared("a", "b")
    tr, te = P.split_indices(len(ids), 0.25, 3)
    S, T = arrays(linked, "a", 1, ids), arrays(linked, "b", 2, ids)
    want = B.evaluate_bridge(S[tr], T[tr], S[te], T[te], "ridge", alpha=2.0)
    assert f64["r2"] == pytest.approx(want.r2, abs=1e-6) and auto["r2"] == pytest.approx(want.r2, abs=1e-6)
    assert f32["r2"] == pytest.approx(want.r2, abs=1e-4)
    sweep = data(
        client,
        """{ probeTransferSweep(source: {model: "a", layer: 1}, target: {model: "b", layer: 2},
                   taskDataset: "task", bridgeDataset: "general", ranks: [1, 4], precision: FLOAT32) { precision } }""",
    )
    assert sweep["probeTransferSweep"]["precision"] == "float32"


def test_probe_transfer_field_against_direct(client, linked):
    got = data(client, PT, {"task": "task", "bridge": "general", "m": "RIDGE", "tf": 0.3})["probeTransfer"]
    ids = linked.prompts.ids("task")
    bids = linked.prompts.ids("general")
    y = linked.prompts.labels(ids).astype(int)
    want = P.probe_transfer(
        arrays(linked, "a", 1, ids),
        arrays(linked, "b", 2, ids),
        y,
        arrays(linked, "a", 1, bids),
        arrays(linked, "b", 2, bids),
        test_fraction=0.3,
        seed=1,
    )
    for k, v in (
        ("sourceNative", want.source_native),
        ("targetNative", want.target_native),
        ("transferred", want.transferred),
        ("taskSpecific", want.task_specific),
        ("chance", want.chance),
    ):
        assert got[k] == pytest.approx(v, abs=1e-12), k
    assert (got["nTrain"], got["nTest"], got["nBridge"], got["nClasses"]) == (84, 36, N_GEN, 2)
    assert got["transferred"] > 0.8 and abs(got["transferred"] - got["targetNative"]) < 0.1
    # default bridge set: every shared prompt outside the task (general + nolabels)
    dflt = data(client, PT, {"task": "task", "m": "RIDGE", "tf": 0.3})["probeTransfer"]
    assert dflt["nBridge"] == N_GEN + 20


def test_sweep_field_and_its_plot(client, linked):
    q = """{ probeTransferSweep(source: {model: "a", layer: 1}, target: {model: "b", layer: 2},
              taskDataset: "task", bridgeDataset: "general", ranks: [1, 2, 6, 16], seed: 1) {
              ranks transferred taskSpecific sourceNative targetNative chance ridgeTransferred plotUrl } }"""
    got = data(client, q)["probeTransferSweep"]
    assert got["ranks"] == [1, 2, 6, 16] and len(got["transferred"]) == 4
    ids, bids = linked.prompts.ids("task"), linked.prompts.ids("general")
    want = P.probe_transfer_sweep(
        arrays(linked, "a", 1, ids),
        arrays(linked, "b", 2, ids),
        linked.prompts.labels(ids).astype(int),
        arrays(linked, "a", 1, bids),
        arrays(linked, "b", 2, bids),
        [1, 2, 6, 16],
        seed=1,
    )
    assert got["transferred"] == pytest.approx(list(want.transferred), abs=1e-12)
    assert got["taskSpecific"] == pytest.approx(list(want.task_specific), abs=1e-12)
    png = client.get(got["plotUrl"].replace("http://testserver", ""))
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    q2 = """{ bridgeSweep(source: {model: "a", layer: 1}, target: {model: "b", layer: 2}, ranks: [1, 6]) {
              ranks r2 ridgeR2 } }"""
    bs = data(client, q2)["bridgeSweep"]
    assert bs["r2"][0] < bs["r2"][1] and abs(bs["r2"][1] - bs["ridgeR2"]) < 0.01  # planted rank 6


def test_answers_are_cached(client):
    before = client.service.results.computed
    data(client, PT, {"task": "task", "bridge": "general", "m": "RIDGE", "tf": 0.3})
    data(client, PT, {"task": "task", "bridge": "general", "m": "RIDGE", "tf": 0.3})
    assert client.service.results.computed == before + 1


@pytest.mark.parametrize(
    "variables, message",
    [
        ({"task": "nope", "m": "RIDGE", "tf": 0.3}, "unknown dataset 'nope'"),
        ({"task": "general", "m": "RIDGE", "tf": 0.3}, "taskDataset 'general' has no labels"),
        ({"task": "task", "bridge": "nope", "m": "RIDGE", "tf": 0.3}, "unknown dataset 'nope'"),
        ({"task": "task", "bridge": "task", "m": "RIDGE", "tf": 0.3}, "too few prompts to fit the frozen bridge"),
        ({"task": "task", "m": "RIDGE", "tf": 1.5}, "testFraction must be a number strictly between 0 and 1, got 1.5"),
        ({"task": "task", "m": "RIDGE", "tf": 0.0}, "testFraction must be a number strictly between 0 and 1"),
        ({"task": "task", "m": "LOW_RANK", "rank": 99, "tf": 0.3}, "rank must be <= 16"),
        ({"task": "task", "m": "LOW_RANK", "tf": 0.3}, "method LOW_RANK needs rank"),
        ({"task": "task", "m": "RIDGE", "rank": 2, "tf": 0.3}, "rank applies only to method LOW_RANK"),
    ],
)
def test_probe_transfer_errors(client, variables, message):
    assert message in error(client, PT, variables)


def test_other_errors(client, linked):
    assert "alpha must be a number > 0" in error(client, BRIDGE, {"m": "RIDGE", "alpha": -1.0, "tf": 0.2})
    assert "alpha does not apply to method PROCRUSTES" in error(
        client, BRIDGE, {"m": "PROCRUSTES", "alpha": 1.0, "tf": 0.2}
    )
    svc = client.service
    with pytest.raises(Exception, match="only one class"):
        linked.activations.write("a", {0: np.ones((5, 16)), 1: np.ones((5, 16))}, linked.prompts.ids("oneclass"))
        linked.activations.write("b", {l: np.ones((5, 24)) for l in range(3)}, linked.prompts.ids("oneclass"))
        svc.bridges.probe_transfer(LayerRef("a", 1), LayerRef("b", 2), "oneclass")
    with pytest.raises(Exception, match="every rank must be an integer >= 1"):
        svc.bridges.probe_transfer_sweep(LayerRef("a", 1), LayerRef("b", 2), "task", [0, 2])
    with pytest.raises(Exception, match="too few prompts"):
        svc.bridges.bridge(LayerRef("a", 1), LayerRef("b", 2), train_dataset="oneclass", test_fraction=0.9)


def test_cli_commands(linked, tmp_path):
    from actstore.cli import app

    runner = CliRunner()
    plot = tmp_path / "sweep.png"
    r = runner.invoke(
        app,
        [
            "probe-transfer",
            "--store",
            linked.uri,
            "--source",
            "a:1",
            "--target",
            "b:-1",
            "--task-dataset",
            "task",
            "--bridge-dataset",
            "general",
            "--ranks",
            "1,4,8",
            "--plot",
            str(plot),
        ],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["ranks"] == [1, 4, 8] and plot.read_bytes()[:4] == b"\x89PNG"
    r = runner.invoke(
        app,
        [
            "bridge",
            "--store",
            linked.uri,
            "--source",
            "a@1.0",
            "--target",
            "b:2",
            "--method",
            "low_rank",
            "--rank",
            "2",
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rank"] == 2
    r = runner.invoke(
        app,
        [
            "bridge",
            "--store",
            linked.uri,
            "--source",
            "a:1",
            "--target",
            "b:2",
            "--method",
            "procrustes",
            "--scale",
            "--precision",
            "float32",
            "--preprocess",
            "standardize",
        ],
    )
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert (got["precision"], got["preprocess"], got["method"]) == ("float32", "standardize", "procrustes")
    assert got["scale"] > 0
    r = runner.invoke(
        app, ["bridge", "--store", linked.uri, "--source", "a:1", "--target", "b:2", "--precision", "half"]
    )
    assert r.exit_code == 2 and "precision must be one of AUTO, FLOAT32, FLOAT64, got 'half'" in r.stderr
    r = runner.invoke(
        app,
        [
            "probe-transfer",
            "--store",
            linked.uri,
            "--source",
            "a:1",
            "--target",
            "b:2",
            "--task-dataset",
            "task",
            "--preprocess",
            "drop_outlier_dims",
            "--outlier-threshold",
            "0.5",
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["preprocess"] == "drop_outlier_dims"
    r = runner.invoke(
        app,
        ["probe-transfer", "--store", linked.uri, "--source", "a:1", "--target", "b:2", "--task-dataset", "general"],
    )
    assert r.exit_code == 2 and "has no labels" in r.stderr
    r = runner.invoke(app, ["bridge", "--store", linked.uri, "--source", "a", "--target", "b:2"])
    assert r.exit_code == 2 and "use MODEL:LAYER" in r.stderr


# ----------------------------------------------------------------- next tokens
def _write_tsv_rows(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["text", "label"])
        for t, lab in rows:
            w.writerow([t, lab])


def test_next_tokens_at_ingest_and_transfer(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from actstore.ingest.pipeline import ingest
    from tests.tiny_models import tiny_model_dir

    store = Store.open(tmp_path / "db")
    words = "the a cat dog sat ran on in big small red blue one two".split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=int(rng.integers(2, 7)))) + f" {i}" for i in range(90)]
    store.add_prompts("nt", texts[:60])
    store.add_prompts("gen", texts[60:])
    # the same tiny model under two keys: random tiny models of different families predict too
    # few distinct next tokens to share classes; with one model the agreement ceiling is exactly 1
    pa = pb = tiny_model_dir("llama")
    for path, key in ((pa, "ta"), (pb, "tb")):
        for ds in ("nt", "gen"):
            ingest(store, str(path), ds, key=key, layers=[-1], next_tokens=True, batch_size=16)
    ids, tid, tok = store.next_tokens.read("ta", store.prompts.ids("nt")[:3])
    tokenizer = AutoTokenizer.from_pretrained(pa)
    lm = AutoModelForCausalLM.from_pretrained(pa, dtype=torch.float32).eval()
    for i, pid in enumerate(ids):
        enc = tokenizer(store.prompts.get([pid])[0].text, return_tensors="pt")
        with torch.no_grad():
            want = torch.topk(lm(**enc).logits[0, -1], 5).indices.tolist()
        assert tid[i] == want
        assert tok[i] == [tokenizer.decode([t]) for t in want]
    svc = Service(store, Settings())
    r = svc.bridges.next_token_transfer(
        LayerRef("ta", layer=-1), LayerRef("tb", layer=-1), "nt", bridge_dataset="gen", classes=50, alpha=1.0
    )
    nid = store.prompts.ids("nt")
    gid = store.prompts.ids("gen")
    want = P.next_token_transfer(
        arrays(store, "ta", 1, nid),
        arrays(store, "tb", 1, nid),
        store.next_tokens.read("ta", nid)[2],
        store.next_tokens.read("tb", nid)[2],
        arrays(store, "ta", 1, gid),
        arrays(store, "tb", 1, gid),
        classes=50,
        alpha=1.0,
    )
    assert r.transferred_top1 == want.transferred_top1 and r.agreement_top1 == want.agreement_top1
    assert r.source_native_top5 == want.source_native_top5 and list(r.classes) == list(want.classes)
    assert r.agreement_top1 == 1.0 and r.agreement_top5 == 1.0
    with pytest.raises(Exception, match="has no next tokens stored"):
        store.activations.write("plain", {0: np.ones((60, 4))}, nid, n_layers=1)
        svc.bridges.next_token_transfer(LayerRef("ta", layer=-1), LayerRef("plain", layer=0), "nt")


# ----------------------------------------------------------------- end to end
def test_end_to_end_sst2_through_ingest_api_and_probe_transfer(tmp_path, text_sets):
    from actstore.ingest.pipeline import ingest
    from tests.tiny_models import tiny_model_dir

    sst = text_sets("sst2").path  # the real files of ../shared/data, or generated ones in their format
    wiki = text_sets("wikitext2").path
    with open(sst, newline="") as f:
        rows = [(r["sentence"].strip(), int(r["label"])) for r in csv.DictReader(f, delimiter="\t")][:120]
    task_file = tmp_path / "sst2.tsv"
    _write_tsv_rows(task_file, rows)
    lines = [
        ln.strip()
        for ln in wiki.read_text(encoding="utf-8").splitlines()
        if len(ln.strip()) > 40 and not ln.strip().startswith("=")
    ][:150]
    gen_file = tmp_path / "wiki.tsv"
    _write_tsv_rows(gen_file, [(ln[:300], "") for ln in lines])
    store = Store.open(tmp_path / "db")
    for family, key in (("llama", "llama-tiny"), ("qwen2", "qwen-tiny")):
        path = tiny_model_dir(family, n_layers=2, hidden=32)
        ingest(store, str(path), "sst2", prompts_file=task_file, key=key, max_tokens=64)
        ingest(store, str(path), "wiki", prompts_file=gen_file, key=key, max_tokens=64)
    assert store.prompts.datasets()[[d.name for d in store.prompts.datasets()].index("sst2")].has_labels
    with TestClient(create_app(Service(store, Settings()))) as c:
        q = """{ probeTransfer(source: {model: "llama-tiny", layer: -1}, target: {model: "qwen-tiny", depth: 1.0},
                  taskDataset: "sst2", bridgeDataset: "wiki", testFraction: 0.25, seed: 0) {
                  sourceNative targetNative transferred taskSpecific chance nTrain nTest nBridge } }"""
        got = data(c, q)["probeTransfer"]
    ids, bids = store.prompts.ids("sst2"), store.prompts.ids("wiki")
    want = P.probe_transfer(
        arrays(store, "llama-tiny", 1, ids),
        arrays(store, "qwen-tiny", 1, ids),
        store.prompts.labels(ids).astype(int),
        arrays(store, "llama-tiny", 1, bids),
        arrays(store, "qwen-tiny", 1, bids),
        test_fraction=0.25,
        seed=0,
    )
    assert (got["nTrain"], got["nTest"], got["nBridge"]) == (90, 30, len(bids))
    for k, v in (
        ("sourceNative", want.source_native),
        ("targetNative", want.target_native),
        ("transferred", want.transferred),
        ("taskSpecific", want.task_specific),
        ("chance", want.chance),
    ):
        assert got[k] == pytest.approx(v, abs=1e-12), k
    labels = np.array([lab for _, lab in rows])
    assert got["chance"] >= 0.5 and got["chance"] <= max(np.mean(labels), 1 - np.mean(labels)) + 0.2
