"""API latency: nearestNeighbors over HTTP against the store's k-NN called in-process.

    python bench/api.py [--n 20000] [--d 1024] [--queries 300] [--k 10]

Starts `actstore serve` (uvicorn) on a free loopback port over a synthetic store, then times
sequential single queries by promptId: p50/p99 over HTTP (httpx, keep-alive) and p50/p99
of `store.knn.of_prompts` in-process for the same prompts. Target: HTTP p50
within 2 ms of in-process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from actstore import Store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--d", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="actstore-bench-api-"))
    try:
        rng = np.random.default_rng(0)
        store = Store.open(root / "db")
        ids = np.asarray(store.add_prompts("bench", [f"prompt {i}" for i in range(args.n)]))
        centers = rng.standard_normal((64, args.d)).astype(np.float32)
        X = centers[rng.integers(0, 64, args.n)] + 0.5 * rng.standard_normal((args.n, args.d), dtype=np.float32)
        store.write_activations("m", 0, ids, X, n_layers=1)
        qids = rng.choice(ids, size=args.queries, replace=False)

        # in-process: the same look-up (stored prompt, self excluded) on the store directly
        store.knn.of_prompts("m", 0, qids[:1], args.k)  # build the index once
        local = []
        for pid in qids:
            t0 = time.perf_counter()
            store.knn.of_prompts("m", 0, [pid], args.k)
            local.append(time.perf_counter() - t0)

        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "actstore.cli", "serve", "--store", store.uri, "--port",
                                 str(port), "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            query = "query($p: ID!, $k: Int!) { nearestNeighbors(at: {model: \"m\", layer: 0}, promptId: $p, k: $k) { promptId score } }"
            remote = []
            with httpx.Client(base_url=base, timeout=60) as client:
                for pid in qids[:5]:  # warm-up: index load, caches, connection
                    client.post("/graphql", json={"query": query, "variables": {"p": str(pid), "k": args.k}})
                for pid in qids:
                    t0 = time.perf_counter()
                    r = client.post("/graphql", json={"query": query, "variables": {"p": str(pid), "k": args.k}})
                    remote.append(time.perf_counter() - t0)
                    assert "errors" not in r.json(), r.text
        finally:
            proc.terminate()
            proc.wait(10)
        lp50, lp99 = np.percentile(local, [50, 99]) * 1e3
        rp50, rp99 = np.percentile(remote, [50, 99]) * 1e3
        print(f"api: n={args.n} d={args.d} float16, k={args.k}, {args.queries} sequential queries by promptId")
        print(f"  in-process store k-NN: p50 {lp50:6.2f} ms  p99 {lp99:6.2f} ms")
        print(f"  HTTP nearestNeighbors: p50 {rp50:6.2f} ms  p99 {rp99:6.2f} ms")
        print(f"  p50 ratio HTTP/in-process {rp50 / lp50:.2f}x, difference {rp50 - lp50:+.2f} ms (target: within 2 ms)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
