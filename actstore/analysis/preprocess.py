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

* ``platonic``: platonic-rep's pipeline (``measure_alignment.prepare_features`` then
  ``compute_score``, minyoungg/platonic-rep @ dcd76ba): clip every entry to [-c, c], one global
  value c for the whole matrix (not per column), then scale every row to unit length
  (x / max(|x|, 1e-12), as ``F.normalize``; a zero row stays zero). c is the ``quantile`` q
  (0.95 unless given; q = 1 skips the clipping) of |X|:
    exact_quantile False (measure_alignment.py's default, ``--precise`` not given): the mean
      over rows of each row's q-quantile of |x_i| (linear interpolation, torch.quantile's and
      numpy's default);
    exact_quantile True (``--precise``, and platonic.Alignment): the entry of rank int(q N) of
      the ascending sort of all N = n d entries of |X| (no interpolation).
  The reference computes c over one model's whole feature file [n, L, d] (all layers
  together; per layer when the file holds a list of layers): pass that value as ``clip``
  (from :func:`platonic_clip`) to reproduce it; without ``clip`` c is fitted on X's rows.
  Nothing is dropped.

The statistics (means, standard deviations, variance shares) are fitted on one set of rows
(:func:`fit_preprocess`) and can be applied to others (:meth:`Preprocessor.apply`): bridges fit
them on the training split and apply them to the held-out split.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .errors import AnalysisError

__all__ = [
    "DEFAULT_OUTLIER_SHARE",
    "DEFAULT_PLATONIC_QUANTILE",
    "PREPROCESS",
    "Preprocessor",
    "check_preprocess",
    "check_threshold",
    "fit_preprocess",
    "platonic_clip",
    "preprocess",
]

PREPROCESS = ("none", "standardize", "drop_outlier_dims", "platonic")
DEFAULT_OUTLIER_SHARE = 0.05
DEFAULT_PLATONIC_QUANTILE = 0.95
_NORM_EPS = 1e-12  # F.normalize's eps
_CONSTANT = 1e-12  # a column whose std is at most this times the largest std counts as constant


def check_preprocess(method: object) -> str:
    """The preprocessing as one of PREPROCESS (an enum's ``value`` is accepted, any case)."""
    m = str(getattr(method, "value", method)).lower() if method is not None else ""
    if m not in PREPROCESS:
        raise AnalysisError(f"preprocess must be one of {', '.join(PREPROCESS)}, got {method!r}")
    return m


def check_threshold(threshold: object) -> float:
    """An outlier variance share strictly between 0 and 1."""
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float, np.floating, np.integer))
        or not 0.0 < float(threshold) < 1.0
    ):
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
    clip: float | None = None

    def apply(self, X: object, name: str = "X") -> np.ndarray:
        """The preprocessed float64 rows of X [m, width]."""
        x = _matrix(X, name, min_rows=1)
        if x.shape[1] != self.width:
            raise AnalysisError(f"{name} has {x.shape[1]} columns but the preprocessing was fitted on {self.width}")
        if self.method == "none":
            return x
        if self.method == "platonic":
            if self.clip is not None:
                x = np.clip(x, -self.clip, self.clip)
            norms = np.sqrt(np.einsum("ij,ij->i", x, x))
            unit: np.ndarray = x / np.maximum(norms, _NORM_EPS)[:, None]
            return unit
        x = x[:, self.keep]
        if self.method == "standardize":
            standardized: np.ndarray = (x - self.mean) / self.scale
            return standardized
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


def _check_quantile(q: object) -> float:
    if isinstance(q, bool) or not isinstance(q, (int, float, np.floating, np.integer)) or not 0.0 < float(q) <= 1.0:
        raise AnalysisError(f"platonic quantile must be a number in (0, 1], got {q!r}")
    return float(q)


