"""The result dataclasses of the analysis that other layers build on, declared once here.

They import nothing heavy (no torch, no scipy), so the service and the API can declare their
answers (which extend these) and derive GraphQL types from them without loading the
numerics; the functions that fill them live in :mod:`.diagonal`, :mod:`.bridges` and
:mod:`.probes`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BridgeFit",
    "BridgeRankSweep",
    "DiagonalTest",
    "NextTokenTransfer",
    "PairSummary",
    "ProbeTransfer",
    "ProbeTransferSweep",
]


@dataclass(frozen=True)
class DiagonalTest:
    """Welch test of on- vs off-generalized-diagonal cells.

    t_statistic: Welch t (on minus off); p_value: one-sided P(T >= t) with Welch-Satterthwaite
    degrees of freedom ``df``; n_on / n_off: cell counts; transposed: whether M was n1 < n2;
    log10_p: log10 of the exact p (finite where p underflows a double); p_value_is_bound: True
    when the exact p is below the smallest normal double and ``p_value`` is that bound
    (2.2250738585072014e-308; read "p < p_value").
    """

    on_diagonal_mean: float
    off_diagonal_mean: float
    t_statistic: float
    p_value: float
    df: float
    n_on: int
    n_off: int
    transposed: bool
    log10_p: float | None = None
    p_value_is_bound: bool = False


@dataclass(frozen=True)
class BridgeFit:
    """A bridge fitted on a training split and scored on a held-out split."""

    method: str
    rank: int | None
    alpha: float | None
    n_train: int
    n_test: int
    r2: float
    mean_cosine: float
    scale: float | None  # procrustes with scaling: the isotropic factor s; otherwise None


@dataclass(frozen=True)
class BridgeRankSweep:
    """Reduced-rank ridge at several ranks from one ridge fit: held-out r2 and mean cosine
    per rank (same order as ``ranks``), the full-rank ridge scores, and the alpha used."""

    ranks: tuple[int, ...]
    r2: tuple[float, ...]
    mean_cosine: tuple[float, ...]
    ridge_r2: float
    ridge_mean_cosine: float
    alpha: float
    n_train: int
    n_test: int


@dataclass(frozen=True)
class ProbeTransfer:
    """Accuracies (shares in [0, 1]) of probe transfer; n_bridge = prompts of the frozen bridge."""

    source_native: float
    target_native: float
    transferred: float
    task_specific: float
    chance: float
    n_train: int
    n_test: int
    n_bridge: int
    n_classes: int
    method: str
    rank: int | None
    alpha_frozen: float | None
    alpha_task: float | None


@dataclass(frozen=True)
class ProbeTransferSweep:
    """Probe transfer through reduced-rank ridge bridges at several ranks (same order as
    ``ranks``); ``ridge_*`` are the full-rank ridge bridges the low-rank ones are cut from."""

    ranks: tuple[int, ...]
    transferred: tuple[float, ...]
    task_specific: tuple[float, ...]
    source_native: float
    target_native: float
    chance: float
    ridge_transferred: float
    ridge_task_specific: float
    alpha_frozen: float
    alpha_task: float
    n_train: int
    n_test: int
    n_bridge: int
    n_classes: int


@dataclass(frozen=True)
class NextTokenTransfer:
    """Next-token probe transfer across tokenizers: top-1 / top-5 accuracies (shares)."""

    source_native_top1: float
    source_native_top5: float
    target_native_top1: float
    target_native_top5: float
    transferred_top1: float
    transferred_top5: float
    task_specific_top1: float
    task_specific_top5: float
    agreement_top1: float
    agreement_top5: float
    chance: float
    classes: tuple[str, ...]
    shared_tokens: int
    n_train: int
    n_test: int
    n_bridge: int
    method: str
    rank: int | None


@dataclass(frozen=True)
class PairSummary:
    """What an atlas reports for one model pair's layer-by-layer matrix M [m_a, m_b]
    (filled by :func:`actstore.analysis.atlas.pair_summary`).

    argmax: for each row (layer of model A) the column of its largest value, first on ties;
    argmax_depths: the relative depth (in [0, 1]) of that column's layer in model B;
    diagonal: the generalized-diagonal Welch test, NaN fields (n_on = n_off = 0) where it is
    undefined (a matrix with one row or column, or constant within both groups);
    max_value: the largest cell of M (same unit as M).
    """

    argmax: tuple[int, ...]
    argmax_depths: tuple[float, ...]
    diagonal: DiagonalTest
    max_value: float
