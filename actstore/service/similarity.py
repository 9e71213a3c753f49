"""Similarity queries: nearest neighbours, mutual k-NN, affinity matrices, CKA and CKA matrices.

Names mirror the GraphQL fields in snake_case. Heavy answers (everything but nearest
neighbours) are cached in the results table (see :mod:`.results`); their key is built from
the arguments and the versions of every stored layer of both models, before any prompt set
is read, so a cached answer costs no scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from actstore import analysis
from actstore.analysis.results import DiagonalTest
from actstore.config import Settings
from actstore.errors import InvalidInput, LimitExceeded
from actstore.layers import LayerRef
from actstore.store import Store
from actstore.store.knn import METRICS

from . import engines
from .boundary import service_boundary
from .encoders import TextEncoders
from .precision import check_precision
from .preprocessing import Prep, check_prep
from .reads import Reads, worst_recall
from .results import ResultCache, result_type
from .work import Cost, affinity_cost, check_cancelled, check_length, cka_cost, cka_matrix_cost, stop_check

__all__ = ["AffinityMatrixByDataset", "AffinityMatrixResult", "CkaByDataset", "CkaMatrixByDataset", "CkaResult", "DatasetCount", "MutualKnnByDataset", "MutualKnnResult", "Neighbor",
           "Similarity", "SimilarityMatrixResult", "mixed_warning"]



@dataclass(frozen=True)
class DatasetCount:
    """One dataset of a similarity answer's corpus and how many of its prompts were used."""

    name: str
    n: int


@dataclass(frozen=True)
class CkaByDataset:
    """CKA over the prompts of one dataset only (``n`` of them); ``value`` None when the
    dataset has too few prompts (debiased CKA needs 4, biased 2); ``p_value`` from the same
    number of permutations as the pooled answer (None without)."""

    dataset: str
    n: int
    value: float | None
    p_value: float | None = None


@dataclass(frozen=True)
class CkaMatrixByDataset:
    """A CKA matrix over the prompts of one dataset only (``n`` of them); ``values`` None when
    the dataset has too few prompts (debiased CKA needs 4, biased 2)."""

    dataset: str
    n: int
    values: list[list[float]] | None


@dataclass(frozen=True)
class MutualKnnByDataset:
    """Mutual k-NN over the prompts of one dataset only (``n`` of them; neighbours are searched
    within the dataset); ``value`` and ``null_mean`` None when the dataset has k or fewer."""

    dataset: str
    n: int
    value: float | None
    null_mean: float | None


@dataclass(frozen=True)
class AffinityMatrixByDataset:
    """An affinity matrix over the prompts of one dataset only (neighbours searched within
    it); ``values``, ``null_mean`` and ``argmax`` None when the dataset has k or fewer prompts."""

    dataset: str
    n: int
    values: list[list[float]] | None
    null_mean: float | None
    argmax: list[int] | None


def mixed_warning(datasets: Sequence[DatasetCount]) -> str | None:
    """The warning a similarity answer over several datasets carries (None for one)."""
    if len(datasets) < 2:
        return None
    return (f"mixes {len(datasets)} datasets; cross-model similarity over mixed corpora is inflated by "
            f"between-corpus differences; the permutation null is stratified by dataset; ask byDataset: true "
            f"for per-dataset values")


@dataclass(frozen=True)
class Neighbor:
    """One nearest neighbour: ``score`` is the cosine or inner product (larger is nearer) or
    the Euclidean distance for l2 (smaller is nearer); ``label`` and ``dataset`` are the
    neighbour prompt's."""

    rank: int
    prompt_id: int
    score: float
    text: str | None
    label: int | None = None
    dataset: str | None = None


