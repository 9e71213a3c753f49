"""Cost of the per-row checksums of activation vectors (write, read, verify, size).

    python bench/checksums.py [--n 20000] [--d 2048] [--dtype float16] [--repeat 3]

One layer of ``n`` random vectors of width ``d``, written to two stores in the same run:
``with`` (every row carries its xxh3-64 digest, as actstore writes now) and ``without`` (the
same rows in a table without the digest column, as written before checksums). Prints, as
ratios with / without (best of ``repeat`` interleaved rounds):

* write: ``write_activations`` of the layer (the digest of every row computed and stored);
* read: a whole-layer ``read_activations`` with ``ACTSTORE_VERIFY_READS=1`` against a plain
  read (the plain read pays nothing for checksums: it does not read the column);
* verify: ``actstore verify`` of the store (every row hashed and compared) against the
  same store without digests;
* size: bytes of the layer's data files (8 bytes per row more);

and the hashing alone (``row_digests`` of the layer), which is what a checked read or verify
adds to the I/O; on a busy machine the I/O noise can exceed it, so ratios near 1.0 (or below)
mean "within noise".
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actstore import Store  # noqa: E402
from actstore.config import Settings  # noqa: E402
from actstore.store import activations as acts_module  # noqa: E402
from actstore.store.vectors import row_digests  # noqa: E402

TABLE = "acts__m__L000"


def _interleaved(fns: dict, repeat: int) -> dict[str, float]:
    """Best time of each function over ``repeat`` rounds that run each once, in turn."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _data_bytes(store: Store) -> int:
    ds = store.tables.open(TABLE).to_lance()
    root = Path(ds.uri) / "data"
    return sum((root / f.path).stat().st_size for frag in ds.get_fragments() for f in frag.data_files())


def _drop_digests(store: Store) -> None:
    """Rewrite the layer table without its digest column (a table from before checksums)."""
    tbl = store.tables.open(TABLE)
    t = tbl.to_arrow()
    schema = pa.schema([f for f in tbl.schema if f.name != "digest"], metadata=tbl.schema.metadata)
    store.tables.overwrite(TABLE, pa.table({"prompt_id": t["prompt_id"], "vector": t["vector"]}, schema=schema))
    store.tables.optimize(TABLE, keep=timedelta(0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message=".*cleanup_older_than=0.*")
    X = np.random.default_rng(0).standard_normal((args.n, args.d), dtype=np.float32)
    root = Path(tempfile.mkdtemp(prefix="actstore-bench-checksums-"))
    plain, checked = Settings(environ={}), Settings(environ={}, verify_reads=True)
    try:
        stores = {name: Store.open(root / name, settings=plain) for name in ("with", "without")}
        ids = {name: s.add_prompts("ds", [f"p{i}" for i in range(args.n)]) for name, s in stores.items()}

        def write_once(name: str) -> None:
            stores[name].write_activations(
                "m", 0, ids[name], X, n_layers=1, source="bench", architecture="bench", dtype=args.dtype
            )

        def write_plain() -> None:  # the same write path, the hashing left out
            real = acts_module.row_digests
            acts_module.row_digests = lambda v: np.ones(len(v), np.uint64)
            try:
                write_once("without")
            finally:
                acts_module.row_digests = real

        write_once("with"), write_plain()  # creation and first imports, outside the timing
        # Interleaved rounds (the machine is shared): the best time of each side.
        write = _interleaved({"with": lambda: write_once("with"), "without": write_plain}, args.repeat)
        _drop_digests(stores["without"])
        stores["with"].tables.optimize(TABLE, keep=timedelta(0))
        with_ = Store.open(root / "with", settings=checked)
        read = _interleaved(
            {
                "checked": lambda: with_.read_activations("m", 0),
                "plain": lambda: stores["with"].read_activations("m", 0),
            },
            args.repeat,
        )
        read_checked, read_plain = read["checked"], read["plain"]
        verify = _interleaved({name: s.maintenance.verify for name, s in stores.items()}, args.repeat)
        size = {name: _data_bytes(s) for name, s in stores.items()}
        stored = X.astype(np.float16) if args.dtype == "float16" else X
        digest_s = _interleaved({"digest": lambda: row_digests(stored)}, args.repeat)["digest"]
        checks = {c.name: c for c in stores["with"].maintenance.verify()}
        assert checks["checksums"].ok, checks["checksums"].line()

        print(f"checksums: n={args.n:,} d={args.d} {args.dtype}, best of {args.repeat}")
        print(
            f"  write   {write['with'] * 1e3:8.1f} ms vs {write['without'] * 1e3:8.1f} ms without digests: "
            f"{write['with'] / write['without']:.2f}x"
        )
        print(
            f"  read    {read_checked * 1e3:8.1f} ms with ACTSTORE_VERIFY_READS=1 vs {read_plain * 1e3:8.1f} ms "
            f"plain: {read_checked / read_plain:.2f}x"
        )
        print(
            f"  verify  {verify['with'] * 1e3:8.1f} ms vs {verify['without'] * 1e3:8.1f} ms without digests: "
            f"{verify['with'] / verify['without']:.2f}x"
        )
        print(
            f"  hashing alone: {digest_s * 1e3:.1f} ms for {args.n:,} rows "
            f"({stored.nbytes / digest_s / 1e9:.1f} GB/s; {digest_s / read_plain:.1%} of a plain read)"
        )
        print(
            f"  size    {size['with']:,} B vs {size['without']:,} B: {size['with'] / size['without']:.4f}x "
            f"(+{(size['with'] - size['without']) / args.n:.1f} B per row)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
