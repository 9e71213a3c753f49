"""GraphQL fields derived from the service's request types, so each argument is declared once.

``request_field(CkaRequest, Cka, build=...)`` makes a strawberry field whose arguments are the
request's fields: snake_case in Python, camelCase in GraphQL (as strawberry names them), with
the request's defaults and descriptions. Types map as follows: ``LayerRef`` -> the ``LayerRef``
input, the request enums -> the GraphQL enums of the same names, ``tuple[X, ...]`` -> ``[X!]``,
a field declared with ``graphql="ID"`` -> ``ID``, ``graphql="SaeRef"`` -> the ``SaeRef``
input and ``graphql="JSON"`` -> the ``JSON`` scalar (measure options). The resolver builds the request (its checks run there), answers it on a worker thread
(:func:`.context.call`) and builds the output type.

Errors raised below the API name arguments by their Python names; the resolver gives them the
GraphQL names of the field's arguments (``by_dataset`` -> ``byDataset``,
:meth:`actstore.errors.ActstoreError.reworded`).
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Optional

import strawberry
from strawberry.scalars import JSON

from actstore.errors import ActstoreError
from actstore.layers import LayerRef as LayerRefValue
from actstore.service.requests import Request

from .context import Info, call
from .types import LayerRef, SaeRef, parse_prompt_id

__all__ = ["camel", "request_field"]


def camel(name: str) -> str:
    """GraphQL name of a Python argument name: ``by_dataset`` -> ``byDataset``."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _strip_optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return inner[0], True
    return hint, False


_OVERRIDES: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "ID": (strawberry.ID, lambda v: parse_prompt_id(v)),
    "SaeRef": (SaeRef, lambda v: str(v.id)),
    "IDs": (list[strawberry.ID], lambda v: [str(x) for x in v]),
    "JSON": (JSON, lambda v: v),
}


def _argument(f: dataclasses.Field, hint: Any) -> tuple[Any, Callable[[Any], Any]]:
    """(GraphQL annotation, converter of the GraphQL value to the request's) of one field."""
    inner, optional = _strip_optional(hint)
    override = f.metadata.get("graphql")
    convert: Callable[[Any], Any] = lambda v: v  # noqa: E731
    if override is not None:
        gql, convert = _OVERRIDES[override]
    elif inner is LayerRefValue:
        gql, convert = LayerRef, lambda v: v.value()
    elif typing.get_origin(inner) is tuple:
        gql = list[typing.get_args(inner)[0]]
    elif isinstance(inner, type) and issubclass(inner, enum.Enum):
        gql = inner
    else:
        gql = inner
    annotation = Optional[gql] if optional else gql
    doc = f.metadata.get("doc")
    if doc:
        annotation = Annotated[annotation, strawberry.argument(description=doc[:1].upper() + doc[1:] + ".")]
    return annotation, (lambda v: None if v is None else convert(v))


def request_field(
    request_type: type[Request],
    returns: Any,
    *,
    build: Callable[[Any], Any],
    description: str | None = None,
    heavy: bool | Callable[[Request], bool] = True,
    run: Callable[[Any, Request], Any] | None = None,
    guard: Callable[[Info], None] | None = None,
    mutation: bool = False,
) -> Any:
    """A strawberry field answering ``request_type``: arguments from its fields, output
    ``returns`` made by ``build(answer)``; ``heavy`` (or a function of the request) picks the
    worker pool (heavy numerics vs light reads). ``run(service, request)`` replaces
    ``service.answer`` (e.g. to start a job), ``guard(info)`` runs first (e.g. the token check
    of a mutation); ``mutation``: a mutation field."""
    hints = typing.get_type_hints(request_type)
    params = [
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("info", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Info),
    ]
    converters: dict[str, Callable[[Any], Any]] = {}
    for f in dataclasses.fields(request_type):  # type: ignore[arg-type]
        annotation, converters[f.name] = _argument(f, hints[f.name])
        default = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
    names = list(converters)

    async def resolver(self: Any, info: Info, **kwargs: Any) -> Any:
        if guard is not None:
            guard(info)
        try:
            request = request_type(**{name: converters[name](value) for name, value in kwargs.items()})
            is_heavy = heavy(request) if callable(heavy) else heavy
            service = info.context.service
            answer = await call(
                info, service.answer if run is None else (lambda r: run(service, r)), request, heavy=is_heavy
            )
        except ActstoreError as exc:
            raise exc.reworded(camel, names) from exc
        return build(answer)

    resolver.__signature__ = inspect.Signature(params, return_annotation=returns)  # type: ignore[attr-defined]
    resolver.__name__ = request_type.op
    resolver.__annotations__ = {p.name: p.annotation for p in params[1:]} | {"return": returns}
    make = strawberry.mutation if mutation else strawberry.field
    return make(resolver=resolver, description=description or request_type.__doc__)
