"""The browser pages: the explorer at ``/``, GraphiQL at ``/graphql`` (GET from a browser)
and their files under ``/static/``, all served from the installed package.

Nothing here loads from another host: GraphiQL is a bundle built by ``make assets``
(``web/``, committed under ``actstore/api/static/graphiql/``), the explorer is plain ES
modules (``static/explorer/``), and plotly.js is the ``plotly.min.js`` that the ``plotly``
Python package ships, served at ``/static/vendor/plotly.min.js``. Pages carry a
Content-Security-Policy that allows only this server ('self'); styles may be inline because
GraphiQL's and plotly's components set them at run time.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

__all__ = ["CSP", "STATIC", "graphiql_page", "plotly_js", "web_routes"]

STATIC = Path(__file__).resolve().parent / "static"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def _read(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def graphiql_page() -> HTMLResponse:
    """The GraphiQL page (its scripts and styles from ``/static/graphiql/``)."""
    return HTMLResponse(_read("graphiql/index.html"), headers=PAGE_HEADERS)


async def explorer_page(request: Request) -> Response:
    return HTMLResponse(_read("explorer/index.html"), headers=PAGE_HEADERS)


def plotly_js() -> Path | None:
    """``plotly.min.js`` of the installed ``plotly`` package (found without importing it), or None."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


async def plotly_file(request: Request) -> Response:
    path = plotly_js()
    if path is None:
        return JSONResponse(
            {
                "error": "plotly.min.js comes from the Python package 'plotly', which is not "
                "installed: pip install plotly"
            },
            404,
        )
    return FileResponse(path, media_type="text/javascript", headers={"X-Content-Type-Options": "nosniff"})


def web_routes() -> list[BaseRoute]:
    """Routes of the explorer page and the static files (GraphiQL's page is served by the
    GraphQL endpoint, :mod:`.http`)."""
    return [
        Route("/", explorer_page),
        Route("/static/vendor/plotly.min.js", plotly_file),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
