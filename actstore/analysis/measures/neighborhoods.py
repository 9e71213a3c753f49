"""ReSi's neighbourhood measures (Klabunde et al. 2023 survey, sec. 4.6; ReSi's
``repsim/measures/nearest_neighbor.py``): ``jaccard_similarity``,
``second_order_cosine_similarity``, ``rank_similarity`` and ``joint_rank_jaccard_similarity``
(ReSi registers the first three as classes JaccardSimilarity, SecondOrderCosineSimilarity,
RankSimilarity; the fourth is a function of that module without a class).

Neighbours: N_k(i; X) is the list of the k prompts j != i with the smallest cosine distance
to x_i (raw rows, not centred), most similar first. ReSi uses cosine by default (its
``inner="cosine"``, fixed for the second-order measure); actstore follows that and uses
:func:`actstore.analysis.knn.knn_graph`, once per layer in ``prepare``. Differences from ReSi's
``top_k_neighbors`` (sklearn NearestNeighbors with k + 1 neighbours, first column dropped):
self is always excluded here, while ReSi drops the first column, which is another prompt when
a duplicate row ties with self at distance 0; ties go to the smaller index here and are
unspecified there; a zero row is an error here (cosine undefined). Values agree whenever no
tie reaches rank k (Jaccard) or sits inside a list (rank measures).

Ranks: r_i(j; X) = position of j in N_k(i; X), 1 for the nearest.

Checked against ReSi's functions at commit 24ab9e5055c71527445b0b196f5872f3cbe9a020
(nearest_neighbor.py from a scratch copy, sklearn 1.9; 10 random pairs of related layers,
n = 200, d = 48 and 64, k = 10 and 5, float64); largest difference in each ``reference``.
Memory: a prepared layer is its graph [n, k] (and, for the second-order measure, its unit
rows [n, d] float64); compare works in row blocks, so any n that knn_graph handles is fine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import AnalysisError
from ..knn import knn_graph
from .registry import Measure, Option, Options, register

__all__ = [
    "NeighbourLayer",
    "jaccard_values",
    "overlap_terms",
    "prepare_neighbours",
    "rank_values",
    "second_order_values",
]

_RESI = "mklabunde/resi @ 24ab9e5055c71527445b0b196f5872f3cbe9a020 repsim/measures/nearest_neighbor.py"
_BLOCK = 1 << 22  # elements of one gathered block in second_order_values


@dataclass(frozen=True, eq=False)
class NeighbourLayer:
    """A layer's cosine k-NN graph [n, k] (int64, nearest first) and, when asked for, its
    float64 unit-length rows [n, d]."""

    graph: np.ndarray
    unit_rows: np.ndarray | None = None


def prepare_neighbours(X: np.ndarray, k: int, with_rows: bool = False) -> NeighbourLayer:
    """The k-NN graph of X [n, d] (and its unit rows when ``with_rows``)."""
    g = knn_graph(X, k)
    if not with_rows:
        return NeighbourLayer(g)
    Xf = np.asarray(X, dtype=np.float64)
    return NeighbourLayer(g, Xf / np.linalg.norm(Xf, axis=1, keepdims=True))


def overlap_terms(ga: np.ndarray, gb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For graphs ga, gb [n, k]: ``matched`` bool [n, k] (ga[i, m] is also in gb[i]) and
    ``rank_b`` int [n, k] (its 1-based rank in gb[i]; meaningful where matched)."""
    eq = ga[:, :, None] == gb[:, None, :]
    return eq.any(axis=2), eq.argmax(axis=2) + 1


def jaccard_values(ga: np.ndarray, gb: np.ndarray) -> np.ndarray:
    """float64 [n]: |N_i & N'_i| / |N_i | N'_i| per prompt."""
    matched, _ = overlap_terms(ga, gb)
    inter = matched.sum(axis=1)
    values: np.ndarray = inter / (2 * ga.shape[1] - inter)
    return values


