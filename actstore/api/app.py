"""The ASGI app: GraphQL (with GraphiQL) at ``/graphql``, ``/healthz`` and PNG plots at
``/plots/{key}.png``.

The app's lifespan owns the worker pools and, when the app was given a store rather than a
ready service, the service (its background jobs stop with the app). Resolvers get a typed
:class:`actstore.api.context.Context`.

Errors: an ``ActstoreError`` reaches the client as a GraphQL error with its message (HTTP
200); anything else is logged with its stack trace on the server and masked as "Unexpected
error." for the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import strawberry
from graphql import GraphQLError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from strawberry.asgi import GraphQL
from strawberry.extensions import AddValidationRules, MaskErrors, ParserCache, ValidationCache
from strawberry.extensions.query_depth_limiter import create_validator
from strawberry.tools import merge_types

from actstore.config import Settings
from actstore.errors import ActstoreError, NotFound
from actstore.plots import render_png
from actstore.service import Service

from .bridges import BridgeQuery
from .context import Context, Pools
from .sae import SaeMutation, SaeQuery
from .schema import Mutation, Query

__all__ = ["build_schema", "create_app", "execute"]

# The root types of each feature, merged into one Query / Mutation.
QUERY_TYPES: tuple[type, ...] = (Query, SaeQuery, BridgeQuery)
MUTATION_TYPES: tuple[type, ...] = (Mutation, SaeMutation)

log = logging.getLogger("actstore.api")


def _should_mask(error: GraphQLError) -> bool:
    original = error.original_error
    if original is None:  # syntax / validation errors: already safe and useful
        return False
    return not isinstance(original, (ActstoreError, GraphQLError))


class _Schema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        for error in errors:
            if _should_mask(error):
                log.error("unexpected error in %s", error.path, exc_info=error.original_error)
            else:
                log.debug("query error: %s", error.message)


def build_schema(settings: Settings) -> strawberry.Schema:
    """The GraphQL schema, with the query-depth limit of ``settings``."""
    # One depth rule per schema (QueryDepthLimiter would make a new rule class per request,
    # which defeats the validation cache keyed on the rules).
    depth_rule = create_validator(settings.max_query_depth, None, None)
    return _Schema(
        query=merge_types("Query", QUERY_TYPES),
        mutation=merge_types("Mutation", MUTATION_TYPES),
        extensions=[
            lambda: AddValidationRules([depth_rule]),
            lambda: MaskErrors(should_mask_error=_should_mask),
            # Clients repeat the same operation with new variables: parse and validate once
            # (validation is ~8 ms of a look-up otherwise).
            lambda: ParserCache(maxsize=512),
            lambda: ValidationCache(maxsize=512),
        ],
    )


class _GraphQL(GraphQL):
    async def get_context(self, request: Any, response: Any = None) -> Context:
        return Context(service=request.state.service, pools=request.state.pools,
                       authorization=request.headers.get("authorization"), base_url=str(request.base_url))


def create_app(store: Any, settings: Settings | None = None) -> Starlette:
    """ASGI app over a store (a :class:`actstore.Store` or its URI) or a ready Service. Serve
    with uvicorn. Given a store, the app's lifespan creates the service and closes it."""
    given = store if isinstance(store, Service) else None
    settings = given.settings if given is not None else (settings or Settings())
    schema = build_schema(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        service = given or Service(store, settings)
        pools = Pools()
        app.state.service = service
        try:
            yield {"service": service, "pools": pools}
        finally:
            pools.shutdown()
            if given is None:
                service.close()

    async def healthz(request: Request) -> JSONResponse:
        service: Service = request.state.service
        models = await asyncio.to_thread(service.store.models.list)
        return JSONResponse({"status": "ok", "store": service.store.uri, "models": len(models)})

    async def plot(request: Request) -> Response:
        service: Service = request.state.service
        try:
            result = await asyncio.to_thread(service.results.get, request.path_params["key"])
            png = await asyncio.to_thread(render_png, result)
        except NotFound as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return Response(png, media_type="image/png")

    graphql = _GraphQL(schema)
    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/plots/{key:str}.png", plot),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            Mount("/graphql", graphql),
        ],
        lifespan=lifespan,
    )
    app.state.schema = schema
    return app


async def execute(service: Service, query: str, variables: dict[str, Any] | None = None,
                  authorized: bool = False) -> dict[str, Any]:
    """Run one GraphQL operation in-process (``actstore query``); returns {"data", "errors"?}."""
    schema = build_schema(service.settings)
    token = service.settings.token
    pools = Pools(light=2, heavy=1)
    context = Context(service=service, pools=pools,
                      authorization=f"Bearer {token}" if authorized and token else None)
    try:
        result = await schema.execute(query, variable_values=variables, context_value=context)
    finally:
        pools.shutdown()
    out: dict[str, Any] = {"data": result.data}
    if result.errors:
        out["errors"] = [e.formatted for e in result.errors]
    return out
