"""The HTTP surface in-process (issue 12): a client's mistake is never a 5xx, GraphQL over HTTP
(operation selection, media types, GET mutations, no ``data`` on syntax errors), an
``extensions.code`` on every error, the Host / Origin guard and CORS, /healthz, the request
limits and the byte-bounded document cache. Each test sends the attack itself."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from starlette.testclient import TestClient

from actstore import Store
from actstore.api import create_app
from actstore.api.limits import BYTES_PER_CHAR, DocumentCache, count_fields
from actstore.config import Settings
from actstore.service import Service

TOKEN = "http-token"
GQL = "application/graphql-response+json"


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Store:
    """Models a and b (2 layers, d=8) over 20 shared prompts."""
    rng = np.random.default_rng(3)
    store = Store.open(tmp_path_factory.mktemp("http") / "db")
    ids = store.add_prompts("ds", [f"prompt {i}" for i in range(20)])
    for key in ("a", "b"):
        store.activations.write(
            key,
            {l: rng.standard_normal((20, 8)).astype(np.float32) for l in range(2)},
            ids,
            n_layers=2,
            architecture="synthetic",
        )
    return store


def _client(store, **settings) -> TestClient:
    service = Service(store, Settings(environ={}, token=TOKEN, **settings))
    client = TestClient(create_app(service))
    client.service = service
    return client


@pytest.fixture(scope="module")
def client(small_store):
    with _client(small_store) as c:
        yield c


def post(client, body, headers=None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/graphql", content=raw, headers={"content-type": "application/json", **(headers or {})})


def only_error(r) -> dict:
    body = r.json()
    assert len(body["errors"]) == 1, body
    return body["errors"][0]


# ------------------------------------------------------------ no 5xx for a client's mistake
@pytest.mark.parametrize(
    "raw, kind",
    [(b"42", "a number: 42"), (b"null", "null: null"), (b'"s"', 'a string: "s"'), (b"true", "a boolean: true")],
)
def test_a_json_body_that_is_not_an_object_is_a_400(client, raw, kind):
    r = post(client, raw)
    assert r.status_code == 400
    assert only_error(r) == {
        "message": f"the request body must be a JSON object with a 'query' string, got {kind}",
        "extensions": {"code": "BAD_REQUEST"},
    }


def test_a_batch_and_a_query_of_the_wrong_type_are_400s(client):
    r = post(client, b'[{"query": "{ models { key } }"}]')
    assert (r.status_code, only_error(r)["message"]) == (
        400,
        "batched requests (a JSON array) are not supported: send one operation per request",
    )
    r = post(client, {"query": 7})
    assert (r.status_code, only_error(r)["message"]) == (
        400,
        "'query' must be a string holding a GraphQL document, got a number: 7",
    )
    r = post(client, {"query": "{ models { key } }", "variables": [1]})
    assert (r.status_code, only_error(r)["message"]) == (
        400,
        "'variables' must be a JSON object or null, got an array: an array",
    )


def test_invalid_utf8_inside_a_json_string_is_a_400(client):
    r = post(client, b'{"query": "{ model(key: \\"\xff\xfe\\") { key } }"}')
    assert r.status_code == 400
    assert only_error(r)["message"] == "the request body is not valid UTF-8: byte 0xff at offset 26"
    # the same bytes written as a JSON escape: an unpaired surrogate, which no text can hold
    r = post(client, b'{"query": "{ model(key: \\"\\ud800\\") { key } }"}')
    assert r.status_code == 400
    assert only_error(r)["message"] == (
        "the request body has a JSON string with the unpaired UTF-16 surrogate \\ud800, which is not Unicode text"
    )
    # a surrogate pair is fine (an emoji)
    r = post(client, b'{"query": "{ model(key: \\"\\ud83d\\ude00\\") { key } }"}')
    assert r.status_code == 200 and r.json() == {"data": {"model": None}}


def test_100k_deep_json_is_a_400(client):
    r = post(client, b"[" * 100_000 + b"]" * 100_000)
    assert r.status_code == 400
    assert only_error(r)["message"] == "the request body is JSON nested too deeply to decode"
    r = post(client, b'{"query": "{ models { key } }", "variables": {"v": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}")
    assert r.status_code == 400 and "nested too deeply" in only_error(r)["message"]


def test_broken_json_and_wrong_content_type(client):
    r = post(client, b'{"query": ')
    assert r.status_code == 400
    assert only_error(r)["message"] == "the request body is not valid JSON: Expecting value at line 1 column 11"
    r = client.post("/graphql", content=b"{ models { key } }", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    assert only_error(r)["message"] == "POST /graphql needs Content-Type: application/json, got 'text/plain'"


@pytest.mark.parametrize("pid", ["9223372036854775808", "-1", "1" * 400])
def test_prompt_id_beyond_int64_is_a_graphql_error_naming_it(client, pid):
    r = post(client, {"query": f'{{ nearestNeighbors(at: {{model: "a", layer: 0}}, promptId: "{pid}") {{ rank }} }}'})
    assert r.status_code == 200
    err = only_error(r)
    shown = repr(pid) if len(pid) <= 24 else repr(pid[:24]) + "..."
    assert err["message"] == f"promptId must be an integer id between 0 and 9223372036854775807, got {shown}"
    assert err["extensions"] == {"code": "BAD_USER_INPUT"}


@pytest.mark.parametrize(
    "path", ["/plots/%00.png", "/plots/ab%00cd.png", "/plots/..%2f..%2fetc.png", "/graphql%00", "/healthz%00"]
)
def test_a_nul_byte_or_odd_characters_in_a_path_are_404(client, path):
    r = client.get(path)
    assert r.status_code == 404


def test_plot_of_a_non_matrix_answer_is_404(client, small_store):
    r = post(client, {"query": '{ cka(a: {model: "a", layer: 0}, b: {model: "b", layer: 1}) { value } }'})
    assert "errors" not in r.json()
    keys = small_store.tables.open("results").to_arrow()["key"].to_pylist()
    (key,) = [k for k in keys if type(client.service.results.get(k)).__name__ == "CkaResult"]
    r = client.get(f"/plots/{key}.png")
    assert r.status_code == 404
    assert r.json() == {
        "error": f"the cached result {key!r} is a CkaResult, which has no plot "
        "(plots exist for matrix and sweep answers)"
    }
    assert client.get("/plots/0123456789abcdef0123456789abcdef.png").json() == {
        "error": "no cached result '0123456789abcdef0123456789abcdef'"
    }


# --------------------------------------------------------------------- GraphQL over HTTP
TWO_OPS = "query A { models { key } } query B { datasets { name } }"


def test_several_operations_without_operation_name_is_a_request_error(client):
    r = post(client, {"query": TWO_OPS})
    assert r.status_code == 400
    assert only_error(r) == {
        "message": "the document has several operations (A, B): name the one to run in 'operationName'",
        "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
    }
    r = post(client, {"query": TWO_OPS, "operationName": "B"})
    assert r.status_code == 200 and r.json() == {"data": {"datasets": [{"name": "ds"}]}}


def test_an_unknown_operation_name_is_a_json_error(client):
    r = post(client, {"query": TWO_OPS, "operationName": "C"})
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    assert only_error(r)["message"] == "'operationName' 'C' names no operation of the document; it has: A, B"


def test_graphql_response_json_is_honoured(client):
    ok = post(client, {"query": "{ datasets { name } }"}, {"accept": GQL})
    assert (ok.status_code, ok.headers["content-type"]) == (200, GQL)
    assert ok.json() == {"data": {"datasets": [{"name": "ds"}]}}
    syntax = post(client, {"query": "{ datasets { name }"}, {"accept": GQL})
    assert (syntax.status_code, syntax.headers["content-type"]) == (400, GQL)
    assert syntax.json() == {
        "errors": [
            {
                "message": "Syntax Error: Expected Name, found <EOF>.",
                "locations": [{"line": 1, "column": 20}],
                "extensions": {"code": "GRAPHQL_PARSE_FAILED"},
            }
        ]
    }
    invalid = post(client, {"query": "{ datasets { nope } }"}, {"accept": GQL})
    assert invalid.status_code == 400 and "data" not in invalid.json()
    assert only_error(invalid)["extensions"] == {"code": "GRAPHQL_VALIDATION_FAILED"}
    assert only_error(invalid)["message"] == "Cannot query field 'nope' on type 'Dataset'. Did you mean 'name'?"
    variables = post(
        client,
        {"query": 'query($k: Int!) { prompts(dataset: "ds", limit: $k) { id } }', "variables": {"k": "many"}},
        {"accept": GQL},
    )
    assert variables.status_code == 400 and "data" not in variables.json()
    assert only_error(variables)["extensions"] == {"code": "BAD_USER_INPUT"}
    # a field error is still a 200 with data
    field = post(client, {"query": '{ prompts(dataset: "nope") { id } }'}, {"accept": GQL})
    assert field.status_code == 200 and field.json()["data"] is None
    assert only_error(field)["extensions"] == {"code": "NOT_FOUND"}
    # ranked below application/json: application/json
    legacy = post(client, {"query": "{ datasets { name }"}, {"accept": f"{GQL};q=0.5, application/json"})
    assert (legacy.status_code, legacy.headers["content-type"]) == (200, "application/json")


@pytest.mark.parametrize(
    "query, column", [("{ }", 1), ("query { models { } }", 16), ("{ ...F } fragment F on Query { }", 30)]
)
def test_empty_selection_sets_are_syntax_errors(client, query, column):
    # found by fuzzing: graphql-core parses `{ }`, and strawberry's depth rule then crashed (500)
    r = post(client, {"query": query})
    assert r.status_code == 200
    assert r.json() == {
        "errors": [
            {
                "message": "Syntax Error: a selection set must select at least one field.",
                "locations": [{"line": 1, "column": column}],
                "extensions": {"code": "GRAPHQL_PARSE_FAILED"},
            }
        ]
    }


def test_a_document_nested_past_the_parser_recursion_is_a_syntax_error(client):
    # 500 levels: 1,500 tokens, under the token limit, over what the recursive parser can follow
    r = post(client, {"query": "{ " + "models { " * 500 + "key" + " }" * 501}, {"accept": GQL})
    assert r.status_code == 400
    err = only_error(r)
    assert (err["message"], err["extensions"]) == (
        "Syntax Error: Document is nested too deeply. Parsing aborted.",
        {"code": "GRAPHQL_PARSE_FAILED"},
    )
    # 20 levels parse and are refused by the depth rule
    r = post(client, {"query": "{ " + "models { " * 20 + "key" + " }" * 21})
    first = r.json()["errors"][0]  # (then: models has no field models)
    assert (first["message"], first["extensions"]) == (
        "'anonymous' exceeds maximum operation depth of 10",
        {"code": "GRAPHQL_VALIDATION_FAILED"},
    )


def test_syntax_errors_carry_no_data_key(client):
    r = post(client, {"query": "{ models { key } "})
    assert r.status_code == 200
    assert r.json() == {
        "errors": [
            {
                "message": "Syntax Error: Expected Name, found <EOF>.",
                "locations": [{"line": 1, "column": 18}],
                "extensions": {"code": "GRAPHQL_PARSE_FAILED"},
            }
        ]
    }


def test_get_mutations_are_405_and_get_queries_run(client):
    r = client.get(
        "/graphql",
        params={"query": 'mutation { addPrompts(dataset: "x", texts: ["t"]) { name } }'},
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    assert (r.status_code, r.headers["allow"]) == (405, "POST")
    assert only_error(r)["message"] == "a mutation needs POST: GET runs queries only"
    assert "x" not in [d.name for d in client.service.store.prompts.datasets()]
    r = client.get("/graphql", params={"query": "{ datasets { name } }"})
    assert r.status_code == 200 and r.json() == {"data": {"datasets": [{"name": "ds"}]}}
    r = client.get("/graphql", params={"query": "{ datasets { name } }", "variables": "{nope"})
    assert r.status_code == 400
    assert only_error(r)["message"] == (
        "the URL parameter 'variables' is not valid JSON: Expecting property name "
        "enclosed in double quotes at line 1 column 2"
    )
    assert client.put("/graphql", content=b"{}").status_code == 405


# ------------------------------------------------------------------ extensions.code
def test_every_error_carries_its_code(small_store, monkeypatch):
    with _client(small_store, request_timeout_s=0.3) as c:

        def code_of(query, token=None):
            headers = {"authorization": f"Bearer {token}"} if token else {}
            return [e["extensions"]["code"] for e in post(c, {"query": query}, headers).json()["errors"]]

        assert code_of('{ cka(a: {model: "a", layer: 9}, b: {model: "b", layer: 0}) { value } }') == ["BAD_USER_INPUT"]
        assert code_of('{ cka(a: {model: "zz", layer: 0}, b: {model: "b", layer: 0}) { value } }') == ["NOT_FOUND"]
        assert code_of('mutation { addPrompts(dataset: "x", texts: ["t"]) { name } }') == ["UNAUTHENTICATED"]
        assert code_of("{ " + " ".join(f"a{i}: __typename" for i in range(1001)) + " }") == ["LIMIT_EXCEEDED"]
        assert code_of("{ models { key }") == ["GRAPHQL_PARSE_FAILED"]
        assert code_of("{ models { nope } }") == ["GRAPHQL_VALIDATION_FAILED"]
        monkeypatch.setattr(c.service.catalog, "datasets", lambda: time.sleep(1.0) or [])
        assert code_of("{ datasets { name } }") == ["TIMEOUT"]

        def boom():
            raise RuntimeError("secret internals at /srv/x")

        monkeypatch.setattr(c.service.catalog, "datasets", boom)
        body = post(c, {"query": "{ datasets { name } }"}).json()
        assert body == {
            "data": None,
            "errors": [
                {
                    "message": "Unexpected error.",
                    "locations": [{"line": 1, "column": 3}],
                    "path": ["datasets"],
                    "extensions": {"code": "INTERNAL_SERVER_ERROR"},
                }
            ],
        }


def test_limit_exceeded_from_the_service_keeps_its_code(client, monkeypatch):
    from actstore.errors import LimitExceeded

    def refuse(*a, **k):
        raise LimitExceeded("estimated cost 3e12 is over the limit 2e12 (ACTSTORE_MAX_COST)")

    monkeypatch.setattr(client.service, "answer", refuse)
    r = post(client, {"query": '{ cka(a: {model: "a", layer: 0}, b: {model: "b", layer: 1}) { value } }'})
    assert only_error(r) == {
        "message": "estimated cost 3e12 is over the limit 2e12 (ACTSTORE_MAX_COST)",
        "locations": [{"line": 1, "column": 3}],
        "path": ["cka"],
        "extensions": {"code": "LIMIT_EXCEEDED"},
    }


# --------------------------------------------------------------------------- browsers
def test_host_header_must_name_this_server(client):
    q = {"query": "{ datasets { name } }"}
    for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "testserver"):
        assert post(client, q, {"host": host}).status_code == 200, host
    r = post(client, q, {"host": "rebound.attacker.example:8000"})  # DNS rebinding
    assert r.status_code == 400
    assert only_error(r) == {
        "message": "this server does not answer to the Host 'rebound.attacker.example:8000': "
        "it answers to 127.0.0.1, ::1, localhost and the address it listens on; add a "
        "name to ACTSTORE_ALLOWED_HOSTS to allow it",
        "extensions": {"code": "FORBIDDEN_HOST"},
    }
    assert client.get("/healthz", headers={"host": "rebound.attacker.example"}).status_code == 400


def test_allowed_hosts_and_bound_host(small_store):
    service = Service(small_store, Settings(environ={}, allowed_hosts=("gpu-box.lan",)))
    with TestClient(create_app(service, host="10.1.2.3")) as c:
        for host, status in (("gpu-box.lan:8000", 200), ("10.1.2.3:8000", 200), ("other.lan", 400)):
            assert c.get("/healthz", headers={"host": host}).status_code == status, host


def test_cross_origin_requests_are_refused(client):
    q = {"query": "{ datasets { name } }"}
    r = post(client, q, {"origin": "https://evil.example"})
    assert r.status_code == 403
    assert only_error(r) == {
        "message": "a page on 'https://evil.example' may not query this server (cross-origin "
        "request); set ACTSTORE_CORS_ORIGINS to allow that origin",
        "extensions": {"code": "FORBIDDEN_ORIGIN"},
    }
    assert client.get("/graphql", params=q, headers={"origin": "null"}).status_code == 403
    # same origin, or no Origin at all (curl, scripts): allowed, GET queries included
    assert post(client, q, {"origin": "http://testserver"}).status_code == 200
    assert client.get("/graphql", params=q).status_code == 200
    assert (
        client.get(
            "/graphql", params=q, headers={"origin": "http://localhost:8000", "host": "localhost:8000"}
        ).status_code
        == 200
    )
    # a preflight from another origin gets no CORS grant
    r = client.options("/graphql", headers={"origin": "https://evil.example", "access-control-request-method": "POST"})
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers


def test_cross_site_requests_without_origin_are_refused(client):
    # <img src="http://127.0.0.1:8000/graphql?query=..."> on another site: no Origin header
    q = {"query": "{ datasets { name } }"}
    r = client.get("/graphql", params=q, headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors"})
    assert r.status_code == 403
    assert only_error(r)["message"] == (
        "a page on another site may not query this server (a cross-site request "
        "without Origin, e.g. an <img> or <script> source or a redirect)"
    )
    scripted = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate", "accept": "text/html"}
    assert client.get("/graphql", params=q, headers=scripted).status_code == 403
    # following a link to GraphiQL, or typing the address, still works
    page = client.get("/graphql", headers=scripted)
    assert page.status_code == 200 and "graphiql" in page.text.lower()
    typed = {"sec-fetch-site": "none", "sec-fetch-mode": "navigate"}
    assert client.get("/graphql", params=q, headers=typed).status_code == 200


def test_cors_origins_allow_a_notebook_on_another_origin(small_store):
    with _client(small_store, cors_origins=("http://localhost:8888",)) as c:
        pre = c.options(
            "/graphql",
            headers={
                "origin": "http://localhost:8888",
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type, authorization",
            },
        )
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "http://localhost:8888"
        assert set(pre.headers["access-control-allow-methods"].split(", ")) == {"GET", "POST"}
        assert "authorization" in pre.headers["access-control-allow-headers"].lower()
        r = post(c, {"query": "{ datasets { name } }"}, {"origin": "http://localhost:8888"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:8888"
        assert post(c, {"query": "{ datasets { name } }"}, {"origin": "http://localhost:9999"}).status_code == 403


def test_healthz_does_not_reveal_the_store_path(client, small_store):
    r = client.get("/healthz")
    assert r.json() == {"status": "ok", "models": 2}
    assert small_store.uri not in r.text and "db" not in r.text


# ------------------------------------------------------------------------ request limits
def alias_bomb(n: int, tag: str = "a") -> str:
    return "{ " + " ".join(f"{tag}{i}: __typename" for i in range(n)) + " }"


def test_request_body_over_the_limit_is_413_before_reading(small_store):
    with _client(small_store, max_body_bytes=1000) as c:
        r = post(c, {"query": "{ datasets { name } }", "variables": {"pad": "x" * 2000}})
        assert r.status_code == 413
        assert only_error(r) == {
            "message": "the request body has 2,060 bytes; this server accepts at most 1,000 (ACTSTORE_MAX_BODY_BYTES)",
            "extensions": {"code": "LIMIT_EXCEEDED"},
        }

        def chunks():  # no Content-Length: counted while reading
            for _ in range(5):
                yield b" " * 400

        r = c.post("/graphql", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert only_error(r)["message"] == (
            "the request body is over 1,000 bytes, the most this server accepts (ACTSTORE_MAX_BODY_BYTES)"
        )


def test_documents_over_the_size_token_and_field_limits_are_refused(small_store):
    with _client(small_store, max_document_chars=5000, max_tokens=600, max_fields=100) as c:
        r = post(c, {"query": alias_bomb(400)})  # 6,693 characters
        assert r.status_code == 413
        assert only_error(r) == {
            "message": "the GraphQL document has 6,693 characters; this server accepts at most "
            "5,000 (ACTSTORE_MAX_DOCUMENT): pass large values as variables",
            "extensions": {"code": "LIMIT_EXCEEDED"},
        }
        r = post(c, {"query": "{ datasets { name } " + "#\n" * 700 + "}"})
        assert r.status_code == 400 and only_error(r) == {
            "message": "the GraphQL document has more than 600 comments, the most this server parses "
            "(ACTSTORE_MAX_TOKENS): pass large values as variables",
            "extensions": {"code": "LIMIT_EXCEEDED"},
        }
        r = post(c, {"query": "{ " + "a " * 700 + "}"})
        assert r.status_code == 400
        assert only_error(r)["message"] == (
            "the GraphQL document has more than 600 tokens, the most this server "
            "parses (ACTSTORE_MAX_TOKENS): pass large values as variables"
        )
        r = post(c, {"query": alias_bomb(101)})
        assert r.status_code == 400
        assert only_error(r)["message"] == (
            "the GraphQL document selects more than 100 fields (aliases and fragment "
            "spreads counted); this server allows at most 100 (ACTSTORE_MAX_FIELDS)"
        )
        # a fragment bomb: 10 fields, each spread 10 times at three levels = 1,000 fields from 60 tokens
        bomb = (
            "{ ...C } fragment C on Query { ...B ...B ...B ...B ...B ...B ...B ...B ...B ...B } "
            "fragment B on Query { ...A ...A ...A ...A ...A ...A ...A ...A ...A ...A } "
            "fragment A on Query { " + " ".join(f"t{i}: __typename" for i in range(10)) + " }"
        )
        r = post(c, {"query": bomb})
        assert r.status_code == 400 and "selects more than 100 fields" in only_error(r)["message"]
        assert post(c, {"query": alias_bomb(100)}).status_code == 200


@pytest.mark.parametrize("n", [900, 2400])
def test_a_long_chain_of_fragment_spreads_is_refused(client, n):
    # found by probing: 900 fragments each spreading the next (31 KB, under every size limit)
    # made validation recurse past Python's limit: a 500
    q = (
        "{ ...F0 } "
        + " ".join(f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(n))
        + f" fragment F{n} on Query {{ __typename }}"
    )
    r = post(client, {"query": q})
    assert r.status_code == 400
    assert only_error(r) == {
        "message": "the GraphQL document nests selections more than 64 levels deep (fields, "
        "inline fragments and fragment spreads counted)",
        "extensions": {"code": "LIMIT_EXCEEDED"},
    }
    ok = (
        "{ ...F0 } "
        + " ".join(f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(40))
        + " fragment F40 on Query { __typename }"
    )
    assert post(client, {"query": ok}).json() == {"data": {"__typename": "Query"}}


def test_count_fields_expands_fragments_and_survives_cycles():
    from graphql import parse

    assert count_fields(parse("{ a b { c d } ...F } fragment F on Q { e f }"), 100) == 6
    assert count_fields(parse("{ ...F } fragment F on Q { a ...F }"), 100) == 1
    assert count_fields(parse(alias_bomb(50)), 10) == 11  # stops once past the limit


def test_eight_distinct_alias_bombs_are_refused_with_the_limit_named(client):
    # the attack: 100k `__typename` aliases, 1.9 MB each, all different
    for i in range(8):
        r = post(client, {"query": alias_bomb(100_000, tag=f"x{i}_")})
        assert r.status_code == 413, r.text
        assert "ACTSTORE_MAX_DOCUMENT" in only_error(r)["message"]


def test_document_cache_is_bounded_by_bytes():
    cache = DocumentCache(Settings(environ={}, parse_cache_mb=1))  # 1 MiB: 6,553 characters of documents
    docs = [alias_bomb(30, tag=f"q{i}_") for i in range(40)]  # ~590 characters each
    for d in docs:
        cache.parse(d)
    kept = [d for d in docs if cache.cached(d) is not None]
    assert cache.bytes == sum(len(d) for d in kept) * BYTES_PER_CHAR <= 1024 * 1024
    assert len(kept) == 11  # 11 x ~590 characters x 160 bytes: under 1 MiB; a twelfth would not fit
    assert cache.cached(docs[-1]) is not None and cache.cached(docs[0]) is None  # oldest out first
    big = alias_bomb(60, tag="big")  # over an eighth of the budget (819 characters): parsed, not kept
    assert cache.parse(big).document is not None and cache.cached(big) is None


def test_parse_and_validation_run_off_the_event_loop(client, monkeypatch):
    threads = []
    real_parse, real_validate = DocumentCache.parse, DocumentCache.validate
    monkeypatch.setattr(
        DocumentCache, "parse", lambda self, q: threads.append(threading.get_ident()) or real_parse(self, q)
    )
    monkeypatch.setattr(
        DocumentCache, "validate", lambda self, *a: threads.append(threading.get_ident()) or real_validate(self, *a)
    )
    loop_thread = []

    async def spy(request):
        loop_thread.append(threading.get_ident())
        from starlette.responses import PlainTextResponse

        return PlainTextResponse("")

    client.app.router.add_route("/__loop_thread", spy)
    client.get("/__loop_thread")
    assert post(client, {"query": "{ models { key nLayers } }"}).status_code == 200
    # parsed by the endpoint (to select the operation) and by the schema (a cache hit), validated once
    assert len(threads) == 3 and loop_thread[0] not in threads


def test_http_settings_come_from_the_environment():
    s = Settings(
        environ={
            "ACTSTORE_CORS_ORIGINS": "http://localhost:8888, https://nb.example,",
            "ACTSTORE_ALLOWED_HOSTS": "gpu-box.lan",
            "ACTSTORE_MAX_BODY_BYTES": "1000",
            "ACTSTORE_MAX_DOCUMENT": "500",
            "ACTSTORE_MAX_TOKENS": "50",
            "ACTSTORE_MAX_FIELDS": "5",
            "ACTSTORE_PARSE_CACHE_MB": "2",
        }
    )
    assert (s.cors_origins, s.allowed_hosts) == (("http://localhost:8888", "https://nb.example"), ("gpu-box.lan",))
    assert (s.max_body_bytes, s.max_document_chars, s.max_tokens, s.max_fields, s.parse_cache_mb) == (
        1000,
        500,
        50,
        5,
        2,
    )
    d = Settings(environ={})
    assert (
        d.cors_origins,
        d.allowed_hosts,
        d.max_body_bytes,
        d.max_document_chars,
        d.max_tokens,
        d.max_fields,
        d.parse_cache_mb,
    ) == ((), (), 4 * 1024 * 1024, 262_144, 20_000, 1000, 64)
    from actstore.errors import InvalidInput

    with pytest.raises(InvalidInput, match="ACTSTORE_MAX_BODY_BYTES='4M' is not a valid int"):
        Settings(environ={"ACTSTORE_MAX_BODY_BYTES": "4M"})


def test_in_process_execute_selects_operations_and_codes_errors_like_the_server(small_store):
    import asyncio

    from actstore.api import execute

    service = Service(small_store, Settings(environ={}))
    run = lambda q, name=None: asyncio.run(execute(service, q, operation_name=name))  # noqa: E731
    assert run(TWO_OPS) == {
        "errors": [
            {
                "message": "the document has several operations (A, B): name the one to run in 'operationName'",
                "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"},
            }
        ]
    }
    assert run(TWO_OPS, "B") == {"data": {"datasets": [{"name": "ds"}]}}
    assert run("{ models { key }")["errors"][0]["extensions"] == {"code": "GRAPHQL_PARSE_FAILED"}
    assert run('{ prompts(dataset: "nope") { id } }')["errors"][0]["extensions"] == {"code": "NOT_FOUND"}
