"""Every registered similarity measure (:mod:`actstore.analysis.measures`) served the same way:
``measures`` lists them, ``similarity`` compares two layers, ``similarity_matrix`` every layer
pair of two models.

Both read rows as the CKA and mutual k-NN queries do (:mod:`.similarity`): the prompts both
models share (optionally one dataset), in ascending prompt-id order; ``preprocess`` per layer
(:mod:`.preprocessing`, PLATONIC included: platonic-rep's clip per model and unit-length rows);
the datasets of those prompts with their counts and the mixed-corpus warning; ``by_dataset``
the value within each dataset (same preprocessed rows, each dataset on its own prompts: for a
k-NN measure the neighbours are searched within the dataset). ``permutations`` > 0 adds the
registry's permutation test (:func:`actstore.analysis.measures.measure_permutation_test`),
stratified by dataset when several are mixed. k-NN graphs here are always exact (computed by
the registry from the rows), so no ANN setting enters an answer or its key.

Costs come from each measure's own formulas (``Measure.cost``): one ``prepare`` per layer and
one ``compare`` per pair; a permutation adds a ``prepare`` of the permuted layer and a
``compare``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from actstore import analysis
from actstore.analysis import measures as registry
from actstore.config import Settings
from actstore.errors import InvalidInput
from actstore.store import ModelInfo, Store

from .answering import Answers, answers
from .boundary import service_boundary
from .preprocessing import Prep, check_prep
from .reads import Reads
from .requests import SimilarityMatrixRequest, SimilarityRequest
from .results import Plan, ResultCache, result_type
from .similarity import (
    CkaMatrixByDataset,
    DatasetCount,
    SimilarityMatrixResult,
    corpus,
    mixed_warning,
)
from .work import Cost, check_cancelled, stop_check

__all__ = ["MeasureInfo", "Measures", "SimilarityByDataset", "SimilarityResult", "list_measures", "measure_info"]


@dataclass(frozen=True)
class MeasureInfo:
    """A registered similarity measure: ``name`` (the reference project's), ``family`` (its
    module), ``direction`` ("similarity": larger is more alike; "distance": smaller is),
    ``options`` (the option names, ``k`` included for the k-NN measures), ``defaults`` (every
    option's default as JSON text; ``k`` has none), ``reference`` (paper, reference code and
    the difference measured against it), ``definition`` (the formula) and ``sensitive_to``
    (one line on what it responds to)."""

    name: str
    family: str
    direction: str
    options: tuple[str, ...]
    defaults: str
    reference: str
    definition: str
    sensitive_to: str


@dataclass(frozen=True)
class SimilarityByDataset:
    """A measure over the prompts of one dataset only (``n`` of them); ``value`` None when the
    dataset has fewer prompts than the measure needs; ``p_value`` from the same number of
    permutations as the pooled answer (None without)."""

    dataset: str
    n: int
    value: float | None
    p_value: float | None = None


@result_type
@dataclass(frozen=True)
class SimilarityResult:
    """A registered measure of two layers over ``n`` shared prompts.

    ``value``: the measure (``direction`` says whether larger or smaller is more alike);
    ``k``: neighbours of a k-NN measure (None for the others); ``options``: every option of
    the measure as JSON text (defaults filled in); ``p_value``: (1 + #{null at least as
    extreme}) / (1 + P) from ``permutations`` permutations of the prompts (seeded; within each
    dataset when several are mixed), None without; ``preprocess`` and ``dropped_a`` /
    ``dropped_b`` the preprocessing and the columns it dropped; ``datasets`` the datasets of
    the prompts with their counts, ``warnings`` (and ``warning``, the same first line) set
    when several are mixed; ``by_dataset`` (asked with by_dataset=True) the value per dataset.
    """

    value: float
    measure: str
    direction: str
    n: int
    model_a: str
    layer_a: int
    model_b: str
    layer_b: int
    k: int | None = None
    options: str = "{}"
    permutations: int = 0
    p_value: float | None = None
    seed: int = 0
    preprocess: str = "none"
    dropped_a: tuple[int, ...] = ()
    dropped_b: tuple[int, ...] = ()
    datasets: tuple[DatasetCount, ...] = ()
    warning: str | None = None
    warnings: tuple[str, ...] = ()
    by_dataset: tuple[SimilarityByDataset, ...] | None = None


def measure_info(m: registry.Measure) -> MeasureInfo:
    """The listing of one registered measure."""
    defaults = {o.name: o.default for o in m.options if not o.required}
    return MeasureInfo(
        m.name,
        m.family,
        m.direction,
        tuple(o.name for o in m.options),
        json.dumps(defaults, sort_keys=True),
        m.reference,
        m.definition,
        m.sensitive_to,
    )


def list_measures() -> list[MeasureInfo]:
    """Every registered measure, in registration order (platonic-representation's first)."""
    return [measure_info(m) for m in registry.measures()]


def _options_text(opts: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in opts.items() if k != "k"}, sort_keys=True, separators=(",", ":"))


