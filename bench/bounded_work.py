"""Benchmark (issue 12): work an anonymous query can cause, through the service.

``wait``: a cheap CKA (no permutations) issued while a 3,000-permutation CKA test over
n = 1,000 prompts runs; prints how long the cheap one waited and, where the service can
cancel, how long the expensive one took to stop once told to.
``rss``: peak RSS of 21 mutualKnn queries over distinct k (10, 50, 100, ..., 1000) on
n = 4,000 prompts of width 64; the k-NN graph cache is bounded by ACTSTORE_GRAPH_CACHE_MB.

Works against any tree with ``ACTSTORE_SRC=/path/to/tree`` (default: this one), so the same
command measures before and after a change:
    python bench/bounded_work.py wait
    python bench/bounded_work.py wait-api   # the same through GraphQL, behind 4 expensive requests
    ACTSTORE_GRAPH_CACHE_MB=64 python bench/bounded_work.py rss
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.environ.get("ACTSTORE_SRC", str(Path(__file__).resolve().parents[1])))

import numpy as np  # noqa: E402

from actstore import Store  # noqa: E402
from actstore.config import Settings  # noqa: E402
from actstore.layers import LayerRef  # noqa: E402
from actstore.service import Service  # noqa: E402


def _store(folder: str, n: int, d: int, n_layers: int) -> Store:
    rng = np.random.default_rng(0)
    store = Store.open(Path(folder) / "db")
    ids = store.add_prompts("ds", [f"prompt {i}" for i in range(n)])
    Z = rng.standard_normal((n, 8))
    for key in ("a", "b"):
        layers = {
            l: (Z @ rng.standard_normal((8, d)) + rng.standard_normal((n, d))).astype(np.float32)
            for l in range(n_layers)
        }
        store.activations.write(
            key, layers, ids, n_layers=n_layers, dtype="float32", architecture="llama", source=f"nowhere/{key}"
        )
    return store


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def wait() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        service = Service(_store(tmp, 1000, 32, 2), Settings(max_permutations=10_000))
        cancellable = hasattr(service, "run_cancellable")
        stop = threading.Event()
        out: dict = {}

        def expensive() -> None:
            t0 = time.perf_counter()
            args = (LayerRef("a", layer=0), LayerRef("b", layer=0))
            try:
                if cancellable:
                    service.run_cancellable(stop, service.similarity.cka, *args, permutations=3000)
                else:
                    service.similarity.cka(*args, permutations=3000)
                out["outcome"] = "finished"
            except Exception as exc:  # noqa: BLE001
                out["outcome"] = f"{type(exc).__name__}: {exc}"
            out["ran"] = time.perf_counter() - t0
            out["end"] = time.perf_counter()

        cheap = (LayerRef("a", layer=1), LayerRef("b", layer=1))
        t0 = time.perf_counter()
        service.similarity.cka(*cheap, debiased=False)  # reads the layers; the timed query computes only
        idle = time.perf_counter() - t0
        thread = threading.Thread(target=expensive)
        thread.start()
        time.sleep(2.0)
        t0 = time.perf_counter()
        service.similarity.cka(*cheap, debiased=True)
        waited = time.perf_counter() - t0
        print(
            f"cheap cka took {waited * 1000:.0f} ms while a 3,000-permutation cka (n = 1,000) ran "
            f"(a first cheap cka on an idle service, layer reads included: {idle * 1000:.0f} ms)"
        )
        still = thread.is_alive()
        stop.set()
        t_stop = time.perf_counter()
        thread.join()
        print(
            f"expensive one: {out['outcome']} after {out['ran']:.1f} s"
            + (f"; stopped {1000 * (out['end'] - t_stop):.0f} ms after being told to" if cancellable and still else "")
        )


def wait_api(expensive_queries: int = 4) -> None:
    """Through GraphQL: ``expensive_queries`` 3,000-permutation CKA requests, then a cheap one."""
    from starlette.testclient import TestClient

    from actstore.api import create_app

    with tempfile.TemporaryDirectory() as tmp:
        service = Service(_store(tmp, 1000, 32, 2), Settings(max_permutations=10_000, request_timeout_s=60))
        q = '{ cka(a: {model: "a", layer: 0}, b: {model: "b", layer: 0}, permutations: 3000, seed: SEED) { pValue } }'
        with TestClient(create_app(service)) as client:
            client.post(
                "/graphql",
                json={
                    "query": '{ cka(a: {model: "a", layer: 1}, b: {model: "b", layer: 1}, debiased: false) { value } }'
                },
            )
            threads = [
                threading.Thread(
                    target=client.post, args=("/graphql",), kwargs={"json": {"query": q.replace("SEED", str(i))}}
                )
                for i in range(expensive_queries)
            ]
            for t in threads:
                t.start()
            time.sleep(2.0)
            t0 = time.perf_counter()
            body = client.post(
                "/graphql", json={"query": '{ cka(a: {model: "a", layer: 1}, b: {model: "b", layer: 1}) { value } }'}
            ).json()
            waited = time.perf_counter() - t0
            status = getattr(service.results, "status", None)
            print(
                f"API: cheap cka took {waited * 1000:.0f} ms behind {expensive_queries} expensive requests "
                f"({'ok' if 'errors' not in body else body['errors'][0]['message']}); heavy work now: {status}"
            )
            for t in threads:
                t.join()


def rss() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        service = Service(_store(tmp, 4000, 64, 1), Settings(max_k=1000))
        a, b = LayerRef("a", layer=0), LayerRef("b", layer=0)
        service.similarity.cka(a, b)  # loads both layers into the layer cache
        base = _rss_mb()
        t0 = time.perf_counter()
        for k in [10, *range(50, 1001, 50)]:
            service.similarity.mutual_knn(a, b, k=k)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        graphs = getattr(service.reads, "graphs", None)
        held = f"; graph cache holds {graphs.bytes / 2**20:.0f} MiB" if hasattr(graphs, "bytes") else ""
        print(
            f"21 mutualKnn (k = 10..1000, n = 4,000): RSS before {base:.0f} MB, after {_rss_mb():.0f} MB, "
            f"peak {peak:.0f} MB, {time.perf_counter() - t0:.1f} s{held}"
        )


if __name__ == "__main__":
    {"wait": wait, "wait-api": wait_api, "rss": rss}[sys.argv[1] if len(sys.argv) > 1 else "wait"]()
