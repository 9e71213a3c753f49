"""Races and storage failures are answers, not crashes (issue 22, items 3, 4 and 6): a read that
meets a table dropped under it is NotFound; the loser of a first-write race under one new key
gets Conflict and writes nothing; a full disk and an unreachable object store are one clear
StorageUnavailable naming the store."""

from __future__ import annotations

import errno
import multiprocessing as mp
import time

import numpy as np
import pytest

from actstore import Store
from actstore.errors import Conflict, NotFound, StorageUnavailable
from actstore.store.models import MODEL_CLAIMS
from actstore.store.tables import Tables, storage_problem

X = np.arange(12, dtype=np.float32).reshape(3, 4) + 1
FP_A = "aaaaaaaaaa-tttttttt-ssssssssss"
FP_B = "bbbbbbbbbb-tttttttt-ssssssssss"


def _prompts(store: Store) -> list[int]:
    return store.add_prompts("ds", ["p0", "p1", "p2"])


# ------------------------------------------------------------------ a drop under a reader
def test_reads_of_a_model_dropped_by_another_process_answer_not_found(tmp_path):
    writer = Store.open(tmp_path / "db")
    ids = _prompts(writer)
    writer.write_activations("m", 0, ids, X, n_layers=2, source="src/m", architecture="llama")
    reader = Store.open(tmp_path / "db")  # another process: its own handles
    assert reader.read_activations("m", 0)[0].tolist() == ids  # the table's handle is open now
    reader.activations.version("m", 0)

    writer.maintenance.drop_model("m")
    for call in (
        lambda: reader.read_activations("m", 0),
        lambda: reader.activations.version("m", 0),
        lambda: reader.activations.recent_state("m", 0, fresh=True),
        lambda: reader.knn.search("m", 0, X[:1], 2),
    ):
        with pytest.raises(NotFound, match=r"^unknown model 'm'; known models: none$"):
            call()
    assert reader.activations.ids("m", 0).tolist() == []


def test_a_table_dropped_while_the_model_row_remains_is_not_found_for_its_layer(tmp_path):
    writer = Store.open(tmp_path / "db")
    ids = _prompts(writer)
    writer.write_activations("m", 0, ids, X, n_layers=2, source="src/m", architecture="llama")
    reader = Store.open(tmp_path / "db")
    reader.read_activations("m", 0)
    writer.tables.drop("acts__m__L000")  # a drop half-way: the model row is still there
    with pytest.raises(NotFound, match=r"^model 'm' has no activations stored for layer 0; stored layers: 0$"):
        reader.read_activations("m", 0)


# ------------------------------------------------------------------ claiming a new key
def test_the_loser_of_a_first_write_race_gets_conflict_and_writes_nothing(tmp_path):
    a, b = Store.open(tmp_path / "db"), Store.open(tmp_path / "db")
    ids = _prompts(a)
    # Writer A has claimed the key and is writing its rows when B's first write arrives.
    a.models.claim("k", source="org/model-a", fingerprint=FP_A, n_layers=2, d_model=4, dtype="float16")
    with pytest.raises(Conflict) as err:
        b.activations.write("k", {0: X + 100}, ids, n_layers=2, source="org/model-b", fingerprint=FP_B)
    assert str(err.value) == (
        "model key 'k' is claimed by a write of org/model-a (fingerprint aaaaaaaaaa-tttttttt-ssssssssss, "
        "n_layers=2, d_model=4, dtype=float16) that started first; org/model-b (fingerprint "
        "bbbbbbbbbb-tttttttt-ssssssssss, n_layers=2, d_model=4, dtype=float16) was not written: store it "
        "under another key (if no such write is running, drop the model key first)"
    )
    assert [n for n in b.tables.names() if n.startswith("acts__")] == []  # B wrote nothing
    assert b.models.find("k") is None

    # A's write goes on; the same model (same fingerprint) may join; B is refused by the row now.
    a.activations.write("k", {0: X}, ids, n_layers=2, source="org/model-a", fingerprint=FP_A)
    b.activations.write("k", {1: X}, ids, n_layers=2, source="org/model-a", fingerprint=FP_A)
    with pytest.raises(Conflict, match="fingerprint bbbbbbbbbb"):
        b.activations.write("k", {0: X + 100}, ids, n_layers=2, source="org/model-b", fingerprint=FP_B)
    assert np.array_equal(b.read_activations("k", 0)[1], X)
    assert [m.key for m in b.models.list()] == ["k"] and b.models.get("k").source == "org/model-a"
    assert b.tables.open("models").count_rows() == 1


def test_a_claim_left_by_a_dead_writer_is_freed_by_dropping_the_key(tmp_path):
    store = Store.open(tmp_path / "db")
    ids = _prompts(store)
    store.models.claim("k", source="dead", fingerprint=FP_A, n_layers=2, d_model=4, dtype="float16")
    with pytest.raises(Conflict, match="claimed by a write of dead"):
        store.write_activations("k", 0, ids, X, n_layers=2, source="org/model-b", fingerprint=FP_B)
    summary = store.maintenance.drop_model("k")
    assert (summary.kind, summary.name, summary.tables_dropped) == ("model", "k", 0)
    store.write_activations("k", 0, ids, X, n_layers=2, source="org/model-b", fingerprint=FP_B)
    assert store.models.get("k").fingerprint == FP_B
    assert all(c.ok for c in store.maintenance.verify())
    with pytest.raises(NotFound, match="unknown model 'nope'"):
        store.maintenance.drop_model("nope")


