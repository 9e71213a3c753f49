"""The store on object storage: every operation against ``s3://`` (a moto server on
127.0.0.1) gives what the same operation gives on a local folder, k-NN indices of the remote
tables are cached locally keyed by table version, and two concurrent writers lose nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("moto")  # in [dev]: CI has it
pytest.importorskip("boto3")  # in [dev]: CI has it

from actstore import Store
from actstore.config import Settings
from actstore.ingest.importer import import_activations
from actstore.ingest.pipeline import ingest

try:
    from tests.tiny_models import tiny_model_dir
except ImportError:  # pragma: no cover - run from tests/
    from tiny_models import tiny_model_dir

pytestmark = pytest.mark.timeout(120)

TEXTS = [
    f"prompt number {i} about {w}"
    for i, w in enumerate(
        ["cats", "dogs", "stocks", "rain", "music", "chess", "bread", "rivers", "code", "trains", "salt", "moons"]
    )
]
REPO = Path(__file__).resolve().parents[2]


def _prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(TEXTS)))
    return path


def _fill(st: Store, tmp_path: Path) -> None:
    """The same writes on any store: an ingest of a tiny model and an import of arrays."""
    prompts = _prompts_file(tmp_path)
    ingest(st, str(tiny_model_dir("llama")), "ds", prompts_file=prompts, key="tiny", device="cpu", batch_size=4)
    arrays = tmp_path / "acts.npy"
    rng = np.random.default_rng(3)
    np.save(arrays, rng.normal(size=(len(TEXTS), 2, 8)).astype(np.float32))
    import_activations(st, model_key="imp", dataset="ds", prompts_file=prompts, arrays=[arrays])


@pytest.fixture
def pair(tmp_path: Path, s3_uri: str, s3_options: dict[str, str]) -> tuple[Store, Store, Path]:
    """(local store, S3 store, local index cache of the S3 store), filled the same way."""
    settings = Settings(environ={}, index_cache=str(tmp_path / "indexes"))
    local = Store.open(tmp_path / "db", settings=settings)
    remote = Store.open(s3_uri, settings=settings, storage_options=s3_options)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _fill(local, tmp_path / "a")
    _fill(remote, tmp_path / "b")
    return local, remote, tmp_path / "indexes"


def test_every_operation_on_s3_equals_the_same_on_a_local_folder(pair):
    local, remote, cache = pair
    assert remote.uri.startswith("s3://") and remote.tables.local_path is None
    assert sorted(remote.tables.names()) == sorted(local.tables.names())
    assert [(m.key, m.n_layers, m.d_model, m.dtype, m.fingerprint) for m in remote.models.list()] == [
        (m.key, m.n_layers, m.d_model, m.dtype, m.fingerprint) for m in local.models.list()
    ]
    assert [(d.name, d.prompt_count) for d in remote.prompts.datasets()] == [("ds", 12)]
    for key, layers in (("tiny", (0, 1)), ("imp", (0, 1))):
        for layer in layers:
            ids_l, x_l = local.read_activations(key, layer, "ds")
            ids_r, x_r = remote.read_activations(key, layer, "ds")
            assert ids_r.tolist() == ids_l.tolist() == list(range(12))
            assert x_r.tobytes() == x_l.tobytes()  # bit for bit
    # k-NN: same answer; the S3 store's index is built from the remote rows and kept in the
    # local cache under the table's id and version.
    q = local.read_activations("imp", 1)[1][:3]
    for metric in ("cosine", "l2"):
        nl, sl = local.knn.search("imp", 1, q, 4, metric=metric)
        nr, sr = remote.knn.search("imp", 1, q, 4, metric=metric)
        assert nr.tolist() == nl.tolist() and np.array_equal(sr, sl)
    version = remote.tables.version("acts__imp__L001")
    files = sorted(p.name for p in cache.rglob("*.faiss"))
    assert len(files) == 2 and all(
        f.startswith("acts__imp__L001.") and f.endswith(f".v{version}.faiss") for f in files
    ), files
    # A write to the remote table makes a new version: the next search builds (and caches) a new index.
    remote.write_activations("imp", 1, [0], q[:1] * 2)
    nr2, _ = remote.knn.search("imp", 1, q[:1] * 2, 1, exclude_self_ids=[5])
    assert nr2.tolist() == [[0]]
    assert any(p.name.endswith(f".v{version + 1}.faiss") for p in cache.rglob("*.faiss"))


def test_results_cache_on_s3_serves_a_second_service(pair, tmp_path: Path, s3_options):
    from actstore.service import Service

    local, remote, _ = pair
    settings = Settings(environ={}, index_cache=str(tmp_path / "indexes"), engine="local")
    res_l = Service(local, settings).similarity.cka_matrix("tiny", "imp")
    res_r = Service(remote, settings).similarity.cka_matrix("tiny", "imp")
    assert np.array_equal(res_r.values, res_l.values) and res_r.n == 12
    # A second service (another process would do the same) finds the answer in the S3 results table.
    again = Service(Store.open(remote.uri, settings=settings, storage_options=s3_options), settings)
    assert np.array_equal(again.results.get(res_r.key).values, res_l.values)


def test_two_concurrent_writers_on_s3_lose_nothing(s3_uri: str, s3_options: dict[str, str], tmp_path: Path):
    """Two stores (two connections, as two processes would have) add prompts to one dataset
    and write the same activation tables at once; Lance's conditional-PUT commits keep both."""
    settings = Settings(environ={}, index_cache=str(tmp_path / "indexes"))
    seed = Store.open(s3_uri, settings=settings, storage_options=s3_options)
    seed.write_activations("m", 0, seed.add_prompts("ds", ["seed"]), np.ones((1, 4)), n_layers=1)
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def writer(w: int) -> None:
        try:
            st = Store.open(s3_uri, settings=settings, storage_options=s3_options)
            barrier.wait()
            for r in range(3):
                ids = st.add_prompts("ds", [f"writer {w} round {r} text {j}" for j in range(4)])
                st.write_activations("m", 0, ids, np.full((4, 4), 10 * w + r, np.float32))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    st = Store.open(s3_uri, settings=settings, storage_options=s3_options)
    ids = st.prompts.ids("ds")
    assert len(ids) == 25 and len(np.unique(ids)) == 25
    got_ids, X = st.read_activations("m", 0)
    assert got_ids.tolist() == sorted(ids.tolist())
    texts = {p.id: p.text for p in st.prompts.get(got_ids.tolist())}
    for pid, row in zip(got_ids.tolist(), X):
        t = texts[pid]
        want = 1.0 if t == "seed" else 10 * int(t.split()[1]) + int(t.split()[3])
        assert row.tolist() == [want] * 4, (t, row)


