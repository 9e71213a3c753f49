"""GraphQL atlas: answered within the budget, refused over it naming runAtlas, computed as a job
(progress, cancel), then answered from the cache."""

from __future__ import annotations

import time

import numpy as np
import pytest
from starlette.testclient import TestClient

from actstore.api import create_app
from actstore.config import Settings
from actstore.service import Service
from tests.api.test_api import TOKEN, data, error, gql, populated  # noqa: F401 - fixtures

ATLAS = """{ atlas(models: ["a", "b"], k: 5, resize: 4) { models measure k n pairs { modelA modelB layersA layersB
  values argmax argmaxDepths diagonal { onDiagonalMean offDiagonalMean tStatistic pValue } maxValue }
  meanResized maxSimilarity plotUrl } }"""


@pytest.fixture
def service(populated):  # noqa: F811
    return Service(populated, Settings(environ={}, token=TOKEN))


def test_atlas_equals_the_affinity_matrix(service):
    with TestClient(create_app(service)) as client:
        at = data(client, ATLAS)["atlas"]
        aff = data(client, '{ affinityMatrix(modelA: "a", modelB: "b", k: 5) { values argmax diagonal { pValue } } }')
        assert at["models"] == ["a", "b"] and at["measure"] == "mutual_knn" and at["k"] == 5 and at["n"] == 48
        (pair,) = at["pairs"]
        assert pair["values"] == aff["affinityMatrix"]["values"] and pair["argmax"] == aff["affinityMatrix"]["argmax"]
        assert pair["diagonal"]["pValue"] == pytest.approx(aff["affinityMatrix"]["diagonal"]["pValue"], abs=1e-12)
        best = max(max(row) for row in pair["values"])
        assert at["maxSimilarity"] == [[None, best], [best, None]]
        assert len(at["meanResized"]) == 4 and pair["maxValue"] == best
        png = client.get(at["plotUrl"])
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_over_the_budget_run_it_as_a_job(tmp_path):
    from actstore import Store

    # n = 300 prompts, 2 models x 5 layers of d = 64: 2 n^2 d per k-NN graph is 1.2e8 flops in all,
    # over the 3e8 budget once the 2.5e8 of fixed work per answer is added; a cached answer is not
    rng = np.random.default_rng(0)
    store = Store.open(tmp_path / "db")
    ids = store.add_prompts("ds", [f"p {i}" for i in range(300)])
    for key in ("a", "b"):
        store.activations.write(
            key, {l_: rng.standard_normal((300, 64)) for l_ in range(5)}, ids, n_layers=5, dtype="float32"
        )
    service = Service(store, Settings(environ={}, token=TOKEN, max_cost=3e8))
    with TestClient(create_app(service)) as client:
        r = client.post("/graphql", json={"query": ATLAS})
        assert r.status_code == 400
        message = r.json()["errors"][0]["message"]
        assert "runAtlas" in message and "estimated cost of 3.65e+08 " in message, message
        q = 'mutation { runAtlas(models: ["a", "b"], k: 5, resize: 4) { id state total } }'
        assert "needs the header 'Authorization: Bearer TOKEN'" in error(client, q)
        job = data(client, q, token=TOKEN)["runAtlas"]
        for _ in range(200):
            state = data(client, f'{{ job(id: "{job["id"]}") {{ state done total message }} }}')["job"]
            if state["state"] in ("SUCCEEDED", "FAILED"):
                break
            time.sleep(0.05)
        assert state == {
            "state": "SUCCEEDED",
            "done": 1,
            "total": 1,
            "message": "atlas of 2 models (1 pairs) over n = 300 prompts",
        }
        # the same query now answers from the cache
        at = data(client, ATLAS)["atlas"]
        assert np.asarray(at["pairs"][0]["values"]).shape == (5, 5)


def test_cancel_a_job(service):
    started = []
    service.jobs.start(lambda progress: (started.append(1), time.sleep(30)))  # holds the one job thread
    with TestClient(create_app(service)) as client:
        q = 'mutation { runAtlas(models: ["a", "b"], k: 5) { id state } }'
        job = data(client, q, token=TOKEN)["runAtlas"]
        assert job["state"] == "QUEUED"
        cancelled = data(client, f'mutation {{ cancelJob(id: "{job["id"]}") {{ id }} }}', token=TOKEN)
        assert cancelled["cancelJob"]["id"] == job["id"]
        assert "no job 'nope'" in error(client, 'mutation { cancelJob(id: "nope") { id } }', token=TOKEN)
    service.jobs.runner.cancel(job["id"])
    assert gql  # the module's helpers are used above


def test_atlas_errors(service):
    with TestClient(create_app(service)) as client:
        assert error(client, '{ atlas(models: ["a"]) { n } }') == "models must be at least 2 model keys, got ['a']"
        assert error(client, '{ atlas(models: ["a", "a"]) { n } }') == "models names a more than once"
        assert error(client, '{ atlas(models: ["a", "zz"]) { n } }').startswith("unknown model 'zz'")
