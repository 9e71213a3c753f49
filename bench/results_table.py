"""Growth of the ``results`` table: files on disk after many distinct cached answers, without
maintenance (the naive reference, measured in the same run) and with the defaults.

    python bench/results_table.py [--puts 1000]

Each put is one Lance commit (a data file, a manifest, a transaction file). Without
maintenance the folder grows ~3 files per answer; with it (every ``results_compact_every``
puts: cap the rows at ``results_max_rows``, compact, drop versions older than a few seconds)
it stays bounded. Measured on the 2-core machine, 1,000 puts: 3,313 files vs 383-446 (the
versions of the last two seconds are kept, so the figure depends on the machine's speed).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from actstore import Store
from actstore.config import Settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--puts", type=int, default=1000)
    args = ap.parse_args()
    runs = {
        "no maintenance (reference)": Settings(environ={}, results_compact_every=10**9, results_max_rows=10**9),
        "defaults (every 100 puts, cap 10,000)": Settings(environ={}),
        "cap 300 rows": Settings(environ={}, results_max_rows=300),
    }
    files_of = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, settings) in enumerate(runs.items()):
            uri = Path(tmp) / f"run{i}"
            store = Store.open(uri, settings=settings)
            t0 = time.perf_counter()
            for k in range(args.puts):
                store.results.put(f"k{k}", '{"v": %d}' % k, "q")
            dt = time.perf_counter() - t0
            files = sum(len(f) for _, _, f in os.walk(uri / "results.lance"))
            files_of[label] = files
            print(f"{label:40s} {args.puts} puts in {dt:5.1f} s  {files:6d} files  {store.results.count():6d} rows")
    ref = files_of["no maintenance (reference)"]
    print(
        f"files with the defaults / without maintenance: {files_of['defaults (every 100 puts, cap 10,000)'] / ref:.2f}"
    )


if __name__ == "__main__":
    main()
