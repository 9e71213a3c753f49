"""``actstore drop`` and ``actstore verify`` as a user runs them (subprocesses)."""

from __future__ import annotations

import numpy as np

from actstore import Store
from tests.e2e.test_cli import actstore, one_error_line


def _store(tmp_path):
    store = Store.open(tmp_path / "db")
    ids = store.add_prompts("ds", [f"p{i}" for i in range(6)])
    rng = np.random.default_rng(0)
    store.write_activations("a", 0, ids, rng.standard_normal((6, 4)), n_layers=1, dtype="float32")
    store.write_activations("b", 0, ids, rng.standard_normal((6, 4)), n_layers=1, dtype="float32")
    store.knn.search("a", 0, np.ones((1, 4)), 2)
    return store


def test_verify_and_drop(tmp_path):
    store = _store(tmp_path)
    db = str(tmp_path / "db")
    # a damaged index file: one FAIL line among the ok ones, exit 1
    (digest,) = store.knn.indexes.digest_files()
    index = digest.with_name(digest.name.replace(".sha256", ".faiss"))
    raw = bytearray(index.read_bytes())
    raw[-1] ^= 0x40
    index.write_bytes(bytes(raw))
    res = actstore("verify", "--store", db, cwd=tmp_path)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert [line.split(":")[0] for line in res.stdout.splitlines()] == [
        "ok   tables",
        "ok   prompts",
        "ok   references",
        "ok   vectors",
        "ok   checksums",
        "ok   catalog",
        "FAIL indices",
        "ok   saes",
    ]
    assert res.stdout.splitlines()[6].startswith(f"FAIL indices: {index.name}: SHA-256 ")
    assert res.stderr == "verify: 1 of 8 checks failed (indices)\n"

    # drop asks first (no terminal here: refused), then drops with --yes
    assert one_error_line(actstore("drop", "--model", "a", "--store", db, cwd=tmp_path)) == (
        "error: refusing to drop model 'a': 1 activation table(s), its next tokens, 0 SAE(s) and its FAISS "
        "indices without confirmation: pass --yes"
    )
    res = actstore("drop", "--model", "a", "--yes", "--store", db, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "dropped model 'a': 1 table(s), 0 SAE(s), 3 index file(s)\n"
    res = actstore("drop", "--dataset", "ds", "-y", "--store", db, cwd=tmp_path)
    assert res.stdout == "dropped dataset 'ds': 12 row(s)\n"  # 6 prompts + their 6 rows in b
    after = Store.open(db)
    assert [m.key for m in after.models.list()] == ["b"] and after.prompts.datasets() == []
    assert all(c.ok for c in after.maintenance.verify())
