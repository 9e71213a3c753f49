"""Bounded work before a GraphQL operation runs: document size, lexical tokens and fields are
checked before (and while) the document is parsed, parsing and validation run on a worker
thread (never on the event loop), and parsed / validated documents are cached by an estimate
of their bytes, not by count.

- :func:`check_document_size` refuses a document longer than ``max_document_chars``
  (the HTTP layer calls it before anything else, the schema extension again for in-process
  execution).
- :class:`DocumentCache` parses with graphql-core's ``max_lexical_tokens`` /
  ``max_source_length`` (the parser stops at the limit instead of building the AST),
  counts the fields of the parsed document (aliases counted, fragment spreads expanded) and
  keeps parsed and validated documents within a byte budget.
- :class:`BoundedParsing` is the schema extension that uses them: ``on_parse`` and
  ``on_validate`` run in a worker thread.

Errors carry their ``extensions.code``: ``LIMIT_EXCEEDED``, ``GRAPHQL_PARSE_FAILED`` or
``GRAPHQL_VALIDATION_FAILED``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
)
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

from actstore.config import Settings
from actstore.errors import LimitExceeded

__all__ = [
    "MAX_NESTING",
    "BoundedParsing",
    "DocumentCache",
    "Parsed",
    "check_document_size",
    "count_fields",
    "empty_selection_set",
    "operation_problem",
]

PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"

# Bytes a parsed document costs per character of its text, locations and tokens kept
# (measured with tracemalloc: 64 for `aN: __typename` alias documents, 108 for 200 aliased
# nearestNeighbors fields, 148 for one short cka query; rounded up).
BYTES_PER_CHAR = 160
# Deepest nesting of selections a document may have, fields, inline fragments and fragment
# spreads counted (field depth alone is ACTSTORE_MAX_DEPTH, checked by validation). Validation
# rules and execution recurse through fragment spreads: a chain of 900 spreading fragments
# (31 KB) made them hit Python's recursion limit (a 500).
MAX_NESTING = 64


def check_document_size(query: str, settings: Settings) -> None:
    """LimitExceeded when ``query`` is longer than ``settings.max_document_chars``."""
    if len(query) > settings.max_document_chars:
        raise LimitExceeded(
            f"the GraphQL document has {len(query):,} characters; this server accepts at most "
            f"{settings.max_document_chars:,} (ACTSTORE_MAX_DOCUMENT): pass large values as variables"
        )


def limit_error(exc: LimitExceeded) -> GraphQLError:
    return GraphQLError(str(exc), extensions={"code": exc.code})


def count_fields(document: DocumentNode, stop_after: int) -> int:
    """Fields the document's operations select, aliases counted and fragment spreads expanded
    (each spread counts its fragment's fields again). Stops counting past ``stop_after``, so a
    fragment bomb costs at most that much work; a fragment cycle counts once (validation
    reports the cycle). LimitExceeded for selections nested more than :data:`MAX_NESTING`
    levels (fields, inline fragments and fragment spreads counted): the recursive steps after
    this one (validation rules, execution) must never meet deeper nesting."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    memo: dict[str, tuple[int, int]] = {}  # fragment -> (fields, nesting height)
    visiting: set[str] = set()

    def too_deep() -> LimitExceeded:
        return LimitExceeded(
            f"the GraphQL document nests selections more than {MAX_NESTING} levels deep "
            "(fields, inline fragments and fragment spreads counted)"
        )

    def selection_set(node: SelectionSetNode | None, level: int) -> tuple[int, int]:
        if node is None:
            return 0, 0
        if level > MAX_NESTING:
            raise too_deep()
        total = height = 0
        for sel in node.selections:
            if isinstance(sel, FieldNode):
                fields, h = selection_set(sel.selection_set, level + 1)
                total += 1 + fields
            elif isinstance(sel, InlineFragmentNode):
                fields, h = selection_set(sel.selection_set, level + 1)
                total += fields
            elif isinstance(sel, FragmentSpreadNode):
                fields, h = fragment(sel.name.value, level + 1)
                total += fields
            else:  # pragma: no cover - graphql-core has no other selection
                continue
            height = max(height, 1 + h)
            if total > stop_after:
                break
        return total, height

    def fragment(name: str, level: int) -> tuple[int, int]:
        if name not in memo:
            definition = fragments.get(name)
            if definition is None or name in visiting:
                return 0, 0
            visiting.add(name)
            memo[name] = selection_set(definition.selection_set, level)
            visiting.discard(name)
        if level + memo[name][1] > MAX_NESTING:
            raise too_deep()
        return memo[name]

    total = 0
    for d in document.definitions:
        if isinstance(d, OperationDefinitionNode):
            total += selection_set(d.selection_set, 1)[0]
            if total > stop_after:
                break
    return total


def empty_selection_set(document: DocumentNode) -> SelectionSetNode | None:
    """The first ``{ }`` of the document, or None. graphql-core parses empty selection sets
    (a proposal the specification has not adopted); validation rules crash on them."""
    stack: list[Any] = [
        d.selection_set
        for d in document.definitions
        if isinstance(d, (OperationDefinitionNode, FragmentDefinitionNode))
    ]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        if not node.selections:
            return node
        stack.extend(getattr(sel, "selection_set", None) for sel in node.selections)
    return None


def operation_problem(document: DocumentNode, operation_name: str | None) -> str | None:
    """Why ``operation_name`` does not pick exactly one operation of ``document`` (the
    GraphQL-over-HTTP rules: several operations need a name; the name must exist), or None."""
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    names = ", ".join(d.name.value if d.name else "(anonymous)" for d in ops) or "none"
    if operation_name is None and len(ops) > 1:
        return f"the document has several operations ({names}): name the one to run in 'operationName'"
    if operation_name is not None and not any(d.name and d.name.value == operation_name for d in ops):
        return f"'operationName' {operation_name!r} names no operation of the document; it has: {names}"
    return None


@dataclass
class Parsed:
    """One cached document: its AST and, per set of validation rules, its validation errors."""

    document: DocumentNode
    size: int
    validated: dict[tuple[type, ...], list[GraphQLError]] = field(default_factory=dict)


class DocumentCache:
    """Parsed and validated documents of one schema, least recently used first out, within
    ``max_bytes`` (estimated as :data:`BYTES_PER_CHAR` per character). Documents over an
    eighth of the budget are parsed but not kept. Thread-safe."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.max_bytes = settings.parse_cache_mb * 1024 * 1024
        self._items: OrderedDict[str, Parsed] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        """Estimated bytes held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def cached(self, query: str) -> Parsed | None:
        with self._lock:
            return self._items.get(query)

    def hit(self, query: str) -> Parsed | None:
        """The cached document of ``query`` (now the most recently used), or None."""
        with self._lock:
            hit = self._items.get(query)
            if hit is not None:
                self._items.move_to_end(query)
            return hit

    def parse(self, query: str) -> Parsed:
        """The parsed document of ``query``; GraphQLError (``extensions.code``
        LIMIT_EXCEEDED or GRAPHQL_PARSE_FAILED) if it is over a limit or not GraphQL."""
        with self._lock:
            hit = self._items.get(query)
            if hit is not None:
                self._items.move_to_end(query)
                return hit
        s = self.settings
        try:
            check_document_size(query, s)
        except LimitExceeded as exc:
            raise limit_error(exc) from None
        try:
            document = parse(
                query,
                max_lexical_tokens=s.max_tokens,
                max_source_length=s.max_document_chars,
                max_comments=s.max_tokens,
            )
        except GraphQLError as exc:
            if "Document contains more than" in exc.message:  # over max_lexical_tokens / max_comments
                what = "comments" if exc.message.endswith("comments. Parsing aborted.") else "tokens"
                raise limit_error(
                    LimitExceeded(
                        f"the GraphQL document has more than {s.max_tokens:,} {what}, the most this server "
                        "parses (ACTSTORE_MAX_TOKENS): pass large values as variables"
                    )
                ) from None
            raise GraphQLError(
                exc.message, source=exc.source, positions=exc.positions, extensions={"code": PARSE_FAILED}
            ) from None
        empty = empty_selection_set(document)
        if empty is not None:
            raise GraphQLError(
                "Syntax Error: a selection set must select at least one field.",
                nodes=[empty],
                extensions={"code": PARSE_FAILED},
            )
        try:
            fields = count_fields(document, s.max_fields)
        except LimitExceeded as exc:
            raise limit_error(exc) from None
        if fields > s.max_fields:
            raise limit_error(
                LimitExceeded(
                    f"the GraphQL document selects more than {s.max_fields:,} fields (aliases and fragment "
                    f"spreads counted); this server allows at most {s.max_fields:,} (ACTSTORE_MAX_FIELDS)"
                )
            )
        parsed = Parsed(document, len(query) * BYTES_PER_CHAR)
        if parsed.size <= self.max_bytes // 8:
            with self._lock:
                if query not in self._items:
                    self._items[query] = parsed
                    self._bytes += parsed.size
                while self._bytes > self.max_bytes and self._items:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= old.size
        return parsed

    def validate(self, schema: GraphQLSchema, parsed: Parsed, rules: Sequence[type]) -> list[GraphQLError]:
        """Validation errors of a parsed document under ``rules`` (cached with the document),
        each with ``extensions.code`` GRAPHQL_VALIDATION_FAILED."""
        key = tuple(rules)
        errors = parsed.validated.get(key)
        if errors is None:
            errors = [
                GraphQLError(
                    e.message,
                    nodes=e.nodes,
                    source=e.source,
                    positions=e.positions,
                    extensions={**(e.extensions or {}), "code": VALIDATION_FAILED},
                )
                for e in validate_document(schema, parsed.document, key)
            ]
            parsed.validated[key] = errors
        return errors


class BoundedParsing(SchemaExtension):
    """Parse and validate on a worker thread through a :class:`DocumentCache`. Pass it as a
    factory: ``extensions=[lambda: BoundedParsing(cache)]``."""

    def __init__(self, cache: DocumentCache) -> None:
        self.cache = cache
        self._parsed: Parsed | None = None

    # A document already in the cache (a client repeating its operation with new variables)
    # is taken on the event loop: a worker-thread round trip costs more than the look-up
    # (measured: three of the four thread hops of a nearestNeighbors request were these).
    async def on_parse(self) -> AsyncIterator[None]:
        ec = self.execution_context
        if ec.graphql_document is None and ec.query:
            self._parsed = self.cache.hit(ec.query) or await asyncio.to_thread(self.cache.parse, ec.query)
            ec.graphql_document = self._parsed.document
        yield

    async def on_validate(self) -> AsyncIterator[None]:
        ec = self.execution_context
        if self._parsed is not None and ec.pre_execution_errors is None:
            rules: Any = ec.validation_rules
            schema: Any = ec.schema  # actstore.api.app's schema class: exposes graphql_schema
            done = self._parsed.validated.get(tuple(rules))
            ec.pre_execution_errors = (
                done
                if done is not None
                else await asyncio.to_thread(self.cache.validate, schema.graphql_schema, self._parsed, rules)
            )
        yield
