"""How a service part answers requests: one generic path for every analysis.

A part (similarity, bridges, SAEs, ...) subclasses :class:`Answers` and, for each request type
it answers, defines ``_plan_<RequestClass>(request) -> Plan``: resolve names and layers, list
the table versions, and give the ``compute`` and ``cost`` functions. :meth:`Answers.answer`
checks the request against the server's limits, makes the plan and runs it through the result
cache (key derived from the request, cost estimate, slot, single flight, compute, store).

The keyword methods that Python callers and the existing code use (``similarity.cka(a, b,
permutations=100)``) are derived from the request classes by :func:`answers`, so their
signatures are the requests' fields and nothing is declared twice.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from actstore.config import Settings

from .boundary import service_boundary
from .requests import Request
from .results import Plan, ResultCache

__all__ = ["Answers", "answers"]

R = TypeVar("R", bound=Request)


@service_boundary
class Answers:
    """Base of the service parts that answer :class:`Request` objects."""

    settings: Settings
    results: ResultCache

    def answers_type(self, request_type: type[Request]) -> bool:
        """True when this part has a plan for requests of this type."""
        return callable(getattr(self, f"_plan_{request_type.__name__}", None))

    def plan(self, request: Request) -> Plan[Any]:
        """The plan of ``request`` (checked against the server's limits first)."""
        request.check_limits(self.settings)
        planner = getattr(self, f"_plan_{type(request).__name__}", None)
        if planner is None:
            raise TypeError(f"{type(self).__name__} does not answer {type(request).__name__}")
        plan: Plan[Any] = planner(request)
        return plan

    def answer(self, request: Request) -> Any:
        """The answer of ``request`` (cached, budgeted, cancellable; see the module docstring)."""
        return self.results.answer(request, self.plan(request))


def answers(request_type: type[R]) -> Callable[..., Any]:
    """A method ``part.name(*args, **kwargs)`` that builds ``request_type(*args, **kwargs)``
    and answers it; its signature and docstring are the request's."""
    params = list(inspect.signature(request_type).parameters.values())

    def method(self: Answers, *args: Any, **kwargs: Any) -> Any:
        return self.answer(request_type(*args, **kwargs))

    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method.__signature__ = inspect.Signature([self_param, *params])  # type: ignore[attr-defined]
    method.__doc__ = (request_type.__doc__ or "") + _arguments(request_type)
    method.__name__ = method.__qualname__ = request_type.op
    return method


def _arguments(request_type: type[Request]) -> str:
    lines = ["", "", "Arguments (see :class:`actstore.service.requests." + request_type.__name__ + "`):"]
    for f in dataclasses.fields(request_type):  # type: ignore[arg-type]
        lines.append(f"    {f.name}: {f.metadata.get('doc', '')}")
    return "\n".join(lines)