@result_type
@dataclass(frozen=True)
class MutualKnnResult:
    """Mutual k-NN of two layers over ``n`` shared prompts; ``null_mean`` = k / (n - 1);
    ``recall``: recall@k of approximate k-NN graphs against exact search on a sample (the
    worse layer), None when both graphs are exact; ``preprocess`` the preprocessing applied
    and ``dropped_a`` / ``dropped_b`` the column indices it dropped from each layer;
    ``datasets`` the datasets of the shared prompts with their counts, ``warning`` set when
    several are mixed (every similarity answer carries both); ``by_dataset`` (asked with
    by_dataset=True) the value within each dataset, ``value`` being the pooled one."""

    value: float
    k: int
    n: int
    null_mean: float
    layer_a: int
    layer_b: int
    recall: float | None = None
    preprocess: str = "none"
    dropped_a: tuple[int, ...] = ()
    dropped_b: tuple[int, ...] = ()
    datasets: tuple[DatasetCount, ...] = ()
    warning: str | None = None
    by_dataset: tuple[MutualKnnByDataset, ...] | None = None


@result_type
@dataclass(frozen=True)
class CkaResult:
    """Linear CKA of two layers over ``n`` shared prompts; ``p_value`` from ``permutations``
    permutations (None without; stratified by dataset when several are mixed); ``preprocess``
    the preprocessing applied and ``dropped_a`` / ``dropped_b`` the column indices it dropped
    from each layer; ``datasets`` / ``warning`` as in MutualKnnResult; ``by_dataset`` (asked
    with by_dataset=True) CKA per dataset, ``value`` being the pooled one; ``precision`` the
    precision asked for (see :mod:`.precision`)."""

    value: float
    debiased: bool
    n: int
    layer_a: int
    layer_b: int
    permutations: int
    p_value: float | None
    preprocess: str = "none"
    dropped_a: tuple[int, ...] = ()
    dropped_b: tuple[int, ...] = ()
    datasets: tuple[DatasetCount, ...] = ()
    warning: str | None = None
    by_dataset: tuple[CkaByDataset, ...] | None = None
    precision: str = "auto"


@dataclass(frozen=True)
class LayerMatrix:
    """A value for every pair of ``layers_a`` x ``layers_b`` of two models (rows: model A);
    ``depths_*`` are the layers' relative depths; ``argmax[i]`` is the column of row i's
    largest value."""

    model_a: str
    model_b: str
    layers_a: list[int]
    layers_b: list[int]
    depths_a: list[float]
    depths_b: list[float]
    values: list[list[float]]
    n: int
    argmax: list[int]


@result_type
@dataclass(frozen=True)
class SimilarityMatrixResult(LayerMatrix):
    """Linear CKA of every layer pair over ``n`` shared prompts; ``key`` names the plot;
    ``dropped_a[i]`` / ``dropped_b[j]``: the columns ``preprocess`` dropped from each layer
    (None without preprocessing)."""

    debiased: bool
    key: str = ""
    preprocess: str = "none"
    dropped_a: list[list[int]] | None = None
    dropped_b: list[list[int]] | None = None
    datasets: tuple[DatasetCount, ...] = ()
    warning: str | None = None
    precision: str = "auto"
    by_dataset: tuple[CkaMatrixByDataset, ...] | None = None


@result_type
@dataclass(frozen=True)
class AffinityMatrixResult(LayerMatrix):
    """Mutual k-NN of every layer pair of two models with the generalized-diagonal test
    (NaN fields where the matrix is too small for it); ``recall`` as in MutualKnnResult (the
    worst layer); ``key`` names the plot; ``by_dataset`` the matrix within each dataset."""

    k: int
    null_mean: float
    diagonal: DiagonalTest
    key: str = ""
    recall: float | None = None
    preprocess: str = "none"
    dropped_a: list[list[int]] | None = None
    dropped_b: list[list[int]] | None = None
    datasets: tuple[DatasetCount, ...] = ()
    warning: str | None = None
    by_dataset: tuple[AffinityMatrixByDataset, ...] | None = None


