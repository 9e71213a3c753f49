"""Store I/O benchmark: whole-layer write and read against np.save / np.load on the same disk.

    python bench/store_io.py [--n 20000] [--d 2048] [--dtype float16] [--repeat 5]

Prints write throughput and whole-layer read time as ratios against np.save / np.load of
the same array (read ratio = store time / np.load time; targets: read <= 2x), and bytes on
disk over raw bytes (target <= 1.1x). The store read returns float32 (a cast included in its
time); np.load returns the stored dtype, so the reference is also timed with the cast.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from actstore import Store


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    args = ap.parse_args()

    root = Path(args.dir or tempfile.mkdtemp(prefix="actstore-bench-"))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.n, args.d), dtype=np.float32)
    X = X.astype(args.dtype).astype(np.float32)  # values the storage dtype represents exactly
    raw = X.astype(args.dtype)
    raw_bytes = raw.nbytes

    store = Store.open(root / "db")
    ids = store.add_prompts("bench", [f"prompt {i}" for i in range(args.n)])

    # Writes: a fresh table each time for the store (same cost as the first ingest write).
    npy = root / "ref.npy"
    t_save = _best(lambda: np.save(npy, raw), args.repeat)
    write_times = []
    for rep in range(args.repeat):
        key = f"m{rep}"
        t0 = time.perf_counter()
        store.write_activations(key, 0, ids, X, n_layers=1, dtype=args.dtype)
        write_times.append(time.perf_counter() - t0)
    t_write = min(write_times)

    t_load = _best(lambda: np.load(npy), args.repeat)
    t_load_cast = _best(lambda: np.load(npy).astype(np.float32), args.repeat)
    t_read = _best(lambda: store.read_activations("m0", 0), args.repeat)
    got_ids, got = store.read_activations("m0", 0)
    assert np.array_equal(got, X) and len(got_ids) == args.n

    disk = _dir_bytes(root / "db" / "acts__m0__L000.lance")
    mb = raw_bytes / 2**20
    print(f"store_io: n={args.n} d={args.d} dtype={args.dtype} raw={mb:.1f} MiB  (best of {args.repeat})")
    print(
        f"  write: store {t_write * 1e3:8.1f} ms ({mb / t_write:7.1f} MiB/s) | np.save {t_save * 1e3:8.1f} ms "
        f"({mb / t_save:7.1f} MiB/s) | store/np.save time ratio {t_write / t_save:.2f}x"
    )
    print(
        f"  read : store {t_read * 1e3:8.1f} ms -> float32 | np.load {t_load * 1e3:8.1f} ms "
        f"| np.load+cast {t_load_cast * 1e3:8.1f} ms | store/np.load {t_read / t_load:.2f}x "
        f"(target <= 2x) | store/(np.load+cast) {t_read / t_load_cast:.2f}x"
    )
    print(f"  disk : {disk / 2**20:.1f} MiB for {mb:.1f} MiB raw -> {disk / raw_bytes:.3f}x (target <= 1.1x)")
    if not args.dir:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    main()