def _racer(uri: str, source: str, fingerprint: str, value: float, barrier, out) -> None:
    store = Store.open(uri)
    ids = store.prompts.ids("ds")
    barrier.wait()
    try:
        store.activations.write(
            "k",
            {0: np.full((3, 4), value, np.float32), 1: np.full((3, 4), value, np.float32)},
            ids,
            n_layers=2,
            source=source,
            fingerprint=fingerprint,
        )
        out.put((source, "ok"))
    except Conflict as exc:
        out.put((source, f"Conflict: {exc}"))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        out.put((source, f"{type(exc).__name__}: {exc}"))


def test_two_processes_writing_different_models_under_one_new_key_at_once(tmp_path):
    uri = str(tmp_path / "db")
    _prompts(Store.open(uri))
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_racer, args=(uri, src, fp, v, barrier, out))
        for src, fp, v in (("org/model-a", FP_A, 1.0), ("org/model-b", FP_B, 2.0))
    ]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    outcomes = sorted(r.split(":")[0] for r in results.values())
    assert outcomes == ["Conflict", "ok"], results
    winner = next(s for s, r in results.items() if r == "ok")
    store = Store.open(uri)
    info = store.models.get("k")
    assert info.source == winner and info.layers == (0, 1)
    value = 1.0 if winner == "org/model-a" else 2.0
    for layer in (0, 1):  # only the winner's rows, none of the loser's
        assert np.array_equal(store.read_activations("k", layer)[1], np.full((3, 4), value, np.float32))
    assert store.tables.open("models").count_rows() == 1
    assert store.tables.open(MODEL_CLAIMS).count_rows("key = 'k'") == 2  # both claims kept
    assert all(c.ok for c in store.maintenance.verify())


# ------------------------------------------------------------------ storage failures
@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("lance error: IO: Generic LocalFileSystem error: No space left on device (os error 28)"),
    ],
)
def test_a_full_disk_is_one_clear_error_naming_the_store(tmp_path, monkeypatch, exc):
    store = Store.open(tmp_path / "db")
    ids = _prompts(store)
    store.write_activations("m", 0, ids, X, n_layers=1, source="src/m", architecture="llama")

    def full(*args, **kwargs):
        raise exc

    tbl = store.tables.open("acts__m__L000")
    monkeypatch.setattr(type(tbl), "merge_insert", lambda self, *a, **k: full())
    with pytest.raises(StorageUnavailable) as err:
        store.write_activations("m", 0, ids, X + 1)
    assert str(err.value) == (
        f"the disk holding the store {store.uri} is full (no space left on device): free space or move the "
        "store, then run the same write again (the failed commit left nothing behind)"
    )
    assert err.value.code == "STORAGE_UNAVAILABLE"
    monkeypatch.undo()
    assert np.array_equal(store.read_activations("m", 0)[1], X.astype(np.float16).astype(np.float32))


def test_storage_problem_tells_storage_failures_from_bugs():
    assert storage_problem(OSError(errno.ENOSPC, "x")) == "full"
    assert storage_problem(RuntimeError("lance error: No space left on device")) == "full"
    raw = (
        'Invalid input, Failed to connect to namespace: IO { source: Generic { store: "S3", source: '
        "ListRequest { source: RetryError(RetryErrorImpl { method: GET, uri: Some(http://127.0.0.1:9/bucket?"
        "list-type=2), retries: 0, inner: Http(HttpError { kind: Connect, source: reqwest::Error"
    )
    assert storage_problem(ValueError(raw)) == "unreachable: endpoint http://127.0.0.1:9, connect error"
    assert storage_problem(ValueError("layer must be an integer")) is None
    assert storage_problem(KeyError("Failed to connect")) is None


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_an_unreachable_object_store_is_one_clear_error(tmp_path):
    port = _closed_port()
    options = {
        "aws_endpoint": f"http://127.0.0.1:{port}",
        "allow_http": "true",
        "aws_access_key_id": "k",
        "aws_secret_access_key": "s",
        "aws_region": "us-east-1",
        "connect_timeout": "1s",
        "timeout": "2s",
        "client_max_retries": "0",
        "client_retry_timeout": "1",
    }
    t0 = time.monotonic()
    for create in (True, False):
        with pytest.raises(StorageUnavailable) as err:
            Tables("s3://bucket/store", create=create, storage_options=options)
        assert str(err.value) == (
            f"cannot reach the store s3://bucket/store (endpoint http://127.0.0.1:{port}, connect error): check "
            "the URI, that the object store is running, and the storage options"
        )
    assert time.monotonic() - t0 < 30
