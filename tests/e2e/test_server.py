"""End to end over HTTP: `actstore serve` under uvicorn on a free loopback port, and the
in-process `actstore query` command."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from actstore import Store

TOKEN = "e2e-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    """Two models over 2,000 prompts, 8 layers of d=256 each: a CKA matrix takes a while."""
    rng = np.random.default_rng(0)
    store = Store.open(tmp_path_factory.mktemp("srv") / "db")
    n = 2000
    ids = store.add_prompts("ds", [f"prompt {i}" for i in range(n)])
    Z = rng.standard_normal((n, 16)).astype(np.float32)
    for key in ("a", "b"):
        layers = {
            l: Z @ rng.standard_normal((16, 256)).astype(np.float32) + rng.standard_normal((n, 256)).astype(np.float32)
            for l in range(8)
        }
        store.activations.write(key, layers, ids, n_layers=8, architecture="synthetic")
    return store


@pytest.fixture(scope="module")
def server(big_store):
    port = _free_port()
    env = dict(os.environ, ACTSTORE_TOKEN=TOKEN, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "actstore.cli",
            "serve",
            "--store",
            big_store.uri,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            pytest.fail(f"server exited: {proc.stdout.read()}")
    else:
        proc.kill()
        pytest.fail("server did not answer /healthz within 60 s")
    yield base
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _post(base, query, token=None, timeout=120):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.post(f"{base}/graphql", json={"query": query}, headers=headers, timeout=timeout)
    assert r.status_code == 200, r.text
    return r.json()


def test_http_end_to_end(server, big_store):
    health = httpx.get(f"{server}/healthz").json()
    assert health == {"status": "ok", "models": 2}
    body = _post(server, "{ models { key nLayers dModel promptCount } }")
    assert body["data"]["models"] == [
        {"key": "a", "nLayers": 8, "dModel": 256, "promptCount": 2000},
        {"key": "b", "nLayers": 8, "dModel": 256, "promptCount": 2000},
    ]
    body = _post(server, '{ nearestNeighbors(at: {model: "a", layer: 3}, promptId: "10", k: 5) { promptId score } }')
    got = [int(r["promptId"]) for r in body["data"]["nearestNeighbors"]]
    ids, _ = big_store.knn.search(
        "a", 3, big_store.read_activations("a", 3, prompt_ids=[10])[1], 5, exclude_self_ids=[10]
    )
    assert got == ids[0].tolist()
    # errors are GraphQL errors with HTTP 200, never a 500 or a stack trace
    body = _post(server, '{ cka(a: {model: "a", layer: 99}, b: {model: "b", layer: 0}) { value } }')
    assert "layer 99 is out of range" in body["errors"][0]["message"]
    r = httpx.post(f"{server}/graphql", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code < 500
    # mutations: refused without the token, done with it
    add = 'mutation { addPrompts(dataset: "web", texts: ["from http"]) { name promptCount } }'
    assert "Authorization: Bearer TOKEN" in _post(server, add)["errors"][0]["message"]
    assert _post(server, add, token=TOKEN)["data"]["addPrompts"] == {"name": "web", "promptCount": 1}
    # GraphiQL for a browser
    page = httpx.get(f"{server}/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()


def _lookups(server, n=32):
    async def run():
        async with httpx.AsyncClient(base_url=server, timeout=120) as client:

            async def one(i):
                t0 = time.perf_counter()
                r = await client.post(
                    "/graphql",
                    json={
                        "query": f'{{ nearestNeighbors(at: {{model: "b", layer: {i % 8}}}, promptId: "{i}", k: 10) {{ promptId }} }}'
                    },
                )
                return r, time.perf_counter() - t0

            return await asyncio.gather(*(one(i) for i in range(n)))

    return asyncio.run(run())


def test_32_concurrent_lookups_while_a_cka_matrix_computes(server):
    _lookups(server, 8)  # build the k-NN index of every layer first
    idle = np.array([s for _, s in _lookups(server)]) * 1e3
    matrix = {}

    def run_matrix():
        t0 = time.perf_counter()
        matrix["body"] = _post(
            server, '{ ckaMatrix(modelA: "a", modelB: "b", debiased: true) { values argmax } }', timeout=300
        )
        matrix["seconds"] = time.perf_counter() - t0

    t = threading.Thread(target=run_matrix)
    t.start()
    time.sleep(0.3)  # the matrix request is in flight

    t0 = time.perf_counter()
    results = _lookups(server)
    lookups_done = time.perf_counter() - t0
    t.join(300)
    lat = np.array([s for _, s in results]) * 1e3
    for r, _ in results:
        assert r.status_code == 200 and "errors" not in r.json(), r.text
        assert len(r.json()["data"]["nearestNeighbors"]) == 10
    assert "errors" not in matrix["body"], matrix["body"]
    assert len(matrix["body"]["data"]["ckaMatrix"]["values"]) == 8
    print(
        f"\n32 concurrent nearestNeighbors during a CKA matrix ({matrix['seconds']:.2f} s): "
        f"p50 {np.percentile(lat, 50):.0f} ms, p99 {np.percentile(lat, 99):.0f} ms, all done after {lookups_done:.2f} s; "
        f"with the server idle: p50 {np.percentile(idle, 50):.0f} ms, p99 {np.percentile(idle, 99):.0f} ms"
    )
    assert np.percentile(lat, 50) < max(2.0, matrix["seconds"]) * 1e3


def test_query_command_prints_json(big_store):
    env = dict(os.environ)
    env.pop("ACTSTORE_TOKEN", None)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "actstore.cli",
            "query",
            'query($k: Int!) { mutualKnn(a: {model: "a", layer: 0}, '
            'b: {model: "b", depth: 0.0}, k: $k) { k n nullMean } }',
            "--variables",
            '{"k": 7}',
            "--store",
            big_store.uri,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["data"]["mutualKnn"] == {"k": 7, "n": 2000, "nullMean": pytest.approx(7 / 1999)}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "actstore.cli",
            "query",
            '{ model(key: "a") { nope } }',
            "--json",
            "--store",
            big_store.uri,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert res.returncode == 1 and "Cannot query field 'nope'" in json.loads(res.stdout)["errors"][0]["message"]
