"""The ASGI app: GraphQL (with GraphiQL) at ``/graphql``, ``/healthz`` and PNG heatmaps at
``/plots/{key}.png``.

Errors: an ``ActstoreError`` or ``AnalysisError`` reaches the client as a GraphQL error
with its message (HTTP 200); anything else is logged with its stack trace on the server
and masked as "Unexpected error." for the client.
"""

from __future__ import annotations

import asyncio
import logging
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

from actstore.analysis import AnalysisError
from actstore.service import Service
from actstore.config import Settings
from actstore.store import Store
from actstore.errors import ActstoreError, NotFound

from .plots import render_png
from .bridges import BridgeQuery
from .sae import SaeMutation, SaeQuery
from .schema import Mutation, Query

# Feature modules add their root types here (merged into one Query / Mutation).
QUERY_TYPES: tuple[type, ...] = (Query, SaeQuery, BridgeQuery)
MUTATION_TYPES: tuple[type, ...] = (Mutation, SaeMutation)

log = logging.getLogger("actstore.api")


def _should_mask(error: GraphQLError) -> bool:
    original = error.original_error
    if original is None:  # syntax / validation errors: already safe and useful
        return False
    return not isinstance(original, (ActstoreError, AnalysisError, GraphQLError))


class _Schema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        for error in errors:
            if _should_mask(error):
                log.error("unexpected error in %s", error.path, exc_info=error.original_error)
            else:
                log.debug("query error: %s", error.message)


def build_schema(settings: Settings) -> strawberry.Schema:
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
    def __init__(self, schema: strawberry.Schema, service: Service):
        super().__init__(schema)
        self.service = service

    async def get_context(self, request: Any, response: Any = None) -> dict[str, Any]:
        return {
            "service": self.service,
            "request": request,
            "authorization": request.headers.get("authorization"),
            "base_url": str(request.base_url),
        }


def create_app(store: Store | Service | str, settings: Settings | None = None) -> Starlette:
    """ASGI app over a store (or a ready Service). Serve with uvicorn."""
    service = store if isinstance(store, Service) else Service(store, settings)
    schema = build_schema(service.settings)

    async def healthz(request: Request) -> JSONResponse:
        models = await asyncio.to_thread(service.store.models)
        return JSONResponse({"status": "ok", "store": service.store.uri, "models": len(models)})

    async def plot(request: Request) -> Response:
        key = request.path_params["key"]
        try:
            result = await asyncio.to_thread(service.result, key)
            png = await asyncio.to_thread(render_png, result)
        except NotFound as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return Response(png, media_type="image/png")

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/plots/{key:str}.png", plot),
            Route("/graphql", _GraphQL(schema, service), methods=["GET", "POST"]),
            Mount("/graphql", _GraphQL(schema, service)),
        ],
    )
    app.state.service = service
    app.state.schema = schema
    return app


async def execute(service: Service, query: str, variables: dict[str, Any] | None = None,
                  authorized: bool = False) -> dict[str, Any]:
    """Run one GraphQL operation in-process (``actstore query``); returns {"data", "errors"?}."""
    schema = build_schema(service.settings)
    token = service.settings.token
    context = {"service": service, "request": None, "base_url": "/",
               "authorization": f"Bearer {token}" if authorized and token else None}
    result = await schema.execute(query, variable_values=variables, context_value=context)
    out: dict[str, Any] = {"data": result.data}
    if result.errors:
        out["errors"] = [e.formatted for e in result.errors]
    return out
