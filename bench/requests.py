"""The request layer costs nothing you can see: cached answers and cold queries, side by side.

Prints, on one store (model A 30 layers x d 256, model B 6 layers x d 384, n = 1,024 prompts):

1. a cached ``ckaMatrix``: the store look-up it wraps (``store.results.get``), the Python face
   (``actstore.open(...).cka_matrix``) and in-process GraphQL (``actstore.api.execute``), with
   the ratios face / look-up (target < 2) and GraphQL / face (target < 2), and the number of
   tables opened by a cache hit (target 0);
2. a cold ``ckaMatrix`` (a new service, no cached answer, empty layer cache) against the same
   work done by hand: reading every layer's rows of the shared prompts and
   ``analysis.cka_matrix`` (target <= 1.3).

    python bench/requests.py [--n 1024] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import actstore as act  # noqa: E402
from actstore import analysis  # noqa: E402
from actstore.api import execute  # noqa: E402
from actstore.service import Service  # noqa: E402
from actstore.store import tables as tables_module  # noqa: E402


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    root = tempfile.mkdtemp()
    store = act.Store.open(f"{root}/db")
    ids = store.add_prompts("bench", [f"prompt {i}" for i in range(args.n)])
    for model, (layers, d) in {"a": (30, 256), "b": (6, 384)}.items():
        store.activations.write(
            model,
            {l_: rng.standard_normal((args.n, d), dtype=np.float32) for l_ in range(layers)},
            ids,
            n_layers=layers,
        )
    print(f"store: model a 30 layers x d 256, model b 6 layers x d 384, n = {args.n}")

    # --------------------------------------------------------------- cached answers
    session = act.open(store)
    answer = session.cka_matrix("a", "b")
    key = answer.key
    lookup = median_ms(lambda: store.results.get(key), args.repeat * 20)
    face = median_ms(lambda: session.cka_matrix("a", "b"), args.repeat * 20)
    query = '{ ckaMatrix(modelA: "a", modelB: "b") { values } }'
    gql = median_ms(lambda: asyncio.run(execute(session.service, query)), args.repeat * 10)
    opened = []
    real_open = tables_module.Tables.open

    def counting_open(self, name, *a, **kw):
        opened.append(name)
        return real_open(self, name, *a, **kw)

    tables_module.Tables.open = counting_open
    try:
        session.cka_matrix("a", "b")
    finally:
        tables_module.Tables.open = real_open
    print(
        f"cached ckaMatrix: store look-up {lookup:.2f} ms, Python face {face:.2f} ms "
        f"(ratio {face / lookup:.2f}, target < 2), in-process GraphQL {gql:.2f} ms "
        f"(ratio to the face {gql / face:.2f}, target < 2); tables opened by a cache hit: "
        f"{len(set(n for n in opened if n.startswith('acts__')))} activation tables, {len(opened)} opens in all"
    )

    # ----------------------------------------------------------------- cold queries
    # every cold run asks a question not asked before (debiased x precision), of a new service
    variants = [(d, p) for d in (True, False) for p in ("float64", "float32", "auto")]

    def cold_service(debiased: bool, precision: str) -> float:
        svc = Service(store)
        t0 = time.perf_counter()
        svc.similarity.cka_matrix("a", "b", debiased=debiased, precision=precision)
        return time.perf_counter() - t0

    def by_hand(debiased: bool, precision: str) -> float:
        t0 = time.perf_counter()
        shared = np.intersect1d(store.read_activations("a", 0)[0], store.read_activations("b", 0)[0])
        xs = [store.read_activations("a", l_)[1] for l_ in range(30)]
        ys = [store.read_activations("b", l_)[1] for l_ in range(6)]
        assert len(shared) == args.n
        analysis.cka_matrix(xs, ys, debiased=debiased, precision=precision)
        return time.perf_counter() - t0

    service_times, hand_times = [], []
    for debiased, precision in variants[: max(2, min(len(variants), args.repeat))]:
        hand_times.append(by_hand(debiased, precision))
        service_times.append(cold_service(debiased, precision))
    s_med, h_med = statistics.median(service_times), statistics.median(hand_times)
    print(
        f"cold ckaMatrix 30 x 6 layers: service {s_med:.2f} s, reads + analysis.cka_matrix {h_med:.2f} s "
        f"(ratio {s_med / h_med:.2f}, target <= 1.3)"
    )


if __name__ == "__main__":
    main()
