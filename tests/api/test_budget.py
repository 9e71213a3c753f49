"""A budget per GraphQL request (issue 22): the attacks of the issue as inputs, refused before
any field runs with their estimate; aliases, fragments, @skip and variables counted; list
limits capped; a request's computations stopped once it is answered; and the server's peak
memory under the worst anonymous requests on a 10,000-prompt store."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from graphql import parse
from starlette.testclient import TestClient

from actstore import Store
from actstore.api import create_app
from actstore.api.budget import (
    ANSWER_FLOPS,
    CATALOG_FLOPS,
    FIELD_FLOPS,
    ROW_FLOPS,
    SCHEMA_FLOPS,
    Estimate,
    estimate_operation,
)
from actstore.api.context import Context, Pools, call
from actstore.config import Settings
from actstore.errors import QueryTimeout
from actstore.service import Service
from actstore.service.work import check_cancelled

N, D = 200, 8  # shared prompts and width of the in-process store
GATHER = 80  # actstore.service.work.GATHER_FLOPS, written out: the formula is checked, not imported


def cka_flops(n: int, p: int, q: int, permutations: int) -> float:
    """The permutation-test cost formula of METHODS/work.py: 2 n^2 (p + q) + P n^2 (80 + 2)."""
    return 2.0 * n * n * (p + q) + permutations * n * n * (GATHER + 2)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    """Models a and b (2 layers, d = 8) over 200 shared prompts of dataset "big"; "long" has
    2,000 prompts of model c only (a long permutation test)."""
    rng = np.random.default_rng(0)
    store = Store.open(tmp_path_factory.mktemp("budget") / "db")
    ids = store.add_prompts("big", [f"prompt {i}" for i in range(N)], labels=[i % 2 for i in range(N)])
    for key in ("a", "b"):
        for layer in range(2):
            store.write_activations(
                key,
                layer,
                ids,
                rng.standard_normal((N, D)).astype(np.float32),
                n_layers=2,
                source="synthetic",
                architecture="synthetic",
            )
    long_ids = store.add_prompts("long", [f"long {i}" for i in range(2000)])
    for layer in range(2):
        store.write_activations(
            "c",
            layer,
            long_ids,
            rng.standard_normal((2000, D)).astype(np.float32),
            n_layers=2,
            source="synthetic",
            architecture="synthetic",
        )
    return store


@pytest.fixture(scope="module")
def client(store):
    service = Service(store, Settings(environ={}))
    with TestClient(create_app(service)) as c:
        c.service = service
        yield c


def post(client, query: str, variables: dict | None = None):
    return client.post("/graphql", json={"query": query, "variables": variables})


def refusal(r) -> dict:
    assert r.status_code == 400, r.text
    body = r.json()
    assert "data" not in body, body
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "LIMIT_EXCEEDED", error
    return error


def estimates(client, query: str, variables: dict | None = None) -> list[Estimate]:
    schema = client.app.state.schema
    return estimate_operation(schema.graphql_schema, client.service, parse(query), variables, None)


# ------------------------------------------------------------------- the attacks of the issue
def test_the_200_alias_prompts_attack_is_refused_with_its_estimate(client):
    query = (
        "{ "
        + " ".join(f'p{i}: prompts(dataset: "big", limit: 2147483647) {{ id text label }}' for i in range(200))
        + " }"
    )
    computed = client.service.results.computed
    error = refusal(post(client, query))
    # each alias counts the largest page it could return: 10,000 rows (ACTSTORE_MAX_LIST)
    assert error["extensions"]["estimate"] == 200 * 10_000 * ROW_FLOPS == 4e12
    assert error["message"].startswith(
        "the request was refused before running: its 200 fields have an estimated cost of 4e+12 "
        "floating-point operations and needs 200 heavy-work slots (200 fields estimated at 1e+09 or more, "
        "cheap fields summing to 0), over the 2 one request may have (ACTSTORE_MAX_SLOTS_PER_REQUEST); "
        "the most expensive: p0 (prompts, 2e+10), p1 (prompts, 2e+10), p2 (prompts, 2e+10)."
    )
    assert client.service.results.computed == computed


def test_200_distinct_cheap_cka_aliases_are_refused(client):
    # each alias a distinct permutation test below ACTSTORE_CHEAP_COST (so each alone takes no slot)
    perms = [50 + i for i in range(200)]
    assert max(cka_flops(N, D, D, p) for p in perms) < 1e9
    query = (
        "{ "
        + " ".join(
            f'c{i}: cka(a: {{model: "a", layer: 0}}, b: {{model: "b", layer: 1}}, '
            f"permutations: {p}, seed: {i}) {{ value pValue }}"
            for i, p in enumerate(perms)
        )
        + " }"
    )
    error = refusal(post(client, query))
    # refused by the fields' floors alone (the fixed work of an answer each), before any store read
    assert error["extensions"]["estimate"] == 200 * ANSWER_FLOPS == 5e10
    assert error["message"].startswith(
        "the request was refused before running: its 200 fields have an estimated cost of at least 5e+10 "
        "floating-point operations and needs 50 heavy-work slots (0 fields estimated at 1e+09 or more, cheap "
        "fields summing to 5e+10), over the 2 one request may have"
    )
    assert client.service.results.computed == 0
    assert client.service.results.status.running == 0
    # estimated in full, each field is its answer's fixed work plus its permutation test
    full = estimates(client, query)
    assert [e.flops for e in full] == pytest.approx([ANSWER_FLOPS + cka_flops(N, D, D, p) for p in perms], rel=1e-12)


def test_heavy_aliases_are_refused_before_any_runs(client):
    # three tests of 400 permutations: each over ACTSTORE_CHEAP_COST, three slots asked for, two allowed
    one = ANSWER_FLOPS + cka_flops(N, D, D, 400)
    assert one >= 1e9
    query = (
        "{ "
        + " ".join(
            f'h{i}: cka(a: {{model: "a", layer: 0}}, b: {{model: "b", layer: {i % 2}}}, '
            f"permutations: 400, seed: {i}) {{ value }}"
            for i in range(3)
        )
        + " }"
    )
    error = refusal(post(client, query))
    assert error["extensions"]["estimate"] == pytest.approx(3 * one, rel=1e-12)
    assert (
        f"estimated cost of {3 * one:.3g} floating-point operations and needs 3 heavy-work slots (3 fields "
        "estimated at 1e+09 or more" in error["message"]
    )
    assert client.service.results.computed == 0
    assert client.service.results.status.running == 0 and client.service.results.status.queued == 0


def test_a_request_over_the_cost_limit_is_refused_naming_the_limit(store):
    service = Service(store, Settings(environ={}, max_cost=1e10))
    with TestClient(create_app(service)) as c:
        error = refusal(
            post(
                c, '{ a: prompts(dataset: "big", limit: 4000) { id }   b: prompts(dataset: "big", limit: 4000) { id } }'
            )
        )
    assert error["extensions"]["estimate"] == 8000 * ROW_FLOPS == 1.6e10
    assert (
        "estimated cost of 1.6e+10 floating-point operations over this server's limit of 1e+10 per "
        "request (ACTSTORE_MAX_COST)" in error["message"]
    )


# ------------------------------------------------------------ what the walk counts
def test_fragments_inline_fragments_skip_and_merged_keys_are_counted(client):
    query = """
    query Q($no: Boolean!) {
      a: prompts(dataset: "big", limit: 7) { id }
      a: prompts(dataset: "big", limit: 7) { text }
      ...F
      ... on Query { d: prompts(dataset: "big", limit: 11) { id } }
      e: prompts(dataset: "big", limit: 13) @skip(if: $no) { id }
      f: prompts(dataset: "big", limit: 17) @include(if: $no) { id }
      __typename
    }
    fragment F on Query { b: prompts(dataset: "big", limit: 3) { id } c: datasets { name } ...G }
    fragment G on Query { g: prompts(dataset: "big") { id } }
    """
    got = estimates(client, query, {"no": True})
    assert got == [
        Estimate("a", "prompts", 7 * ROW_FLOPS),
        Estimate("b", "prompts", 3 * ROW_FLOPS),
        Estimate("c", "datasets", CATALOG_FLOPS),
        Estimate("g", "prompts", 100 * ROW_FLOPS),
        Estimate("d", "prompts", 11 * ROW_FLOPS),
        Estimate("f", "prompts", 17 * ROW_FLOPS),
        Estimate("__typename", "__typename", FIELD_FLOPS),
    ]


def test_a_fragment_of_aliases_spread_many_times_is_refused(client):
    # one fragment of 5 heavy aliases, spread from 40 inline fragments: 5 distinct keys, counted once each
    fragment = " ".join(f'p{i}: prompts(dataset: "big", limit: 600) {{ id }}' for i in range(5))
    query = "{ " + " ".join("... on Query { ...F }" for _ in range(40)) + " } fragment F on Query { " + fragment + " }"
    error = refusal(post(client, query))
    assert error["extensions"]["estimate"] == 5 * 600 * ROW_FLOPS
    assert "its 5 fields" in error["message"] and "needs 5 heavy-work slots" in error["message"]


def test_variables_and_schema_defaults_are_applied(client):
    query = (
        'query($n: Int!, $m: Int = 9) { a: prompts(dataset: "big", limit: $n) { id } '
        'b: prompts(dataset: "big", limit: $m) { id } c: prompts(dataset: "big") { id } }'
    )
    assert estimates(client, query, {"n": 5}) == [
        Estimate("a", "prompts", 5 * ROW_FLOPS),
        Estimate("b", "prompts", 9 * ROW_FLOPS),
        Estimate("c", "prompts", 100 * ROW_FLOPS),
    ]
    # the same document with a large variable is refused (the variable, not the text, decides)
    many = (
        "query($n: Int!) { " + " ".join(f'p{i}: prompts(dataset: "big", limit: $n) {{ id }}' for i in range(3)) + " }"
    )
    assert post(client, many, {"n": 2}).status_code == 200
    error = refusal(post(client, many, {"n": 9000}))
    assert error["extensions"]["estimate"] == 3 * 9000 * ROW_FLOPS


def test_heavy_fields_are_estimated_by_their_own_cost_formula_and_cached_ones_cost_their_fixed_work(client):
    query = '{ x: cka(a: {model: "a", layer: 0}, b: {model: "b", layer: 1}, permutations: 30, seed: 7) { value } }'
    (before,) = estimates(client, query)
    assert before.flops == pytest.approx(ANSWER_FLOPS + cka_flops(N, D, D, 30), rel=1e-12)
    assert post(client, query).json()["data"]["x"]["value"] is not None
    (after,) = estimates(client, query)
    assert after == Estimate("x", "cka", ANSWER_FLOPS)
    # a field the service refuses (unknown model) counts its fixed work: it answers with its own error
    (bad,) = estimates(client, '{ cka(a: {model: "nope", layer: 0}, b: {model: "b", layer: 1}) { value } }')
    assert bad == Estimate("cka", "cka", ANSWER_FLOPS)


def test_introspection_aliases_are_counted(client):
    one = "{key}: __schema {{ types {{ name fields {{ name }} }} }}"
    assert post(client, "{ " + " ".join(one.format(key=f"s{i}") for i in range(5)) + " }").status_code == 200
    error = refusal(post(client, "{ " + " ".join(one.format(key=f"s{i}") for i in range(6)) + " }"))
    assert error["extensions"]["estimate"] == 6 * SCHEMA_FLOPS == 3e9
    assert (
        "needs 3 heavy-work slots (0 fields estimated at 1e+09 or more, cheap fields summing to 3e+09)"
        in error["message"]
    )


def test_a_text_look_up_takes_a_heavy_slot(client):
    one = '{field}: nearestNeighbors(at: {{model: "a", layer: 0}}, text: "hello", k: 3) {{ promptId }}'
    (e,) = estimates(client, "{ " + one.format(field="t") + " }")
    assert e.flops == 1e9  # the forward pass 24 L d^2 per character (24 * 2 * 64 * 5) is below one slot
    error = refusal(post(client, "{ " + " ".join(one.format(field=f"t{i}") for i in range(3)) + " }"))
    assert "needs 3 heavy-work slots" in error["message"]


def sae_flops(n: int, d: int, f: int, random_pairs: int) -> float:
    """SAE correlation of two SAEs of width f on layers of width d (work.py's formula, written
    out): 2 n (d f + d f) encoding + 2 n f^2 correlating + f^3 one-to-one + R 2 f d^2."""
    return 2.0 * n * (2 * d * f) + 2.0 * n * f * f + float(f) ** 3 + random_pairs * 2.0 * f * d * d


def test_sae_fields_are_estimated_by_their_cost_formula(store, tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(5)
    f = 32
    for layer in range(2):
        folder = tmp_path / "saes" / f"L{layer}"
        folder.mkdir(parents=True)
        (folder / "cfg.json").write_text(
            json.dumps(
                {
                    "architecture": "standard",
                    "d_in": D,
                    "d_sae": f,
                    "dtype": "float32",
                    "apply_b_dec_to_input": False,
                    "normalize_activations": "none",
                    "metadata": {"hook_name": f"blocks.{layer}.hook_resid_post"},
                }
            )
        )
        save_file(
            {
                "W_enc": rng.standard_normal((D, f)).astype(np.float32),
                "W_dec": rng.standard_normal((f, D)).astype(np.float32),
                "b_enc": np.zeros(f, np.float32),
                "b_dec": np.zeros(D, np.float32),
            },
            str(folder / "sae_weights.safetensors"),
        )
    service = Service(store, Settings(environ={}, sae_root=str(tmp_path / "saes")))
    ids = [service.saes.register_sae("a", layer, f"L{layer}").sae_id for layer in range(2)]
    with TestClient(create_app(service)) as c:
        c.service = service
        (one,) = estimates(
            c,
            f'{{ s: saeFeatureCorrelation(a: {{id: "{ids[0]}"}}, b: {{id: "{ids[1]}"}}, randomPairs: 7) {{ svcca }} }}',
        )
        assert one.flops == pytest.approx(ANSWER_FLOPS + sae_flops(N, D, f, 7), rel=1e-12)
        # the matrix of both SAEs of model a against themselves: 2 x 2 cells, checked as a whole
        (mx,) = estimates(c, '{ m: saeMatrix(modelA: "a", modelB: "a", randomPairs: 7) { values } }')
        assert mx.flops == pytest.approx(ANSWER_FLOPS + 4 * sae_flops(N, D, f, 7), rel=1e-12)
        assert service.results.computed == 0
        body = post(
            c,
            f'{{ s: saeFeatureCorrelation(a: {{id: "{ids[0]}"}}, b: {{id: "{ids[1]}"}}, '
            "randomPairs: 7) { svcca topPairs(limit: 10001) { correlation } } }",
        ).json()
    assert body["errors"][0]["message"].startswith("limit = 10,001 is over this server's largest list of 10,000")


# ------------------------------------------------------------------------------ lists
def test_a_limit_over_the_list_cap_is_bad_user_input_naming_the_cap(client):
    body = post(client, '{ prompts(dataset: "big", limit: 10001) { id } }').json()
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"] == (
        "limit = 10,001 is over this server's largest list of 10,000 (ACTSTORE_MAX_LIST): "
        "read more in pages of at most 10,000, moving offset by the page size"
    )
    page = post(client, '{ prompts(dataset: "big", offset: 150, limit: 10000) { id } }').json()["data"]["prompts"]
    assert [p["id"] for p in page] == [str(i) for i in range(150, 200)]


# ------------------------------------------------------------------------------- stop
def test_a_request_answered_with_an_error_stops_the_work_of_its_other_aliases(store):
    # one heavy slot and no queue: of two 10,000-permutation tests over 2,000 prompts (3.3e12
    # operations each, minutes), one takes the slot and the other is refused ("busy"); cka is
    # non-null, so the request is answered with data null while the first one runs
    service = Service(store, Settings(environ={}, heavy_slots=1, heavy_queue=0))
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(service.results.status.running)
            time.sleep(0.005)

    query = (
        "{ "
        + " ".join(
            f's{i}: cka(a: {{model: "c", layer: 0}}, b: {{model: "c", layer: 1}}, '
            f"permutations: 10000, seed: {i}) {{ value }}"
            for i in range(2)
        )
        + " }"
    )
    watcher = threading.Thread(target=watch)
    with TestClient(create_app(service)) as c:
        watcher.start()
        try:
            body = post(c, query).json()
            answered = len(seen)
            time.sleep(1.5)
        finally:
            done.set()
            watcher.join()
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["LIMIT_EXCEEDED"]
    assert "the server is busy" in body["errors"][0]["message"]
    assert max(seen[: answered + 1]) == 1  # the other test was running when the request was answered
    assert seen[-50:] == [0] * 50, "the running alias kept its slot after its request was answered"


def test_stop_all_stops_a_computation_nobody_awaits_any_more(tmp_path):
    # what a request's end does to a sibling alias that graphql-core left to settle in the background
    service = Service(str(tmp_path / "db"))
    batches: list[int] = []

    def long_work() -> str:  # 600 batches of 20 ms: 12 s unless stopped
        for i in range(600):
            check_cancelled(i, 600, "batches")
            batches.append(i)
            time.sleep(0.02)
        return "finished"

    pools = Pools(light=1, heavy=1)
    ctx = Context(service=service, pools=pools)

    async def scenario() -> BaseException | str:
        orphan = asyncio.ensure_future(call(SimpleNamespace(context=ctx), long_work, heavy=True))
        while len(batches) < 3:
            await asyncio.sleep(0.01)
        ctx.stop_all()  # the request is answered
        try:
            return await asyncio.wait_for(orphan, 2.0)
        except QueryTimeout as exc:
            return exc

    try:
        outcome = asyncio.run(scenario())
        with pytest.raises(QueryTimeout, match="already answered or refused"):
            asyncio.run(call(SimpleNamespace(context=ctx), long_work))
    finally:
        pools.shutdown()
        service.close()
    assert isinstance(outcome, QueryTimeout)
    assert str(outcome).startswith("the computation was stopped after ")
    assert len(batches) < 30


# ------------------------------------------------------------------------ server memory
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status_mb(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_peak_server_memory_of_anonymous_requests_on_a_10000_prompt_store(tmp_path):
    store = Store.open(tmp_path / "db")
    ids = store.add_prompts(
        "big", [f"a short review, number {i}" for i in range(10_000)], labels=[i % 2 for i in range(10_000)]
    )
    rng = np.random.default_rng(1)
    for layer in range(2):
        store.write_activations(
            "tiny",
            layer,
            ids,
            rng.standard_normal((10_000, 8)).astype(np.float32),
            n_layers=2,
            source="synthetic",
            architecture="synthetic",
        )
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "actstore.cli",
            "serve",
            "--store",
            store.uri,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
            assert proc.poll() is None and time.time() < deadline, "the server did not start"
        attack = (
            "{ "
            + " ".join(f'p{i}: prompts(dataset: "big", limit: 2147483647) {{ id text label }}' for i in range(200))
            + " }"
        )
        page = '{field}: prompts(dataset: "big", offset: {offset}, limit: {limit}) {{ id text label dataset split }}'
        # the largest answer one request may have: two full pages (a heavy slot each) and cheap
        # fields up to one slot's worth
        biggest = (
            "{ "
            + page.format(field="a", offset=0, limit=10_000)
            + " "
            + page.format(field="b", offset=0, limit=10_000)
            + " "
            + page.format(field="c", offset=0, limit=300)
            + " models { key } datasets { name } }"
        )
        neighbours = (
            '{ n: nearestNeighbors(at: {model: "tiny", layer: 1}, promptId: "5", k: 1000) { promptId text score } }'
        )
        with httpx.Client(base_url=base, timeout=120) as c:
            # warm: the first answers import and cache what every later one uses
            warm = "{ " + page.format(field="w", offset=0, limit=10) + " }"
            assert c.post("/graphql", json={"query": warm}).status_code == 200
            c.post("/graphql", json={"query": neighbours})
            idle = _status_mb(proc.pid, "VmRSS")
            with open(f"/proc/{proc.pid}/clear_refs", "w") as f:  # reset the peak (VmHWM) to now
                f.write("5")
            r = c.post("/graphql", json={"query": attack})
            assert r.status_code == 400 and "estimated cost of 4e+12" in r.json()["errors"][0]["message"]
            r = c.post("/graphql", json={"query": biggest})
            assert r.status_code == 200 and len(r.json()["data"]["a"]) == 10_000, r.text[:300]
            refused = c.post("/graphql", json={"query": biggest.replace("limit: 300", "limit: 600")})
            assert refused.status_code == 400
            r = c.post("/graphql", json={"query": neighbours})
            assert len(r.json()["data"]["n"]) == 1000
            peak = _status_mb(proc.pid, "VmHWM")
        print(
            f"\nserver RSS: {idle:.0f} MB idle, peak {peak:.0f} MB over the worst anonymous requests "
            f"(+{peak - idle:.0f} MB; the 200-alias attack refused, {len(json.dumps(r.json())) // 1024} KB "
            "neighbour answer)"
        )
        assert peak - idle < 100
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
