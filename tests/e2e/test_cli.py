"""The ``actstore`` console script as a user meets it, run as a subprocess: missing stores are
refused (nothing created), expected failures are one ``error: ...`` line with exit status 2
and no traceback, messages name the command's flags, JSON output uses the API's field names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ACTSTORE = Path(sys.executable).parent / "actstore"
NO_STORE_HINT = "create one with `actstore ingest`, `actstore import` or `actstore demo`"

# every read-only command, with the arguments it needs besides --store
READ_ONLY = {
    "info": ["info"],
    "query": ["query", "{ models { key } }"],
    "serve": ["serve", "--port", "9"],
    "sae list": ["sae", "list"],
    "sae add": ["sae", "add", "--model", "a", "--layer", "0", "--path", "."],
    "sae correlate": ["sae", "correlate", "x", "y"],
    "bridge": ["bridge", "--source", "a:0", "--target", "b:0"],
    "probe-transfer": ["probe-transfer", "--source", "a:0", "--target", "b:0", "--task-dataset", "t"],
    "next-token-transfer": ["next-token-transfer", "--source", "a:0", "--target", "b:0", "--dataset", "d"],
    "drop": ["drop", "--model", "a", "--yes"],
    "verify": ["verify"],
}


def actstore(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    assert ACTSTORE.exists(), f"the console script {ACTSTORE} is missing: pip install -e ."
    base = {k: v for k, v in os.environ.items() if not k.startswith("ACTSTORE_")}
    base.update(HF_HUB_OFFLINE="1", COLUMNS="200", **(env or {}))
    return subprocess.run([str(ACTSTORE), *args], cwd=cwd, env=base, capture_output=True, text=True, timeout=300)


def one_error_line(res: subprocess.CompletedProcess) -> str:
    """The single ``error: ...`` line of a failed command (exit 2, nothing else printed)."""
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and res.stdout == "", (res.stdout, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


# ----------------------------------------------------------------------------- missing stores


@pytest.mark.parametrize("command", sorted(READ_ONLY))
def test_read_only_commands_refuse_a_missing_store_and_create_nothing(tmp_path, command):
    missing = tmp_path / "nowhere" / "db"
    res = actstore(*READ_ONLY[command], "--store", str(missing), cwd=tmp_path)
    assert one_error_line(res) == f"error: no actstore store at '{missing}'; {NO_STORE_HINT}"
    assert not missing.exists() and not missing.parent.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_default_store_is_not_created_by_a_read(tmp_path):
    res = actstore("info", cwd=tmp_path)  # no --store, no $ACTSTORE_STORE: ./actstore-data
    assert one_error_line(res) == f"error: no actstore store at 'actstore-data'; {NO_STORE_HINT}"
    assert not (tmp_path / "actstore-data").exists()
    env_store = tmp_path / "from-env"
    res = actstore("sae", "list", cwd=tmp_path, env={"ACTSTORE_STORE": str(env_store)})
    assert one_error_line(res) == f"error: no actstore store at '{env_store}'; {NO_STORE_HINT}"
    assert not env_store.exists()


# ----------------------------------------------------------------------------- wrong paths


def test_a_file_where_a_store_folder_is_expected(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("not a store\n")
    for args in (
        READ_ONLY["info"],
        READ_ONLY["query"],
        READ_ONLY["bridge"],
        ["import", "x.npy", "--model", "m", "--dataset", "d", "--prompts", "p.jsonl"],
        ["ingest", "--model", "m", "--dataset", "d"],
    ):
        res = actstore(*args, "--store", str(f), cwd=tmp_path)
        assert one_error_line(res) == f"error: --store '{f}' is a file, not a store folder", args
    res = actstore(
        "import",
        "x.npy",
        "--model",
        "m",
        "--dataset",
        "d",
        "--prompts",
        "p.jsonl",
        "--store",
        str(f / "db"),
        cwd=tmp_path,
    )
    assert one_error_line(res) == f"error: --store '{f / 'db'}': '{f}' is a file, not a folder"
    assert f.read_text() == "not a store\n"


def test_wrong_input_and_output_paths_are_one_line(tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    np.save(tmp_path / "acts.npy", np.zeros((2, 1, 3), np.float32))
    (tmp_path / "p.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    db = tmp_path / "db"
    cases = [
        (
            ["import", str(folder), "--model", "m", "--dataset", "d", "--prompts", str(tmp_path / "p.jsonl")],
            f"error: activation file '{folder}' is a folder; pass .npy or .safetensors files",
        ),
        (
            ["import", str(tmp_path / "acts.npy"), "--model", "m", "--dataset", "d", "--prompts", str(folder)],
            f"error: '{folder}' is a folder but not a Hugging Face save_to_disk folder; pass a .jsonl, .csv, "
            ".tsv, .parquet or .txt file",
        ),
        (
            [
                "import",
                str(tmp_path / "acts.npy"),
                "--model",
                "m",
                "--dataset",
                "d",
                "--prompts",
                str(tmp_path / "missing.jsonl"),
            ],
            f"error: prompt file '{tmp_path / 'missing.jsonl'}' does not exist",
        ),
        (
            [
                "import",
                str(tmp_path / "missing.npy"),
                "--model",
                "m",
                "--dataset",
                "d",
                "--prompts",
                str(tmp_path / "p.jsonl"),
            ],
            f"error: activation file '{tmp_path / 'missing.npy'}' does not exist",
        ),
        (["ingest", "--manifest", str(folder)], f"error: cannot read manifest '{folder}': Is a directory"),
        (
            [
                "probe-transfer",
                "--source",
                "a:0",
                "--target",
                "b:0",
                "--task-dataset",
                "t",
                "--ranks",
                "2",
                "--plot",
                str(folder),
            ],
            f"error: --plot '{folder}' is a folder; give a file name (e.g. {folder / 'plot.png'})",
        ),
        (
            [
                "probe-transfer",
                "--source",
                "a:0",
                "--target",
                "b:0",
                "--task-dataset",
                "t",
                "--ranks",
                "2",
                "--plot",
                str(tmp_path / "no" / "sweep.png"),
            ],
            f"error: --plot '{tmp_path / 'no' / 'sweep.png'}': folder '{tmp_path / 'no'}' does not exist",
        ),
    ]
    for args, line in cases:
        assert one_error_line(actstore(*args, "--store", str(db), cwd=tmp_path)) == line, args
    assert not db.exists()  # no failed import or ingest created the store


def test_bad_flags_name_the_flag(tmp_path):
    db = tmp_path / "db"
    cases = [
        (
            ["bridge", "--source", "a", "--target", "b:0"],
            "error: bad layer 'a': use MODEL:LAYER (e.g. pythia-70m:3, llama:-1) or MODEL@DEPTH",
        ),
        (
            ["bridge", "--source", "a@2", "--target", "b:0"],
            "error: bad depth in 'a@2': use MODEL@DEPTH with DEPTH in [0, 1]",
        ),
        (
            ["bridge", "--source", "a:0", "--target", "b:0", "--ranks", "4,x"],
            "error: --ranks must be comma-separated integers, got '4,x'",
        ),
        (
            ["bridge", "--source", "a:0", "--target", "b:0", "--method", "magic"],
            "error: --method must be one of procrustes, ridge, low_rank, lasso, got 'magic'",
        ),
        (
            ["probe-transfer", "--source", "a:0", "--target", "b:0", "--task-dataset", "t", "--test-fraction", "1.5"],
            "error: --test-fraction must be strictly between 0 and 1, got 1.5",
        ),
        (
            ["probe-transfer", "--source", "a:0", "--target", "b:0", "--task-dataset", "t", "--ranks", "0,4"],
            "error: --ranks must be integers >= 1, got '0,4'",
        ),
        (
            ["probe-transfer", "--source", "a:0", "--target", "b:0", "--task-dataset", "t", "--plot", "x.png"],
            "error: --plot needs --ranks (it plots the rank sweep)",
        ),
        (["sae", "correlate", "x", "y", "--random-pairs", "0"], "error: --random-pairs must be at least 1, got 0"),
        (
            ["sae", "correlate", "x", "y", "--min-correlation", "2"],
            "error: --min-correlation must be in [-1, 1], got 2.0",
        ),
        (["query", "{ models { key } }", "--variables", "[1]"], "error: --variables must be a JSON object"),
        (
            ["import", "a.npy", "--model", "m", "--dataset", "d", "--prompts", "p.jsonl", "--layers", "1,two"],
            "error: --layers must be comma-separated integers, got '1,two'",
        ),
    ]
    for args, line in cases:
        assert one_error_line(actstore(*args, "--store", str(db), cwd=tmp_path)) == line, args
    assert not db.exists()


# ----------------------------------------------------------------------------- import


def test_import_text_column_is_an_option_the_error_names(tmp_path, rng):
    help_text = actstore("import", "--help", cwd=tmp_path).stdout
    assert "--text-column" in help_text and "--label-column" in help_text
    prompts = tmp_path / "p.csv"
    prompts.write_text("sentence,label\nit was good,1\nit was bad,0\nit was fine,1\n")
    np.save(tmp_path / "acts.npy", rng.standard_normal((3, 2, 4)).astype(np.float32))
    db = tmp_path / "db"
    args = [
        "import",
        str(tmp_path / "acts.npy"),
        "--model",
        "m",
        "--dataset",
        "d",
        "--prompts",
        str(prompts),
        "--store",
        str(db),
    ]
    line = one_error_line(actstore(*args, cwd=tmp_path))
    assert line == (
        f"error: {prompts}: line 1: no text column 'text' in the header (columns: 'sentence', "
        "'label'); name the text column with --text-column"
    )
    assert not db.exists()
    res = actstore(*args, "--text-column", "sentence", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "imported 3 prompts x 2 layers (d=4) as model 'm', dataset 'd'\n"
    from actstore import Store

    store = Store.open(db, create=False)
    ids = store.prompts.ids("d")
    assert [p.text for p in store.prompts.get(ids)] == ["it was good", "it was bad", "it was fine"]
    assert store.prompts.labels(ids).tolist() == [1.0, 0.0, 1.0]


# ----------------------------------------------------------------------------- JSON output


@pytest.fixture(scope="module")
def linked(tmp_path_factory):
    """Models a (3 layers, d=8) and b (3 layers, d=6) over a labelled task set and general text."""
    from actstore import Store

    rng = np.random.default_rng(0)
    store = Store.open(tmp_path_factory.mktemp("cli") / "db")
    n_task, n_gen = 80, 60
    labels = [i % 2 for i in range(n_task)]
    task = store.add_prompts("task", [f"task prompt {i}" for i in range(n_task)], labels=labels)
    general = store.add_prompts("general", [f"general text {i}" for i in range(n_gen)])
    ids = task + general
    Z = rng.standard_normal((len(ids), 4)).astype(np.float32)
    Z[:n_task, 0] += 2.0 * (np.array(labels) - 0.5)  # the label is linearly visible in both models
    for key, d in (("a", 8), ("b", 6)):
        layers = {
            l: Z @ rng.standard_normal((4, d)).astype(np.float32)
            + 0.1 * rng.standard_normal((len(ids), d)).astype(np.float32)
            for l in range(3)
        }
        store.activations.write(key, layers, ids, n_layers=3, architecture="synthetic")
    return store


def api(store, query: str) -> dict:
    """The API's answer to ``query``, executed in-process (what the server would send)."""
    import asyncio

    from actstore.api import execute
    from actstore.config import Settings
    from actstore.service import Service

    out = asyncio.run(execute(Service(store, Settings(environ={})), query, None, authorized=True))
    assert not out.get("errors"), out
    return out["data"]


