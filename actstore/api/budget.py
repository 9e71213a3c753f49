"""A budget per GraphQL request: the whole operation is estimated before any field runs.

After validation, :class:`RequestBudget` walks the operation to be executed (aliases and
fragment spreads expanded, ``@skip`` / ``@include`` applied, variables coerced, argument
defaults of the schema filled in) and asks an estimator for the cost of each root field. The
request is refused with ``LIMIT_EXCEEDED`` (its estimate, the limit and the most expensive
fields named) before anything runs when

- the sum of its fields' estimates is over ``ACTSTORE_MAX_COST``, or
- it needs more than ``ACTSTORE_MAX_SLOTS_PER_REQUEST`` heavy slots: a field estimated at
  ``ACTSTORE_CHEAP_COST`` or more needs one slot; the cheap fields together need one per
  ``ACTSTORE_CHEAP_COST`` of their sum (200 cheap ``cka`` aliases are 200 small
  computations, as much work as several heavy ones).

Costs are floating-point-operation equivalents, as in :mod:`actstore.service.work`.

Estimators
==========
:data:`ESTIMATORS` maps a root field's GraphQL name to ``fn(service, args) -> Cost``, where
``args`` are the field's coerced arguments under their GraphQL names. One function per field,
registered with :func:`estimator`; a field without one costs :data:`FIELD_FLOPS`.

- Every field has a floor (:data:`FLOORS`) computed from its arguments alone; the floors are
  checked first and the estimators that read the store stop as soon as the request is over,
  so a refused request costs little more to refuse than to parse (the message then says
  "at least").
- Lists (``prompts``): ``min(limit, ACTSTORE_MAX_LIST)`` rows at :data:`ROW_FLOPS` each (a
  larger limit is refused by the field itself). ``datasets``, ``models``, ``saes``, ``model``
  and ``job`` read small catalog tables (one row per dataset, model or SAE) and are not paged:
  :data:`CATALOG_FLOPS` each, ``models`` (with every model's summary) :data:`MODELS_FLOPS`;
  introspection's ``__schema`` :data:`SCHEMA_FLOPS`. These need no estimator: their floor is
  their estimate.
- ``nearestNeighbors``: one search, 2 n d over the n prompts searched, plus k rows; with
  ``text`` the model's forward pass, 24 L d^2 per token (one token per character counted), and
  at least ``ACTSTORE_CHEAP_COST``: loading a model's weights always takes a heavy slot.
- Heavy analyses (``cka``, ``ckaMatrix``, ``mutualKnn``, ``affinityMatrix``, bridges, probe
  transfer, SAE correlation and matrices): the service call itself is run in estimate mode
  (:meth:`actstore.service.results.ResultCache.estimate`): it resolves names and layers, looks
  its answer up in the results table and stops at the computation it would start, giving the
  estimate of that computation's own ``cost()`` (the formulas of
  :mod:`actstore.service.work`), plus :data:`ANSWER_FLOPS` for the field's fixed work. A
  cached answer costs ANSWER_FLOPS (so 11 cached answers fit in one request's cheap work). A
  call that computes several answers (``saeMatrix``: its cells) states the cost of the whole
  before the first (:meth:`~actstore.service.results.ResultCache.check`) and is counted at that.
- A field whose arguments the service refuses (unknown model, k out of range) costs its
  floor: it answers with its own error and computes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLIncludeDirective,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSkipDirective,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
)
from graphql.execution.values import (
    get_argument_values,
    get_directive_values,
    get_variable_values,
)
from strawberry.extensions import SchemaExtension

from actstore.config import Settings
from actstore.errors import ActstoreError, LimitExceeded
from actstore.layers import LayerRef as LayerRefValue
from actstore.service import Cost, Service
from actstore.service.requests import Request, request_types

__all__ = [
    "ANSWER_FLOPS",
    "CATALOG_FLOPS",
    "ESTIMATORS",
    "FIELD_FLOPS",
    "FLOORS",
    "MODELS_FLOPS",
    "ROW_FLOPS",
    "SCHEMA_FLOPS",
    "Estimate",
    "RequestBudget",
    "check_budget",
    "estimate_operation",
    "estimator",
    "py_args",
]

# One row of a list answer (a prompt: id, text, label, dataset, split): building, serialising and
# sending it costs ~100 us of the server's time, ~2e6 operations at 2.5e10/s (measured: 2,000
# prompts with four fields each took 0.22 s in-process on 2 busy cores).
ROW_FLOPS = 2e6
# One look-up in a small catalog table (datasets, SAEs, a job, one model).
CATALOG_FLOPS = 1e7
# The models list with its summaries (datasets and prompt count of every stored model; measured:
# 100 aliases of it on a 2-model store took 0.75 s on 2 busy cores, ~8 ms each).
MODELS_FLOPS = 2e8
# The fixed work of one analysis field, whatever its size or whether its answer is cached:
# resolving names and layers, the results-table look-up and decoding (measured: 100 aliases
# of one cached mutualKnn answer took 1.0 s on 2 busy cores, ~10 ms each).
ANSWER_FLOPS = 2.5e8
# Introspection's __schema with a full selection (measured: 17 ms per alias in-process).
SCHEMA_FLOPS = 5e8
# A root field without an estimator of its own (__typename, introspection, mutations).
FIELD_FLOPS = 1e6
# Parameters of an L-layer transformer of width d counted as 12 L d^2 (attention 4 d^2 and an
# MLP of width 4 d); a forward pass is 2 flops per parameter per token.
FORWARD_FLOPS_PER_TOKEN = 24.0

log = logging.getLogger("actstore.api")

Estimator = Callable[[Service, dict[str, Any]], Cost]
Floor = Callable[[Settings, dict[str, Any]], float]

ESTIMATORS: dict[str, Estimator] = {}
#: per field, the least its estimate can be, from its arguments alone (no store read): every
#: floor is summed and checked before any estimator reads the store
FLOORS: dict[str, Floor] = {}


def estimator(*names: str, floor: Floor | None = None) -> Callable[[Estimator], Estimator]:
    """Register ``fn(service, args) -> Cost`` as the estimator of the root fields ``names``;
    ``floor(settings, args)``: the least it can estimate, from the arguments alone (default:
    FIELD_FLOPS)."""

    def register(fn: Estimator) -> Estimator:
        for name in names:
            ESTIMATORS[name] = fn
            if floor is not None:
                FLOORS[name] = floor
        return fn

    return register


def _answer_floor(settings: Settings, args: dict[str, Any]) -> float:
    return ANSWER_FLOPS


@dataclass(frozen=True)
class Estimate:
    """The estimate of one root field of a request: its response key (the alias), its field
    name and its cost."""

    key: str
    field: str
    flops: float
    #: False for the floor of a field whose estimator was not run (the request was already over)
    exact: bool = True


# ---------------------------------------------------------------- arguments
def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _py(value: Any) -> Any:
    """A coerced GraphQL argument as the resolvers pass it to the service (graphql-core
    coerces input objects to dicts: a LayerRef to ``{"model", "layer", "depth"}``)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict) and "model" in value:
        return LayerRefValue(value["model"], value.get("layer"), value.get("depth"))
    if isinstance(value, dict) and set(value) == {"id"}:  # SaeRef
        return str(value["id"])
    if isinstance(value, list):
        return [_py(v) for v in value]
    return value


