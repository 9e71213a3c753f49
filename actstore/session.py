"""The notebook face: ``import actstore as act; s = act.open("./store")``.

A :class:`Session` holds one store and one service (a context manager: ``with act.open(...) as
s:``). Its analysis methods are derived from the service's request types, so they take exactly
the arguments GraphQL and the CLI take, in Python names; layer references may be written as
``("model", 5)`` (a layer), ``("model", 0.5)`` (a relative depth, a float), ``"model:5"`` /
``"model@0.5"`` or :class:`actstore.layers.LayerRef`. Answers are the service's result objects:
numpy arrays (``.values`` is an ndarray), ``.to_pandas()`` / ``.to_dict()``, and they render in
Jupyter (``_repr_png_`` draws matrices with :mod:`actstore.plots`, ``_repr_html_`` tables).

Raw arrays: :meth:`Session.activations` (one layer) and :meth:`Session.aligned` (two layers on the
prompts both models share, rows in the same order).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from actstore.config import Settings
from actstore.errors import InvalidInput
from actstore.layers import LayerRef
from actstore.service import Service
from actstore.service import requests as R
from actstore.service.display import Table, use_png_renderer

__all__ = ["Session", "layer_ref", "open"]


def layer_ref(value: Any, field: str = "layer") -> LayerRef:
    """A LayerRef from ``LayerRef``, ``(model, layer:int | depth:float)``, ``"model:layer"`` or
    ``"model@depth"``."""
    if isinstance(value, LayerRef):
        return value
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        model, where = value
        if isinstance(where, (bool, np.bool_)):
            raise InvalidInput.of(field, value, "(model, layer) or (model, depth)")
        if isinstance(where, (int, np.integer)):
            return LayerRef(model, layer=int(where))
        if isinstance(where, (float, np.floating)):
            return LayerRef(model, depth=float(where))
    if isinstance(value, str):
        for sep, kind in (("@", "depth"), (":", "layer")):
            model, found, where = value.rpartition(sep)
            if found and model:
                try:
                    return LayerRef(model, **{kind: float(where) if kind == "depth" else int(where)})
                except ValueError:
                    break
    raise InvalidInput.of(field, value, "a layer: (model, layer), (model, depth), 'model:layer' or 'model@depth'")


def _method(request_type: type[R.Request], wrap: Callable[[Any], Any] | None = None) -> Callable[..., Any]:
    """A session method answering ``request_type`` (layer references written in any accepted form)."""
    hints = typing.get_type_hints(request_type)
    refs = {f.name for f in dataclasses.fields(request_type) if hints[f.name] is LayerRef}  # type: ignore[arg-type]
    params = list(inspect.signature(request_type).parameters.values())
    signature = inspect.Signature([inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *params])

    def method(self: Session, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)
        values = {k: v for k, v in bound.arguments.items() if k != "self"}
        for name in refs & set(values):
            values[name] = layer_ref(values[name], name)
        answer = self.service.answer(request_type(**values))
        return wrap(answer) if wrap is not None else answer

    method.__signature__ = signature  # type: ignore[attr-defined]
    method.__doc__ = request_type.__doc__
    return method


class Session:
    """One store and its analyses, for notebooks and scripts. See the module docstring."""

    def __init__(self, store: Any, settings: Settings | None = None) -> None:
        """``store``: a :class:`actstore.Store`, or the URI of one (opened, created if missing)."""
        self.service = Service(store if not isinstance(store, Path) else str(store), settings)
        self.store = self.service.store
        if find_spec("matplotlib") is not None:  # the [notebook] extra: answers draw themselves
            from actstore.plots import render_png

            use_png_renderer(render_png)

    def __repr__(self) -> str:
        return f"Session({self.store.uri!r})" if hasattr(self.store, "uri") else f"Session({self.store!r})"

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the service's background work and forget cached layers."""
        self.service.close()
        self.service.reads.layers.clear()

    # ------------------------------------------------------------------ catalog
    def models(self) -> Table:
        """The stored models (key, source, layers, width, ...)."""
        return Table(self.store.models.list(), caption="models")

    def measures(self) -> Table:
        """Every registered similarity measure (name, family, direction, options, what it is
        sensitive to, definition, reference), platonic-representation's first."""
        return Table(self.service.measures.measures(), caption="similarity measures")

    def datasets(self) -> Table:
        """The datasets (name, prompt count, labels or not)."""
        return Table(self.store.prompts.datasets(), caption="datasets")

    # --------------------------------------------------------------- raw arrays
    def activations(self, model: str, layer: int, dataset: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(prompt ids int64 [n], activations float32 [n, d]) of one stored layer, by prompt id."""
        return self.store.read_activations(model, layer, dataset=dataset)

    def aligned(
        self, model_a: str, layer_a: int | float, model_b: str, layer_b: int | float, dataset: str | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids int64 [n], X float32 [n, d_a], Y float32 [n, d_b]): two layers (an int is a layer,
        negative from the end; a float a relative depth) on the prompts both models share at every
        stored layer, rows in ascending prompt-id order (the rows every comparison uses)."""
        ia, la = self.service.reads.resolve(layer_ref((model_a, layer_a)))
        ib, lb = self.service.reads.resolve(layer_ref((model_b, layer_b)))
        ids = self.service.reads.shared(ia.key, ib.key, dataset)
        X = np.array(self.service.reads.rows(ia.key, la, ids), dtype=np.float32)
        Y = np.array(self.service.reads.rows(ib.key, lb, ids), dtype=np.float32)
        return ids, X, Y

    # ----------------------------------------------------------------- analyses
    neighbors = _method(R.NeighborsRequest, wrap=lambda rows: Table(rows, caption="nearest neighbours"))
    mutual_knn = _method(R.MutualKnnRequest)
    affinity = _method(R.AffinityRequest)
    cka = _method(R.CkaRequest)
    cka_matrix = _method(R.CkaMatrixRequest)
    similarity = _method(R.SimilarityRequest)
    similarity_matrix = _method(R.SimilarityMatrixRequest)
    bridge = _method(R.BridgeRequest)
    bridge_sweep = _method(R.BridgeSweepRequest)
    probe_transfer = _method(R.ProbeTransferRequest)
    probe_transfer_sweep = _method(R.ProbeTransferSweepRequest)
    next_token_transfer = _method(R.NextTokenTransferRequest)
    sae_correlation = _method(R.SaeCorrelationRequest)
    sae_matrix = _method(R.SaeMatrixRequest)
    atlas = _method(R.AtlasRequest)

    def answer(self, request: R.Request) -> Any:
        """The answer of any request object (see :mod:`actstore.service.requests`)."""
        return self.service.answer(request)


def open(store: Any, settings: Settings | None = None) -> Session:  # noqa: A001 - the face's verb
    """Open a store (a local folder or an object-store URI; created if missing) for analysis."""
    return Session(store, settings)