def platonic_clip(
    layers: np.ndarray | Iterable[object],
    quantile: float = DEFAULT_PLATONIC_QUANTILE,
    *,
    exact_quantile: bool = False,
    name: str = "layers",
) -> float | None:
    """platonic-rep's clipping value c of one feature set (module doc), or None for q = 1.

    ``layers``: one array [n, d] or a sequence of L arrays [n, d_l] over the same n rows (one
    model's layers, treated as platonic-rep treats its [n, L, d] file: row i is all of prompt
    i's entries over every layer). Returns c in the units of the activations.
    """
    q = _check_quantile(quantile)
    if not isinstance(exact_quantile, (bool, np.bool_)):
        raise AnalysisError(f"exact_quantile must be true or false, got {exact_quantile!r}")
    arrays = [layers] if isinstance(layers, np.ndarray) and np.ndim(layers) == 2 else list(layers)
    if not arrays:
        raise AnalysisError(f"{name} is empty; give at least one [n, d] array")
    mats = [_matrix(a, f"{name}[{i}]", min_rows=1) for i, a in enumerate(arrays)]
    if any(m.shape[0] != mats[0].shape[0] for m in mats):
        raise AnalysisError(f"{name} must all have the same rows, got {[m.shape[0] for m in mats]}")
    if q == 1.0:
        return None
    a = np.abs(np.concatenate(mats, axis=1))
    if exact_quantile:
        flat = np.sort(a, axis=None)
        return float(flat[int(q * flat.size)])
    return float(np.quantile(a, q, axis=1).mean())


def fit_preprocess(
    X: object,
    method: object = "none",
    *,
    threshold: float = DEFAULT_OUTLIER_SHARE,
    name: str = "X",
    quantile: float = DEFAULT_PLATONIC_QUANTILE,
    exact_quantile: bool = False,
    clip: float | None = None,
) -> Preprocessor:
    """Fit ``method`` on the rows of X [n, d] (n >= 2). Raises AnalysisError when every column
    would be dropped or X has no variance. ``quantile``, ``exact_quantile`` and ``clip`` apply
    to ``platonic`` only (module doc): a given ``clip`` (>= 0, in activation units) is used
    as is, else it is fitted on X."""
    m = check_preprocess(method)
    tau = check_threshold(threshold)
    x = _matrix(X, name, min_rows=2)
    d = x.shape[1]
    if m == "none":
        return Preprocessor(m, d, np.arange(d), ())
    if m == "platonic":
        if clip is None:
            c = platonic_clip(x, quantile, exact_quantile=exact_quantile, name=name)
        elif (
            isinstance(clip, bool)
            or not isinstance(clip, (int, float, np.floating, np.integer))
            or not 0.0 <= float(clip) < np.inf
        ):
            raise AnalysisError(f"platonic clip must be a finite number >= 0, got {clip!r}")
        else:
            c = float(clip)
        return Preprocessor(m, d, np.arange(d), (), clip=c)
    var = x.var(axis=0)
    if not var.max() > 0:
        raise AnalysisError(f"{name} is constant over its {x.shape[0]} rows; preprocess {m} needs a column that varies")
    if m == "standardize":
        std = np.sqrt(var)
        keep_mask = std > _CONSTANT * std.max()
    else:
        keep_mask = var / var.sum() <= tau
    keep = np.flatnonzero(keep_mask)
    dropped = tuple(int(j) for j in np.flatnonzero(~keep_mask))
    if len(keep) == 0:
        raise AnalysisError(
            f"{m} would drop every one of the {d} columns of {name} (variance shares above {tau}); raise the threshold"
        )
    if m == "standardize":
        return Preprocessor(m, d, keep, dropped, x[:, keep].mean(0), np.sqrt(var[keep]))
    return Preprocessor(m, d, keep, dropped)


def preprocess(
    X: object,
    method: object = "none",
    *,
    threshold: float = DEFAULT_OUTLIER_SHARE,
    name: str = "X",
    quantile: float = DEFAULT_PLATONIC_QUANTILE,
    exact_quantile: bool = False,
    clip: float | None = None,
) -> tuple[np.ndarray, tuple[int, ...]]:
    """(X preprocessed by statistics of its own rows, the dropped column indices)."""
    p = fit_preprocess(
        X, method, threshold=threshold, name=name, quantile=quantile, exact_quantile=exact_quantile, clip=clip
    )
    return p.apply(X, name), p.dropped
