"""Ingest and CKA on a local Ray (2 CPUs, started once for the module): ``--engine ray``
stores the local ingest's vectors bit for bit, an ingest killed after its first commit and run
again ends with the same tables, and the distributed CKA matrix equals the local one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray")  # in [dev]: CI has it
pytest.importorskip("moto")  # in [dev]: CI has it

from actstore import Store
from actstore.config import Settings
from actstore.errors import InvalidInput
from actstore.ingest.importer import import_activations
from actstore.ingest.manifest import run_manifest
from actstore.ingest.pipeline import ingest
from actstore.ingest.ray_engine import ingest_ray

try:
    from tests.tiny_models import tiny_model_dir
except ImportError:  # pragma: no cover - run from tests/
    from tiny_models import tiny_model_dir

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.usefixtures("ray_cluster"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]  # Ray Data's own settings

REPO = Path(__file__).resolve().parents[2]
N_PROMPTS = 24


def _prompts(tmp_path: Path) -> Path:
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta"]
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        "".join(
            json.dumps({"text": " ".join(words[: i % 6 + 1]) + f" item {i}", "label": i % 2}) + "\n"
            for i in range(N_PROMPTS)
        )
    )
    return path


@contextmanager
def _torch_threads(n: int):
    """CPU matmuls sum in an order that depends on the thread count: the local reference
    runs with the Ray actors' count (one CPU each)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Store]:
    """(tiny model folder, prompts file, a store holding their local ingest), once per module."""
    tmp = tmp_path_factory.mktemp("reference")
    model, prompts = str(tiny_model_dir("llama", n_layers=3)), _prompts(tmp)
    with _torch_threads(1):
        ingest(tmp / "local", model, "ds", prompts_file=prompts, key="tiny", device="cpu", batch_size=4)
    return model, prompts, Store.open(tmp / "local")


def _assert_same_tables(a: Store, b: Store, layers: range) -> None:
    for layer in layers:
        ids_a, xa = a.read_activations("tiny", layer)
        ids_b, xb = b.read_activations("tiny", layer)
        assert ids_b.tolist() == ids_a.tolist() == list(range(N_PROMPTS))
        assert xb.dtype == np.float32 and xb.tobytes() == xa.tobytes(), f"layer {layer} differs"
    ma, mb = a.models.get("tiny"), b.models.get("tiny")
    assert (mb.n_layers, mb.d_model, mb.dtype, mb.fingerprint, mb.layers) == (
        ma.n_layers,
        ma.d_model,
        ma.dtype,
        ma.fingerprint,
        ma.layers,
    )


def test_ray_ingest_killed_after_its_first_commit_resumes_through_the_cli_to_the_local_tables_on_s3(
    tmp_path: Path, s3_uri: str, s3_options: dict[str, str], reference, monkeypatch
):
    """The first run (Python API) dies right after its first commit wave; the second, the
    command line ``actstore ingest --engine ray --address ...`` joining this Ray, finishes it.
    The tables then hold, bit for bit, what the local ingest stored."""
    import ray

    from actstore.ingest import ray_engine

    model, prompts, local = reference
    settings = Settings(environ={}, index_cache=str(tmp_path / "indexes"), storage_options=s3_options)
    monkeypatch.setattr(ray_engine, "UNIT_BATCHES", 1)  # work units of one batch (4 prompts)
    commits: list[int] = []
    progress: list[tuple[int, int]] = []

    def die_after_first(n: int) -> None:
        commits.append(n)
        raise KeyboardInterrupt("killed after the first commit")

    with pytest.raises(KeyboardInterrupt, match="killed after the first commit"):
        ingest_ray(
            s3_uri,
            model,
            "ds",
            prompts_file=prompts,
            key="tiny",
            device="cpu",
            batch_size=4,
            commit_prompts=8,
            settings=settings,
            on_commit=die_after_first,
            on_progress=lambda d, t: progress.append((d, t)),
        )
    assert commits == [8] and progress == [(0, N_PROMPTS), (4, N_PROMPTS)]
    remote = Store.open(s3_uri, settings=settings)
    for layer in range(3):  # the first wave is committed to every layer, nothing else
        assert len(remote.activations.ids("tiny", layer)) == 8
    assert [(c.name, c.problems) for c in remote.maintenance.verify() if c.problems] == []

    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTSTORE_")}
    env.update(PYTHONPATH=str(REPO), ACTSTORE_STORAGE_OPTIONS=json.dumps(s3_options))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "actstore.cli",
            "ingest",
            "--engine",
            "ray",
            "--address",
            ray.get_runtime_context().gcs_address,
            "--model",
            model,
            "--dataset",
            "ds",
            "--prompts",
            str(prompts),
            "--key",
            "tiny",
            "--device",
            "cpu",
            "--batch-size",
            "4",
            "--store",
            s3_uri,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"ingested {N_PROMPTS - 8} prompt(s) of dataset 'ds' into model 'tiny' (layers 0..2)" in out.stderr
    assert "skipped 8 already stored" in out.stderr
    _assert_same_tables(local, Store.open(s3_uri, settings=settings), range(3))


