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
from actstore.errors import InvalidInput
from actstore.store import ModelInfo, Store

from . import engines
from .answering import Answers, answers
from .boundary import service_boundary
from .encoders import TextEncoders
from .preprocessing import Prep, check_prep
from .reads import Reads, worst_recall
from .requests import AffinityRequest, CkaMatrixRequest, CkaRequest, MutualKnnRequest, NeighborsRequest
from .results import Matrix, Plan, ResultCache, array_eq, result_type
from .work import Cost, affinity_cost, check_cancelled, cka_cost, cka_matrix_cost, stop_check

__all__ = [
    "AffinityMatrixByDataset",
    "AffinityMatrixResult",
    "CkaByDataset",
    "CkaMatrixByDataset",
    "CkaResult",
    "DatasetCount",
    "MutualKnnByDataset",
    "MutualKnnResult",
    "Neighbor",
    "Similarity",
    "SimilarityMatrixResult",
    "corpus",
    "mixed_warning",
]


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


@array_eq
@dataclass(frozen=True)
class CkaMatrixByDataset:
    """A CKA matrix over the prompts of one dataset only (``n`` of them); ``values`` None when
    the dataset has too few prompts (debiased CKA needs 4, biased 2)."""

    dataset: str
    n: int
    values: Matrix | None


@dataclass(frozen=True)
class MutualKnnByDataset:
    """Mutual k-NN over the prompts of one dataset only (``n`` of them; neighbours are searched
    within the dataset); ``value`` and ``null_mean`` None when the dataset has k or fewer."""

    dataset: str
    n: int
    value: float | None
    null_mean: float | None


@array_eq
@dataclass(frozen=True)
class AffinityMatrixByDataset:
    """An affinity matrix over the prompts of one dataset only (neighbours searched within
    it); ``values``, ``null_mean`` and ``argmax`` None when the dataset has k or fewer prompts."""

    dataset: str
    n: int
    values: Matrix | None
    null_mean: float | None
    argmax: list[int] | None


def mixed_warning(datasets: Sequence[DatasetCount]) -> str | None:
    """The warning a similarity answer over several datasets carries (None for one)."""
    if len(datasets) < 2:
        return None
    return (
        f"mixes {len(datasets)} datasets; cross-model similarity over mixed corpora is inflated by "
        f"between-corpus differences; the permutation null is stratified by dataset; ask byDataset: true "
        f"for per-dataset values"
    )


def corpus(store: Store, ids: np.ndarray) -> tuple[tuple[DatasetCount, ...], np.ndarray]:
    """(datasets of the prompts ``ids`` with their counts, by name; dataset name of each of ``ids``)."""
    labels = np.empty(len(ids), dtype=object)
    counts = []
    for info in store.prompts.datasets():
        mask = np.isin(ids, store.prompts.ids(info.name))
        if mask.any():
            labels[mask] = info.name
            counts.append(DatasetCount(info.name, int(mask.sum())))
    return tuple(counts), labels


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
    values: Matrix
    n: int
    argmax: list[int]


@result_type
@dataclass(frozen=True)
class SimilarityMatrixResult(LayerMatrix):
    """A similarity measure (linear CKA for ckaMatrix) of every layer pair over ``n`` shared
    prompts; ``key`` names the plot; ``dropped_a[i]`` / ``dropped_b[j]``: the columns
    ``preprocess`` dropped from each layer (None without preprocessing). ``measure`` names the
    registered measure (ckaMatrix: unbiased_cka, or cka when not debiased; ``debiased`` is
    true only for unbiased_cka), ``direction`` whether larger (similarity) or smaller
    (distance) means more alike (``argmax`` then points at the most alike column), ``k`` the
    neighbours of a k-NN measure and ``options`` every option of the measure as JSON text."""

    debiased: bool
    key: str = ""
    preprocess: str = "none"
    dropped_a: list[list[int]] | None = None
    dropped_b: list[list[int]] | None = None
    datasets: tuple[DatasetCount, ...] = ()
    warning: str | None = None
    precision: str = "auto"
    by_dataset: tuple[CkaMatrixByDataset, ...] | None = None
    measure: str = "unbiased_cka"
    direction: str = "similarity"
    k: int | None = None
    options: str = "{}"


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