def _int_arg(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidInput(f"{name} must be an integer, got {value!r}")
    return int(value)


@service_boundary
class Similarity:
    """Similarity of layers within and across models. Thread-safe."""

    def __init__(self, store: Store, settings: Settings, reads: Reads, results: ResultCache,
                 encoders: TextEncoders) -> None:
        self.store, self.settings, self.reads, self.results = store, settings, reads, results
        self.encoders = encoders

    def _check_k(self, k: int, n: int) -> int:
        k = _int_arg(k, "k")
        if k < 1 or k > self.settings.max_k or k >= n:
            raise InvalidInput(
                f"k must be between 1 and min({self.settings.max_k}, n - 1 = {n - 1}) for n = {n} prompts, got k={k}")
        return k

    def _knn_prompts(self, a: str, b: str, dataset: str | None, k: int) -> np.ndarray:
        """The shared prompts of two models, checked to have more than k of them."""
        ids = self.reads.shared(a, b, dataset)
        self._check_k(k, len(ids))
        return ids

    def _check_permutations(self, permutations: int) -> int:
        cap = self.settings.max_permutations
        if isinstance(permutations, bool) or not isinstance(permutations, (int, np.integer)) \
                or not 0 <= permutations <= cap:
            raise InvalidInput(f"permutations must be between 0 and {cap}, got {permutations}")
        return int(permutations)

    def _corpus(self, ids: np.ndarray) -> tuple[tuple[DatasetCount, ...], np.ndarray]:
        """(datasets with their counts, by name; dataset name of each of ``ids``)."""
        labels = np.empty(len(ids), dtype=object)
        counts = []
        for info in self.store.prompts.datasets():
            mask = np.isin(ids, self.store.prompts.ids(info.name))
            if mask.any():
                labels[mask] = info.name
                counts.append(DatasetCount(info.name, int(mask.sum())))
        return tuple(counts), labels

    def _check_lists(self, layers_a: Sequence[int] | None, layers_b: Sequence[int] | None) -> None:
        check_length(layers_a, "layersA", self.settings.max_layers)
        check_length(layers_b, "layersB", self.settings.max_layers)

    # ------------------------------------------------------------ neighbours
    def nearest_neighbors(self, at: LayerRef, prompt_id: int | None = None, vector: Sequence[float] | None = None,
                          text: str | None = None, k: int = 10, dataset: str | None = None, metric: str = "cosine",
                          labelled: bool | None = None) -> list[Neighbor]:
        """The k stored prompts nearest to a stored prompt, a raw vector or new text at one layer.

        A stored prompt is never its own neighbour. ``dataset`` restricts the answer to that
        dataset's prompts; ``labelled`` to labelled (True) or unlabelled (False) prompts.
        Layers of at least ``store.knn.ann_threshold`` prompts are searched through their
        approximate index (exact scores of re-ranked candidates; see actstore.store.knn).
        """
        given = [name for name, v in (("promptId", prompt_id), ("vector", vector), ("text", text)) if v is not None]
        if len(given) != 1:
            raise InvalidInput(f"give exactly one of promptId, vector or text (got {', '.join(given) or 'none'})")
        metric = str(metric).lower()
        if metric not in METRICS:
            raise InvalidInput(f"metric must be one of COSINE, L2, DOT, got {metric!r}")
        info, layer = self.reads.resolve(at)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.settings.max_k:
            raise InvalidInput(f"k must be between 1 and {self.settings.max_k} (and below n), got k={k}")
        knn = self.store.knn
        if prompt_id is not None:
            ids, scores = knn.of_prompts(info.key, layer, [int(prompt_id)], k, metric=metric, dataset=dataset,
                                         labelled=labelled)
            return self._neighbors(ids[0], scores[0])
        if vector is not None:
            query = np.asarray(vector, dtype=np.float64)
            if query.ndim != 1 or len(query) != info.d_model:
                raise InvalidInput(f"vector has {query.size} values, but model {info.key!r} has d_model={info.d_model}")
            if not np.isfinite(query).all():
                raise InvalidInput("vector contains NaN or inf")
            query = query.astype(np.float32)[None, :]
        else:
            if not text or not text.strip():
                raise InvalidInput("text must be non-empty")
            query = self.encoders.encode(info, layer, text)
        ids, scores = knn.search(info.key, layer, query, k, metric=metric, dataset=dataset, labelled=labelled)
        return self._neighbors(ids[0], scores[0])

    def _neighbors(self, ids: np.ndarray, scores: np.ndarray) -> list[Neighbor]:
        keep = ids >= 0
        prompts = {p.id: p for p in self.store.prompts.get(ids[keep])}
        return [Neighbor(rank=r + 1, prompt_id=int(i), score=float(s), text=prompts[int(i)].text,
                         label=prompts[int(i)].label, dataset=prompts[int(i)].dataset)
                for r, (i, s) in enumerate(zip(ids[keep], scores[keep]))]

    # ------------------------------------------------------------ mutual k-NN
    def mutual_knn(self, a: LayerRef, b: LayerRef, k: int = 10, dataset: str | None = None,
                   preprocess: str = "none", outlier_threshold: float | None = None,
                   by_dataset: bool = False) -> MutualKnnResult:
        """Mutual k-NN of two layers over their shared prompts (METHODS.md), with its null k/(n-1).

        From ``store.knn.ann_threshold`` shared prompts on, the k-NN graphs are approximate and
        ``recall`` says how well they match exact search. With ``preprocess`` other than none
        (see :mod:`.preprocessing`) the rows are preprocessed over the shared prompts and the
        graphs are exact. ``by_dataset`` adds the value within each dataset (see
        :meth:`_within_datasets`).
        """
        prep = check_prep(preprocess, outlier_threshold)
        by_dataset = _check_bool(by_dataset, "byDataset")
        ia, la = self.reads.resolve(a)
        ib, lb = self.reads.resolve(b)
        k = _int_arg(k, "k")
        query = {"op": "mutualKnn", "a": [ia.key, la], "b": [ib.key, lb], "k": k, "dataset": dataset, "corpus": 1,
                 "annThreshold": self.store.knn.ann_threshold, "byDataset": by_dataset, **prep.key()}

        def compute(_key: str) -> MutualKnnResult:
            ids = self._knn_prompts(ia.key, ib.key, dataset, k)
            n = len(ids)
            (ga, ra, da), (gb, rb, db) = self._graphs(prep, [(ia.key, la), (ib.key, lb)], ids, k)
            counts, labels = self._corpus(ids)
            per = None
            if by_dataset:
                per = tuple(
                    MutualKnnByDataset(c.name, c.n, None, None) if M is None
                    else MutualKnnByDataset(c.name, c.n, float(M[0, 0]), analysis.null_mean(k, c.n))
                    for c, M in self._within_datasets(prep, [(ia.key, la)], [(ib.key, lb)], ids, counts, labels, k))
            return MutualKnnResult(analysis.mutual_knn(ga, gb), k, n, analysis.null_mean(k, n), la, lb,
                                   recall=worst_recall([ra, rb]), preprocess=prep.name, dropped_a=da, dropped_b=db,
                                   datasets=counts, warning=mixed_warning(counts), by_dataset=per)

        def cost() -> Cost:
            n = len(self._knn_prompts(ia.key, ib.key, dataset, k))
            c = affinity_cost(n, k, [ia.d_model], [ib.d_model],
                              n >= self.store.knn.ann_threshold and not prep.active, op="mutualKnn")
            # within datasets: exact graphs, sum of n_i^2 <= n^2
            return Cost(c.flops * 2, c.what) if by_dataset else c

        return self.results.cached(query, self.reads.versions(ia, ib), compute, cost)

    def affinity_matrix(self, model_a: str, model_b: str, k: int = 10, dataset: str | None = None,
                        layers_a: Sequence[int] | None = None,
                        layers_b: Sequence[int] | None = None, preprocess: str = "none",
                        outlier_threshold: float | None = None, by_dataset: bool = False) -> AffinityMatrixResult:
        """Mutual k-NN of every layer pair of two models (one graph per layer), the
        generalized-diagonal test and the argmax path; ``preprocess`` as in :meth:`mutual_knn`
        (``dropped_*``: the dropped columns of each layer); ``by_dataset`` adds the matrix
        within each dataset (see :meth:`_within_datasets`)."""
        prep = check_prep(preprocess, outlier_threshold)
        by_dataset = _check_bool(by_dataset, "byDataset")
        self._check_lists(layers_a, layers_b)
        ia, ib = self.store.models.get(model_a), self.store.models.get(model_b)
        la, lb = self.reads.layer_list(ia, layers_a), self.reads.layer_list(ib, layers_b)
        k = _int_arg(k, "k")
        query = {"op": "affinityMatrix", "a": [ia.key, la], "b": [ib.key, lb], "k": k, "dataset": dataset, "corpus": 1,
                 "annThreshold": self.store.knn.ann_threshold, "byDataset": by_dataset, **prep.key()}

        def compute(key: str) -> AffinityMatrixResult:
            ids = self._knn_prompts(ia.key, ib.key, dataset, k)
            n = len(ids)
            graphs = self._graphs(prep, [(ia.key, l_) for l_ in la] + [(ib.key, l_) for l_ in lb], ids, k)
            ga, gb = graphs[:len(la)], graphs[len(la):]
            M = analysis.affinity_matrix([g for g, _, _ in ga], [g for g, _, _ in gb])
            counts, labels = self._corpus(ids)
            per = None
            if by_dataset:
                per = tuple(
                    AffinityMatrixByDataset(c.name, c.n, None, None, None) if Md is None
                    else AffinityMatrixByDataset(c.name, c.n, Md.tolist(), analysis.null_mean(k, c.n),
                                                 analysis.argmax_path(Md))
                    for c, Md in self._within_datasets(prep, [(ia.key, l_) for l_ in la], [(ib.key, l_) for l_ in lb],
                                                       ids, counts, labels, k))
            return AffinityMatrixResult(
                model_a=ia.key, model_b=ib.key, layers_a=la, layers_b=lb, values=M.tolist(), n=n,
                argmax=analysis.argmax_path(M), k=k, null_mean=analysis.null_mean(k, n), diagonal=_diagonal(M),
                depths_a=self.reads.depths(ia, la), depths_b=self.reads.depths(ib, lb), key=key,
                recall=worst_recall([r for _, r, _ in ga + gb]), preprocess=prep.name,
                dropped_a=[list(d) for _, _, d in ga] if prep.active else None,
                dropped_b=[list(d) for _, _, d in gb] if prep.active else None,
                datasets=counts, warning=mixed_warning(counts), by_dataset=per,
            )

        def cost() -> Cost:
            n = len(self._knn_prompts(ia.key, ib.key, dataset, k))
            c = affinity_cost(n, k, [ia.d_model] * len(la), [ib.d_model] * len(lb),
                              n >= self.store.knn.ann_threshold and not prep.active)
            return Cost(c.flops * 2, c.what) if by_dataset else c

        return self.results.cached(query, self.reads.versions(ia, ib), compute, cost)

    def _graphs(self, prep: Prep, layers: list[tuple[str, int]], ids: np.ndarray,
                k: int) -> list[tuple[np.ndarray, float | None, tuple[int, ...]]]:
        """(k-NN graph, recall, dropped columns) of each (model, layer): the cached graphs of
        the stored rows without preprocessing, else exact graphs of the preprocessed rows."""
        out = []
        for i, (model, layer) in enumerate(layers):
            check_cancelled(i, len(layers), "k-NN graphs")
            if not prep.active:
                g, r = self.reads.graph(model, layer, ids, k)
                out.append((g, r, ()))
                continue
            X, dropped = prep.one(self.reads.rows(model, layer, ids), f"layer {layer} of model {model!r}")
            out.append((analysis.knn_graph(X, k, should_stop=stop_check()), None, dropped))
        return out

    def _within_datasets(self, prep: Prep, layers_a: list[tuple[str, int]], layers_b: list[tuple[str, int]],
                         ids: np.ndarray, counts: Sequence[DatasetCount], labels: np.ndarray,
                         k: int) -> list[tuple[DatasetCount, np.ndarray | None]]:
        """The affinity matrix [len(layers_a), len(layers_b)] within each dataset of ``counts``:
        for each layer, the rows of the dataset's prompts (after ``prep``, fitted on all of
        ``ids`` as for the pooled value) and their exact k-NN graph among themselves. None for a
        dataset with k or fewer prompts (no k neighbours to find)."""
        rows = []
        for i, (model, layer) in enumerate(layers_a + layers_b):
            check_cancelled(i, len(layers_a) + len(layers_b), "rows per dataset")
            X, _ = prep.one(self.reads.rows(model, layer, ids), f"layer {layer} of model {model!r}")
            rows.append(X)
        out = []
        for c in counts:
            if c.n <= k:
                out.append((c, None))
                continue
            m = labels == c.name
            graphs = [analysis.knn_graph(X[m], k, should_stop=stop_check()) for X in rows]
            out.append((c, analysis.affinity_matrix(graphs[:len(layers_a)], graphs[len(layers_a):])))
        return out

    # ------------------------------------------------------------------- CKA
    def cka(self, a: LayerRef, b: LayerRef, debiased: bool = True, permutations: int = 0,
            dataset: str | None = None, seed: int = 0, preprocess: str = "none",
            outlier_threshold: float | None = None, by_dataset: bool = False,
            precision: str = "auto") -> CkaResult:
        """Linear CKA of two layers over their shared prompts; ``permutations`` > 0 adds a
        permutation-test p-value (1 + #{null >= observed}) / (1 + P), reproducible for a seed,
        whose null permutes prompts within each dataset when several are mixed.
        ``preprocess`` (see :mod:`.preprocessing`) is fitted on the shared prompts, per side.
        ``by_dataset`` adds CKA per dataset (on the same preprocessed rows, each dataset on its
        own prompts, with its own permutation test when ``permutations`` > 0). ``precision``:
        one of :data:`.precision.PRECISIONS` (default "auto")."""
        prep = check_prep(preprocess, outlier_threshold)
        permutations = self._check_permutations(permutations)
        precision = check_precision(precision)
        by_dataset = _check_bool(by_dataset, "byDataset")
        ia, la = self.reads.resolve(a)
        ib, lb = self.reads.resolve(b)
        query = {"op": "cka", "a": [ia.key, la], "b": [ib.key, lb], "debiased": bool(debiased),
                 "permutations": permutations, "dataset": dataset, "seed": seed if permutations else None,
                 "corpus": 1, "byDataset": by_dataset, "precision": precision, **prep.key()}

        def one(X: np.ndarray, Y: np.ndarray, strata: np.ndarray | None) -> tuple[float, float | None]:
            if permutations:
                t = analysis.cka_permutation_test(X, Y, permutations=permutations, seed=seed, debiased=debiased,
                                                  precision=precision, should_stop=stop_check(), strata=strata)
                return t.value, t.p_value
            return analysis.linear_cka(X, Y, debiased=debiased, precision=precision), None

        def compute(_key: str) -> CkaResult:
            ids = self.reads.shared(ia.key, ib.key, dataset)
            X, da = prep.one(self.reads.rows(ia.key, la, ids), f"layer {la} of model {ia.key!r}")
            Y, db = prep.one(self.reads.rows(ib.key, lb, ids), f"layer {lb} of model {ib.key!r}")
            counts, labels = self._corpus(ids)
            value, p = one(X, Y, labels if len(counts) > 1 else None)
            per = None
            if by_dataset:
                per = []
                for c in counts:
                    if c.n < (4 if debiased else 2):
                        per.append(CkaByDataset(c.name, c.n, None, None))
                        continue
                    mask = labels == c.name
                    v, pv = one(X[mask], Y[mask], None)
                    per.append(CkaByDataset(c.name, c.n, v, pv))
                per = tuple(per)
            return CkaResult(value, bool(debiased), len(ids), la, lb, permutations, p, preprocess=prep.name,
                             dropped_a=da, dropped_b=db, datasets=counts, warning=mixed_warning(counts),
                             by_dataset=per, precision=precision)

        def cost() -> Cost:
            n = len(self.reads.shared(ia.key, ib.key, dataset))
            c = cka_cost(n, ia.d_model, ib.d_model, permutations)
            # per dataset: sum of n_i^2 <= n^2, so at most the pooled cost again
            return Cost(c.flops * 2, c.what) if by_dataset else c

        return self.results.cached(query, self.reads.versions(ia, ib), compute, cost)

    def cka_matrix(self, model_a: str, model_b: str, debiased: bool = True, dataset: str | None = None,
                   layers_a: Sequence[int] | None = None, layers_b: Sequence[int] | None = None,
                   grid: int | None = None, preprocess: str = "none",
                   outlier_threshold: float | None = None, precision: str = "auto",
                   by_dataset: bool = False) -> SimilarityMatrixResult:
        """CKA of every layer pair of two models (or of a relative-depth grid of ``grid`` layers each);
        ``preprocess`` as in :meth:`cka`, per layer (``dropped_*``: each layer's dropped columns);
        ``precision`` one of :data:`.precision.PRECISIONS` (default "auto"); ``by_dataset`` adds the matrix of each
        dataset on its own prompts (same preprocessed rows)."""
        prep = check_prep(preprocess, outlier_threshold)
        precision = check_precision(precision)
        by_dataset = _check_bool(by_dataset, "byDataset")
        self._check_lists(layers_a, layers_b)
        if grid is not None and not isinstance(grid, bool) and isinstance(grid, int) and grid > self.settings.max_layers:
            raise LimitExceeded(f"grid = {grid} layers; this server allows at most {self.settings.max_layers} "
                                f"(ACTSTORE_MAX_LAYERS)")
        ia, ib = self.store.models.get(model_a), self.store.models.get(model_b)
        if grid is not None:
            if layers_a is not None or layers_b is not None:
                raise InvalidInput("give either grid or layersA/layersB, not both")
            la, lb = self.reads.grid(ia, grid), self.reads.grid(ib, grid)
        else:
            la, lb = self.reads.layer_list(ia, layers_a), self.reads.layer_list(ib, layers_b)
        query = {"op": "ckaMatrix", "a": [ia.key, la], "b": [ib.key, lb], "debiased": bool(debiased),
                 "dataset": dataset, "corpus": 1, "precision": precision, "byDataset": by_dataset, **prep.key()}

        def compute(key: str) -> SimilarityMatrixResult:
            ids = self.reads.shared(ia.key, ib.key, dataset)
            # On Ray when ACTSTORE_ENGINE / the size says so (service.engines); None: here.
            M = None if prep.active or by_dataset else engines.distributed_cka_matrix(
                self.settings, self.store, ia, la, ib, lb, ids, debiased)
            pa = [prep.one(self.reads.rows(ia.key, l_, ids), f"layer {l_} of model {ia.key!r}") for l_ in la] if M is None else []
            pb = [prep.one(self.reads.rows(ib.key, l_, ids), f"layer {l_} of model {ib.key!r}") for l_ in lb] if M is None else []
            xs, ys = [x for x, _ in pa], [y for y, _ in pb]
            check_cancelled()
            if M is None:
                M = analysis.cka_matrix(xs, ys, debiased=debiased, precision=precision, should_stop=stop_check())
            counts, labels = self._corpus(ids)
            per = None
            if by_dataset:
                per = []
                for c in counts:
                    m = labels == c.name
                    vals = None if c.n < (4 if debiased else 2) else analysis.cka_matrix(
                        [x[m] for x in xs], [y[m] for y in ys], debiased=debiased, precision=precision,
                        should_stop=stop_check()).tolist()
                    per.append(CkaMatrixByDataset(c.name, c.n, vals))
                per = tuple(per)
            return SimilarityMatrixResult(
                model_a=ia.key, model_b=ib.key, layers_a=la, layers_b=lb, values=M.tolist(), n=len(ids),
                argmax=analysis.argmax_path(M), depths_a=self.reads.depths(ia, la),
                depths_b=self.reads.depths(ib, lb), debiased=bool(debiased), key=key, preprocess=prep.name,
                dropped_a=[list(d) for _, d in pa] if prep.active else None,
                dropped_b=[list(d) for _, d in pb] if prep.active else None,
                datasets=counts, warning=mixed_warning(counts), precision=precision, by_dataset=per,
            )

        def cost() -> Cost:
            n = len(self.reads.shared(ia.key, ib.key, dataset))
            c = cka_matrix_cost(n, [ia.d_model] * len(la), [ib.d_model] * len(lb))
            return Cost(c.flops * 2, c.what) if by_dataset else c

        return self.results.cached(query, self.reads.versions(ia, ib), compute, cost)


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidInput(f"{name} must be true or false, got {value!r}")
    return bool(value)


def _diagonal(M: np.ndarray) -> DiagonalTest:
    """The diagonal test where it is defined; NaN fields for matrices too small for it."""
    if min(M.shape) < 2 or M.size - max(M.shape) < 2:
        nan = float("nan")
        return DiagonalTest(nan, nan, nan, nan, nan, 0, 0, M.shape[0] < M.shape[1])
    return analysis.diagonal_test(M)
