"""ReSi's descriptive-statistics measures (Klabunde et al. 2023 survey, sec. 4.7; ReSi's
``repsim/measures/statistics.py``): ``magnitude_difference``, ``concentricity_difference`` and
``uniformity_difference`` (ReSi's classes MagnitudeDifference, ConcentricityDifference,
UniformityDifference). Each summarises a layer by one number, once, in ``prepare``; ``compare``
is the absolute difference of two numbers. They are distances (0 = same statistic), and two
very different layers can have the same statistic.

No preprocessing, as in ReSi: raw rows, not centred, not normalised.

Checked against ReSi's functions at commit 24ab9e5055c71527445b0b196f5872f3cbe9a020
(statistics.py from a scratch copy, sklearn 1.9; 10 random pairs, n = 200, d = 48 and 64,
float64); largest difference in each ``reference``. Memory: uniformity works on n x n blocks of
squared distances (at most 2048 rows at a time); the others are O(n d).
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from ..errors import AnalysisError
from .registry import Measure, Option, register

__all__ = ["concentricity", "magnitude", "uniformity"]

_RESI = "mklabunde/resi @ 24ab9e5055c71527445b0b196f5872f3cbe9a020 repsim/measures/statistics.py"
_ROWS = 2048


def magnitude(X: np.ndarray) -> float:
    """|mean_i x_i|_2 of X [n, d] (same units as X)."""
    return float(np.linalg.norm(np.asarray(X, dtype=np.float64).mean(axis=0)))


def concentricity(X: np.ndarray) -> float:
    """mean_i cos(x_i, mean_j x_j) of X [n, d], in [-1, 1]. A zero row or a zero mean raises
    AnalysisError (cosine undefined)."""
    Xf = np.asarray(X, dtype=np.float64)
    mu = Xf.mean(axis=0)
    norms = np.linalg.norm(Xf, axis=1)
    mnorm = np.linalg.norm(mu)
    if mnorm == 0:
        raise AnalysisError("the mean row of the layer is zero; concentricity (cosine to the mean) is undefined")
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise AnalysisError(f"row {zero[0]} is all zeros; its cosine to the mean is undefined")
    return float(np.mean((Xf @ mu) / (norms * mnorm)))


def uniformity(X: np.ndarray, t: float = 2.0, pairs: str = "all") -> float:
    """log( mean over pairs (i, j) of exp(-t |x_i - x_j|^2) ) of X [n, d] (natural log, <= 0).

    pairs "all": the n^2 ordered pairs, i = j included (ReSi and the survey); "distinct": the
    n (n - 1) pairs i != j (Wang & Isola 2020's code, ``torch.pdist``). Computed with
    logsumexp, so it stays finite when every exp underflows a double (large activations).
    """
    Xf = np.asarray(X, dtype=np.float64)
    Xf = Xf - Xf.mean(axis=0, keepdims=True)
    n = Xf.shape[0]
    sq = np.einsum("ij,ij->i", Xf, Xf)
    parts = []
    for s in range(0, n, _ROWS):
        e = min(n, s + _ROWS)
        D2 = np.maximum(sq[s:e, None] + sq[None, :] - 2.0 * Xf[s:e] @ Xf.T, 0.0)
        E = -t * D2
        rows = np.arange(e - s)
        E[rows, s + rows] = -np.inf if pairs == "distinct" else 0.0
        parts.append(logsumexp(E))
    count = n * n if pairs == "all" else n * (n - 1)
    return float(logsumexp(parts) - np.log(count))


register(
    Measure(
        name="magnitude_difference",
        family="statistics",
        direction="distance",
        definition="| |mean_i x_i|_2 - |mean_i y_i|_2 |: the difference of the norms of the mean rows.",
        sensitive_to="the length of the mean activation (its offset from the origin); nothing of "
        "the geometry around it",
        reference=(
            "Klabunde et al. 2023 survey (magnitude, after Wang et al. 2020); "
            f"{_RESI} magnitude_difference (class MagnitudeDifference): same definition, "
            "max |difference| 0.0."
        ),
        prepare=lambda X, o: magnitude(X),
        compare=lambda a, b, o: abs(a - b),
        prepare_cost=lambda n, d, o: 2.0 * n * d,
        compare_cost=lambda n, p, q, o: 1.0,
        min_rows=lambda o: 1,
    )
)

register(
    Measure(
        name="concentricity_difference",
        family="statistics",
        direction="distance",
        definition=(
            "| c(X) - c(Y) |, c(X) = 1/n sum_i cos(x_i, mean_j x_j): the difference of the "
            "mean cosine of each row to the mean row. In [0, 2]."
        ),
        sensitive_to="how tightly the rows point in the direction of their mean (a cone); not scale or rotation",
        reference=(
            "Klabunde et al. 2023 survey (concentricity, after Wang et al. 2020); "
            f"{_RESI} concentricity_difference (class ConcentricityDifference): same "
            "definition, max |difference| 2.2e-16."
        ),
        prepare=lambda X, o: concentricity(X),
        compare=lambda a, b, o: abs(a - b),
        prepare_cost=lambda n, d, o: 4.0 * n * d,
        compare_cost=lambda n, p, q, o: 1.0,
        min_rows=lambda o: 1,
    )
)

register(
    Measure(
        name="uniformity_difference",
        family="statistics",
        direction="distance",
        definition=(
            "| u(X) - u(Y) |, u(X) = log( 1/|P| sum_{(i,j) in P} exp(-t |x_i - x_j|^2) ), "
            "P all n^2 ordered pairs (pairs all; ReSi, the survey) or the n (n - 1) pairs "
            "i != j (pairs distinct; Wang & Isola's code). Raw rows (Wang & Isola apply it "
            "to unit-length rows; ReSi and actstore do not normalise)."
        ),
        sensitive_to="how evenly the rows spread at the length scale 1/sqrt(t); with activations "
        "of large norm every exp underflows and pairs all gives u = -log n for any layer",
        reference=(
            "Wang & Isola 2020 (uniformity loss); Klabunde et al. 2023 survey eq. (i = j "
            f"included); {_RESI} uniformity_difference (class UniformityDifference; t fixed "
            "at 2 there): pairs all vs ReSi: max |difference| 8.9e-16 (rows scaled so "
            "the exps do not underflow); pairs distinct vs a direct scipy pdist formula: "
            "1.8e-15."
        ),
        prepare=lambda X, o: uniformity(X, o["t"], o["pairs"]),
        compare=lambda a, b, o: abs(a - b),
        prepare_cost=lambda n, d, o: float(n) * n * d + 4.0 * n * n,
        compare_cost=lambda n, p, q, o: 1.0,
        options=(
            Option(
                "t",
                float,
                2.0,
                "scale of the Gaussian potential exp(-t |x_i - x_j|^2), in 1 / (activation units)^2 (ReSi's fixed 2)",
                minimum=0.0,
            ),
            Option(
                "pairs",
                str,
                "all",
                "which pairs are averaged: all n^2 (i = j included, ReSi) or distinct (i != j, Wang & Isola)",
                choices=("all", "distinct"),
            ),
        ),
    )
)
