"""How answers show themselves in a notebook and convert to plain data.

Every registered result type (:func:`.results.result_type`) gets these methods:

- ``to_dict()``: a JSON-safe dict (arrays as nested lists, enums by value);
- ``to_pandas()``: a layer matrix as a DataFrame indexed by the two models' layers, any other
  answer as a one-row DataFrame of its scalar fields (needs pandas);
- ``_repr_html_()``: Jupyter's table of the scalar fields (a matrix: the DataFrame's HTML);
- ``_repr_png_()``: the answer's plot, for answers that have one (``plottable``), through the
  PNG renderer registered with :func:`use_png_renderer` (the notebook face registers
  :func:`actstore.plots.render_png`; the service itself imports no plotting stack).

:class:`Table` is a list of answer rows (nearest neighbours, models, datasets) with the same
conversions, shown as an HTML table.
"""

from __future__ import annotations

import dataclasses
import enum
import html
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from actstore.errors import ActstoreError

__all__ = ["Table", "display_methods", "plain_data", "use_png_renderer"]

_PNG: list[Callable[[Any], bytes]] = []


def use_png_renderer(render: Callable[[Any], bytes] | None) -> None:
    """Register the function that draws answers as PNG (None: none; ``_repr_png_`` returns None)."""
    _PNG[:] = [] if render is None else [render]


def plain_data(value: Any) -> Any:
    """JSON-safe form of an answer or a value inside one."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    return value


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ActstoreError("to_pandas() needs pandas: pip install 'actstore[notebook]' (or pandas)") from None
    return pandas


def _scalars(result: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(result):
        v = getattr(result, f.name)
        if isinstance(v, enum.Enum):
            v = v.value
        if v is None or isinstance(v, (bool, int, float, str, np.generic)):
            out[f.name] = v
    return out


def _is_matrix(result: Any) -> bool:
    values = getattr(result, "values", None)
    return isinstance(values, np.ndarray) and values.ndim == 2 and hasattr(result, "layers_a")


def to_dict(self: Any) -> dict[str, Any]:
    """This answer as a JSON-safe dict."""
    data: dict[str, Any] = plain_data(self)
    return data


def to_pandas(self: Any) -> Any:
    """A layer matrix as a DataFrame (rows: model A's layers, columns: model B's); any other
    answer as a one-row DataFrame of its scalar fields."""
    pd = _pandas()
    if _is_matrix(self):
        return pd.DataFrame(
            self.values,
            index=pd.Index(list(self.layers_a), name=f"{self.model_a} layer"),
            columns=pd.Index(list(self.layers_b), name=f"{self.model_b} layer"),
        )
    return pd.DataFrame([_scalars(self)])


def _html_table(rows: list[dict[str, Any]], caption: str) -> str:
    if not rows:
        return f"<p>{html.escape(caption)}: none</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows)
    return (
        f"<table><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def repr_html(self: Any) -> str | None:
    """Jupyter's HTML: the scalar fields as a table (a matrix: its values, rows by layer). None
    for an answer that has a plot while a PNG renderer is registered: Jupyter prefers HTML to
    PNG, and a matrix is better seen drawn (``to_pandas()`` gives its numbers)."""
    if getattr(self, "plottable", False) and _PNG:
        return None
    name = type(self).__name__
    if _is_matrix(self):
        rows = [
            {"layer": la, **{str(lb): float(v) for lb, v in zip(self.layers_b, row)}}
            for la, row in zip(self.layers_a, self.values)
        ]
        return _html_table(rows, f"{name}: {self.model_a} (rows) x {self.model_b} (columns)")
    return _html_table([_scalars(self)], name)


def repr_png(self: Any) -> bytes | None:
    """The answer's plot as PNG bytes, or None when it has none or no renderer is registered."""
    if not getattr(self, "plottable", False) or not _PNG:
        return None
    return _PNG[0](self)


def display_methods(cls: type) -> type:
    """Give a result class ``to_dict``, ``to_pandas``, ``_repr_html_`` and ``_repr_png_``
    (those it does not define itself); ``plottable`` is True for layer matrices."""
    for name, fn in (
        ("to_dict", to_dict),
        ("to_pandas", to_pandas),
        ("_repr_html_", repr_html),
        ("_repr_png_", repr_png),
    ):
        if name not in vars(cls):
            setattr(cls, name, fn)
    if "plottable" not in vars(cls) and "values" in {f.name for f in dataclasses.fields(cls)}:
        cls.plottable = True  # type: ignore[attr-defined]
    return cls


class Table(list):  # type: ignore[type-arg]
    """A list of answer rows (dataclasses) that shows itself as a table and converts."""

    def __init__(self, rows: Iterable[Any] = (), caption: str = "") -> None:
        super().__init__(rows)
        self.caption = caption

    def to_dict(self) -> list[Any]:
        """The rows as JSON-safe dicts."""
        return [plain_data(r) for r in self]

    def to_pandas(self) -> Any:
        """The rows as a DataFrame, one column per field."""
        return _pandas().DataFrame(self.to_dict())

    def _repr_html_(self) -> str:
        rows = [{k: v for k, v in plain_data(r).items() if not isinstance(v, (list, dict))} for r in self]
        return _html_table(rows, self.caption or f"{len(self)} rows")