def cli_json(*args: str, cwd: Path) -> dict:
    res = actstore(*args, cwd=cwd)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_json_output_has_the_api_field_names_and_values(linked, tmp_path):
    S = ["--store", linked.uri]
    src, tgt = '{model: "a", layer: 1}', '{model: "b", layer: -1}'
    cases = [  # (CLI arguments, API type, API field, API arguments, fields only the API has)
        (["bridge", "--source", "a:1", "--target", "b:-1"], "Bridge", "bridge", f"source: {src}, target: {tgt}", set()),
        (
            ["bridge", "--source", "a:1", "--target", "b:-1", "--ranks", "1,2,4"],
            "BridgeSweep",
            "bridgeSweep",
            f"source: {src}, target: {tgt}, ranks: [1, 2, 4]",
            set(),
        ),
        (
            [
                "probe-transfer",
                "--source",
                "a:1",
                "--target",
                "b:-1",
                "--task-dataset",
                "task",
                "--bridge-dataset",
                "general",
            ],
            "ProbeTransfer",
            "probeTransfer",
            f'source: {src}, target: {tgt}, taskDataset: "task", bridgeDataset: "general"',
            set(),
        ),
        (
            [
                "probe-transfer",
                "--source",
                "a:1",
                "--target",
                "b:-1",
                "--task-dataset",
                "task",
                "--bridge-dataset",
                "general",
                "--ranks",
                "1,2,4",
                "--plot",
                str(tmp_path / "sweep.png"),
            ],
            "ProbeTransferSweep",
            "probeTransferSweep",
            f'source: {src}, target: {tgt}, taskDataset: "task", bridgeDataset: "general", ranks: [1, 2, 4]',
            {"plotUrl"},
        ),
    ]
    for args, type_name, field, arguments, api_only in cases:
        out = cli_json(*args, *S, cwd=tmp_path)
        fields = {
            f["name"]
            for f in api(linked, f'{{ __type(name: "{type_name}") {{ fields {{ name }} }} }}')["__type"]["fields"]
        }
        assert set(out) == fields - api_only, (type_name, sorted(set(out) ^ (fields - api_only)))
        assert all(k[:1].islower() and "_" not in k for k in out)  # camelCase, as the API
        shown = sorted(fields - api_only - {"method"})  # the API shows the method as an enum (RIDGE)
        want = api(linked, f"{{ {field}({arguments}) {{ {' '.join(shown)} }} }}")[field]
        for k, v in want.items():
            assert out[k] == (pytest.approx(v) if isinstance(v, float) else v), (type_name, k)
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    single = cli_json(
        "bridge", "--source", "a:1", "--target", "b:-1", "--method", "low_rank", "--rank", "2", *S, cwd=tmp_path
    )
    assert (single["method"], single["rank"], single["layerSource"], single["layerTarget"]) == ("low_rank", 2, 1, 2)
    assert (single["nTrain"], single["nTest"]) == (112, 28)  # 140 shared prompts, test fraction 0.2


