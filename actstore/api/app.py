"""The ASGI app: GraphQL (with GraphiQL) at ``/graphql``, ``/healthz``, PNG plots at
``/plots/{key}.png`` and the explorer at ``/`` with its files under ``/static/``
(:mod:`actstore.api.web`), behind the browser guard (Host and Origin checks, CORS when
configured).

The app's lifespan owns the worker pools and, when the app was given a store rather than a
ready service, the service (its background jobs stop with the app). Resolvers get a typed
:class:`actstore.api.context.Context`. The HTTP side of GraphQL (status codes, media types,
request limits) is :mod:`actstore.api.http`; parsing and validation run on worker threads
within the limits of :mod:`actstore.api.limits`.

Errors: an ``ActstoreError`` reaches the client as a GraphQL error with its message and its
``extensions.code`` (HTTP 200); anything else is logged with its stack trace on the server and
masked as "Unexpected error." (``INTERNAL_SERVER_ERROR``) for the client (:mod:`.codes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import weakref
from collections.abc import AsyncIterator
from typing import Any

import strawberry
from graphql import GraphQLError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import AddValidationRules
from strawberry.extensions.query_depth_limiter import create_validator
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.tools import merge_types

from actstore.config import Settings
from actstore.errors import NotFound
from actstore.plots import render_png, renderer_for
from actstore.service import Service

from .admin import AdminMutation
from .atlas import AtlasMutation, AtlasQuery
from .bridges import BridgeQuery
from .budget import RequestBudget
from .codes import format_error, request_error, should_mask
from .context import Context, Pools
from .http import BrowserGuard, GraphQLEndpoint, json_response
from .limits import BoundedParsing, DocumentCache, operation_problem
from .measures import MeasureQuery
from .sae import SaeMutation, SaeQuery
from .schema import Mutation, Query
from .web import web_routes

__all__ = ["build_schema", "create_app", "execute"]

# The root types of each feature, merged into one Query / Mutation.
QUERY_TYPES: tuple[type, ...] = (Query, MeasureQuery, SaeQuery, BridgeQuery, AtlasQuery)
MUTATION_TYPES: tuple[type, ...] = (Mutation, SaeMutation, AdminMutation, AtlasMutation)

log = logging.getLogger("actstore.api")


# Result keys are hex digests; anything else names no result (and never reaches the store).
_RESULT_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")


class _Schema(strawberry.Schema):
    @property
    def graphql_schema(self) -> Any:
        """The graphql-core schema (what validation runs against)."""
        return self._schema

    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        for error in errors:
            if should_mask(error):
                log.error("unexpected error in %s", error.path, exc_info=error.original_error)
            else:
                log.debug("query error: %s", error.message)


def build_schema(settings: Settings, cache: DocumentCache | None = None) -> strawberry.Schema:
    """The GraphQL schema, with the query-depth limit of ``settings``; documents are parsed and
    validated on worker threads within the limits of ``settings``, cached in ``cache``
    (a new one, bounded by ``settings.parse_cache_mb``, if not given). Errors are masked and
    given their ``extensions.code`` when formatted (:func:`actstore.api.codes.format_error`)."""
    # One depth rule per schema (QueryDepthLimiter would make a new rule class per request,
    # which defeats the validation cache keyed on the rules).
    depth_rule = create_validator(settings.max_query_depth, None, None)
    documents = cache or DocumentCache(settings)
    return _Schema(
        query=merge_types("Query", QUERY_TYPES),
        mutation=merge_types("Mutation", MUTATION_TYPES),
        extensions=[
            lambda: AddValidationRules([depth_rule]),
            # Clients repeat the same operation with new variables: parse and validate once
            # (validation is ~8 ms of a look-up otherwise), within a byte budget.
            lambda: BoundedParsing(documents),
            # One budget per request: every root field estimated, aliases and fragments
            # expanded, before any runs.
            RequestBudget,
        ],
    )


def create_app(store: Any, settings: Settings | None = None, host: str | None = None) -> Starlette:
    """ASGI app over a store (a :class:`actstore.Store` or its URI) or a ready Service. Serve
    with uvicorn. Given a store, the app's lifespan creates the service and closes it.

    ``host``: the address the server binds (``actstore serve --host``); requests whose Host
    header names it are answered besides loopback names and ``ACTSTORE_ALLOWED_HOSTS``."""
    given = store if isinstance(store, Service) else None
    settings = given.settings if given is not None else (settings or Settings())
    documents = DocumentCache(settings)
    schema = build_schema(settings, documents)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        service = given or Service(store, settings)
        # a thread for every request the scheduler may run or queue, plus some for light reads
        pools = Pools(heavy=settings.heavy_slots + settings.heavy_queue + 6)
        app.state.service = service
        try:
            yield {"service": service, "pools": pools}
        finally:
            pools.shutdown()
            if given is None:
                service.close()

    async def healthz(request: Request) -> JSONResponse:
        # No store path here: anyone who can reach the port may ask.
        service: Service = request.state.service
        models = await asyncio.to_thread(service.store.models.list)
        return JSONResponse({"status": "ok", "models": len(models)})

    async def plot(request: Request) -> Response:
        service: Service = request.state.service
        key = request.path_params["key"]
        if not _RESULT_KEY.fullmatch(key):
            return json_response({"error": f"no cached result {key!r}: result keys are hex digests"}, 404)
        try:
            result = await asyncio.to_thread(service.results.get, key)
        except NotFound as exc:
            return json_response({"error": str(exc)}, 404)
        # Results without a renderer of their own fall to the matrix heatmap, which needs values.
        if renderer_for(result) is renderer_for(None) and not hasattr(result, "values"):
            return json_response(
                {
                    "error": f"the cached result {key!r} is a {type(result).__name__}, "
                    "which has no plot (plots exist for matrix and sweep answers)"
                },
                404,
            )
        png = await asyncio.to_thread(render_png, result)
        return Response(png, media_type="image/png")

    async def context(request: Request) -> Context:
        return Context(
            service=request.state.service,
            pools=request.state.pools,
            authorization=request.headers.get("authorization"),
            base_url=str(request.base_url),
            client_gone=request.is_disconnected,
        )

    graphql = GraphQLEndpoint(schema, settings, documents, context)
    app = Starlette(
        middleware=[Middleware(BrowserGuard, settings=settings, hosts=[host] if host else [])],
        routes=[
            Route("/healthz", healthz),
            Route("/plots/{key:str}.png", plot),
            Route("/graphql", graphql.handle, methods=["GET", "POST"]),
            *web_routes(),
        ],
        lifespan=lifespan,
    )
    app.state.schema = schema
    return app


# Schemas of in-process execution, one per service (built once: ~60 ms each).
_SCHEMAS: weakref.WeakKeyDictionary[Service, tuple[DocumentCache, strawberry.Schema]] = weakref.WeakKeyDictionary()


def _in_process_schema(service: Service) -> tuple[DocumentCache, strawberry.Schema]:
    found = _SCHEMAS.get(service)
    if found is None:
        documents = DocumentCache(service.settings)
        found = _SCHEMAS[service] = (documents, build_schema(service.settings, documents))
    return found


async def execute(
    service: Service,
    query: str,
    variables: dict[str, Any] | None = None,
    authorized: bool = False,
    operation_name: str | None = None,
    base_url: str = "/",
) -> dict[str, Any]:
    """Run one GraphQL operation in-process (``actstore query``); returns {"data", "errors"?}
    like the server's answer (no "data" when the document cannot be run: syntax, limits,
    operation selection). ``plotUrl`` fields are ``{base_url}plots/KEY.png``."""
    documents, schema = _in_process_schema(service)
    try:
        problem = operation_problem((await asyncio.to_thread(documents.parse, query)).document, operation_name)
    except GraphQLError as exc:
        return {"errors": [format_error(exc)]}
    if problem is not None:
        return {"errors": [request_error(problem, "GRAPHQL_VALIDATION_FAILED")]}
    token = service.settings.token
    pools = Pools(light=2, heavy=1)
    context = Context(
        service=service,
        pools=pools,
        base_url=base_url,
        authorization=f"Bearer {token}" if authorized and token else None,
    )
    try:
        result = await schema.execute(
            query, variable_values=variables, context_value=context, operation_name=operation_name
        )
    except (CannotGetOperationTypeError, InvalidOperationTypeError, MissingQueryError):  # refused above
        return {"errors": [request_error("give a GraphQL document with one operation")]}
    finally:
        context.stop_all()
        pools.shutdown()
    out: dict[str, Any] = {"data": result.data}
    if result.errors:
        out["errors"] = [format_error(e) for e in result.errors]
    return out
