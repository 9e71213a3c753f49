"""The ``preprocess`` argument of similarity and bridge queries (METHODS.md, "Preprocessing"):
checking it, its part of a cache key, and applying it to rows read from the store.

The numerics are :mod:`actstore.analysis.preprocess`; this module names the choices as the
GraphQL enum does (NONE, STANDARDIZE, DROP_OUTLIER_DIMS) in its error messages.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from actstore.analysis.preprocess import DEFAULT_OUTLIER_SHARE, PREPROCESS, fit_preprocess
from actstore.errors import InvalidInput

__all__ = ["DEFAULT_OUTLIER_SHARE", "Prep", "check_prep"]


class Prep:
    """A checked preprocessing choice: ``name`` (none | standardize | drop_outlier_dims) and
    ``threshold`` (the outlier variance share; None unless drop_outlier_dims)."""

    def __init__(self, name: str, threshold: float | None) -> None:
        self.name, self.threshold = name, threshold

    def key(self) -> dict[str, Any]:
        """Its part of a query's cache key."""
        return {"preprocess": self.name, "outlierThreshold": self.threshold}

    @property
    def active(self) -> bool:
        return self.name != "none"

    def one(self, X: np.ndarray, name: str) -> tuple[np.ndarray, tuple[int, ...]]:
        """X preprocessed with statistics of its own rows, and the dropped column indices."""
        if not self.active:
            return X, ()
        p = fit_preprocess(X, self.name, threshold=self._tau(), name=name)
        return p.apply(X, name), p.dropped

    def split(self, train: np.ndarray, test: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
        """Fitted on ``train``, applied to both: (train', test', dropped column indices)."""
        if not self.active:
            return train, test, ()
        p = fit_preprocess(train, self.name, threshold=self._tau(), name=name)
        return p.apply(train, name), p.apply(test, name), p.dropped

    def _tau(self) -> float:
        return DEFAULT_OUTLIER_SHARE if self.threshold is None else self.threshold


def check_prep(preprocess: Any, outlier_threshold: Any = None) -> Prep:
    """Check the ``preprocess`` argument (an enum or its value, any case) and the outlier
    threshold (only with drop_outlier_dims; default DEFAULT_OUTLIER_SHARE)."""
    name = str(getattr(preprocess, "value", preprocess)).lower() if preprocess is not None else "none"
    if name not in PREPROCESS:
        raise InvalidInput(f"preprocess must be one of NONE, STANDARDIZE, DROP_OUTLIER_DIMS, got {preprocess!r}")
    if name != "drop_outlier_dims":
        if outlier_threshold is not None:
            raise InvalidInput(f"outlier_threshold applies only to preprocess DROP_OUTLIER_DIMS, not "
                               f"{name.upper()}; leave it unset")
        return Prep(name, None)
    if outlier_threshold is None:
        return Prep(name, DEFAULT_OUTLIER_SHARE)
    if isinstance(outlier_threshold, bool) or not isinstance(outlier_threshold, (int, float)) \
            or not 0.0 < float(outlier_threshold) < 1.0:
        raise InvalidInput(f"outlier_threshold must be a number strictly between 0 and 1, got {outlier_threshold!r}", field="outlier_threshold", value=outlier_threshold, allowed="a number strictly between 0 and 1")
    return Prep(name, float(outlier_threshold))