def test_service_messages_name_cli_flags(linked, tmp_path):
    res = actstore(
        "probe-transfer",
        "--source",
        "a:1",
        "--target",
        "b:2",
        "--task-dataset",
        "general",
        "--store",
        linked.uri,
        cwd=tmp_path,
    )
    line = one_error_line(res)
    assert "'general' has no labels" in line and "--task-dataset 'general'" in line, line
    assert "taskDataset" not in line and "bridgeDataset" not in line
    res = actstore(
        "bridge", "--source", "a:1", "--target", "b:2", "--eval-dataset", "nope", "--store", linked.uri, cwd=tmp_path
    )
    line = one_error_line(res)
    assert "'nope'" in line and "evalDataset" not in line, line


# ----------------------------------------------------------------------------- startup


def test_the_command_line_imports_nothing_heavy():
    """`actstore --help` and the command modules load no torch, transformers, LanceDB,
    strawberry, matplotlib or FAISS (each command imports what it needs when it runs)."""
    # actstore.service is a lazy face: the commands derive their flags from actstore.service.requests,
    # which loads no store, numerics or service parts
    heavy = (
        "torch",
        "transformers",
        "lancedb",
        "strawberry",
        "matplotlib",
        "faiss",
        "actstore.store",
        "actstore.service.service",
        "actstore.service.similarity",
        "actstore.api",
        "actstore.analysis",
        "actstore.plots",
    )
    code = f"import sys, actstore.cli\nprint(sorted(m for m in {heavy!r} if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
