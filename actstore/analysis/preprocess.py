"""Per-query preprocessing of activations before similarity and bridges (METHODS.md,
"Preprocessing").

* ``none``: the rows unchanged (float64).
* ``standardize``: centre each column and divide by its standard deviation (population
  standard deviation, ddof = 0). Constant columns (standard deviation <= 1e-12 times the
  largest) are dropped; their indices are reported as ``dropped``.
* ``drop_outlier_dims``: column j is an outlier when var_j / sum_k var_k > threshold
  (``DEFAULT_OUTLIER_SHARE`` = 0.05 unless given); outlier columns are removed (one pass,
  shares computed once) and their indices reported as ``dropped``. The other columns are kept
  unchanged.

The statistics (means, standard deviations, variance shares) are fitted on one set of rows
(:func:`fit_preprocess`) and can be applied to others (:meth:`Preprocessor.apply`): bridges fit
them on the training split and apply them to the held-out split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import AnalysisError

__all__ = ["DEFAULT_OUTLIER_SHARE", "PREPROCESS", "Preprocessor", "check_preprocess", "check_threshold",
           "fit_preprocess", "preprocess"]

PREPROCESS = ("none", "standardize", "drop_outlier_dims")
DEFAULT_OUTLIER_SHARE = 0.05
_CONSTANT = 1e-12  # a column whose std is at most this times the largest std counts as constant


def check_preprocess(method: object) -> str:
    """The preprocessing as one of PREPROCESS (an enum's ``value`` is accepted, any case)."""
    m = str(getattr(method, "value", method)).lower() if method is not None else ""
    if m not in PREPROCESS:
        raise AnalysisError(f"preprocess must be one of {', '.join(PREPROCESS)}, got {method!r}")
    return m


def check_threshold(threshold: object) -> float:
    """An outlier variance share strictly between 0 and 1."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)) \
            or not 0.0 < float(threshold) < 1.0:
        raise AnalysisError(f"outlier threshold must be a number strictly between 0 and 1, got {threshold!r}")
    return float(threshold)


@dataclass(frozen=True)
class Preprocessor:
    """Fitted preprocessing: ``keep`` (column indices kept, ascending), ``dropped`` (the
    others), and for standardize the fitted ``mean`` and ``scale`` of the kept columns."""

    method: str
    width: int
    keep: np.ndarray
    dropped: tuple[int, ...]
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None

    def apply(self, X: object, name: str = "X") -> np.ndarray:
        """The preprocessed float64 rows of X [m, width]."""
        x = _matrix(X, name, min_rows=1)
        if x.shape[1] != self.width:
            raise AnalysisError(f"{name} has {x.shape[1]} columns but the preprocessing was fitted on "
                                f"{self.width}")
        if self.method == "none":
            return x
        x = x[:, self.keep]
        if self.method == "standardize":
            return (x - self.mean) / self.scale
        return x


def _matrix(X: object, name: str, min_rows: int) -> np.ndarray:
    x = np.asarray(X, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] == 0:
        raise AnalysisError(f"{name} must be a 2-D array [n, d] with d >= 1, got shape {x.shape}")
    if x.shape[0] < min_rows:
        raise AnalysisError(f"{name} has {x.shape[0]} rows; preprocessing needs at least {min_rows}")
    if not np.isfinite(x).all():
        raise AnalysisError(f"{name} contains NaN or inf")
    return x


def fit_preprocess(X: object, method: object = "none", *, threshold: float = DEFAULT_OUTLIER_SHARE,
                   name: str = "X") -> Preprocessor:
    """Fit ``method`` on the rows of X [n, d] (n >= 2). Raises AnalysisError when every column
    would be dropped or X has no variance."""
    m = check_preprocess(method)
    tau = check_threshold(threshold)
    x = _matrix(X, name, min_rows=2)
    d = x.shape[1]
    if m == "none":
        return Preprocessor(m, d, np.arange(d), ())
    var = x.var(axis=0)
    if not var.max() > 0:
        raise AnalysisError(f"{name} is constant over its {x.shape[0]} rows; preprocess {m} needs a column "
                            f"that varies")
    if m == "standardize":
        std = np.sqrt(var)
        keep_mask = std > _CONSTANT * std.max()
    else:
        keep_mask = var / var.sum() <= tau
    keep = np.flatnonzero(keep_mask)
    dropped = tuple(int(j) for j in np.flatnonzero(~keep_mask))
    if len(keep) == 0:
        raise AnalysisError(f"{m} would drop every one of the {d} columns of {name} (variance shares above "
                            f"{tau}); raise the threshold")
    if m == "standardize":
        return Preprocessor(m, d, keep, dropped, x[:, keep].mean(0), np.sqrt(var[keep]))
    return Preprocessor(m, d, keep, dropped)


def preprocess(X: object, method: object = "none", *, threshold: float = DEFAULT_OUTLIER_SHARE,
               name: str = "X") -> tuple[np.ndarray, tuple[int, ...]]:
    """(X preprocessed by statistics of its own rows, the dropped column indices)."""
    p = fit_preprocess(X, method, threshold=threshold, name=name)
    return p.apply(X, name), p.dropped
