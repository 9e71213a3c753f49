"""The k-NN measures of platonic-representation (Huh et al. 2024, "The Platonic Representation
Hypothesis"; code: minyoungg/platonic-rep, ``metrics.py``): ``mutual_knn``, ``cycle_knn``,
``lcs_knn``, ``edit_distance_knn`` and ``cknna``.

Neighbours (all five): N_k(x; f) is the list of the k prompts other than x with the largest
cosine similarity to x under layer f, most similar first, ties by the smaller prompt index
(:func:`actstore.analysis.knn.knn_graph`, computed once per layer by ``prepare``).

How this differs from platonic-rep's ``compute_nearest_neighbors`` (commit dcd76ba):
* it ranks by the inner product ``feats @ feats.T`` of the rows it is given; its pipeline
  gives unit-length rows (``F.normalize`` in ``measure_alignment.compute_score``), where the
  inner product is the cosine. actstore always ranks by cosine, so the measures here equal
  platonic-rep's functions called on unit-length rows (preprocess ``platonic`` does that).
* self is excluded by writing -1e8 on the diagonal (so with rows of norm > 1e4, or
  normalize=False and strongly negative products, self could still be chosen); here self is
  excluded always.
* ties: ``argsort(descending=True)`` is not stable, so among prompts with exactly equal
  similarity (duplicate prompts, duplicate activations) the order and, at rank k, the set is
  unspecified; here ties go to the smaller index. The values agree whenever no tie reaches
  rank k (sets) or no tie sits inside the list (orders: lcs_knn, edit_distance_knn).
* cknna picks its neighbours with ``torch.topk`` on the kernel (diagonal -inf when
  unbiased), whose order among equal values is unspecified as well; with unbiased = False
  it may pick self (K_ii = 1 on unit rows) and here self is always the first neighbour.
* zero rows: F.normalize leaves them zero (all their similarities 0); here they are an error.

Measured against platonic-rep's own functions at commit dcd76ba3c950c1b197a2ae8b1c6713535c94ecf9
(metrics.py run in /tmp with torch 2.13 CPU, torchaudio's edit_distance stood in by a
Levenshtein function; 20 random pairs of related layers, n = 300, d = 64 and 80, k = 10,
float64 unit-length rows; see each measure's ``reference`` for the largest difference). The
reference's k-NN measures average in float32 (masks, tensors), so agreement to ~1e-7 there
means identical neighbour sets (one neighbour more or less moves a value by 1/(k n) = 3e-4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import AnalysisError, StopCheck
from ..knn import affinity_matrix, knn_graph, mutual_knn
from .registry import Measure, Option, Options, register

__all__ = [
    "CknnaLayer",
    "KnnLayer",
    "cycle_knn_value",
    "edit_distances",
    "lcs_lengths",
    "prepare_cknna",
    "prepare_knn",
]

_REF = "minyoungg/platonic-rep metrics.py @ dcd76ba3c950c1b197a2ae8b1c6713535c94ecf9"


def _k_option(minimum: int = 1) -> Option:
    return Option(
        "k", int, None, f"neighbours per prompt, an integer >= {minimum} and < n", minimum=minimum, required=True
    )


@dataclass(frozen=True, eq=False)
class KnnLayer:
    """A layer's cosine k-NN graph [n, k] (int64, most similar first) and its sorted keys
    row * n + neighbour [n k] (for set lookups)."""

    graph: np.ndarray
    keys: np.ndarray


def prepare_knn(X: np.ndarray, opts: Options, should_stop: StopCheck | None = None) -> KnnLayer:
    """The k-NN graph of X [n, d] (``opts["k"]`` neighbours) and its sorted keys."""
    g = knn_graph(X, opts["k"], should_stop=should_stop)
    n = g.shape[0]
    return KnnLayer(g, np.sort((np.arange(n, dtype=np.int64)[:, None] * n + g).ravel()))


def _graphs(layers: Sequence[np.ndarray], k: int, stop: StopCheck | None) -> list[np.ndarray]:
    return [knn_graph(x, k, should_stop=stop) for x in layers]


# --- mutual_knn -----------------------------------------------------------------------------


def _mutual_matrix(
    la: Sequence[np.ndarray], lb: Sequence[np.ndarray], opts: Options, stop: StopCheck | None
) -> np.ndarray:
    return affinity_matrix(_graphs(la, opts["k"], stop), _graphs(lb, opts["k"], stop))


register(
    Measure(
        name="mutual_knn",
        family="knn",
        direction="similarity",
        definition=(
            "M_k(X, Y) = 1/(k n) sum_i |N_k(i; X) & N_k(i; Y)|, in [0, 1]; mean k / (n - 1) "
            "under random neighbour sets. Equals actstore.analysis.knn.mutual_knn of the two "
            "layers' graphs."
        ),
        sensitive_to="which prompts are each prompt's k nearest (cosine) neighbours; not their order or distances",
        reference=(
            "Huh et al. 2024 (Platonic Representation Hypothesis), eq. of the mutual "
            f"nearest-neighbour metric; {_REF} AlignmentMetrics.mutual_knn: max |difference| "
            "6.3e-8 (float32 mean; identical neighbour sets), 20 random pairs, n = 300, k = 10, unit rows; "
            "its full pipeline (clip q = 0.95, unit rows, float32) vs preprocess platonic + "
            "mutual_knn: 6.8e-8"
        ),
        prepare=lambda X, o: prepare_knn(X, o),
        compare=lambda a, b, o: mutual_knn(a.graph, b.graph),
        prepare_cost=lambda n, d, o: float(n) * n * d,
        compare_cost=lambda n, p, q, o: 2.0 * n * o["k"] * np.log2(max(2, n * o["k"])),
        options=(_k_option(),),
        min_rows=lambda o: o["k"] + 1,
        matrix=_mutual_matrix,
    )
)


# --- cycle_knn ------------------------------------------------------------------------------


def cycle_knn_value(a: KnnLayer, b: KnnLayer) -> float:
    """1/n sum_i 1[i in N_k(j; A) for some j in N_k(i; B)] (A's keys, B's graph)."""
    gb = b.graph
    n = gb.shape[0]
    query = (gb * n + np.arange(n, dtype=np.int64)[:, None]).ravel()  # key (j, i)
    pos = np.minimum(np.searchsorted(a.keys, query), a.keys.size - 1)
    hit = (a.keys[pos] == query).reshape(gb.shape).any(axis=1)
    return float(hit.mean())


register(
    Measure(
        name="cycle_knn",
        family="knn",
        direction="similarity",
        definition=(
            "C_k(X, Y) = 1/n sum_i 1[ i in U_{j in N_k(i; Y)} N_k(j; X) ]: the share of prompts "
            "that get back to themselves by one step to a Y-neighbour and one step to an "
            "X-neighbour; in [0, 1]. Not symmetric, and C_k(X, X) < 1 when some prompt is "
            "nobody's neighbour's neighbour (the k-NN relation is not symmetric)."
        ),
        sensitive_to="whether Y-neighbourhoods lead back through X-neighbourhoods (cycle consistency)",
        reference=(
            f"Huh et al. 2024 (appendix, alternative metrics); {_REF} AlignmentMetrics.cycle_knn"
            "(feats_A = X, feats_B = Y), i.e. compute_knn_accuracy(knn_A[knn_B]): max |difference| "
            "2.8e-8 (float32 mean; 20 random pairs, n = 300, k = 10, unit rows)"
        ),
        prepare=lambda X, o: prepare_knn(X, o),
        compare=lambda a, b, o: cycle_knn_value(a, b),
        prepare_cost=lambda n, d, o: float(n) * n * d + 2.0 * n * o["k"] * np.log2(max(2, n * o["k"])),
        compare_cost=lambda n, p, q, o: 2.0 * n * o["k"] * np.log2(max(2, n * o["k"])),
        options=(_k_option(),),
        min_rows=lambda o: o["k"] + 1,
        symmetric=False,
    )
)


# --- lcs_knn and edit_distance_knn: dynamic programmes over the ordered lists, all rows at once


def lcs_lengths(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Length of the longest common subsequence of rows a[i] and b[i] (int arrays [n, k],
    [n, m]); int64 [n]. O(n k m), vectorised over rows."""
    n, k = a.shape
    m = b.shape[1]
    prev = np.zeros((n, m + 1), dtype=np.int64)
    for i in range(k):
        cur = np.zeros_like(prev)
        eq = a[:, i : i + 1] == b
        for j in range(m):
            cur[:, j + 1] = np.where(eq[:, j], prev[:, j] + 1, np.maximum(prev[:, j + 1], cur[:, j]))
        prev = cur
    return prev[:, m]


