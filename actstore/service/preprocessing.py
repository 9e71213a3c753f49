"""The ``preprocess`` argument of similarity and bridge queries (METHODS.md, "Preprocessing"):
checking it, its part of a cache key, and applying it to rows read from the store.

The numerics are :mod:`actstore.analysis.preprocess`; this module names the choices as the
GraphQL enum does (NONE, STANDARDIZE, DROP_OUTLIER_DIMS, PLATONIC) in its error messages.

PLATONIC reproduces platonic-rep's pipeline (minyoungg/platonic-rep @ dcd76ba,
``measure_alignment.prepare_features`` then ``compute_score``): one clipping value c per
model, computed over that model's whole feature set (every stored layer of the model, on the
prompts compared: the reference clips its [n, L, d] file of all layers at once) as the mean
over prompts of the 0.95-quantile of |x| (its default, ``--precise`` not given), then every
row of a layer clipped to [-c, c] and scaled to unit length. It applies to similarity queries
only: a bridge fits a map on a training split, where a clip fitted on every prompt would leak
the held-out ones.

Checked against platonic-rep's own code (metrics.py and measure_alignment.py @ dcd76ba, run in
/tmp with torch CPU: ``remove_outliers(feats [n, L, d], q=0.95, exact=False)`` over all stored
layers of each model, then ``F.normalize`` and ``AlignmentMetrics.measure`` per layer pair)
on the offline demo's real activations, SmolLM2-135M (7 stored layers) x MiniLM-L6 (6), all
42 layer pairs, n = 54 (demo-text) and n = 120 (every prompt): ``similarityMatrix`` with
preprocess PLATONIC differs from it by at most 6.9e-8 for mutual_knn (k = 10; the same
neighbour sets, the reference averages in float32), 3.0e-7 for cka (eps = 1e-6), 1.6e-7 for
cknna (k = 10, eps = 1e-6) and 5.3e-5 for unbiased_cka (eps = 1e-6); with the reference's
per-pair step in float64 the CKA differences fall to 2.7e-8 and 3.2e-8 (what is left is its
float32 clipping), so the unbiased_cka gap is the reference's float32 cancellation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from actstore.analysis.preprocess import (
    DEFAULT_OUTLIER_SHARE,
    PREPROCESS,
    fit_preprocess,
    platonic_clip,
)
from actstore.errors import InvalidInput

__all__ = ["DEFAULT_OUTLIER_SHARE", "Prep", "check_prep"]

#: reads the rows [n, d] of (model, layer) at the given prompt ids
RowReader = Callable[[str, int, np.ndarray], np.ndarray]


class Prep:
    """A checked preprocessing choice: ``name`` (none | standardize | drop_outlier_dims |
    platonic) and ``threshold`` (the outlier variance share; None unless drop_outlier_dims).
    Platonic clipping values are kept per (model, prompt set) for the life of the object (one
    query)."""

    def __init__(self, name: str, threshold: float | None) -> None:
        self.name, self.threshold = name, threshold
        self._clips: dict[tuple[str, bytes], float | None] = {}

    def key(self) -> dict[str, Any]:
        """Its part of a query's cache key."""
        return {"preprocess": self.name, "outlierThreshold": self.threshold}

    @property
    def active(self) -> bool:
        return self.name != "none"

    def one(self, X: np.ndarray, name: str, clip: float | None = None) -> tuple[np.ndarray, tuple[int, ...]]:
        """X preprocessed with statistics of its own rows (platonic: clipped at ``clip`` when
        given, else at a value fitted on X), and the dropped column indices."""
        if not self.active:
            return X, ()
        p = fit_preprocess(X, self.name, threshold=self._tau(), name=name, clip=clip)
        return p.apply(X, name), p.dropped

    def rows(
        self, read: RowReader, model: str, layer: int, ids: np.ndarray, model_layers: Sequence[int]
    ) -> tuple[np.ndarray, tuple[int, ...]]:
        """The preprocessed rows of one stored layer at ``ids`` and the dropped column indices.
        For platonic the clip is the model's (over ``model_layers``, every stored layer of it,
        at ``ids``; see the module doc), computed once per model and prompt set."""
        name = f"layer {layer} of model {model!r}"
        X = read(model, layer, ids)
        if self.name != "platonic":
            return self.one(X, name)
        slot = (model, np.ascontiguousarray(ids, dtype=np.int64).tobytes())
        if slot not in self._clips:
            self._clips[slot] = platonic_clip(
                [X if l_ == layer else read(model, l_, ids) for l_ in model_layers],
                name=f"the layers of model {model!r}",
            )
        return self.one(X, name, clip=self._clips[slot])

    def split(self, train: np.ndarray, test: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
        """Fitted on ``train``, applied to both: (train', test', dropped column indices)."""
        if not self.active:
            return train, test, ()
        p = fit_preprocess(train, self.name, threshold=self._tau(), name=name)
        return p.apply(train, name), p.apply(test, name), p.dropped

    def _tau(self) -> float:
        return DEFAULT_OUTLIER_SHARE if self.threshold is None else self.threshold


def check_prep(preprocess: Any, outlier_threshold: Any = None, *, similarity: bool = True) -> Prep:
    """Check the ``preprocess`` argument (an enum or its value, any case) and the outlier
    threshold (only with drop_outlier_dims; default DEFAULT_OUTLIER_SHARE). ``similarity``
    False (bridges, probes) refuses PLATONIC (module doc)."""
    name = str(getattr(preprocess, "value", preprocess)).lower() if preprocess is not None else "none"
    allowed = [p for p in PREPROCESS if similarity or p != "platonic"]
    if name not in allowed:
        if name == "platonic":
            raise InvalidInput(
                "preprocess PLATONIC applies to similarity queries only (its clip is fitted on every "
                "prompt, which would leak held-out prompts into a bridge); use NONE, STANDARDIZE or "
                "DROP_OUTLIER_DIMS",
                field="preprocess",
                value=preprocess,
                allowed="one of NONE, STANDARDIZE, DROP_OUTLIER_DIMS",
            )
        raise InvalidInput(f"preprocess must be one of {', '.join(p.upper() for p in allowed)}, got {preprocess!r}")
    if name != "drop_outlier_dims":
        if outlier_threshold is not None:
            raise InvalidInput(
                f"outlier_threshold applies only to preprocess DROP_OUTLIER_DIMS, not {name.upper()}; leave it unset"
            )
        return Prep(name, None)
    if outlier_threshold is None:
        return Prep(name, DEFAULT_OUTLIER_SHARE)
    if (
        isinstance(outlier_threshold, bool)
        or not isinstance(outlier_threshold, (int, float))
        or not 0.0 < float(outlier_threshold) < 1.0
    ):
        raise InvalidInput(
            f"outlier_threshold must be a number strictly between 0 and 1, got {outlier_threshold!r}",
            field="outlier_threshold",
            value=outlier_threshold,
            allowed="a number strictly between 0 and 1",
        )
    return Prep(name, float(outlier_threshold))
