"""Command-line start-up: whole `actstore ...` processes against `python -c pass`.

    python bench/cli_startup.py [--runs 7] [--n 200] [--d 64]

Builds a small store (``--n`` prompts, two models of 4 layers, d = ``--d``) in a temporary
folder, then runs each command ``--runs`` times as a separate process, interleaved so machine
noise hits all alike, and prints the median wall time, its ratio to ``python -c pass``
measured in the same run, and the target. Also times ``python -c "import lancedb"``: every
command that opens a store pays at least that. Targets: ``actstore info``, ``sae list`` and
``query`` under 1.5 s (the command line imports heavy modules only where they are used).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_S = 1.5


def _actstore() -> list[str]:
    script = Path(sys.executable).parent / "actstore"
    return [str(script)] if script.exists() else [sys.executable, "-m", "actstore.cli"]


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def build_store(uri: Path, n: int, d: int) -> None:
    from actstore import Store

    rng = np.random.default_rng(0)
    store = Store.open(uri)
    ids = store.add_prompts("bench", [f"prompt {i}" for i in range(n)], labels=[i % 2 for i in range(n)])
    for key in ("a", "b"):
        layers = {l: rng.standard_normal((n, d)).astype(np.float32) for l in range(4)}
        store.activations.write(key, layers, ids, n_layers=4, architecture="synthetic")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--d", type=int, default=64)
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="actstore-bench-cli-"))
    try:
        uri = root / "db"
        build_store(uri, args.n, args.d)
        cli, store = _actstore(), ["--store", str(uri)]
        commands = {  # name -> (argv, target seconds or None)
            "python -c pass": ([sys.executable, "-c", "pass"], None),
            "python -c 'import lancedb'": ([sys.executable, "-c", "import lancedb"], None),
            "actstore --help": ([*cli, "--help"], None),
            "actstore info": ([*cli, "info", *store], TARGET_S),
            "actstore sae list": ([*cli, "sae", "list", *store], TARGET_S),
            "actstore query": ([*cli, "query", "{ models { key } }", *store], TARGET_S),
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("ACTSTORE_")}
        env.update(HF_HUB_OFFLINE="1", COLUMNS="120")
        failed: dict[str, str] = {}
        for name, (argv, _) in commands.items():  # warm-up: page cache, .pyc files
            res = subprocess.run(argv, env=env, capture_output=True, text=True)
            if res.returncode != 0:
                failed[name] = f"exit {res.returncode}: {(res.stderr.strip().splitlines() or [''])[-1]}"
        commands = {name: c for name, c in commands.items() if name not in failed}
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, (argv, _) in commands.items():
                t0 = time.perf_counter()
                subprocess.run(argv, env=env, capture_output=True, check=True)
                times[name].append(time.perf_counter() - t0)

        base = statistics.median(times["python -c pass"])
        print(
            f"cli_startup: whole processes, median of {args.runs} runs ({os.cpu_count()} CPUs); store: "
            f"{args.n} prompts, 2 models x 4 layers, d={args.d}, {_dir_bytes(uri) / 2**20:.1f} MiB on disk"
        )
        for name, (_, target) in commands.items():
            med = statistics.median(times[name])
            verdict = "" if target is None else f"  target < {target:.1f} s: {'ok' if med < target else 'MISSED'}"
            print(
                f"  {name:28s} {med:6.3f} s  ({med / base:6.1f}x python -c pass; "
                f"min {min(times[name]):.3f}, max {max(times[name]):.3f}){verdict}"
            )
        for name, why in failed.items():
            print(f"  {name:28s} FAILED ({why}); not timed")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
