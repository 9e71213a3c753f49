"""A missing extra is one line naming it, on the command line and from Python."""

from __future__ import annotations

import importlib.util

import pytest
from typer.testing import CliRunner

from actstore.errors import MissingExtra, require_extra


def _without(monkeypatch, *modules: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in modules else real(name, *a))


def test_require_extra_names_the_extra(monkeypatch):
    require_extra("server", "actstore serve")  # installed here: nothing happens
    _without(monkeypatch, "strawberry", "uvicorn")
    with pytest.raises(MissingExtra) as exc:
        require_extra("server", "actstore serve")
    assert str(exc.value) == (
        "actstore serve needs the [server] extra (strawberry, uvicorn not installed): pip install 'actstore[server]'"
    )


@pytest.mark.parametrize(
    "args, extra, what",
    [
        (["serve"], "server", "actstore serve"),
        (["query", "{ models { key } }"], "server", "actstore query"),
        (["ingest", "--model", "m", "--dataset", "d"], "ingest", "actstore ingest"),
    ],
)
def test_commands_stop_with_one_line(monkeypatch, tmp_path, args, extra, what):
    from actstore import Store
    from actstore.cli import app

    Store.open(tmp_path / "db").add_prompts("d", ["x"])
    module = {"server": "strawberry", "ingest": "transformers"}[extra]
    _without(monkeypatch, module)
    res = CliRunner().invoke(app, [*args, "--store", str(tmp_path / "db")])
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines()[-1] == (
        f"error: {what} needs the [{extra}] extra ({module} not installed): pip install 'actstore[{extra}]'"
    )
