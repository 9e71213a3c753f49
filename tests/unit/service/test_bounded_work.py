"""Work an anonymous query can cause (issue 12): cost budgets, heavy-work slots with a bounded
queue, cancellation of long work, caches bounded by bytes, text cut before tokenization."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import scipy.sparse as sp

from actstore import Store, analysis
from actstore.analysis import AnalysisCancelled
from actstore.config import Settings
from actstore.errors import InvalidInput, LimitExceeded, QueryTimeout
from actstore.layers import LayerRef
from actstore.service import Service
from actstore.service.cache import ByteLRU, nbytes
from actstore.service.encoders import truncate_text
from actstore.service.work import Scheduler, WorkStatus, cka_cost, run_cancellable, sae_correlation_cost

N = 500  # prompts: a 10,000-permutation test over them takes several seconds, one permutation ~1 ms
D = 8


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    """Models a and b, 3 layers of width 8 each, over N shared prompts of 'ds'."""
    rng = np.random.default_rng(0)
    store = Store.open(tmp_path_factory.mktemp("bounded") / "db")
    ids = store.add_prompts("ds", [f"prompt {i}" for i in range(N)])
    Z = rng.standard_normal((N, 4))
    for key in ("a", "b"):
        layers = {
            l: (Z @ rng.standard_normal((4, D)) + 0.5 * rng.standard_normal((N, D))).astype(np.float32)
            for l in range(3)
        }
        store.activations.write(
            key, layers, ids, n_layers=3, dtype="float32", architecture="llama", source=f"nowhere/{key}"
        )
    return store


def _service(store: Store, **settings) -> Service:
    return Service(store, Settings(environ={}, **settings))


# ------------------------------------------------------------------ budgets
def test_a_permutation_test_over_the_budget_is_refused_before_it_starts(store):
    service = _service(store, max_cost=1e9)
    with pytest.raises(LimitExceeded) as exc:
        service.similarity.cka(LayerRef("a", layer=0), LayerRef("b", layer=0), permutations=10_000)
    # 2 n^2 (p + q) + P n^2 (GATHER_FLOPS + 2) = 2 * 500^2 * 16 + 10^4 * 500^2 * 82 = 2.05008e11
    assert str(exc.value) == (
        "cka over n = 500 prompts (d = 8, 8) with 10000 permutations has an estimated cost of 2.05e+11 "
        "floating-point operations, over this server's limit of 1e+09 (ACTSTORE_MAX_COST); use fewer prompts "
        "(a dataset), permutations, layers or random pairs"
    )
    assert service.results.computed == 0
    # the same pair without permutations is far below the budget and runs
    r = service.similarity.cka(LayerRef("a", layer=0), LayerRef("b", layer=0))
    assert (r.n, r.permutations, service.results.computed) == (N, 0, 1)


def test_every_heavy_query_kind_is_checked_against_the_budget(store):
    service = _service(store, max_cost=1e5)
    tail = (
        "floating-point operations, over this server's limit of 1e+05 (ACTSTORE_MAX_COST); use fewer prompts "
        "(a dataset), permutations, layers or random pairs"
    )
    cases = {
        # 2 graphs of 2 n^2 d = 4e6 each, plus n k = 2,500
        "mutualKnn of k = 5 over n = 500 prompts has an estimated cost of 8e+06 ": lambda: (
            service.similarity.mutual_knn(LayerRef("a", layer=0), LayerRef("b", layer=0), k=5)
        ),
        # 6 graphs of 4e6, plus 3 * 3 * n k = 22,500
        "affinityMatrix of 3 x 3 layers, k = 5 over n = 500 prompts has an estimated cost of 2.4e+07 ": lambda: (
            service.similarity.affinity_matrix("a", "b", k=5)
        ),
        # 2 n (p^2 + p q) + p^3 = 128,512
        "bridge over n = 500 prompts (d = 8, 8) has an estimated cost of 1.29e+05 ": lambda: service.bridges.bridge(
            LayerRef("a", layer=0), LayerRef("b", layer=0)
        ),
    }
    for message, query in cases.items():
        with pytest.raises(LimitExceeded) as exc:
            query()
        assert str(exc.value) == message + tail
    plan = analysis.plan_cka_matrix(N, [D] * 3, [D] * 3)
    with pytest.raises(LimitExceeded) as exc:
        service.similarity.cka_matrix("a", "b")
    assert str(exc.value) == (
        f"ckaMatrix of 3 x 3 layers over n = 500 prompts has an estimated cost of "
        f"{min(plan.gram_flops, plan.feature_flops):.3g} " + tail
    )
    assert service.results.computed == 0


def test_cost_formulas_match_their_docstrings():
    assert cka_cost(500, 8, 8, 10_000).flops == 2 * 500**2 * 16 + 10_000 * 500**2 * 82
    assert cka_cost(10_000, 8, 8, 10_000).what == "cka over n = 10000 prompts (d = 8, 8) with 10000 permutations"
    assert cka_cost(10_000, 4096, 4096, 10_000).flops == pytest.approx(8.36e13, rel=1e-3)  # the ~95-minute test
    plan = analysis.plan_cka_matrix(500, [8], [8])
    assert cka_cost(500, 8, 8).flops == min(plan.gram_flops, plan.feature_flops)
    # encode 2 n (d_a f_a + d_b f_b), correlate 2 n f_a f_b, match f^3, R random pairs of 2 min(f) d^2
    assert sae_correlation_cost(100, 8, 32, 8, 64, 10, True) == (
        2 * 100 * (8 * 32 + 8 * 64) + 2 * 100 * 32 * 64 + 64**3 + 10 * 2 * 32 * 8 * 8
    )
    assert sae_correlation_cost(100, 8, 32, 8, 64, 10, False) == (
        2 * 100 * (8 * 32 + 8 * 64) + 2 * 100 * 32 * 64 + 10 * 2 * 32 * 8 * 8
    )


def test_a_1000_entry_layer_list_is_refused(store):
    service = _service(store)
    with pytest.raises(LimitExceeded) as exc:
        service.similarity.cka_matrix("a", "b", layers_a=[0] * 1000)
    assert str(exc.value) == "layers_a has 1000 entries; this server allows at most 64 (ACTSTORE_MAX_LAYERS)"
    with pytest.raises(LimitExceeded) as exc:
        service.similarity.affinity_matrix("a", "b", layers_b=list(range(1000)))
    assert str(exc.value) == "layers_b has 1000 entries; this server allows at most 64 (ACTSTORE_MAX_LAYERS)"
    with pytest.raises(LimitExceeded) as exc:
        service.similarity.cka_matrix("a", "b", grid=1000)
    assert str(exc.value) == "grid = 1000 layers; this server allows at most 64 (ACTSTORE_MAX_LAYERS)"
    with pytest.raises(LimitExceeded) as exc:
        service.saes.sae_matrix("a", "b", saes_a=["x"] * 1000)
    assert str(exc.value) == "saes_a has 1000 entries; this server allows at most 64 (ACTSTORE_MAX_LAYERS)"
    assert service.results.computed == 0


# --------------------------------------------------------------- scheduling
def _start(service: Service, stop: threading.Event, fn, *args, **kwargs) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run() -> None:
        try:
            out["result"] = service.run_cancellable(stop, fn, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out["error"] = exc
        out["finished"] = time.perf_counter()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _wait_running(service: Service, running: int, timeout: float = 10.0) -> None:
    deadline = time.perf_counter() + timeout
    while service.results.status.running != running:
        assert time.perf_counter() < deadline, f"never {running} running: {service.results.status}"
        time.sleep(0.01)


def test_an_expensive_computation_stops_soon_after_its_time_limit(store):
    service = _service(store)
    stop = threading.Event()
    thread, out = _start(
        service,
        stop,
        service.similarity.cka,
        LayerRef("a", layer=1),
        LayerRef("b", layer=1),
        permutations=10_000,
        seed=1,
    )
    _wait_running(service, 1)
    time.sleep(0.3)
    stop.set()  # what the API's call() does when the request's time limit passes or its client leaves
    stopped_at = time.perf_counter()
    thread.join(5.0)
    assert not thread.is_alive()
    assert out["finished"] - stopped_at < 1.0
    error = out["error"]
    assert isinstance(error, QueryTimeout)
    done = int(str(error).split("stopped after ")[1].split(" of ")[0])
    assert 0 <= done < 10_000  # stopped part-way: most permutations never ran
    assert str(error) == (
        f"the computation was stopped after {done} of 10000 permutations: its time limit passed or its client left"
    )
    assert service.results.computed == 0
    assert service.results.status == WorkStatus(running=0, queued=0, slots=2, max_queued=8)


def test_a_cheap_query_does_not_wait_behind_an_expensive_one(store):
    """One slot, taken by a 10,000-permutation test (several seconds); a plain CKA is below
    ACTSTORE_CHEAP_COST and runs at once. Measured here: ~5-30 ms (was the whole test before)."""
    service = _service(store, heavy_slots=1)
    stop = threading.Event()
    thread, out = _start(
        service,
        stop,
        service.similarity.cka,
        LayerRef("a", layer=2),
        LayerRef("b", layer=2),
        permutations=10_000,
        seed=2,
    )
    try:
        _wait_running(service, 1)
        t0 = time.perf_counter()
        r = service.similarity.cka(LayerRef("a", layer=2), LayerRef("b", layer=0))
        wait = time.perf_counter() - t0
        assert "finished" not in out  # the expensive one is still running
    finally:
        stop.set()
        thread.join(5.0)
    assert r.n == N and r.permutations == 0
    assert wait < 1.0, f"the cheap query waited {wait:.3f} s"


def test_heavy_work_beyond_the_slots_queues_and_a_full_queue_is_refused():
    scheduler = Scheduler(slots=1, max_queued=1, cheap_cost=1e9)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with scheduler.slot(None):
            holding.set()
            release.wait(5.0)

    first = threading.Thread(target=hold)
    first.start()
    assert holding.wait(5.0)
    queued_stop = threading.Event()
    waiter_out: dict = {}

    def wait_in_queue() -> None:
        try:
            with scheduler.slot(None):
                waiter_out["ran"] = True
        except QueryTimeout as exc:
            waiter_out["error"] = str(exc)

    second = threading.Thread(target=run_cancellable, args=(queued_stop, wait_in_queue))
    second.start()
    deadline = time.perf_counter() + 5.0
    while scheduler.status().queued != 1 and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert scheduler.status() == WorkStatus(running=1, queued=1, slots=1, max_queued=1)
    with pytest.raises(LimitExceeded) as exc:
        with scheduler.slot(None):
            pass
    assert str(exc.value) == (
        "the server is busy: 1 heavy computations are running and 1 are queued, the most it "
        "queues (ACTSTORE_HEAVY_QUEUE=1); try again later"
    )
    queued_stop.set()  # a queued request whose client left stops waiting
    second.join(5.0)
    assert waiter_out == {"error": "the computation was stopped: its time limit passed or its client left"}
    assert scheduler.status() == WorkStatus(running=1, queued=0, slots=1, max_queued=1)
    release.set()
    first.join(5.0)
    with scheduler.slot(None):
        assert scheduler.status().running == 1
    assert scheduler.status().running == 0


def test_slot_settings_are_checked(store):
    with pytest.raises(InvalidInput) as exc:
        _service(store, heavy_slots=0)
    assert str(exc.value) == "ACTSTORE_HEAVY_SLOTS must be at least 1, got 0"


def test_analysis_permutation_test_asks_should_stop_before_every_permutation():
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((40, 5)), rng.standard_normal((40, 6))
    asked = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) > 3

    with pytest.raises(AnalysisCancelled) as exc:
        analysis.cka_permutation_test(X, Y, permutations=100, should_stop=should_stop)
    assert str(exc.value) == "stopped after 3 of 100 permutations"


# ----------------------------------------------------------- bounded caches
def test_byte_lru_keeps_at_most_its_budget():
    lru = ByteLRU(1000)
    for i in range(5):
        lru.put(i, np.zeros(50, dtype=np.int64))  # 400 bytes each
    assert (len(lru), lru.bytes, lru.get(0), lru.get(4) is not None) == (2, 800, None, True)
    lru.put("huge", np.zeros(200, dtype=np.int64))  # 1600 bytes: returned by its caller, never kept
    assert (lru.get("huge"), lru.bytes) == (None, 800)
    csr = sp.random(30, 40, density=0.1, format="csr", random_state=0, dtype=np.float32)
    assert nbytes(csr) == csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes
    assert nbytes((np.zeros(3), 0.5)) == 24
    params = analysis.sae.SaeParams(
        W_enc=np.zeros((4, 16), np.float32),
        b_enc=np.zeros(16, np.float32),
        W_dec=np.zeros((16, 4), np.float32),
        b_dec=np.zeros(4, np.float32),
    )
    assert nbytes(("a record", params)) == (64 + 16 + 64 + 4) * 4


def test_mutual_knn_over_21_distinct_k_stays_within_the_graph_budget(store):
    service = _service(store, graph_cache_mb=1)
    assert service.reads.graphs.max_bytes == 1 << 20
    service.reads.graphs = ByteLRU(60_000)  # each graph here is N k 8 bytes: 4 kB (k = 1) to 84 kB (k = 21)
    for k in range(1, 22):
        r = service.similarity.mutual_knn(LayerRef("a", layer=0), LayerRef("b", layer=0), k=k)
        assert r.k == k
        assert service.reads.graphs.bytes <= 60_000
    assert service.saes.features.max_bytes == 1024 << 20


def test_a_huge_text_is_cut_before_tokenization(store, monkeypatch):
    service = _service(store)
    seen: list[int] = []

    class Tokenizer:
        truncation_side = "right"

    class FakeRunner:
        d_model, n_layers, max_length, tokenizer = D, 3, 1024, Tokenizer()

        def encode(self, texts, layers, batch_size, max_tokens):
            seen.append(len(texts[0]))
            return {layers[0]: np.ones((1, D), dtype=np.float32)}

    monkeypatch.setattr(service.encoders, "_runner", lambda info: FakeRunner())
    text = "word " * 2_000_000  # 10 MB
    t0 = time.perf_counter()
    hits = service.similarity.nearest_neighbors(LayerRef("a", layer=0), text=text, k=3)
    assert time.perf_counter() - t0 < 5.0
    assert seen == [32 * 512] and len(hits) == 3
    assert truncate_text("abcdef" * 10_000, 4, "left") == ("abcdef" * 10_000)[-128:]
    assert truncate_text("short", None) == "short"


def test_a_caller_sharing_a_computation_stopped_for_another_caller_gets_its_answer(store):
    service = _service(store)
    args = (LayerRef("a", layer=0), LayerRef("b", layer=1))
    leader_stop = threading.Event()
    leader, leader_out = _start(service, leader_stop, service.similarity.cka, *args, permutations=1000, seed=5)
    _wait_running(service, 1)
    follower, follower_out = _start(
        service, threading.Event(), service.similarity.cka, *args, permutations=1000, seed=5
    )
    time.sleep(0.2)  # the follower joins the leader's computation (single flight) meanwhile
    leader_stop.set()
    leader.join(10.0)
    follower.join(30.0)
    assert isinstance(leader_out.get("error"), QueryTimeout)
    r = follower_out["result"]
    assert (r.n, r.permutations, service.results.computed) == (N, 1000, 1)


def test_a_graphql_request_past_its_time_limit_stops_its_computation(store):
    """Through the API: call() sets the request's stop event when its time limit passes."""
    from starlette.testclient import TestClient

    from actstore.api import create_app

    service = _service(store, request_timeout_s=0.5)
    query = '{ cka(a: {model: "a", layer: 2}, b: {model: "b", layer: 1}, permutations: 10000, seed: 7) { pValue } }'
    with TestClient(create_app(service)) as client:
        body = client.post("/graphql", json={"query": query}).json()
        answered = time.perf_counter()
        assert "ran past the server's time limit of 0.5 s and was stopped" in body["errors"][0]["message"]
        while service.results.status.running and time.perf_counter() - answered < 5.0:
            time.sleep(0.01)
        stopped_within = time.perf_counter() - answered
    assert service.results.status.running == 0 and stopped_within < 1.0
    assert service.results.computed == 0


@pytest.mark.parametrize("form", ["gram", "feature"])
def test_analysis_cka_matrix_and_knn_graph_ask_should_stop(form):
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((64, 5)) for _ in range(3)]
    with pytest.raises(AnalysisCancelled) as exc:
        analysis.cka_matrix(xs, xs, form=form, should_stop=lambda: True)
    what = "rows of Gram blocks" if form == "gram" else "layer pairs"
    assert str(exc.value) == f"stopped after 0 of {64 if form == 'gram' else 9} {what}"
    with pytest.raises(AnalysisCancelled) as exc:
        analysis.knn_graph(xs[0], 3, device="cpu", should_stop=lambda: True)
    assert str(exc.value) == "stopped after 0 of 64 rows of the k-NN self-join"
    assert analysis.knn_graph(xs[0], 3, device="cpu", should_stop=lambda: False).shape == (64, 3)