def test_manifest_form_runs_each_run_on_ray(tmp_path: Path, monkeypatch):
    """``actstore ingest --engine ray --manifest runs.toml``: each run goes to ingest_ray with
    the run's options over the command line's (no model is run here: ingest_ray is recorded)."""
    from actstore.ingest import ray_engine

    calls: list[tuple[tuple, dict]] = []
    monkeypatch.setattr(ray_engine, "ingest_ray", lambda *a, **kw: calls.append((a, kw)) or "summary")
    (tmp_path / "p.jsonl").write_text('{"text": "a"}\n')
    manifest = tmp_path / "runs.toml"
    manifest.write_text(
        'batch_size = 8\n[[run]]\nmodel = "org/m1"\ndataset = "d1"\nprompts = "p.jsonl"\n'
        '[[run]]\nmodel = "org/m2"\ndataset = "d1"\nkey = "two"\nlayers = "0,-1"\n'
    )
    st = Store.open(tmp_path / "db")
    out = run_manifest(st, manifest, base={"device": "cpu"}, engine="ray", address="ray://head:10001")
    assert out == ["summary", "summary"]
    (a1, k1), (a2, k2) = calls
    assert a1 == (st, "org/m1", "d1") and a2 == (st, "org/m2", "d1")
    assert (k1["prompts_file"], k1["key"], k1["batch_size"], k1["device"], k1["address"]) == (
        tmp_path / "p.jsonl",
        None,
        8,
        "cpu",
        "ray://head:10001",
    )
    assert (k2["prompts_file"], k2["key"], k2["layers"]) == (None, "two", "0,-1")
    with pytest.raises(InvalidInput, match="engine must be local or ray, got 'spark'"):
        run_manifest(st, manifest, engine="spark")


@pytest.fixture
def two_models(tmp_path: Path, s3_uri: str, s3_options: dict[str, str]) -> Store:
    """A store on S3 with two imported models over 40 prompts: A (3 layers, d=6, mean 50 so
    that centring matters), B (2 layers, d=4), B's layer 0 a noisy linear map of A's layer 0.
    The Ray tasks read their row ranges from the S3 endpoint."""
    rng = np.random.default_rng(7)
    n = 40
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"text": f"text {i}"}) + "\n" for i in range(n)))
    a = rng.normal(size=(n, 3, 6)) + 50
    b = rng.normal(size=(n, 2, 4)) * 3 - 20
    b[:, 0] = a[:, 0, :4] @ rng.normal(size=(4, 4)) + 0.1 * rng.normal(size=(n, 4))
    np.save(tmp_path / "a.npy", a.astype(np.float32))
    np.save(tmp_path / "b.npy", b.astype(np.float32))
    st = Store.open(
        s3_uri, settings=Settings(environ={}, index_cache=str(tmp_path / "indexes")), storage_options=s3_options
    )
    import_activations(
        st, model_key="a", dataset="ds", prompts_file=prompts, arrays=[tmp_path / "a.npy"], dtype="float32"
    )
    import_activations(
        st, model_key="b", dataset="ds", prompts_file=prompts, arrays=[tmp_path / "b.npy"], dtype="float32"
    )
    return st