def py_args(args: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """GraphQL arguments under the service's (snake_case) names, enums as their values and
    layer references as :class:`actstore.layers.LayerRef`."""
    return {_snake(k): _py(v) for k, v in args.items() if k not in drop}


def _request_cost(service: Service, request_type: type[Request], args: dict[str, Any]) -> Cost:
    """ANSWER_FLOPS plus what answering the request would compute (none when its answer is
    cached, or when its arguments are refused: the field then fails on its own)."""
    try:
        cost: Cost | None = service.estimate(request_type(**py_args(args)))
    except ActstoreError:
        cost = None
    return Cost(ANSWER_FLOPS + (cost.flops if cost is not None else 0.0), cost.what if cost else "one answer")


# --------------------------------------------------------------- estimators
def _prompt_rows(settings: Settings, args: dict[str, Any]) -> float:
    return max(0, min(int(args.get("limit", 100)), settings.max_list)) * ROW_FLOPS


FLOORS["prompts"] = _prompt_rows  # no estimator: the floor, from the arguments, is the estimate
for _name in ("model", "datasets", "saes", "job"):
    FLOORS[_name] = lambda settings, args: CATALOG_FLOPS
FLOORS["models"] = lambda settings, args: MODELS_FLOPS
FLOORS["__schema"] = lambda settings, args: SCHEMA_FLOPS


def _nearest_floor(settings: Settings, args: dict[str, Any]) -> float:
    rows = int(args.get("k", 10)) * ROW_FLOPS
    return max(rows, settings.cheap_cost) if args.get("text") is not None else rows


@estimator("nearestNeighbors", floor=_nearest_floor)
def _nearest(service: Service, args: dict[str, Any]) -> Cost:
    info, _ = service.reads.resolve(_py(args["at"]))
    counts = {d.name: d.prompt_count for d in service.store.prompts.datasets()}
    dataset = args.get("dataset")
    n = counts.get(dataset, 0) if dataset is not None else sum(counts.values())
    k = int(args.get("k", 10))
    flops = 2.0 * n * info.d_model + k * ROW_FLOPS
    text = args.get("text")
    if text is not None:
        forward = FORWARD_FLOPS_PER_TOKEN * info.n_layers * info.d_model**2 * len(text)
        return Cost(
            max(flops + forward, service.settings.cheap_cost),
            f"nearestNeighbors of a text through model {info.key!r} (a forward pass)",
        )
    return Cost(flops, f"nearestNeighbors over n = {n} prompts")


# every analysis answered through a request (actstore.service.requests): its own cost estimate
for _request in request_types():
    if _request.op not in ESTIMATORS:
        estimator(_request.op, floor=_answer_floor)(
            lambda service, args, request_type=_request: _request_cost(service, request_type, args)
        )


# --------------------------------------------------------------- the walk
def _root_fields(
    document: DocumentNode, operation: OperationDefinitionNode, variables: Any
) -> Iterator[tuple[str, FieldNode]]:
    """(response key, first field node) of every root field the operation executes: fragment
    spreads and inline fragments expanded, ``@skip`` / ``@include`` applied, fields of the same
    response key merged (GraphQL runs them once)."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    seen: set[str] = set()
    visited: set[str] = set()

    def included(node: Any) -> bool:
        skip = get_directive_values(GraphQLSkipDirective, node, variables)
        if skip is not None and skip.get("if") is True:
            return False
        include = get_directive_values(GraphQLIncludeDirective, node, variables)
        return not (include is not None and include.get("if") is False)

    def walk(selection_set: SelectionSetNode) -> Iterator[tuple[str, FieldNode]]:
        for sel in selection_set.selections:
            if not included(sel):
                continue
            if isinstance(sel, FieldNode):
                key = sel.alias.value if sel.alias else sel.name.value
                if key not in seen:
                    seen.add(key)
                    yield key, sel
            elif isinstance(sel, InlineFragmentNode):
                yield from walk(sel.selection_set)
            elif isinstance(sel, FragmentSpreadNode):
                name = sel.name.value
                if name in visited or name not in fragments:  # a fragment is collected once per selection
                    continue
                visited.add(name)
                yield from walk(fragments[name].selection_set)

    yield from walk(operation.selection_set)


def _operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        return ops[0] if len(ops) == 1 else None
    return next((d for d in ops if d.name is not None and d.name.value == name), None)


def _fields(
    schema: GraphQLSchema, document: DocumentNode, variables: dict[str, Any] | None, operation_name: str | None
) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(response key, field name, coerced arguments or None) of every root field the operation
    executes; empty when the operation or its variables are invalid (execution reports those)."""
    operation = _operation(document, operation_name)
    if operation is None:
        return []
    values = get_variable_values(schema, operation.variable_definitions or (), variables or {}, max_errors=1)
    if isinstance(values, list):  # the variables' errors
        return []
    root: GraphQLObjectType | None = {
        OperationType.QUERY: schema.query_type,
        OperationType.MUTATION: schema.mutation_type,
    }.get(operation.operation)
    if root is None:
        return []
    out: list[tuple[str, str, dict[str, Any] | None]] = []
    for key, node in _root_fields(document, operation, values):
        field = root.fields.get(node.name.value)
        try:  # meta fields (__schema, __type, __typename) are not in the root type: no arguments counted
            args = get_argument_values(field, node, values) if field is not None else {}
        except GraphQLError:
            args = None
        out.append((key, node.name.value, args))
    return out


def _over(estimates: list[Estimate], settings: Settings) -> bool:
    total, heavy, cheap = _sums(estimates, settings)
    return total > settings.max_cost or heavy + int(cheap // settings.cheap_cost) > settings.max_slots_per_request


def _sums(estimates: list[Estimate], settings: Settings) -> tuple[float, int, float]:
    total = sum(e.flops for e in estimates)
    heavy = sum(1 for e in estimates if e.flops >= settings.cheap_cost)
    cheap = sum(e.flops for e in estimates if e.flops < settings.cheap_cost)
    return total, heavy, cheap


def estimate_operation(
    schema: GraphQLSchema,
    service: Service,
    document: DocumentNode,
    variables: dict[str, Any] | None,
    operation_name: str | None,
    stop_when_over: bool = False,
) -> list[Estimate]:
    """The estimate of every root field the operation would execute (see the module's notes);
    empty when the operation or its variables are invalid (execution reports those, running
    nothing).

    With ``stop_when_over``, a request already over the budget of ``service.settings`` by the
    floors of its fields (:data:`FLOORS`, no store read) is answered with those floors, and the
    estimators stop reading the store as soon as the sum is over: a refused request costs at
    most the estimates that decided it."""
    fields = _fields(schema, document, variables, operation_name)
    settings = service.settings

    def floor(key: str, name: str, args: dict[str, Any] | None) -> Estimate:
        fn = FLOORS.get(name)
        if fn is None or args is None:
            return Estimate(key, name, FIELD_FLOPS, exact=name not in ESTIMATORS)
        try:
            flops = float(fn(settings, args))
        except (TypeError, ValueError):
            flops = 0.0
        return Estimate(key, name, flops, exact=name not in ESTIMATORS)

    floors = [floor(key, name, args) for key, name, args in fields]
    if stop_when_over and _over(floors, settings):
        return floors
    out: list[Estimate] = []
    for i, (key, name, args) in enumerate(fields):
        fn = ESTIMATORS.get(name)
        if fn is None or args is None:
            out.append(floors[i])
            continue
        try:
            cost = fn(service, args)
        except ActstoreError:  # refused by the field itself: it answers with that error
            cost = Cost(floors[i].flops, name)
        except Exception:  # an estimator's bug must not fail the request: its floor is counted
            log.exception("estimating the cost of %s failed", name)
            cost = Cost(floors[i].flops, name)
        out.append(Estimate(key, name, float(cost.flops)))
        if stop_when_over and _over(out + floors[i + 1 :], settings):
            return out + floors[i + 1 :]
    return out


def check_budget(estimates: list[Estimate], settings: Settings) -> None:
    """LimitExceeded when the request's fields are over the cost budget or need more heavy
    slots than one request may have (see the module's notes); the message names the estimate,
    the limit and the most expensive fields."""
    total, heavy, cheap = _sums(estimates, settings)
    slots = heavy + int(cheap // settings.cheap_cost)
    if total <= settings.max_cost and slots <= settings.max_slots_per_request:
        return
    top = sorted(estimates, key=lambda e: -e.flops)[:3]
    names = ", ".join(f"{e.key} ({e.field}, {e.flops:.3g})" for e in top)
    if total > settings.max_cost:
        why = f"over this server's limit of {settings.max_cost:.3g} per request (ACTSTORE_MAX_COST)"
    else:
        why = (
            f"and needs {slots} heavy-work slots ({heavy} fields estimated at {settings.cheap_cost:.3g} or more, "
            f"cheap fields summing to {cheap:.3g}), over the {settings.max_slots_per_request} one request may "
            f"have (ACTSTORE_MAX_SLOTS_PER_REQUEST)"
        )
    least = "" if all(e.exact for e in estimates) else "at least "
    atlas = (
        " An atlas too large to answer at once runs as a job: the runAtlas mutation (the same arguments); "
        "the atlas query then answers from the cache."
        if any(e.field == "atlas" for e in top)
        else ""
    )
    raise LimitExceeded(
        f"the request was refused before running: its {len(estimates)} fields have an estimated cost of "
        f"{least}{total:.3g} floating-point operations {why}; the most expensive: {names}. Ask for fewer fields or "
        f"aliases, smaller limits, or send the fields in separate requests.{atlas}"
    )


class RequestBudget(SchemaExtension):
    """Refuse an operation over the request budget before any field runs (see the module's
    notes). The estimate runs on a worker thread. The request's context must carry the
    service (``context.service``)."""

    async def on_execute(self) -> AsyncIterator[None]:
        ec = self.execution_context
        service = getattr(ec.context, "service", None)
        if ec.result is None and ec.graphql_document is not None and isinstance(service, Service):
            schema: Any = ec.schema
            estimates = await asyncio.to_thread(
                estimate_operation,
                schema.graphql_schema,
                service,
                ec.graphql_document,
                ec.variables,
                ec.operation_name,
                True,
            )
            try:
                check_budget(estimates, service.settings)
            except LimitExceeded as exc:
                total = sum(e.flops for e in estimates)
                ec.result = ExecutionResult(
                    data=None, errors=[GraphQLError(str(exc), extensions={"code": exc.code, "estimate": total})]
                )
        yield
