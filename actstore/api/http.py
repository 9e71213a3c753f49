"""GraphQL over HTTP (the GraphQL-over-HTTP specification), and the browser guard.

:class:`GraphQLEndpoint` serves ``/graphql``:

- ``POST`` with ``Content-Type: application/json`` (anything else: 415) and a body of at most
  ``ACTSTORE_MAX_BODY_BYTES`` (checked from ``Content-Length`` before reading, and while
  reading: 413). The body must be UTF-8 JSON holding one object ``{"query": str,
  "variables": object|null, "operationName": str|null, "extensions": object|null}``; anything
  else is a 400 whose message names what was wrong. JSON is decoded on a worker thread when
  large.
- ``GET`` with the same fields as URL parameters runs queries only: a mutation over GET is a
  405 with ``Allow: POST``. ``GET`` without ``query`` from a browser is the GraphiQL page,
  served from the package (:mod:`.web`).
- ``Accept: application/graphql-response+json`` is answered in that media type: a request
  that fails before execution (syntax, validation, variables, operation selection) is a 400
  without ``data``. With ``application/json`` (the default) such errors keep status 200, as
  GraphQL clients that predate the specification expect; syntax errors carry no ``data`` in
  either.
- Limits refused before parsing (``LIMIT_EXCEEDED``: document length 413; tokens, fields 400)
  answer with the status in both media types.
- Every error carries ``extensions.code`` (:mod:`actstore.api.codes`).

:class:`BrowserGuard` (ASGI middleware) answers only requests whose ``Host`` is a loopback
name, the address the connection arrived at, the address given to ``create_app(host=...)``
or one of ``ACTSTORE_ALLOWED_HOSTS`` (DNS rebinding), and refuses requests a page on another
origin sent (``Origin`` not the server's own) unless ``ACTSTORE_CORS_ORIGINS`` lists that
origin, in which case Starlette's CORS middleware answers preflights and adds the headers.
Requests without ``Origin`` that a browser marks ``Sec-Fetch-Site: cross-site`` (image and
script sources, scripted navigations with a query) are refused too.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from graphql import GraphQLError
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType

from actstore.config import Settings
from actstore.errors import LimitExceeded

from .codes import BAD_REQUEST, INTERNAL, format_error, request_error
from .limits import DocumentCache, check_document_size, operation_problem
from .web import graphiql_page

__all__ = ["BrowserGuard", "GraphQLEndpoint", "JSON_TYPE", "RESPONSE_TYPE", "json_response"]

RESPONSE_TYPE = "application/graphql-response+json"
JSON_TYPE = "application/json"
# Bodies from this size on are decoded on a worker thread.
THREAD_DECODE_BYTES = 64 * 1024
# A JSON string escape of a UTF-16 surrogate: only then is the decoded body searched for
# unpaired surrogates (which no UTF-8 text can hold).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_JSON_TYPES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


class Refused(Exception):
    """A request the endpoint answers with an error status and a JSON error body."""

    def __init__(
        self, status: int, message: str, code: str = BAD_REQUEST, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def json_response(
    body: Any, status: int = 200, media_type: str = JSON_TYPE, headers: dict[str, str] | None = None
) -> Response:
    """``body`` as compact JSON; strings no UTF-8 can hold (lone surrogates) are escaped."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raw = json.dumps(body, separators=(",", ":")).encode("ascii")
    return Response(raw, status_code=status, media_type=media_type, headers=headers)