def test_cli_on_s3_with_storage_options_and_with_aws_variables(tmp_path: Path, s3_uri: str, s3_options, s3_endpoint):
    prompts = _prompts_file(tmp_path)
    arrays = tmp_path / "acts.npy"
    np.save(arrays, np.arange(12 * 2 * 3, dtype=np.float32).reshape(12, 2, 3))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ACTSTORE_"))}
    base["PYTHONPATH"] = str(REPO)
    env = {**base, "ACTSTORE_STORAGE_OPTIONS": json.dumps(s3_options)}
    cmd = [sys.executable, "-m", "actstore.cli"]
    out = subprocess.run(
        [
            *cmd,
            "import",
            str(arrays),
            "--model",
            "imp",
            "--dataset",
            "ds",
            "--prompts",
            str(prompts),
            "--store",
            s3_uri,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr
    aws = {
        **base,
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "ACTSTORE_STORE": s3_uri,
    }
    out = subprocess.run([*cmd, "info"], env=aws, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    assert s3_uri in out.stdout and "imp" in out.stdout and "12" in out.stdout
    st = Store.open(s3_uri, settings=Settings(environ={"ACTSTORE_STORAGE_OPTIONS": json.dumps(s3_options)}))
    assert st.read_activations("imp", 1)[1][2].tolist() == [
        15.0,
        16.0,
        17.0,
    ]  # row 2, layer 1 of arange(72).reshape(12, 2, 3)


def test_storage_options_setting_is_a_json_object_of_strings():
    s = Settings(environ={"ACTSTORE_STORAGE_OPTIONS": '{"allow_http": true, "aws_region": "eu-west-1"}'})
    assert s.storage_options == {"allow_http": "true", "aws_region": "eu-west-1"}
    from actstore.errors import InvalidInput

    with pytest.raises(InvalidInput, match=r"ACTSTORE_STORAGE_OPTIONS='\[1\]' is invalid: not a JSON object"):
        Settings(environ={"ACTSTORE_STORAGE_OPTIONS": "[1]"})
    with pytest.raises(InvalidInput, match="ACTSTORE_ENGINE='spark' is invalid: use one of local, ray, auto"):
        Settings(environ={"ACTSTORE_ENGINE": "spark"})


def test_sae_weights_on_s3_register_load_verify_and_drop(pair, tmp_path: Path):
    """An SAE registered into a store on S3 keeps its weights in the store's sae_weights table:
    loaded back bit for bit as from a local store, checked by verify, removed by drop."""
    import torch
    from safetensors.torch import save_file

    local, remote, _ = pair
    rng = np.random.default_rng(5)
    d, d_sae = local.models.get("tiny").d_model, 12
    folder = tmp_path / "sae"
    folder.mkdir()
    tensors = {
        "W_enc": rng.standard_normal((d, d_sae)),
        "W_dec": rng.standard_normal((d_sae, d)),
        "b_enc": rng.standard_normal(d_sae),
        "b_dec": rng.standard_normal(d),
    }
    (folder / "cfg.json").write_text(
        json.dumps(
            {
                "architecture": "standard",
                "d_in": d,
                "d_sae": d_sae,
                "apply_b_dec_to_input": True,
                "normalize_activations": "none",
            }
        )
    )
    save_file(
        {k: torch.from_numpy(v.astype(np.float32)) for k, v in tensors.items()}, str(folder / "sae_weights.safetensors")
    )
    r_local = local.saes.register("tiny", 1, folder)
    r_remote = remote.saes.register("tiny", 1, folder)
    assert r_remote.sae_id == r_local.sae_id and r_remote.weights_sha256 == r_local.weights_sha256
    assert r_remote.weights_path == f"sae_weights/{r_remote.sae_id}"
    assert r_local.weights_path == f"_saes/{r_local.sae_id}/sae_weights.safetensors"
    _, got = remote.saes.load(r_remote.sae_id)
    for name, value in tensors.items():
        np.testing.assert_array_equal(got[name], value.astype(np.float32))
    assert remote.saes.check(r_remote) is None
    assert all(not c.problems for c in remote.maintenance.verify())
    remote.maintenance.drop_model("tiny")
    assert remote.saes.list() == []
    assert remote.tables.scan(remote.tables.open("sae_weights"), ["sae_id"]).num_rows == 0


def test_a_missing_store_on_s3_is_refused_by_read_commands(s3_uri: str, s3_options: dict[str, str]):
    from actstore.errors import NotFound

    with pytest.raises(NotFound) as err:
        Store.open(s3_uri, create=False, settings=Settings(environ={}), storage_options=s3_options)
    assert str(err.value) == (
        f"no actstore store at '{s3_uri}' (no tables there); create one with `actstore "
        "ingest`, `actstore import` or `actstore demo`, or check the store URI and the storage options"
    )
