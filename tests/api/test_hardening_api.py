"""Attacks of issue 22 through GraphQL: a model dropped by another process while queries run
answers NOT_FOUND; registerSae with a NUL byte, a 100 KB path or a 200,000-deep cfg.json is
BAD_USER_INPUT; a flipped bit under a checked read is DATA_CORRUPTED. Never "Unexpected error."."""

from __future__ import annotations

import numpy as np
import pytest
from starlette.testclient import TestClient

from actstore import Store
from actstore.api import create_app
from actstore.config import Settings
from actstore.service import Service
from tests.api.test_api import TOKEN, client, gql, populated  # noqa: F401 - fixtures

NN = '{ nearestNeighbors(at: {model: "b", layer: 0}, promptId: "5", k: 3) { promptId } }'
CKA = '{ cka(a: {model: "a", layer: 1}, b: {model: "b", layer: 2}) { value } }'
MATRIX = '{ ckaMatrix(modelA: "a", modelB: "b") { values } }'
REGISTER = 'mutation($p: String!) { registerSae(model: "a", layer: 0, path: $p) { id } }'


def _error(body: dict) -> tuple[str, str]:
    assert body.get("errors"), body
    err = body["errors"][0]
    return err["extensions"]["code"], err["message"]


def test_queries_meeting_a_model_dropped_by_another_process_answer_not_found(client, populated):
    for q in (NN, CKA, MATRIX):  # every table handle of b open, answers cached
        assert "errors" not in gql(client, q)
    Store.open(populated.uri).maintenance.drop_model("b")  # another process
    for q in (NN, CKA, MATRIX):
        assert _error(gql(client, q)) == ("NOT_FOUND", "unknown model 'b'; known models: a"), q


@pytest.fixture
def sae_client(populated, tmp_path):
    root = tmp_path / "saes"
    deep = root / "deep"
    deep.mkdir(parents=True)
    (deep / "cfg.json").write_text('{"a": ' * 200_000 + "1" + "}" * 200_000)
    (deep / "sae_weights.safetensors").write_bytes(b"")
    service = Service(populated, Settings(token=TOKEN, sae_root=str(root)))
    with TestClient(create_app(service)) as c:
        c.root = root
        yield c


def test_register_sae_refuses_bad_paths_and_configs_as_bad_user_input(sae_client):
    def register(path: str) -> tuple[str, str]:
        return _error(gql(sae_client, REGISTER, {"p": path}, TOKEN))

    assert register("deep\x00/../etc") == (
        "BAD_USER_INPUT",
        "SAE path 'deep\\x00/../etc' holds a NUL byte: give a folder path without one",
    )
    code, message = register("x" * 100_000)
    assert code == "BAD_USER_INPUT"
    assert message == f"SAE path {'x' * 200!r}... (100,000 characters) is longer than 4096 characters"
    code, message = register("y" * 300)  # a name over the file system's limit of 255 bytes
    assert (code, message) == (
        "BAD_USER_INPUT",
        f"SAE path {'y' * 200!r}... (300 characters) cannot be used: File name too long",
    )
    assert register("deep") == (
        "BAD_USER_INPUT",
        f"cfg.json in {str((sae_client.root / 'deep').resolve())!r} nests 200,000 levels deep; at most 32 are allowed",
    )


def test_a_flipped_bit_under_a_checked_read_is_data_corrupted(populated):
    ids, X = populated.read_activations("b", 0)
    needle = X[5].astype(np.float32).tobytes()
    for f in (populated.tables.local_path / "acts__b__L000.lance" / "data").glob("*.lance"):
        raw = bytearray(f.read_bytes())
        at = raw.find(needle)
        if at >= 0:
            raw[at] ^= 1
            f.write_bytes(bytes(raw))
    store = Store.open(populated.uri, settings=Settings(environ={}, verify_reads=True))
    with TestClient(create_app(Service(store, Settings(environ={}, verify_reads=True)))) as c:
        code, message = _error(gql(c, NN))
    assert code == "DATA_CORRUPTED"
    assert message.startswith(
        f"activation table acts__b__L000: the stored vectors of prompt id(s) {ids[5]} do not match their checksums"
    )


def test_queries_running_while_another_process_drops_and_rewrites_a_model(client, populated):
    """The attack as reported: queries in flight while `actstore drop --model` runs. Every
    answer is data or NOT_FOUND (an unknown model, a layer without a table), never INTERNAL."""
    import threading

    ids, _ = populated.read_activations("b", 0)
    rng = np.random.default_rng(3)
    other = Store.open(populated.uri)  # the dropping process
    codes: list[str | None] = []
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            for q in (NN, CKA):
                body = gql(client, q)
                codes.append(body["errors"][0]["extensions"]["code"] if body.get("errors") else None)

    worker = threading.Thread(target=ask)
    worker.start()
    try:
        for _ in range(4):
            other.maintenance.drop_model("b")
            other.activations.write(
                "b",
                {l: rng.standard_normal((len(ids), 24)) for l in range(3)},
                ids,
                n_layers=6,
                dtype="float32",
                architecture="gpt2",
                source="nowhere/b",
            )
    finally:
        stop.set()
        worker.join(60)
    assert len(codes) > 8 and set(codes) <= {None, "NOT_FOUND"}, sorted(set(map(str, codes)))