def _kind(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _preview(value: Any, limit: int = 40) -> str:
    text = json.dumps(value) if not isinstance(value, (dict, list)) else _kind(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def negotiate(accept: str | None) -> str:
    """The response media type for an ``Accept`` header: graphql-response+json when the
    client ranks it at least as high as application/json, else application/json."""
    if not accept:
        return JSON_TYPE
    ranks: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = [p.strip() for p in part.split(";")]
        q = 1.0
        for p in params:
            name, _, value = p.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranks[media.lower()] = max(q, ranks.get(media.lower(), 0.0))
    if ranks.get(RESPONSE_TYPE, 0.0) > 0 and ranks[RESPONSE_TYPE] >= ranks.get(JSON_TYPE, 0.0):
        return RESPONSE_TYPE
    return JSON_TYPE


def _unpaired_surrogate(value: Any) -> str | None:
    """The first string inside ``value`` that UTF-8 cannot encode, or None."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as exc:
                return f"\\u{ord(v[exc.start]):04x}"
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return None


def decode_json(raw: bytes | str, what: str = "the request body") -> Any:
    """JSON of ``raw`` (UTF-8); Refused (400) naming what is wrong with it."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise Refused(400, f"{what} is not valid UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Refused(400, f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise Refused(400, f"{what} is JSON nested too deeply to decode") from None
    if _SURROGATE_ESCAPE.search(text):
        bad = _unpaired_surrogate(value)
        if bad is not None:
            raise Refused(
                400, f"{what} has a JSON string with the unpaired UTF-16 surrogate {bad}, which is not Unicode text"
            )
    return value


class GraphQLEndpoint:
    """The ``/graphql`` endpoint: ``Route("/graphql", endpoint.handle, methods=["GET", "POST"])``."""

    def __init__(
        self, schema: Any, settings: Settings, cache: DocumentCache, context: Callable[[Request], Awaitable[Any]]
    ) -> None:
        self.schema = schema
        self.settings = settings
        self.cache = cache
        self.context = context

    async def handle(self, request: Request) -> Response:
        media = negotiate(request.headers.get("accept"))
        try:
            if request.method == "GET" and "query" not in request.query_params and self._wants_html(request):
                return graphiql_page()
            data = await (self._from_url(request) if request.method == "GET" else self._from_body(request))
            query, variables, operation_name, extensions = self._fields(data)
            try:
                check_document_size(query, self.settings)
            except LimitExceeded as exc:
                raise Refused(413, str(exc), exc.code) from None
            return await self._run(request, media, query, variables, operation_name, extensions)
        except Refused as r:
            return json_response({"errors": [request_error(r.message, r.code)]}, r.status, media, r.headers)

    @staticmethod
    def _wants_html(request: Request) -> bool:
        accept = request.headers.get("accept", "")
        return "text/html" in accept or "*/*" in accept

    async def _from_url(self, request: Request) -> dict[str, Any]:
        params = request.query_params
        data: dict[str, Any] = {"query": params.get("query"), "operationName": params.get("operationName")}
        for name in ("variables", "extensions"):
            raw = params.get(name)
            data[name] = decode_json(raw, f"the URL parameter {name!r}") if raw else None
        return data

    async def _from_body(self, request: Request) -> Any:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != JSON_TYPE:
            raise Refused(
                415,
                f"POST /graphql needs Content-Type: application/json, got {media or 'none'!r}",
                headers={"Accept-Post": JSON_TYPE},
            )
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise Refused(
                413,
                f"the request body has {int(declared):,} bytes; this server accepts at most "
                f"{limit:,} (ACTSTORE_MAX_BODY_BYTES)",
                "LIMIT_EXCEEDED",
            )
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Refused(
                        413,
                        f"the request body is over {limit:,} bytes, the most this server accepts "
                        "(ACTSTORE_MAX_BODY_BYTES)",
                        "LIMIT_EXCEEDED",
                    )
                chunks.append(chunk)
        except ClientDisconnect:
            raise Refused(400, "the client closed the connection before sending the whole body") from None
        body = b"".join(chunks)
        if not body:
            raise Refused(400, "the request body is empty: send a JSON object with a 'query' string")
        if len(body) >= THREAD_DECODE_BYTES:
            return await asyncio.to_thread(decode_json, body)
        return decode_json(body)

    @staticmethod
    def _fields(data: Any) -> tuple[str, dict[str, Any] | None, str | None, dict[str, Any] | None]:
        if isinstance(data, list):
            raise Refused(400, "batched requests (a JSON array) are not supported: send one operation per request")
        if not isinstance(data, dict):
            raise Refused(
                400,
                f"the request body must be a JSON object with a 'query' string, got {_kind(data)}: {_preview(data)}",
            )
        query = data.get("query")
        if not isinstance(query, str) or not query.strip():
            got = "nothing" if query is None else f"{_kind(query)}: {_preview(query)}"
            raise Refused(400, f"'query' must be a string holding a GraphQL document, got {got}")
        variables, name, extensions = data.get("variables"), data.get("operationName"), data.get("extensions")
        if variables is not None and not isinstance(variables, dict):
            raise Refused(
                400, f"'variables' must be a JSON object or null, got {_kind(variables)}: {_preview(variables)}"
            )
        if name is not None and not isinstance(name, str):
            raise Refused(400, f"'operationName' must be a string or null, got {_kind(name)}: {_preview(name)}")
        if extensions is not None and not isinstance(extensions, dict):
            raise Refused(400, f"'extensions' must be a JSON object or null, got {_kind(extensions)}")
        return query, variables, name or None, extensions

    async def _run(
        self,
        request: Request,
        media: str,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        extensions: dict[str, Any] | None,
    ) -> Response:
        # Parsed here (on a worker thread, into the cache the schema's parsing step reads) so the
        # operation can be selected by the specification's rules before anything runs.
        try:  # a cached document without a worker-thread round trip
            parsed = self.cache.hit(query) or await asyncio.to_thread(self.cache.parse, query)
        except GraphQLError as exc:
            return self.render(SimpleNamespace(data=None, errors=[exc]), media)
        problem = operation_problem(parsed.document, operation_name)
        if problem is not None:
            raise Refused(400, problem, "GRAPHQL_VALIDATION_FAILED")
        allowed = {OperationType.QUERY} if request.method == "GET" else {OperationType.QUERY, OperationType.MUTATION}
        context = await self.context(request)
        try:
            result = await self.schema.execute(
                query,
                variable_values=variables,
                context_value=context,
                operation_name=operation_name,
                allowed_operation_types=allowed,
                operation_extensions=extensions,
            )
        except CannotGetOperationTypeError:  # operation_problem refused these already
            raise Refused(400, "the document has no operation to run", "GRAPHQL_VALIDATION_FAILED") from None
        except InvalidOperationTypeError as exc:
            kind = exc.operation_type.value
            raise Refused(
                405, f"a {kind} needs POST: GET runs queries only", "BAD_REQUEST", headers={"Allow": "POST"}
            ) from None
        except MissingQueryError:
            raise Refused(400, "'query' must be a string holding a GraphQL document, got nothing") from None
        finally:
            # the request is answered (or refused, or its client left and this task was
            # cancelled): no computation it started may keep running
            stop = getattr(context, "stop_all", None)
            if stop is not None:
                stop()
        return self.render(result, media)

    @staticmethod
    def render(result: Any, media: str) -> Response:
        """The HTTP answer to an execution result (see the module's notes for the statuses)."""
        errors = list(result.errors or [])
        formatted = [format_error(e) for e in errors]
        before_execution = result.data is None and bool(errors) and all(e.path is None for e in errors)
        body: dict[str, Any] = {} if before_execution else {"data": result.data}
        if formatted:
            body["errors"] = formatted
        status = 200
        if before_execution:
            codes = {f["extensions"]["code"] for f in formatted}
            if INTERNAL in codes:
                status = 500
            elif "LIMIT_EXCEEDED" in codes or media == RESPONSE_TYPE:
                status = 400
        return json_response(body, status, media)


# ---------------------------------------------------------------------------- browser guard
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _hostname(host: str | None) -> str | None:
    """``"Example.com:80"`` -> ``"example.com"``, ``"[::1]:8000"`` -> ``"::1"``; None if unreadable."""
    if not host:
        return None
    try:
        return urlsplit(f"//{host.strip()}").hostname
    except ValueError:
        return None


def _origin(value: str) -> str | None:
    """An origin as browsers write it: lowercase scheme://host[:port], default port left out."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port is not None and port != default else "")


def _same_origin(origin: str, host: str | None) -> bool:
    """``origin`` points at the Host the request was sent to (host and port compared, so TLS
    ended at a proxy still counts as the same origin)."""
    try:
        o = urlsplit(origin.strip())
        h = urlsplit(f"//{(host or '').strip()}")
        default = {"http": 80, "https": 443}.get(o.scheme.lower())
        return o.hostname is not None and o.hostname == h.hostname and (o.port or default) == (h.port or default)
    except ValueError:
        return False


class BrowserGuard:
    """ASGI middleware: the Host and Origin checks of the module's notes, in front of ``app``
    (wrapped in Starlette's CORSMiddleware when ``settings.cors_origins`` is set)."""

    def __init__(self, app: ASGIApp, settings: Settings, hosts: Iterable[str] = ()) -> None:
        self.hosts = {h.strip("[]").lower() for h in (*LOOPBACK, *hosts, *settings.allowed_hosts)}
        self.any_host = "*" in settings.allowed_hosts
        self.any_origin = "*" in settings.cors_origins
        self.origins = {o if o == "null" else _origin(o) for o in settings.cors_origins if o != "*"}
        if settings.cors_origins:
            app = CORSMiddleware(
                app,
                allow_origins=["*"] if self.any_origin else sorted(o for o in self.origins if o),
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type", "accept"],
                max_age=600,
            )
        self.app = app

    def host_allowed(self, scope: Scope, host: str | None) -> bool:
        if self.any_host or host is None:  # no Host at all: not a browser (HTTP/1.0 tools)
            return True
        name = _hostname(host)
        server = scope.get("server")
        return name is not None and (name in self.hosts or (server is not None and name == str(server[0]).lower()))

    def origin_allowed(self, headers: Headers, origin: str) -> bool:
        if _same_origin(origin, headers.get("host")) or headers.get("sec-fetch-site") == "same-origin":
            return True
        return self.any_origin or (origin.strip() if origin.strip() == "null" else _origin(origin)) in self.origins

    @staticmethod
    def no_cors_from_elsewhere(scope: Scope, headers: Headers) -> bool:
        """A browser request another site's page caused without an Origin header (``<img src>``,
        ``<script src>``, a scripted navigation), as the browser's Sec-Fetch-* headers tell.
        Navigating to a page without a query (GraphiQL, /healthz) stays allowed."""
        if headers.get("sec-fetch-site") not in ("cross-site", "same-site"):
            return False  # same-origin, typed by the user ("none"), or not a browser
        return not (headers.get("sec-fetch-mode") == "navigate" and not scope.get("query_string"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host")
        refusal = None
        if not self.host_allowed(scope, host):
            refusal = (
                400,
                f"this server does not answer to the Host {host!r}: it answers to "
                f"{', '.join(sorted(self.hosts))} and the address it listens on; add a name "
                "to ACTSTORE_ALLOWED_HOSTS to allow it",
                "FORBIDDEN_HOST",
            )
        else:
            origin = headers.get("origin")
            if origin is not None and not self.origin_allowed(headers, origin):
                refusal = (
                    403,
                    f"a page on {origin!r} may not query this server (cross-origin request); "
                    "set ACTSTORE_CORS_ORIGINS to allow that origin",
                    "FORBIDDEN_ORIGIN",
                )
            elif origin is None and self.no_cors_from_elsewhere(scope, headers):
                refusal = (
                    403,
                    "a page on another site may not query this server (a cross-site request "
                    "without Origin, e.g. an <img> or <script> source or a redirect)",
                    "FORBIDDEN_ORIGIN",
                )
        if refusal is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        status, message, code = refusal
        await json_response({"errors": [request_error(message, code)]}, status)(scope, receive, send)