def rank_values(ga: np.ndarray, gb: np.ndarray) -> np.ndarray:
    """float64 [n]: rank similarity per prompt, 0 where the two lists share no prompt."""
    matched, rb = overlap_terms(ga, gb)
    ra = np.arange(1, ga.shape[1] + 1)[None, :]
    terms = np.where(matched, 2.0 / ((1.0 + np.abs(ra - rb)) * (ra + rb)), 0.0)
    shared = matched.sum(axis=1)
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, ga.shape[1] + 1))])
    vmax = harmonic[shared]
    values: np.ndarray = np.divide(terms.sum(axis=1), vmax, out=np.zeros(ga.shape[0]), where=shared > 0)
    return values


def second_order_values(a: NeighbourLayer, b: NeighbourLayer, values: str) -> np.ndarray:
    """float64 [n]: cos(s_i, s'_i) per prompt, s_i the cosine similarities (``values``
    "similarity") or cosine distances ("distance") of x_i to the prompts of
    U_i = N_i | N'_i under layer a, s'_i the same under layer b."""
    if a.unit_rows is None or b.unit_rows is None:
        raise AnalysisError(
            "second-order cosine similarity needs layers prepared with their "
            "unit rows (prepare_neighbours with with_rows=True)"
        )
    ga, gb, Ua, Ub = a.graph, b.graph, a.unit_rows, b.unit_rows
    n, k = ga.shape
    idx = np.concatenate([ga, gb], axis=1)  # [n, 2k]; gb's entries already in ga are masked
    keep = np.concatenate([np.ones((n, k), bool), ~overlap_terms(gb, ga)[0]], axis=1)
    out = np.empty(n)
    rows = max(1, _BLOCK // (2 * k * max(Ua.shape[1], Ub.shape[1])))
    for s in range(0, n, rows):
        e = min(n, s + rows)
        block = idx[s:e]
        sa = np.einsum("id,imd->im", Ua[s:e], Ua[block])
        sb = np.einsum("id,imd->im", Ub[s:e], Ub[block])
        if values == "distance":
            sa, sb = 1.0 - sa, 1.0 - sb
        m = keep[s:e]
        num = (m * sa * sb).sum(axis=1)
        den = np.sqrt((m * sa * sa).sum(axis=1) * (m * sb * sb).sum(axis=1))
        bad = np.flatnonzero(den == 0)
        if bad.size:
            raise AnalysisError(
                f"prompt {s + bad[0]}: its {values} vector over the joint "
                f"neighbours is zero, so its cosine is undefined"
            )
        out[s:e] = num / den
    return out


def _k_option() -> Option:
    return Option("k", int, 10, "neighbours per prompt, an integer >= 1 and < n (ReSi's default 10)", minimum=1)


def _graph_only(X: np.ndarray, o: Options) -> np.ndarray:
    return prepare_neighbours(X, o["k"]).graph


_COMMON: dict[str, Any] = {
    "family": "neighborhoods",
    "direction": "similarity",
    "prepare": _graph_only,
    "prepare_cost": lambda n, d, o: float(n) * n * d,
    "compare_cost": lambda n, p, q, o: 3.0 * n * o["k"] * o["k"],
    "min_rows": lambda o: o["k"] + 1,
}

register(
    Measure(
        name="jaccard_similarity",
        definition=(
            "J_k(X, Y) = 1/n sum_i |N_k(i; X) & N_k(i; Y)| / |N_k(i; X) | N_k(i; Y)|, in "
            "[0, 1]. Cosine neighbours of the raw rows (no centring)."
        ),
        sensitive_to="which prompts are each prompt's k nearest (cosine) neighbours; not their "
        "order, not distances; not rotations or isotropic scale, but translations",
        reference=(
            "Klabunde et al. 2023 survey eq. of Jaccard similarity (after Schumacher et al. "
            f"2021); {_RESI} jaccard_similarity (class JaccardSimilarity): max |difference| "
            "0.0 (identical neighbour lists)."
        ),
        compare=lambda a, b, o: float(jaccard_values(a, b).mean()),
        options=(_k_option(),),
        **_COMMON,
    )
)

register(
    Measure(
        name="rank_similarity",
        definition=(
            "R_k(X, Y) = 1/n sum_i v_i, v_i = 1/v_max(K_i) sum_{j in N_k(i; X) & N_k(i; Y)} "
            "2 / ((1 + |r_i(j; X) - r_i(j; Y)|) (r_i(j; X) + r_i(j; Y))), K_i = |N_k(i; X) & "
            "N_k(i; Y)|, v_max(K) = sum_{m=1..K} 1/m; v_i = 0 when K_i = 0. In [0, 1]."
        ),
        sensitive_to="the shared k nearest (cosine) neighbours and how close their ranks are; "
        "a shared neighbour near the top counts most",
        reference=(
            "Wang et al. 2020 (rank similarity); Klabunde et al. 2023 survey eq.; "
            f"{_RESI} rank_similarity (class RankSimilarity): same definition, max "
            "|difference| 0.0 (identical neighbour lists)."
        ),
        compare=lambda a, b, o: float(rank_values(a, b).mean()),
        options=(_k_option(),),
        **_COMMON,
    )
)

register(
    Measure(
        name="joint_rank_jaccard_similarity",
        definition=(
            "JR_k(X, Y) = 1/n sum_i J_i v_i with J_i the per-prompt Jaccard term of "
            "jaccard_similarity and v_i the per-prompt term of rank_similarity. In [0, 1]."
        ),
        sensitive_to="both the overlap of the k nearest (cosine) neighbours and the agreement of their ranks",
        reference=(
            "Wang et al. 2020 (joint rank and Jaccard similarity); Klabunde et al. 2023 "
            f"survey; {_RESI} joint_rank_jaccard_similarity (a function; ReSi registers no "
            "class for it): same definition, max |difference| 6.9e-18."
        ),
        compare=lambda a, b, o: float((jaccard_values(a, b) * rank_values(a, b)).mean()),
        options=(_k_option(),),
        **_COMMON,
    )
)

register(
    Measure(
        name="second_order_cosine_similarity",
        family="neighborhoods",
        direction="similarity",
        definition=(
            "SOC_k(X, Y) = 1/n sum_i cos(s_i, s'_i), U_i = N_k(i; X) | N_k(i; Y), "
            "s_i = (cos(x_i, x_j))_{j in U_i}, s'_i = (cos(y_i, y_j))_{j in U_i} (values "
            "similarity, the paper's; values distance uses 1 - cos, as ReSi's code). "
            "In [-1, 1]; 1 for identical inputs."
        ),
        sensitive_to="the cosine similarities of each prompt to the union of its k nearest neighbours in both layers",
        reference=(
            "Hamilton et al. 2016 (second-order similarity); Klabunde et al. 2023 survey eq. "
            f"(cosine similarities); {_RESI} second_order_cosine_similarity (class "
            "SecondOrderCosineSimilarity) compares cosine distances (sklearn "
            "pairwise_distances) instead: values distance vs ReSi: max |difference| 2.2e-16. "
            "Default follows the paper."
        ),
        prepare=lambda X, o: prepare_neighbours(X, o["k"], with_rows=True),
        compare=lambda a, b, o: float(second_order_values(a, b, o["values"]).mean()),
        prepare_cost=lambda n, d, o: float(n) * n * d + 2.0 * n * d,
        compare_cost=lambda n, p, q, o: 4.0 * n * o["k"] * (p + q) + 3.0 * n * o["k"] * o["k"],
        options=(
            _k_option(),
            Option(
                "values",
                str,
                "similarity",
                "what s_i holds: cosine similarities (paper) or cosine distances (ReSi's code)",
                choices=("similarity", "distance"),
            ),
        ),
        min_rows=lambda o: o["k"] + 1,
    )
)