@service_boundary
class Similarity(Answers):
    """Similarity of layers within and across models. Thread-safe."""

    def __init__(
        self, store: Store, settings: Settings, reads: Reads, results: ResultCache, encoders: TextEncoders
    ) -> None:
        self.store, self.settings, self.reads, self.results = store, settings, reads, results
        self.encoders = encoders

    nearest_neighbors = answers(NeighborsRequest)
    mutual_knn = answers(MutualKnnRequest)
    affinity_matrix = answers(AffinityRequest)
    cka = answers(CkaRequest)
    cka_matrix = answers(CkaMatrixRequest)

    def _check_k(self, k: int, n: int) -> int:
        if k >= n:
            raise InvalidInput(
                f"k must be between 1 and min({self.settings.max_k}, n - 1 = {n - 1}) for n = {n} prompts, got k={k}",
                field="k",
                value=k,
                allowed=f"at most {n - 1}",
            )
        return k

    def _knn_prompts(self, a: str, b: str, dataset: str | None, k: int) -> np.ndarray:
        """The shared prompts of two models, checked to have more than k of them."""
        ids = self.reads.shared(a, b, dataset)
        self._check_k(k, len(ids))
        return ids

    def _corpus(self, ids: np.ndarray) -> tuple[tuple[DatasetCount, ...], np.ndarray]:
        return corpus(self.store, ids)

    def _matrix_layers(
        self, req: AffinityRequest | CkaMatrixRequest
    ) -> tuple[ModelInfo, list[int], ModelInfo, list[int]]:
        """(model A, its layers, model B, its layers) of a matrix request: the grid, the lists
        given, or every stored layer."""
        ia, ib = self.store.models.get(req.model_a), self.store.models.get(req.model_b)
        if req.grid is not None:
            return ia, self.reads.grid(ia, req.grid), ib, self.reads.grid(ib, req.grid)
        return ia, self.reads.layer_list(ia, req.layers_a), ib, self.reads.layer_list(ib, req.layers_b)

    def _rows(self, prep: Prep, model: str, layer: int, ids: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
        """The rows of (model, layer) at ``ids`` after ``prep`` (platonic: the model's clip over
        every stored layer) and the dropped column indices."""
        layers = self.store.models.get(model).layers if prep.name == "platonic" else [layer]
        return prep.rows(self.reads.rows, model, layer, ids, layers)

    # ------------------------------------------------------------ neighbours
    def _plan_NeighborsRequest(self, req: NeighborsRequest) -> Plan[list[Neighbor]]:
        """The k stored prompts nearest to a stored prompt, a raw vector or new text at one layer.

        A stored prompt is never its own neighbour. ``dataset`` restricts the answer to that
        dataset's prompts; ``labelled`` to labelled (True) or unlabelled (False) prompts.
        Layers of at least ``store.knn.ann_threshold`` prompts are searched through their
        approximate index (exact scores of re-ranked candidates; see actstore.store.knn).
        """
        info, layer = self.reads.resolve(req.at)
        metric = req.metric.value

        def compute(_key: str) -> list[Neighbor]:
            knn = self.store.knn
            if req.prompt_id is not None:
                ids, scores = knn.of_prompts(
                    info.key, layer, [req.prompt_id], req.k, metric=metric, dataset=req.dataset, labelled=req.labelled
                )
                return self._neighbors(ids[0], scores[0])
            if req.vector is not None:
                if len(req.vector) != info.d_model:
                    raise InvalidInput(
                        f"vector has {len(req.vector)} values, but model {info.key!r} has d_model={info.d_model}",
                        field="vector",
                        value="...",
                        allowed=f"{info.d_model} values",
                    )
                query = np.asarray(req.vector, dtype=np.float32)[None, :]
            else:
                query = self.encoders.encode(info, layer, req.text or "")
            ids, scores = knn.search(
                info.key, layer, query, req.k, metric=metric, dataset=req.dataset, labelled=req.labelled
            )
            return self._neighbors(ids[0], scores[0])

        return Plan(compute)

    def _neighbors(self, ids: np.ndarray, scores: np.ndarray) -> list[Neighbor]:
        keep = ids >= 0
        prompts = {p.id: p for p in self.store.prompts.get(ids[keep])}
        return [
            Neighbor(
                rank=r + 1,
                prompt_id=int(i),
                score=float(s),
                text=prompts[int(i)].text,
                label=prompts[int(i)].label,
                dataset=prompts[int(i)].dataset,
            )
            for r, (i, s) in enumerate(zip(ids[keep], scores[keep]))
        ]

    # ------------------------------------------------------------ mutual k-NN
    def _plan_MutualKnnRequest(self, req: MutualKnnRequest) -> Plan[MutualKnnResult]:
        """Mutual k-NN of two layers over their shared prompts (METHODS.md), with its null k/(n-1).

        From ``store.knn.ann_threshold`` shared prompts on, the k-NN graphs are approximate and
        ``recall`` says how well they match exact search. With ``preprocess`` other than none
        (see :mod:`.preprocessing`) the rows are preprocessed over the shared prompts and the
        graphs are exact. ``by_dataset`` adds the value within each dataset (see
        :meth:`_within_datasets`).
        """
        prep = check_prep(req.preprocess, req.outlier_threshold)
        ia, la = self.reads.resolve(req.a)
        ib, lb = self.reads.resolve(req.b)
        k, dataset = req.k, req.dataset

        def compute(_key: str) -> MutualKnnResult:
            ids = self._knn_prompts(ia.key, ib.key, dataset, k)
            n = len(ids)
            (ga, ra, da), (gb, rb, db) = self._graphs(prep, [(ia.key, la), (ib.key, lb)], ids, k)
            counts, labels = self._corpus(ids)
            per = None
            if req.by_dataset:
                per = tuple(
                    MutualKnnByDataset(c.name, c.n, None, None)
                    if M is None
                    else MutualKnnByDataset(c.name, c.n, float(M[0, 0]), analysis.null_mean(k, c.n))
                    for c, M in self._within_datasets(prep, [(ia.key, la)], [(ib.key, lb)], ids, counts, labels, k)
                )
            return MutualKnnResult(
                analysis.mutual_knn(ga, gb),
                k,
                n,
                analysis.null_mean(k, n),
                la,
                lb,
                recall=worst_recall([ra, rb]),
                preprocess=prep.name,
                dropped_a=da,
                dropped_b=db,
                datasets=counts,
                warning=mixed_warning(counts),
                by_dataset=per,
            )

        def cost() -> Cost:
            n = len(self._knn_prompts(ia.key, ib.key, dataset, k))
            c = affinity_cost(
                n, k, [ia.d_model], [ib.d_model], n >= self.store.knn.ann_threshold and not prep.active, op="mutualKnn"
            )
            # within datasets: exact graphs, sum of n_i^2 <= n^2
            return Cost(c.flops * 2, c.what) if req.by_dataset else c

        return Plan(compute, {"a": [ia.key, la], "b": [ib.key, lb]}, self.reads.versions(ia, ib), cost)

    def _plan_AffinityRequest(self, req: AffinityRequest) -> Plan[AffinityMatrixResult]:
        """Mutual k-NN of every layer pair of two models (one graph per layer), the
        generalized-diagonal test and the argmax path; ``preprocess`` as in mutual k-NN
        (``dropped_*``: the dropped columns of each layer); ``by_dataset`` adds the matrix
        within each dataset (see :meth:`_within_datasets`)."""
        prep = check_prep(req.preprocess, req.outlier_threshold)
        ia, la, ib, lb = self._matrix_layers(req)
        k, dataset = req.k, req.dataset

        def compute(key: str) -> AffinityMatrixResult:
            ids = self._knn_prompts(ia.key, ib.key, dataset, k)
            n = len(ids)
            graphs = self._graphs(prep, [(ia.key, l_) for l_ in la] + [(ib.key, l_) for l_ in lb], ids, k)
            ga, gb = graphs[: len(la)], graphs[len(la) :]
            M = analysis.affinity_matrix([g for g, _, _ in ga], [g for g, _, _ in gb])
            counts, labels = self._corpus(ids)
            per = None
            if req.by_dataset:
                per = tuple(
                    AffinityMatrixByDataset(c.name, c.n, None, None, None)
                    if Md is None
                    else AffinityMatrixByDataset(c.name, c.n, Md, analysis.null_mean(k, c.n), analysis.argmax_path(Md))
                    for c, Md in self._within_datasets(
                        prep, [(ia.key, l_) for l_ in la], [(ib.key, l_) for l_ in lb], ids, counts, labels, k
                    )
                )
            return AffinityMatrixResult(
                model_a=ia.key,
                model_b=ib.key,
                layers_a=la,
                layers_b=lb,
                values=M,
                n=n,
                argmax=analysis.argmax_path(M),
                k=k,
                null_mean=analysis.null_mean(k, n),
                diagonal=_diagonal(M),
                depths_a=self.reads.depths(ia, la),
                depths_b=self.reads.depths(ib, lb),
                key=key,
                recall=worst_recall([r for _, r, _ in ga + gb]),
                preprocess=prep.name,
                dropped_a=[list(d) for _, _, d in ga] if prep.active else None,
                dropped_b=[list(d) for _, _, d in gb] if prep.active else None,
                datasets=counts,
                warning=mixed_warning(counts),
                by_dataset=per,
            )

        def cost() -> Cost:
            n = len(self._knn_prompts(ia.key, ib.key, dataset, k))
            c = affinity_cost(
                n,
                k,
                [ia.d_model] * len(la),
                [ib.d_model] * len(lb),
                n >= self.store.knn.ann_threshold and not prep.active,
            )
            return Cost(c.flops * 2, c.what) if req.by_dataset else c

        return Plan(compute, {"layers_a": la, "layers_b": lb}, self.reads.versions(ia, ib), cost)

    def _graphs(
        self, prep: Prep, layers: list[tuple[str, int]], ids: np.ndarray, k: int
    ) -> list[tuple[np.ndarray, float | None, tuple[int, ...]]]:
        """(k-NN graph, recall, dropped columns) of each (model, layer): the cached graphs of
        the stored rows without preprocessing, else exact graphs of the preprocessed rows."""
        out: list[tuple[np.ndarray, float | None, tuple[int, ...]]] = []
        for i, (model, layer) in enumerate(layers):
            check_cancelled(i, len(layers), "k-NN graphs")
            if not prep.active:
                g, r = self.reads.graph(model, layer, ids, k)
                out.append((g, r, ()))
                continue
            X, dropped = self._rows(prep, model, layer, ids)
            out.append((analysis.knn_graph(X, k, should_stop=stop_check()), None, dropped))
        return out

    def _within_datasets(
        self,
        prep: Prep,
        layers_a: list[tuple[str, int]],
        layers_b: list[tuple[str, int]],
        ids: np.ndarray,
        counts: Sequence[DatasetCount],
        labels: np.ndarray,
        k: int,
    ) -> list[tuple[DatasetCount, np.ndarray | None]]:
        """The affinity matrix [len(layers_a), len(layers_b)] within each dataset of ``counts``:
        for each layer, the rows of the dataset's prompts (after ``prep``, fitted on all of
        ``ids`` as for the pooled value) and their exact k-NN graph among themselves. None for a
        dataset with k or fewer prompts (no k neighbours to find)."""
        rows = []
        for i, (model, layer) in enumerate(layers_a + layers_b):
            check_cancelled(i, len(layers_a) + len(layers_b), "rows per dataset")
            X, _ = self._rows(prep, model, layer, ids)
            rows.append(X)
        out: list[tuple[DatasetCount, np.ndarray | None]] = []
        for c in counts:
            if c.n <= k:
                out.append((c, None))
                continue
            m = labels == c.name
            graphs = [analysis.knn_graph(X[m], k, should_stop=stop_check()) for X in rows]
            out.append((c, analysis.affinity_matrix(graphs[: len(layers_a)], graphs[len(layers_a) :])))
        return out

    # ------------------------------------------------------------------- CKA
    def _plan_CkaRequest(self, req: CkaRequest) -> Plan[CkaResult]:
        """Linear CKA of two layers over their shared prompts; ``permutations`` > 0 adds a
        permutation-test p-value (1 + #{null >= observed}) / (1 + P), reproducible for a seed,
        whose null permutes prompts within each dataset when several are mixed.
        ``preprocess`` (see :mod:`.preprocessing`) is fitted on the shared prompts, per side.
        ``by_dataset`` adds CKA per dataset (on the same preprocessed rows, each dataset on its
        own prompts, with its own permutation test when ``permutations`` > 0). ``precision``:
        one of :data:`.precision.PRECISIONS` (default "auto")."""
        prep = check_prep(req.preprocess, req.outlier_threshold)
        precision, permutations, debiased, seed = req.precision.value, req.permutations, req.debiased, req.seed
        ia, la = self.reads.resolve(req.a)
        ib, lb = self.reads.resolve(req.b)

        def one(X: np.ndarray, Y: np.ndarray, strata: np.ndarray | None) -> tuple[float, float | None]:
            if permutations:
                t = analysis.cka_permutation_test(
                    X,
                    Y,
                    permutations=permutations,
                    seed=seed,
                    debiased=debiased,
                    precision=precision,
                    should_stop=stop_check(),
                    strata=strata,
                )
                return t.value, t.p_value
            return analysis.linear_cka(X, Y, debiased=debiased, precision=precision), None

        def compute(_key: str) -> CkaResult:
            ids = self.reads.shared(ia.key, ib.key, req.dataset)
            X, da = self._rows(prep, ia.key, la, ids)
            Y, db = self._rows(prep, ib.key, lb, ids)
            counts, labels = self._corpus(ids)
            value, p = one(X, Y, labels if len(counts) > 1 else None)
            per = None
            if req.by_dataset:
                rows = []
                for c in counts:
                    if c.n < (4 if debiased else 2):
                        rows.append(CkaByDataset(c.name, c.n, None, None))
                        continue
                    mask = labels == c.name
                    v, pv = one(X[mask], Y[mask], None)
                    rows.append(CkaByDataset(c.name, c.n, v, pv))
                per = tuple(rows)
            return CkaResult(
                value,
                debiased,
                len(ids),
                la,
                lb,
                permutations,
                p,
                preprocess=prep.name,
                dropped_a=da,
                dropped_b=db,
                datasets=counts,
                warning=mixed_warning(counts),
                by_dataset=per,
                precision=precision,
            )

        def cost() -> Cost:
            n = len(self.reads.shared(ia.key, ib.key, req.dataset))
            c = cka_cost(n, ia.d_model, ib.d_model, permutations)
            # per dataset: sum of n_i^2 <= n^2, so at most the pooled cost again
            return Cost(c.flops * 2, c.what) if req.by_dataset else c

        return Plan(compute, {"a": [ia.key, la], "b": [ib.key, lb]}, self.reads.versions(ia, ib), cost)

    def _plan_CkaMatrixRequest(self, req: CkaMatrixRequest) -> Plan[SimilarityMatrixResult]:
        """CKA of every layer pair of two models (or of a relative-depth grid of ``grid`` layers each);
        ``preprocess`` as in CKA, per layer (``dropped_*``: each layer's dropped columns);
        ``precision`` one of :data:`.precision.PRECISIONS` (default "auto"); ``by_dataset`` adds the
        matrix of each dataset on its own prompts (same preprocessed rows)."""
        prep = check_prep(req.preprocess, req.outlier_threshold)
        precision, debiased, dataset = req.precision.value, req.debiased, req.dataset
        ia, la, ib, lb = self._matrix_layers(req)

        def compute(key: str) -> SimilarityMatrixResult:
            ids = self.reads.shared(ia.key, ib.key, dataset)
            # On Ray when ACTSTORE_ENGINE / the size says so (service.engines); None: here.
            M = (
                None
                if prep.active or req.by_dataset
                else engines.distributed_cka_matrix(self.settings, self.store, ia, la, ib, lb, ids, debiased)
            )
            pa = [self._rows(prep, ia.key, l_, ids) for l_ in la] if M is None else []
            pb = [self._rows(prep, ib.key, l_, ids) for l_ in lb] if M is None else []
            xs, ys = [x for x, _ in pa], [y for y, _ in pb]
            check_cancelled()
            if M is None:
                M = analysis.cka_matrix(xs, ys, debiased=debiased, precision=precision, should_stop=stop_check())
            counts, labels = self._corpus(ids)
            per = None
            if req.by_dataset:
                rows = []
                for c in counts:
                    m = labels == c.name
                    vals = (
                        None
                        if c.n < (4 if debiased else 2)
                        else analysis.cka_matrix(
                            [x[m] for x in xs],
                            [y[m] for y in ys],
                            debiased=debiased,
                            precision=precision,
                            should_stop=stop_check(),
                        )
                    )
                    rows.append(CkaMatrixByDataset(c.name, c.n, vals))
                per = tuple(rows)
            return SimilarityMatrixResult(
                model_a=ia.key,
                model_b=ib.key,
                layers_a=la,
                layers_b=lb,
                values=M,
                n=len(ids),
                argmax=analysis.argmax_path(M),
                depths_a=self.reads.depths(ia, la),
                depths_b=self.reads.depths(ib, lb),
                debiased=debiased,
                key=key,
                preprocess=prep.name,
                dropped_a=[list(d) for _, d in pa] if prep.active else None,
                dropped_b=[list(d) for _, d in pb] if prep.active else None,
                datasets=counts,
                warning=mixed_warning(counts),
                precision=precision,
                by_dataset=per,
                measure="unbiased_cka" if debiased else "cka",
                options='{"eps":0.0}',
            )

        def cost() -> Cost:
            n = len(self.reads.shared(ia.key, ib.key, dataset))
            c = cka_matrix_cost(n, [ia.d_model] * len(la), [ib.d_model] * len(lb))
            return Cost(c.flops * 2, c.what) if req.by_dataset else c

        return Plan(compute, {"layers_a": la, "layers_b": lb}, self.reads.versions(ia, ib), cost)


def _diagonal(M: np.ndarray) -> DiagonalTest:
    """The diagonal test where it is defined; NaN fields for matrices too small for it."""
    if min(M.shape) < 2 or M.size - max(M.shape) < 2:
        nan = float("nan")
        return DiagonalTest(nan, nan, nan, nan, nan, 0, 0, M.shape[0] < M.shape[1])
    test: DiagonalTest = analysis.diagonal_test(M)
    return test