@service_boundary
class Measures(Answers):
    """Every registered similarity measure, for one pair of layers or all pairs. Thread-safe."""

    def __init__(self, store: Store, settings: Settings, reads: Reads, results: ResultCache) -> None:
        self.store, self.settings, self.reads, self.results = store, settings, reads, results

    similarity = answers(SimilarityRequest)
    similarity_matrix = answers(SimilarityMatrixRequest)

    def measures(self) -> list[MeasureInfo]:
        """Every registered measure, in registration order (platonic-representation's first)."""
        return list_measures()

    # ------------------------------------------------------------ helpers
    def _rows(self, prep: Prep, info: ModelInfo, layer: int, ids: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
        return prep.rows(self.reads.rows, info.key, layer, ids, info.layers)

    def _checked_n(self, m: registry.Measure, opts: dict[str, Any], n: int) -> None:
        """InvalidInput when ``n`` shared prompts are too few for the measure."""
        need = m.min_rows(opts)
        if n < need:
            if m.uses_k:
                raise InvalidInput(
                    f"k must be between 1 and n - {need - opts['k']} = {n - need + opts['k']} for "
                    f"measure {m.name!r} over n = {n} prompts, got k={opts['k']}",
                    field="k",
                    value=opts["k"],
                    allowed=f"at most {n - need + opts['k']}",
                )
            raise InvalidInput(
                f"measure {m.name!r} needs at least {need} shared prompts, got n = {n}; use a larger dataset",
                field="dataset",
                value=n,
                allowed=f"at least {need} prompts",
            )

    # ------------------------------------------------------------ one pair
    def _plan_SimilarityRequest(self, req: SimilarityRequest) -> Plan[SimilarityResult]:
        """A registered measure of two layers over their shared prompts (module doc)."""
        prep = check_prep(req.preprocess, req.outlier_threshold)
        m = registry.get(req.measure)
        opts = req.measure_options()
        ia, la = self.reads.resolve(req.a)
        ib, lb = self.reads.resolve(req.b)
        P, seed = req.permutations, req.seed

        def one(X: np.ndarray, Y: np.ndarray, strata: np.ndarray | None) -> tuple[float, float | None]:
            if P:
                t = registry.measure_permutation_test(
                    X, Y, m.name, opts, permutations=P, seed=seed, strata=strata, should_stop=stop_check()
                )
                return t.value, t.p_value
            return registry.similarity(X, Y, m.name, opts), None

        def compute(_key: str) -> SimilarityResult:
            ids = self.reads.shared(ia.key, ib.key, req.dataset)
            self._checked_n(m, opts, len(ids))
            X, da = self._rows(prep, ia, la, ids)
            Y, db = self._rows(prep, ib, lb, ids)
            counts, labels = corpus(self.store, ids)
            value, p = one(X, Y, labels if len(counts) > 1 else None)
            per = None
            if req.by_dataset:
                rows = []
                for c in counts:
                    check_cancelled()
                    if c.n < m.min_rows(opts):
                        rows.append(SimilarityByDataset(c.name, c.n, None, None))
                        continue
                    mask = labels == c.name
                    v, pv = one(X[mask], Y[mask], None)
                    rows.append(SimilarityByDataset(c.name, c.n, v, pv))
                per = tuple(rows)
            warning = mixed_warning(counts)
            return SimilarityResult(
                value=value,
                measure=m.name,
                direction=m.direction,
                n=len(ids),
                model_a=ia.key,
                layer_a=la,
                model_b=ib.key,
                layer_b=lb,
                k=opts.get("k"),
                options=_options_text(opts),
                permutations=P,
                p_value=p,
                seed=seed,
                preprocess=prep.name,
                dropped_a=da,
                dropped_b=db,
                datasets=counts,
                warning=warning,
                warnings=(warning,) if warning else (),
                by_dataset=per,
            )

        def cost() -> Cost:
            n = len(self.reads.shared(ia.key, ib.key, req.dataset))
            p, q = ia.d_model, ib.d_model
            flops = m.cost(n, [p], [q], opts) + P * (m.prepare_cost(n, q, opts) + m.compare_cost(n, p, q, opts))
            what = f"{m.name} over n = {n} prompts (d = {p}, {q})" + (f" with {P} permutations" if P else "")
            # per dataset: each measure's cost grows at least linearly in n, so at most the pooled cost again
            return Cost(flops * (2 if req.by_dataset else 1), what)

        return Plan(compute, {"a": [ia.key, la], "b": [ib.key, lb]}, self.reads.versions(ia, ib), cost)

    # ------------------------------------------------------------ all pairs
    def _plan_SimilarityMatrixRequest(self, req: SimilarityMatrixRequest) -> Plan[SimilarityMatrixResult]:
        """A registered measure of every layer pair of two models (or of a relative-depth grid of
        ``grid`` layers each); each layer is read, preprocessed and prepared once (or the
        measure's own all-pairs form runs); ``argmax`` points at each row's most alike column."""
        prep = check_prep(req.preprocess, req.outlier_threshold)
        m = registry.get(req.measure)
        opts = req.measure_options()
        ia, ib = self.store.models.get(req.model_a), self.store.models.get(req.model_b)
        if req.grid is not None:
            la, lb = self.reads.grid(ia, req.grid), self.reads.grid(ib, req.grid)
        else:
            la, lb = self.reads.layer_list(ia, req.layers_a), self.reads.layer_list(ib, req.layers_b)

        def matrix(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray]) -> np.ndarray:
            return registry.similarity_matrix(xs, ys, m.name, opts, should_stop=stop_check())

        def compute(key: str) -> SimilarityMatrixResult:
            ids = self.reads.shared(ia.key, ib.key, req.dataset)
            self._checked_n(m, opts, len(ids))
            pa, pb = [], []
            for i, l_ in enumerate(la):
                check_cancelled(i, len(la) + len(lb), "layers read")
                pa.append(self._rows(prep, ia, l_, ids))
            for j, l_ in enumerate(lb):
                check_cancelled(len(la) + j, len(la) + len(lb), "layers read")
                pb.append(self._rows(prep, ib, l_, ids))
            xs, ys = [x for x, _ in pa], [y for y, _ in pb]
            M = matrix(xs, ys)
            counts, labels = corpus(self.store, ids)
            per = None
            if req.by_dataset:
                rows = []
                for c in counts:
                    mask = labels == c.name
                    vals = None if c.n < m.min_rows(opts) else matrix([x[mask] for x in xs], [y[mask] for y in ys])
                    rows.append(CkaMatrixByDataset(c.name, c.n, vals))
                per = tuple(rows)
            return SimilarityMatrixResult(
                model_a=ia.key,
                model_b=ib.key,
                layers_a=la,
                layers_b=lb,
                values=M,
                n=len(ids),
                argmax=analysis.argmax_path(M if m.direction == "similarity" else -M),
                depths_a=self.reads.depths(ia, la),
                depths_b=self.reads.depths(ib, lb),
                debiased=m.name == "unbiased_cka",
                key=key,
                preprocess=prep.name,
                dropped_a=[list(d) for _, d in pa] if prep.active else None,
                dropped_b=[list(d) for _, d in pb] if prep.active else None,
                datasets=counts,
                warning=mixed_warning(counts),
                precision="auto",
                by_dataset=per,
                measure=m.name,
                direction=m.direction,
                k=opts.get("k"),
                options=_options_text(opts),
            )

        def cost() -> Cost:
            n = len(self.reads.shared(ia.key, ib.key, req.dataset))
            flops = m.cost(n, [ia.d_model] * len(la), [ib.d_model] * len(lb), opts)
            return Cost(
                flops * (2 if req.by_dataset else 1),
                f"similarityMatrix ({m.name}) of {len(la)} x {len(lb)} layers over n = {n} prompts",
            )

        return Plan(compute, {"layers_a": la, "layers_b": lb}, self.reads.versions(ia, ib), cost)
