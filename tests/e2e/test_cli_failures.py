"""Expected failures on the command line are one ``error:`` line (exit status 2, nothing else
on stderr), never a traceback (issue 22, item 4): an unreachable object store for ``info``/``verify``/``ingest``, ``sae add`` on a
deeply nested ``cfg.json``, a full disk under a write, a checksum mismatch under a read."""

from __future__ import annotations

import errno
import json
import socket
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from actstore import Store


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def test_an_unreachable_object_store_is_one_error_line(tmp_path, monkeypatch):
    from actstore.cli import app

    port = _closed_port()
    options = {
        "aws_endpoint": f"http://127.0.0.1:{port}",
        "allow_http": True,
        "aws_access_key_id": "k",
        "aws_secret_access_key": "s",
        "aws_region": "us-east-1",
        "connect_timeout": "1s",
        "timeout": "2s",
        "client_max_retries": "0",
        "client_retry_timeout": "1",
    }
    monkeypatch.setenv("ACTSTORE_STORAGE_OPTIONS", json.dumps(options))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "p.txt").write_text("a\nb\n")
    expected = (
        f"error: cannot reach the store s3://bucket/store (endpoint http://127.0.0.1:{port}, connect "
        "error): check the URI, that the object store is running, and the storage options"
    )
    for args in (
        ["info"],
        ["verify"],
        ["ingest", "--model", "org/missing-model", "--dataset", "d", "--prompts", str(tmp_path / "p.txt")],
    ):
        assert _error_line(CliRunner().invoke(app, [*args, "--store", "s3://bucket/store"])) == expected, args


def test_sae_add_on_a_deeply_nested_cfg_json_is_one_error_line(tmp_path):
    from actstore.cli import app

    store = Store.open(tmp_path / "db")
    ids = store.add_prompts("ds", ["a", "b"])
    store.write_activations("m", 0, ids, np.ones((2, 4), np.float32), n_layers=1, source="s", architecture="x")
    sae = tmp_path / "sae"
    sae.mkdir()
    (sae / "cfg.json").write_text("[" * 200_000 + "]" * 200_000)
    (sae / "sae_weights.safetensors").write_bytes(b"")
    res = CliRunner().invoke(
        app, ["sae", "add", "--model", "m", "--layer", "0", "--path", str(sae), "--store", store.uri]
    )
    assert _error_line(res) == f"error: cfg.json in '{sae}' nests 200,000 levels deep; at most 32 are allowed"


def _error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == "", result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def imported(tmp_path) -> tuple[Path, list[str]]:
    np.save(tmp_path / "acts.npy", (np.arange(8 * 1 * 3, dtype=np.float32).reshape(8, 1, 3) + 1))
    (tmp_path / "p.jsonl").write_text("".join(f'{{"text": "prompt {i}"}}\n' for i in range(8)))
    args = [
        "import",
        str(tmp_path / "acts.npy"),
        "--model",
        "m",
        "--dataset",
        "d",
        "--prompts",
        str(tmp_path / "p.jsonl"),
        "--dtype",
        "float32",
        "--store",
        str(tmp_path / "db"),
    ]
    return tmp_path / "db", args


def test_a_full_disk_under_a_write_is_one_error_line(imported, monkeypatch):
    from lancedb.table import LanceTable

    from actstore.cli import app

    db, args = imported

    def full(self, *a, **k):
        raise RuntimeError("lance error: IO: Generic LocalFileSystem error: No space left on device (os error 28)")

    monkeypatch.setattr(LanceTable, "add", full)
    line = _error_line(CliRunner().invoke(app, args))
    assert line == (
        f"error: the disk holding the store {db} is full (no space left on device): free space or "
        "move the store, then run the same write again (the failed commit left nothing behind)"
    )
    monkeypatch.setattr(LanceTable, "add", lambda self, *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "x")))
    assert _error_line(CliRunner().invoke(app, args)).startswith(f"error: the disk holding the store {db} is full")


def test_a_checksum_mismatch_is_one_error_line_and_fails_verify(imported, monkeypatch):
    from actstore.cli import app

    db, args = imported
    assert CliRunner().invoke(app, args).exit_code == 0
    X = np.arange(8 * 3, dtype=np.float32).reshape(8, 3) + 1
    for f in (db / "acts__m__L000.lance" / "data").glob("*.lance"):  # flip a bit of prompt 1's vector
        raw = bytearray(f.read_bytes())
        at = raw.find(X[1].tobytes())
        if at >= 0:
            raw[at] ^= 1
            f.write_bytes(bytes(raw))
    res = CliRunner().invoke(app, ["verify", "--store", str(db)])
    assert res.exit_code == 1
    assert (
        "FAIL checksums: acts__m__L000: stored vectors of prompt id(s) 1 do not match their checksums "
        "(a damaged data file)"
    ) in res.stdout
    monkeypatch.setenv("ACTSTORE_VERIFY_READS", "1")
    line = _error_line(CliRunner().invoke(app, ["bridge", "--source", "m:0", "--target", "m:0", "--store", str(db)]))
    assert line.startswith(
        "error: activation table acts__m__L000: the stored vectors of prompt id(s) 1 do not match their checksums"
    )
