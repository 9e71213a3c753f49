"""Benchmark: Ray engines on this one machine against the local paths, measured in one run.

1. Ingest: ``actstore.ingest.ray_engine.ingest_ray`` (a Ray Data pipeline of model actors,
   fragments committed per wave) against ``actstore.ingest.pipeline.ingest`` (this process),
   same tiny random model, same prompts, same torch thread count per model copy. Prints the
   throughput of each (prompts/s, excluding nothing: model load, planning, commits
   included) and the ratio Ray / local (target >= 0.8; on a tiny model the fixed cost of
   starting actors dominates, so the ratio of the forward passes alone is printed too).
2. CKA matrix: ``actstore.service.engines.ray_cka_matrix`` (Ray tasks over row ranges of the
   Lance tables, summed statistics) against ``actstore.analysis.cka_matrix`` on the rows
   read by the service (local), at a size where both fit, with the largest relative
   difference of their answers.

Usage: python bench/scale.py [--prompts 512] [--layers 4] [--hidden 256] [--n 8192] [--d 512]
       [--cpus N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actstore import Store  # noqa: E402
from actstore.ingest.tiny import build_tiny_model  # noqa: E402


def _prompts(path: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    words = "the of a model layer token prompt river stone music paper light cold warm fast".split()
    path.write_text(
        "".join(
            json.dumps({"text": " ".join(rng.choice(words, int(rng.integers(4, 40)))) + f" #{i}"}) + "\n"
            for i in range(n)
        )
    )
    return path


def bench_ingest(tmp: Path, args) -> None:
    import torch

    from actstore.ingest.pipeline import ingest
    from actstore.ingest.ray_engine import ingest_ray

    model = build_tiny_model("llama", tmp / "model", n_layers=args.layers, hidden=args.hidden)
    prompts = _prompts(tmp / "p.jsonl", args.prompts)
    torch.set_num_threads(1)  # one thread per model copy on both paths (see ingest_ray: threads)
    t = time.perf_counter()
    loc = ingest(tmp / "local", str(model), "ds", prompts_file=prompts, key="m", device="cpu", batch_size=16)
    t_local = time.perf_counter() - t
    t = time.perf_counter()
    ray_s = ingest_ray(
        tmp / "ray",
        str(model),
        "ds",
        prompts_file=prompts,
        key="m",
        device="cpu",
        batch_size=16,
        commit_prompts=max(64, args.prompts // 4),
    )
    t_ray = time.perf_counter() - t
    a, b = Store.open(tmp / "local"), Store.open(tmp / "ray")
    same = all(
        a.read_activations("m", l)[1].tobytes() == b.read_activations("m", l)[1].tobytes() for l in range(args.layers)
    )
    workers = ray_s.extra["workers"]
    fwd_ratio = loc.forward_seconds / max(ray_s.forward_seconds / workers, 1e-9)
    print(
        f"ingest: {args.prompts} prompts, tiny llama {args.layers} layers x d={args.hidden}, "
        f"{workers} CPU actor(s) x 1 thread vs 1 local thread"
    )
    print(f"  local  {loc.encoded / t_local:8.1f} prompts/s ({t_local:.1f} s)")
    print(
        f"  ray    {ray_s.encoded / t_ray:8.1f} prompts/s ({t_ray:.1f} s end to end, "
        f"{ray_s.extra['commits']} commit wave(s))"
    )
    print(
        f"  ratio ray/local throughput: {t_local / t_ray:.2f} end to end (actor start-up and two model "
        f"loads included: a fixed cost per run); {fwd_ratio:.2f} in the forward passes alone"
    )
    print(f"  stored vectors bit-identical: {same}")


def bench_cka(tmp: Path, args) -> None:
    from actstore.analysis import cka_matrix
    from actstore.ingest.importer import import_activations
    from actstore.service.engines import ray_cka_matrix

    rng = np.random.default_rng(1)
    n, d, m = args.n, args.d, args.cka_layers
    prompts = tmp / "cka.jsonl"
    prompts.write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(n)))
    z = rng.standard_normal((n, 32), dtype=np.float32)
    for key in ("a", "b"):
        acts = np.stack(
            [
                z @ rng.standard_normal((32, d), dtype=np.float32)
                + rng.standard_normal((n, d), dtype=np.float32)
                + 20.0
                for _ in range(m)
            ],
            axis=1,
        )
        np.save(tmp / f"{key}.npy", acts)
        del acts
    st = Store.open(tmp / "cka-db")
    for key in ("a", "b"):
        import_activations(
            st, model_key=key, dataset="ds", prompts_file=prompts, arrays=[tmp / f"{key}.npy"], dtype="float32"
        )
    ia, ib = st.models.get("a"), st.models.get("b")
    ids = st.activations.shared("a", "b")
    layers = list(range(m))
    t = time.perf_counter()
    xs = [st.read_activations("a", l)[1] for l in layers]
    ys = [st.read_activations("b", l)[1] for l in layers]
    L = cka_matrix(xs, ys)
    t_local = time.perf_counter() - t
    del xs, ys
    ray_cka_matrix(st, ia, layers[:1], ib, layers[:1], ids[:64])  # warm the task workers
    t = time.perf_counter()
    R = ray_cka_matrix(st, ia, layers, ib, layers, ids)
    t_ray = time.perf_counter() - t
    print(f"CKA matrix: {m} x {m} layers, n = {n}, d = {d} (float32 tables, {2 * m * n * d * 4 / 2**20:.0f} MiB read)")
    print(f"  local (read + analysis.cka_matrix) {t_local:.2f} s; ray (tasks over row ranges) {t_ray:.2f} s")
    print(
        f"  ratio local/ray time: {t_local / t_ray:.2f}; max relative difference "
        f"{np.abs(R - L).max() / np.abs(L).max():.1e}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=512)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--n", type=int, default=8192)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--cka-layers", type=int, default=4)
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    args = p.parse_args()
    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        with tempfile.TemporaryDirectory(prefix="actstore-bench-scale-") as tmp:
            bench_ingest(Path(tmp), args)
            bench_cka(Path(tmp), args)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
