"""The browser pages without a browser: the explorer at /, GraphiQL at /graphql and their files
under /static/ come from the package, name no other host and carry a Content-Security-Policy;
plotly.js is the plotly package's own; pyproject ships every static file in the wheel.
(tests/browser drives them in Chromium.)"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from actstore import Store
from actstore.api import create_app
from actstore.api.web import STATIC, plotly_js

ROOT = Path(__file__).resolve().parents[2]
# src="..." / href="..." in the pages
REFERENCE = re.compile(r'(?:src|href)="([^"]*)"')


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    store = Store.open(tmp_path_factory.mktemp("web") / "db")
    with TestClient(create_app(store)) as c:
        yield c


@pytest.mark.parametrize("path, accept", [("/", "text/html"), ("/graphql", "text/html,application/xhtml+xml")])
def test_pages_reference_only_this_server(client, path, accept):
    page = client.get(path, headers={"accept": accept})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self';" in csp and "connect-src 'self'" in csp
    refs = REFERENCE.findall(page.text)
    assert refs and all(r.startswith("/") and not r.startswith("//") or r.startswith(("data:", "#")) for r in refs), (
        refs
    )
    for ref in refs:
        if ref.startswith("/static/"):
            got = client.get(ref)
            assert got.status_code == 200 and len(got.content) > 50, ref
    assert "unpkg.com" not in page.text and "cdn" not in page.text.lower()


def test_graphiql_page_loads_the_bundle(client):
    page = client.get("/graphql", headers={"accept": "text/html"})
    assert REFERENCE.findall(page.text) == [
        "data:,",
        "/static/graphiql/graphiql.css",
        "/static/graphiql/page.css",
        "/",
        "/static/graphiql/graphiql.js",
    ]
    js = client.get("/static/graphiql/graphiql.js")
    assert js.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert "graphiql-execute-button" in js.text


def test_plotly_is_the_installed_packages_file(client):
    path = plotly_js()
    assert path is not None and path.name == "plotly.min.js" and path.parent.name == "package_data"
    got = client.get("/static/vendor/plotly.min.js")
    assert got.status_code == 200 and got.content == path.read_bytes()
    assert got.headers["content-type"].startswith("text/javascript")


def test_explorer_modules_fetch_nothing_but_the_api():
    sources = {p.name: p.read_text() for p in (STATIC / "explorer").glob("*.js")}
    assert {"main.js", "api.js", "catalog.js", "compare.js", "neighbors.js", "transfer.js", "sae.js", "jobs.js"} <= set(
        sources
    )
    for name, text in sources.items():
        assert not re.search(r"https?://", text), name
        assert "fetch(" not in text or name == "api.js", name
    assert 'fetch("/graphql"' in sources["api.js"]


def test_unknown_static_file_is_404(client):
    assert client.get("/static/explorer/nope.js").status_code == 404
    assert client.get("/static/../pyproject.toml").status_code == 404


def test_the_wheel_ships_every_static_file():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "actstore.api"
    ]
    base = STATIC.parent
    shipped = {p for pattern in patterns for p in base.glob(pattern)}
    files = {p for p in STATIC.rglob("*") if p.is_file()}
    assert files and files == shipped, sorted(str(p.relative_to(base)) for p in files - shipped)