def edit_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Levenshtein distance (insert, delete, substitute: cost 1 each) between rows a[i] and
    b[i] (int arrays [n, k], [n, m]); int64 [n]. O(n k m), vectorised over rows."""
    n, k = a.shape
    m = b.shape[1]
    prev = np.broadcast_to(np.arange(m + 1, dtype=np.int64), (n, m + 1)).copy()
    for i in range(k):
        cur = np.empty_like(prev)
        cur[:, 0] = i + 1
        ne = (a[:, i : i + 1] != b).astype(np.int64)
        for j in range(m):
            cur[:, j + 1] = np.minimum(np.minimum(prev[:, j + 1] + 1, cur[:, j] + 1), prev[:, j] + ne[:, j])
        prev = cur
    return prev[:, m]


def _dp_cost(n: int, p: int, q: int, o: Options) -> float:
    return 4.0 * n * float(o["k"]) ** 2


register(
    Measure(
        name="lcs_knn",
        family="knn",
        direction="similarity",
        definition=(
            "L_k(X, Y) = 1/n sum_i LCS(N_k(i; X), N_k(i; Y)): the mean length of the longest "
            "common subsequence of the two ordered neighbour lists, in [0, k] (not divided by k,"
            " as in the reference)."
        ),
        sensitive_to="shared neighbours and their rank order",
        reference=(
            f"Huh et al. 2024 (appendix, alternative metrics); {_REF} AlignmentMetrics.lcs_knn "
            "(returns a 0-d float32 tensor; longest_ordinal_sequence): max |difference| 1.2e-7 "
            "(float32 mean; 20 random pairs, n = 300, k = 10, unit rows)"
        ),
        prepare=lambda X, o: prepare_knn(X, o),
        compare=lambda a, b, o: float(lcs_lengths(a.graph, b.graph).mean()),
        prepare_cost=lambda n, d, o: float(n) * n * d,
        compare_cost=_dp_cost,
        options=(_k_option(),),
        min_rows=lambda o: o["k"] + 1,
    )
)

register(
    Measure(
        name="edit_distance_knn",
        family="knn",
        direction="similarity",
        definition=(
            "E_k(X, Y) = 1 - 1/(k n) sum_i lev(N_k(i; X), N_k(i; Y)), lev the Levenshtein "
            "distance of the two ordered neighbour lists (insert, delete, substitute cost 1); "
            "in [0, 1], larger = more alike despite the name."
        ),
        sensitive_to="shared neighbours and their positions in the ranked lists",
        reference=(
            f"Huh et al. 2024 (appendix, alternative metrics); {_REF} "
            "AlignmentMetrics.edit_distance_knn (torchaudio.functional.edit_distance per row): "
            "max |difference| 0 (20 random pairs, n = 300, k = 10, unit rows)"
        ),
        prepare=lambda X, o: prepare_knn(X, o),
        compare=lambda a, b, o: float(1.0 - edit_distances(a.graph, b.graph).mean() / o["k"]),
        prepare_cost=lambda n, d, o: float(n) * n * d,
        compare_cost=_dp_cost,
        options=(_k_option(),),
        min_rows=lambda o: o["k"] + 1,
    )
)


# --- cknna ------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CknnaLayer:
    """A layer's neighbour mask as sorted keys row * n + column [n k] with the cosine kernel
    values K at those cells (float64), and its masked self-HSIC (``self_hsic``)."""

    n: int
    keys: np.ndarray
    values: np.ndarray
    self_hsic: float


def _masked_hsic(n: int, keys: np.ndarray, va: np.ndarray, vb: np.ndarray, unbiased: bool) -> float:
    """HSIC of A = M o K and B = M o L, both non-zero only on the cells ``keys`` (sorted
    row * n + column), with values va, vb there. A and B need not be symmetric:
      unbiased (diagonal of M empty): [tr(A B) + 1'A1 1'B1 / ((n-1)(n-2)) - 2/(n-2) 1'A B 1] / (n(n-3)),
      biased: tr(A H B H) = tr(A B) - (1'A B 1 + 1'B A 1) / n + 1'A1 1'B1 / n^2,
    with tr(A B) = sum_ij A_ij B_ji and 1'A B 1 = colsum(A) . rowsum(B)."""
    if keys.size == 0:  # no mutual neighbours at all: A = B = 0
        return 0.0
    rows, cols = keys // n, keys % n
    tkeys = cols * n + rows
    pos = np.minimum(np.searchsorted(keys, tkeys), keys.size - 1)
    back = keys[pos] == tkeys
    tr_ab = float(va[back] @ vb[pos[back]])
    sa, sb = float(va.sum()), float(vb.sum())
    cs_a, rs_b = np.bincount(cols, va, n), np.bincount(rows, vb, n)
    if unbiased:
        return (tr_ab + sa * sb / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(cs_a @ rs_b)) / (n * (n - 3))
    cs_b, rs_a = np.bincount(cols, vb, n), np.bincount(rows, va, n)
    return tr_ab - (float(cs_a @ rs_b) + float(cs_b @ rs_a)) / n + sa * sb / n**2


def prepare_cknna(X: np.ndarray, opts: Options, should_stop: StopCheck | None = None) -> CknnaLayer:
    """Mask cells and cosine kernel values of X [n, d] for cknna.

    unbiased: the k cosine neighbours of each row (self excluded, :func:`knn_graph`);
    biased: self and the first k - 1 of them (self has the largest cosine, 1; a duplicate row
    ties with it and is ranked after it). Raises AnalysisError when the masked self-HSIC is
    not positive (cknna undefined).
    """
    k, unbiased = opts["k"], opts["unbiased"]
    g = knn_graph(X, k, should_stop=should_stop)
    n = g.shape[0]
    if not unbiased:
        g = np.concatenate([np.arange(n, dtype=np.int64)[:, None], g[:, : k - 1]], axis=1)
    x = np.asarray(X, dtype=np.float64)  # knn_graph has checked: finite, no zero row
    xn = x / np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    vals = np.empty(g.shape)  # cosine of each row with its listed neighbours (float64)
    for t in range(g.shape[1]):
        vals[:, t] = np.einsum("ij,ij->i", xn, xn[g[:, t]])
    keys = (np.arange(n, dtype=np.int64)[:, None] * n + g).ravel()
    order = np.argsort(keys)
    keys, vals = keys[order], vals.ravel()[order]
    h = _masked_hsic(n, keys, vals, vals, unbiased)
    if not h > 0:
        raise AnalysisError(
            f"cknna is undefined for this layer: its neighbour-masked "
            f"{'unbiased ' if unbiased else ''}HSIC with itself is {h:.3g} (not positive)"
            f" over n = {n} prompts with k = {k}; use a larger k"
        )
    return CknnaLayer(n, keys, vals, h)


def _cknna_compare(a: CknnaLayer, b: CknnaLayer, o: Options) -> float:
    common, ia, ib = np.intersect1d(a.keys, b.keys, assume_unique=True, return_indices=True)
    kl = _masked_hsic(a.n, common, a.values[ia], b.values[ib], o["unbiased"])
    return kl / (float(np.sqrt(a.self_hsic * b.self_hsic)) + float(o["eps"]))


register(
    Measure(
        name="cknna",
        family="knn",
        direction="similarity",
        definition=(
            "Mutual-neighbour CKA. K, L: cosine kernels of X, Y; M_ij = 1 when j is among i's k "
            "neighbours under both (unbiased: self excluded; biased: self counted as the first "
            "neighbour); A_M = M o K. CKNNA = HSIC(M o K, M o L) / (sqrt(HSIC(M_K o K, M_K o K) "
            "HSIC(M_L o L, M_L o L)) + eps), HSIC the unbiased estimator (Song et al. 2012, as "
            "METHODS.md's HSIC1 but on these non-symmetric kernels: tr(A B) = sum A_ij B_ji, "
            "1'A B 1) or, with unbiased = false, tr(A H B H). Needs k >= 2, n >= max(k + 1, 4)."
        ),
        sensitive_to="the kernel values on pairs that are mutual neighbours in both layers (local CKA)",
        reference=(
            f"Huh et al. 2024, appendix A (CKNNA); {_REF} AlignmentMetrics.cknna (topk = k, "
            "distance_agnostic = False; its denominator has + 1e-6, here the option eps, default "
            "0): max |difference| 2.2e-16 (unbiased) and 5.6e-16 (biased) with eps = 1e-6, 5.5e-5 "
            "and 6.5e-10 with eps = 0 (20 random pairs, n = 300, k = 10, float64 unit rows). "
            "This follows the code (HSIC of the neighbour-masked kernels), which produced the "
            "published numbers; the paper states CKNNA as CKA's alignment sum restricted to "
            "mutual neighbours i != j, and its centring of the masked kernels was not checked "
            "against the code here. The reference's topk < 2 check comes before its topk = None "
            "default (k = n - 1), so k is required; distance_agnostic = True fails there (a "
            "matrix where a scalar is needed) and is not offered."
        ),
        prepare=lambda X, o: prepare_cknna(X, o),
        compare=_cknna_compare,
        prepare_cost=lambda n, d, o: float(n) * n * d + 2.0 * n * o["k"] * d,
        compare_cost=lambda n, p, q, o: 4.0 * n * o["k"] * np.log2(max(2, n * o["k"])),
        options=(
            _k_option(2),
            Option(
                "unbiased",
                bool,
                True,
                "unbiased HSIC with self excluded from the neighbours "
                "(the reference's default), or the biased HSIC with self included",
            ),
            Option(
                "eps", float, 0.0, "added to the denominator; 1e-6 reproduces platonic-rep's value exactly", minimum=0.0
            ),
        ),
        min_rows=lambda o: max(o["k"] + 1, 4),
    )
)