def _direct_debiased_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """METHODS.md's debiased CKA from the Gram matrices, float64."""

    def hsic(K: np.ndarray, L: np.ndarray) -> float:
        n = len(K)
        K, L = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
        one = np.ones(n)
        return (
            np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * one @ K @ L @ one
        ) / (n * (n - 3))

    K, L = X @ X.T, Y @ Y.T
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def test_distributed_cka_matrix_equals_local(two_models: Store):
    from actstore.service import Service
    from actstore.service.engines import choose_engine, ray_cka_matrix

    st = two_models
    local = Service(st, Settings(environ={}, engine="local")).similarity.cka_matrix("a", "b")
    remote = Service(st, Settings(environ={}, engine="ray")).similarity.cka_matrix("a", "b")
    L, R = np.array(local.values), np.array(remote.values)
    assert R.shape == (3, 2)
    assert np.abs(R - L).max() <= 1e-9 * np.abs(L).max()
    X = st.read_activations("a", 0)[1].astype(np.float64)
    Y = st.read_activations("b", 0)[1].astype(np.float64)
    assert R[0, 0] == pytest.approx(_direct_debiased_cka(X, Y), rel=1e-6)
    assert R[0, 0] > 0.5  # B's layer 0 is a linear map of A's layer 0
    # Biased, 5 row ranges, and pair groups of one pair each (many tasks, many reductions).
    ia, ib = st.models.get("a"), st.models.get("b")
    ids = st.activations.shared("a", "b")
    Rb = ray_cka_matrix(st, ia, [2, 0], ib, [1, 0], ids, debiased=False, shards=5, group_bytes=1)
    from actstore.analysis import cka_matrix

    xs = [st.read_activations("a", l)[1] for l in (2, 0)]
    ys = [st.read_activations("b", l)[1] for l in (1, 0)]
    Lb = cka_matrix(xs, ys, debiased=False, precision="float64")
    assert np.abs(Rb - Lb).max() <= 1e-9 * np.abs(Lb).max()
    # auto: Ray (initialised here) only from ACTSTORE_RAY_MIN_MB of layers to read.
    auto = Settings(environ={}, engine="auto", ray_min_mb=1)
    assert choose_engine(auto, 40, [6] * 3, [4] * 2) == "local"
    assert choose_engine(auto, 40_000, [4096] * 2, [4096] * 2) == "ray"
    assert choose_engine(Settings(environ={}, engine="local"), 10**9, [4096], [4096]) == "local"


def test_ray_engine_flags_are_checked_before_any_work(tmp_path: Path):
    from typer.testing import CliRunner

    from actstore.cli import app

    store = str(tmp_path / "db")
    cases = [
        (["--engine", "spark"], "error: --engine must be local or ray, got 'spark'"),
        (["--address", "auto"], "error: --address needs --engine ray"),
        (
            ["--engine", "ray", "--next-tokens"],
            "error: --next-tokens is not supported with --engine ray; ingest them with --engine local",
        ),
    ]
    for flags, message in cases:
        out = CliRunner().invoke(app, ["ingest", "--model", "m", "--dataset", "d", "--store", store, *flags])
        assert out.exit_code == 2 and message in out.output, out.output
    assert not (tmp_path / "db").exists()


def test_atlas_on_ray_equals_local(two_models: Store, tmp_path: Path):
    """With ACTSTORE_ENGINE=ray the atlas's k-NN graphs (one task per layer, tables pinned at their
    versions on S3) and pair blocks (one task per model row) run on Ray; the answer equals the
    local one exactly."""
    from actstore.service import Service

    st = two_models
    local = Service(st, Settings(environ={}, engine="local")).atlas.atlas(["a", "b"], k=5)
    remote_service = Service(st, Settings(environ={}, engine="ray"))
    remote = remote_service.atlas.atlas(["a", "b"], k=5, resize=7)  # another question: computed again
    assert remote_service.atlas.pairs_computed == 0  # the pair was stored by the local atlas: read
    fresh = Service(Store.open(tmp_path / "copy"), Settings(environ={}, engine="ray"))
    ids = fresh.store.add_prompts("ds", [f"text {i}" for i in range(40)])
    for key in ("a", "b"):
        info = st.models.get(key)
        fresh.store.activations.write(
            key,
            {l_: st.read_activations(key, l_)[1] for l_ in info.layers},
            ids,
            n_layers=info.n_layers,
            dtype="float32",
        )
    on_ray = fresh.atlas.atlas(["a", "b"], k=5)
    assert fresh.atlas.pairs_computed == 1
    np.testing.assert_array_equal(on_ray.pairs[0].values, local.pairs[0].values)
    np.testing.assert_array_equal(remote.pairs[0].values, local.pairs[0].values)
