"""Which function draws which result: ``@renders("ClassName")`` and ``render_png(result)``.

The package face (:mod:`actstore.plots`) imports every module that registers renderers, so
any import of the package has them all registered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["render_png", "renderer_for", "renders"]

Renderer = Callable[[Any], bytes]
F = TypeVar("F", bound=Renderer)

_RENDERERS: dict[str, Renderer] = {}
_DEFAULT: list[Renderer] = []  # at most one: the renderer of results nobody registered for


def renders(*class_names: str, default: bool = False) -> Callable[[F], F]:
    """Register the decorated function as the PNG renderer of results of these class names
    (``default=True``: also of any result without a renderer of its own).

    A result is matched by the name of its class or of any base class (a service result that
    extends an analysis dataclass of the same name is found either way). Registering a name,
    or the default, twice with different functions is a programming error (ValueError).
    """
    if not class_names and not default:
        raise TypeError("renders() needs a result class name or default=True")

    def register(fn: F) -> F:
        for name in class_names:
            old = _RENDERERS.get(name)
            if old is not None and old is not fn:
                raise ValueError(f"{name} already has a renderer: {old.__module__}.{old.__qualname__}")
            _RENDERERS[name] = fn
        if default:
            if _DEFAULT and _DEFAULT[0] is not fn:
                raise ValueError(f"the default renderer is already {_DEFAULT[0].__module__}.{_DEFAULT[0].__qualname__}")
            _DEFAULT[:] = [fn]
        return fn

    return register


def renderer_for(result: Any) -> Renderer:
    """The renderer of ``result``: the one registered for its class name (or a base class's),
    else the default (the matrix heatmap)."""
    for cls in type(result).__mro__:
        fn = _RENDERERS.get(cls.__name__)
        if fn is not None:
            return fn
    if not _DEFAULT:
        raise LookupError(f"no renderer for {type(result).__name__} and no default renderer registered")
    return _DEFAULT[0]


def render_png(result: Any) -> bytes:
    """PNG bytes of a plottable result (see :func:`renderer_for`)."""
    return renderer_for(result)(result)
