"""GraphQL output types derived from the result dataclasses, so each result is declared once.

``derive(Result, name="Cka")`` makes a strawberry type with one field per dataclass field
(snake_case in Python, camelCase in GraphQL, as strawberry does): tuples become lists, nested
result dataclasses become their own derived types, ``exclude`` leaves fields out and
``fields`` overrides a field's GraphQL type (an enum, ``strawberry.ID``). A type that needs
more (a resolver, a private value) subclasses the derived type. :func:`build` makes the
GraphQL object of a result, converting nested results, enums and ids on the way.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import strawberry

__all__ = ["build", "derive"]

T = TypeVar("T")

# result dataclass -> its derived GraphQL type (nested results are converted through it)
_DERIVED: dict[type, type] = {}
# derived GraphQL type -> {field name: converter of the result's value}
_CONVERTERS: dict[type, dict[str, Callable[[Any], Any]]] = {}


def _array_kind(hint: Any) -> int | None:
    """ndim of an array field's annotation (``Annotated[np.ndarray, ArrayKind(n)]``), else None."""
    if typing.get_origin(hint) is typing.Annotated:
        for extra in typing.get_args(hint)[1:]:
            ndim = getattr(extra, "ndim", None)
            if isinstance(ndim, int):
                return ndim
    return None


def _graphql_hint(hint: Any) -> Any:
    ndim = _array_kind(hint)
    if ndim is not None:
        return list[list[float]] if ndim == 2 else list[float]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [_graphql_hint(a) for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"cannot derive a GraphQL type for {hint!r}")
        return typing.Optional[inner[0]] if type(None) in args else inner[0]
    if origin in (list, tuple):
        return list[_graphql_hint(args[0])]
    if dataclasses.is_dataclass(hint):
        if hint not in _DERIVED:
            raise TypeError(f"derive {hint.__name__} before a type that nests it")
        return _DERIVED[hint]
    return hint


def _converter(target: Any) -> Callable[[Any], Any] | None:
    if isinstance(target, type) and issubclass(target, enum.Enum):
        return lambda v: None if v is None else target(getattr(v, "value", v))
    if target is strawberry.ID:
        return lambda v: None if v is None else strawberry.ID(str(v))
    if typing.get_origin(target) is list:
        inner = _converter(typing.get_args(target)[0])
        if inner is not None:
            return lambda v: None if v is None else [inner(x) for x in v]
    return None


def _array_converter(hint: Any) -> Callable[[Any], Any] | None:
    """Converter of an array field (or an optional one) to nested lists."""
    inner = (
        [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) in (typing.Union, types.UnionType)
        else [hint]
    )
    if len(inner) == 1 and _array_kind(inner[0]) is not None:
        return lambda v: None if v is None else v.tolist()
    return None


def derive(
    cls: type,
    *,
    name: str,
    exclude: Iterable[str] = (),
    fields: Mapping[str, Any] | None = None,
    descriptions: Mapping[str, str] | None = None,
    description: str | None = None,
) -> type:
    """A strawberry type named ``name`` with the fields of dataclass ``cls``.

    ``fields``: GraphQL types overriding those of some fields (enums and ids are converted
    from the result's values by :func:`build`); ``descriptions``: per-field descriptions.
    """
    hints = typing.get_type_hints(cls, include_extras=True)
    fields, descriptions, skip = dict(fields or {}), dict(descriptions or {}), set(exclude)
    unknown = (set(fields) | set(descriptions) | skip) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {"__doc__": description or cls.__doc__}
    converters: dict[str, Callable[[Any], Any]] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        annotations[f.name] = fields.get(f.name, _graphql_hint(hints[f.name]))
        convert = _converter(fields[f.name]) if f.name in fields else _array_converter(hints[f.name])
        if convert is not None:
            converters[f.name] = convert
        if f.name in descriptions:
            namespace[f.name] = strawberry.field(description=descriptions[f.name])
    namespace["__annotations__"] = annotations
    derived = strawberry.type(type(name, (), namespace), name=name, description=description)
    _DERIVED.setdefault(cls, derived)
    _CONVERTERS[derived] = converters
    return derived


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist") and hasattr(value, "ndim"):  # an ndarray
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        target = _DERIVED.get(type(value))
        return build(target, value) if target is not None else value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def build(gql_type: type[T], result: Any, **extra: Any) -> T:
    """The GraphQL object of type ``gql_type`` for ``result``: every field of the type taken
    from ``extra`` when given there, else from the result's attribute of the same name."""
    converters: dict[str, Callable[[Any], Any]] = {}
    for klass in reversed(gql_type.__mro__):
        converters.update(_CONVERTERS.get(klass, {}))
    values = {}
    for f in dataclasses.fields(gql_type):
        if not f.init:  # a resolver field
            continue
        if f.name in extra:
            values[f.name] = extra[f.name]
            continue
        value = getattr(result, f.name)
        convert = converters.get(f.name)
        values[f.name] = convert(value) if convert is not None else _plain(value)
    return gql_type(**values)
