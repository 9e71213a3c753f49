"""The atlas: every pair of a set of models compared layer by layer with one measure, as the
24-model affinity study did (the ``service.atlas`` part).

Prompts: those every model of the atlas has at every stored layer (within ``dataset``), in
ascending prompt-id order. Layers: each model's depth grid of ``grid`` layers, else every stored
layer. A pair's matrix is exactly what ``affinityMatrix`` (mutual_knn), ``ckaMatrix``
(unbiased_cka / cka) or ``similarityMatrix`` returns for the two models over the same prompts.

Work grows with layers, not with layer pairs x model pairs: each layer's statistics (its k-NN
graph; for CKA its Gram / feature statistics) are computed once for the whole atlas, and each
model's layers meet all its partners' layers in one blocked product
(:func:`actstore.analysis.atlas.graph_overlaps` / :func:`~actstore.analysis.atlas.gram_cka`;
other measures: the registry's ``prepare`` once per layer, ``compare`` per layer pair).

Incremental and resumable: every pair is stored in the results table as soon as it is computed,
under a key of the pair (measure, k, preprocessing, prompt set, both models' layers and table
versions). An atlas reads the pairs stored before and computes only the others, so adding a
model computes its new pairs only, a killed atlas job resumes where it stopped, and a write to
a model invalidates exactly the pairs that involve it.

Summaries (the study's): ``mean_resized`` is the mean over pairs of each pair's matrix sampled
at ``resize`` relative depths per axis (:func:`actstore.layers.resize_rows`: the one rounding
rule, then the nearest stored layer); ``max_similarity[i, j]`` is the largest cell of pair
(i, j) (symmetric; NaN on the diagonal, null through GraphQL). For a distance measure the
"largest" cell is still the largest value: read it as the least similar pair of layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from actstore import analysis
from actstore.analysis.results import DiagonalTest
from actstore.config import Settings
from actstore.errors import InvalidInput, LimitExceeded
from actstore.layers import relative_depth, resize_rows
from actstore.store import ModelInfo, Store

from . import engines
from .answering import Answers, answers
from .boundary import service_boundary
from .preprocessing import Prep, check_prep
from .reads import Reads, digest
from .requests import KEY_VERSION, AtlasRequest
from .results import Matrix, Plan, ResultCache, array_eq, decode, encode, result_type
from .similarity import DatasetCount, corpus, mixed_warning
from .work import Cost, check_cancelled, cka_matrix_cost, knn_graph_cost, stop_check

__all__ = ["Atlas", "AtlasPairResult", "AtlasResult"]

Progress = Callable[[int, int], None]


@result_type
@dataclass(frozen=True)
class AtlasPairResult:
    """One pair of an atlas: ``values[i][j]`` compares ``layers_a[i]`` of ``model_a`` with
    ``layers_b[j]`` of ``model_b``; ``argmax[i]`` the column of row i's largest value and
    ``argmax_depths[i]`` its relative depth; ``diagonal`` the generalized-diagonal test (None
    where the matrix is too small or flat for it); ``max_value`` its largest cell."""

    model_a: str
    model_b: str
    layers_a: list[int]
    layers_b: list[int]
    depths_a: list[float]
    depths_b: list[float]
    values: Matrix
    argmax: list[int]
    argmax_depths: list[float]
    diagonal: DiagonalTest | None
    max_value: float


@result_type
@dataclass(frozen=True)
class AtlasResult:
    """An atlas over ``models`` (see the module docstring): ``pairs`` for every unordered pair
    in the order the models were given (model A before model B), ``mean_resized``
    [resize, resize], ``max_similarity`` [models, models] (NaN on the diagonal), ``n`` prompts
    from ``datasets``; ``key`` names the plot."""

    models: list[str]
    measure: str
    direction: str
    k: int | None
    n: int
    resize: int
    pairs: tuple[AtlasPairResult, ...]
    mean_resized: Matrix
    max_similarity: Matrix
    preprocess: str = "none"
    datasets: tuple[DatasetCount, ...] = ()
    warning: str | None = None
    key: str = ""

    plottable = True  # the mean resized matrix, the argmax-depth lines, on vs off


array_eq(AtlasPairResult)


@service_boundary
class Atlas(Answers):
    """Atlases of many models. Thread-safe; ``pairs_computed`` counts pairs computed (not read
    from the results table) since the part was made (tests and benchmarks read it)."""

    def __init__(self, store: Store, settings: Settings, reads: Reads, results: ResultCache) -> None:
        self.store, self.settings, self.reads, self.results = store, settings, reads, results
        self.pairs_computed = 0

    atlas = answers(AtlasRequest)

    def answer(self, request: Any) -> Any:
        try:
            return super().answer(request)
        except LimitExceeded as exc:
            raise LimitExceeded(
                f"{exc}; run it as a job with the run_atlas mutation (the same arguments), then "
                "ask this query again: it answers from the cache"
            ) from exc

    def start_job(self, jobs: Any, request: AtlasRequest) -> Any:
        """Queue the atlas as a background job of ``jobs`` (the service's Jobs part): progress in
        pairs, cancellable; the pairs it stores are kept if it stops. Bad arguments fail now."""
        request.check_limits(self.settings)
        self._plan_AtlasRequest(request)  # unknown models, measure, layers: refused before queueing
        return jobs.start(
            lambda progress: self.run(request, progress),
            lambda r: f"atlas of {len(r.models)} models ({len(r.pairs)} pairs) over n = {r.n} prompts",
        )

    def run(self, request: AtlasRequest, progress: Progress | None = None) -> AtlasResult:
        """The atlas computed (or read) without the cost budget, reporting ``progress(done,
        total)`` in pairs: what a job runs."""
        request.check_limits(self.settings)
        plan = self._plan_AtlasRequest(request, progress)
        return self.results.cached(request.key_payload(self.results, plan.resolved), plan.versions, plan.compute)

    # ------------------------------------------------------------------ plan
    def _plan_AtlasRequest(self, req: AtlasRequest, progress: Progress | None = None) -> Plan[AtlasResult]:
        measure = analysis.measures.get(req.measure)
        opts = measure.options_for({"k": req.k} if measure.uses_k else {})
        prep = check_prep(req.preprocess, req.outlier_threshold)
        infos = [self.store.models.get(m, recent=True) for m in req.models]
        layers = [self._layers(info, req.grid) for info in infos]
        versions = self.reads.versions(*infos)

        def compute(key: str) -> AtlasResult:
            ids = self._shared(infos, req.dataset)
            need = measure.min_rows(opts)
            if len(ids) < need:
                raise InvalidInput(
                    f"the {len(infos)} models share {len(ids)} prompts; measure {measure.name!r} "
                    f"needs at least {need} with these options",
                    field="models",
                    value=list(req.models),
                    allowed=f"models sharing >= {need} prompts",
                )
            pairs = self._pairs(req, measure, opts, prep, infos, layers, ids, progress)
            counts, _ = corpus(self.store, ids)
            return self._assemble(req, measure.direction, opts.get("k"), prep, infos, layers, ids, pairs, counts, key)

        def cost() -> Cost:
            ids = self._shared(infos, req.dataset)
            todo = [
                p
                for p in self._pair_indices(len(infos))
                if not self.results.has(self._pair_key(req, measure.name, opts, prep, infos, layers, ids, p))
            ]
            return self._cost(measure.name, opts, infos, layers, len(ids), todo)

        resolved = {"models": [i.key for i in infos], "grid": [list(ls) for ls in layers]}
        return Plan(compute, resolved, versions, cost)

    @staticmethod
    def _pair_indices(m: int) -> list[tuple[int, int]]:
        return [(i, j) for i in range(m) for j in range(i + 1, m)]

    def _layers(self, info: ModelInfo, grid: int | None) -> list[int]:
        return self.reads.grid(info, grid) if grid is not None else self.reads.layer_list(info, None)

    def _shared(self, infos: Sequence[ModelInfo], dataset: str | None) -> np.ndarray:
        """Sorted ids of the prompts every model has at every stored layer (within ``dataset``)."""
        ids = self.reads.shared(infos[0].key, infos[1].key, dataset)
        for info in infos[2:]:
            ids = np.intersect1d(ids, self.reads.shared(infos[0].key, info.key, dataset), assume_unique=True)
        if len(ids) == 0:
            raise InvalidInput(
                f"the models {', '.join(i.key for i in infos)} share no stored prompts"
                + (f" in dataset {dataset!r}" if dataset else "")
            )
        return ids

    def _cost(
        self,
        measure: str,
        opts: dict[str, Any],
        infos: Sequence[ModelInfo],
        layers: Sequence[list[int]],
        n: int,
        todo: Sequence[tuple[int, int]],
    ) -> Cost:
        """Per-layer statistics of the models with pairs to compute, plus the pair blocks."""
        involved = sorted({i for p in todo for i in p})
        dims = {i: [infos[i].d_model] * len(layers[i]) for i in involved}
        m = analysis.measures.get(measure)
        if measure == "mutual_knn":
            approximate = n >= self.store.knn.ann_threshold
            flops = sum(knn_graph_cost(n, d, approximate) for i in involved for d in dims[i])
            flops += sum(float(len(layers[a])) * len(layers[b]) * n * opts["k"] for a, b in todo)
        elif measure in ("cka", "unbiased_cka"):
            flops = sum(cka_matrix_cost(n, dims[a], dims[b]).flops for a, b in todo)
        else:
            flops = sum(m.prepare_cost(n, d, opts) for i in involved for d in dims[i])
            flops += sum(
                m.compare_cost(n, infos[a].d_model, infos[b].d_model, opts) * len(layers[a]) * len(layers[b])
                for a, b in todo
            )
        return Cost(
            flops, f"atlas of {len(infos)} models ({len(todo)} pairs to compute) with {measure} over n = {n} prompts"
        )

    # ----------------------------------------------------------------- pairs
    def _pair_key(
        self,
        req: AtlasRequest,
        measure: str,
        opts: dict[str, Any],
        prep: Prep,
        infos: Sequence[ModelInfo],
        layers: Sequence[list[int]],
        ids: np.ndarray,
        pair: tuple[int, int],
    ) -> str:
        a, b = pair
        query = {
            "op": "atlasPair",
            "v": KEY_VERSION,
            "measure": measure,
            "options": opts,
            "prep": prep.key(),
            "prompts": digest(ids),
            "a": [infos[a].key, layers[a]],
            "b": [infos[b].key, layers[b]],
            "settings": {name: self.results.effective(name) for name in AtlasRequest.answer_settings}
            if measure == "mutual_knn"
            else {},
        }
        return self.results.key(query, self.reads.versions(infos[a], infos[b]))

    def _pairs(
        self,
        req: AtlasRequest,
        measure: Any,
        opts: dict[str, Any],
        prep: Prep,
        infos: Sequence[ModelInfo],
        layers: Sequence[list[int]],
        ids: np.ndarray,
        progress: Progress | None,
    ) -> dict[tuple[int, int], AtlasPairResult]:
        """Every pair: stored ones read, the others computed in one block per model row and
        stored as soon as each is done."""
        keys = {
            p: self._pair_key(req, measure.name, opts, prep, infos, layers, ids, p)
            for p in self._pair_indices(len(infos))
        }
        out: dict[tuple[int, int], AtlasPairResult] = {}
        for p, key in keys.items():
            stored = self.store.results.get(key)
            if stored is not None:
                out[p] = decode(stored)
        total = len(keys)
        if progress is not None:
            progress(len(out), total)
        todo = [p for p in keys if p not in out]
        if todo and self._on_ray(measure, prep, infos, layers, ids, todo):
            return self._pairs_on_ray(keys, out, todo, opts, infos, layers, ids, progress)
        stats: dict[int, list[Any]] = {}
        for row in sorted({a for a, _ in todo}):
            partners = [b for a, b in todo if a == row]
            for i in (row, *partners):
                if i not in stats:
                    check_cancelled(len(out), total, "pairs")
                    stats[i] = self._layer_stats(measure, opts, prep, infos[i], layers[i], ids)
            block = self._block(measure, opts, stats[row], [stats[b] for b in partners])
            start = 0
            for b in partners:
                width = len(layers[b])
                pair = self._pair(infos[row], layers[row], infos[b], layers[b], block[:, start : start + width])
                start += width
                self.store.results.put(
                    keys[(row, b)], encode(pair), query=f"atlasPair {infos[row].key} x {infos[b].key}"
                )
                self.pairs_computed += 1
                out[(row, b)] = pair
                if progress is not None:
                    progress(len(out), total)
            # a model is a row once, after every row that has it as a partner: its statistics
            # are not needed again
            stats.pop(row, None)
        return out

    def _on_ray(
        self,
        measure: Any,
        prep: Prep,
        infos: Sequence[ModelInfo],
        layers: Sequence[list[int]],
        ids: np.ndarray,
        todo: Sequence[tuple[int, int]],
    ) -> bool:
        """Mutual k-NN atlases run on Ray when :func:`.engines.choose_engine` says so for the
        layers they read (other measures and preprocessed rows stay local)."""
        if measure.name != "mutual_knn" or prep.active or len(ids) >= self.store.knn.ann_threshold:
            return False
        involved = sorted({i for p in todo for i in p})
        dims = [infos[i].d_model for i in involved for _ in layers[i]]
        return engines.choose_engine(self.settings, len(ids), dims, []) == "ray"

    def _pairs_on_ray(
        self,
        keys: dict[tuple[int, int], str],
        out: dict[tuple[int, int], AtlasPairResult],
        todo: list[tuple[int, int]],
        opts: dict[str, Any],
        infos: Sequence[ModelInfo],
        layers: Sequence[list[int]],
        ids: np.ndarray,
        progress: Progress | None,
    ) -> dict[tuple[int, int], AtlasPairResult]:
        """The pairs to compute on Ray: one task per layer's k-NN graph (tables pinned at their
        versions), then one task per model row's block against its partners."""
        involved = sorted({i for p in todo for i in p})
        flat = [(infos[i], layer) for i in involved for layer in layers[i]]
        graphs = engines.ray_atlas_graphs(self.store, flat, ids, opts["k"], address=self.settings.ray_address)
        by_model: dict[int, list[np.ndarray]] = {}
        start = 0
        for i in involved:
            by_model[i] = graphs[start : start + len(layers[i])]
            start += len(layers[i])
        rows = sorted({a for a, _ in todo})
        partners = {r: [b for a, b in todo if a == r] for r in rows}
        blocks = engines.ray_overlap_blocks(
            [(by_model[r], [g for b in partners[r] for g in by_model[b]]) for r in rows],
            address=self.settings.ray_address,
        )
        for r, block in zip(rows, blocks):
            start = 0
            for b in partners[r]:
                width = len(layers[b])
                pair = self._pair(infos[r], layers[r], infos[b], layers[b], block[:, start : start + width])
                start += width
                self.store.results.put(keys[(r, b)], encode(pair), query=f"atlasPair {infos[r].key} x {infos[b].key}")
                self.pairs_computed += 1
                out[(r, b)] = pair
                if progress is not None:
                    progress(len(out), len(keys))
        return out

    def _layer_stats(
        self, measure: Any, opts: dict[str, Any], prep: Prep, info: ModelInfo, layers: list[int], ids: np.ndarray
    ) -> list[Any]:
        """Per layer: the k-NN graph (mutual_knn), the preprocessed rows (CKA), else the
        registry's prepared statistics."""
        out = []
        for layer in layers:
            check_cancelled()
            if measure.name == "mutual_knn" and not prep.active:
                out.append(self.reads.graph(info.key, layer, ids, opts["k"])[0])
                continue
            X, _ = prep.rows(self.reads.rows, info.key, layer, ids, info.layers)
            if measure.name == "mutual_knn":
                out.append(analysis.knn_graph(X, opts["k"], should_stop=stop_check()))
            elif measure.name in ("cka", "unbiased_cka"):
                out.append(X)
            else:
                out.append(measure.prepare(X, opts))
        return out

    @staticmethod
    def _block(measure: Any, opts: dict[str, Any], rows: list[Any], partners: list[list[Any]]) -> np.ndarray:
        """[len(rows), sum of partners' layers]: one product for a model's layers against all
        its partners' layers."""
        cols = [s for p in partners for s in p]
        if measure.name == "mutual_knn":
            return analysis.atlas.graph_overlaps(rows, cols, should_stop=stop_check())
        if measure.name in ("cka", "unbiased_cka"):
            return analysis.atlas.gram_cka(
                rows, cols, debiased=measure.name == "unbiased_cka", should_stop=stop_check()
            )
        out = np.empty((len(rows), len(cols)))
        for i, a in enumerate(rows):
            check_cancelled(i, len(rows), "layers")
            for j, b in enumerate(cols):
                out[i, j] = measure.compare(a, b, opts)
        return out

    @staticmethod
    def _pair(ia: ModelInfo, la: list[int], ib: ModelInfo, lb: list[int], values: np.ndarray) -> AtlasPairResult:
        da = [relative_depth(l_, ia.n_layers) for l_ in la]
        db = [relative_depth(l_, ib.n_layers) for l_ in lb]
        s = analysis.atlas.pair_summary(values, da, db)
        diagonal = None if s.diagonal.p_value != s.diagonal.p_value else s.diagonal
        return AtlasPairResult(
            ia.key,
            ib.key,
            list(la),
            list(lb),
            da,
            db,
            np.asarray(values, dtype=np.float64),
            list(s.argmax),
            list(s.argmax_depths),
            diagonal,
            s.max_value,
        )

    # --------------------------------------------------------------- summary
    def _assemble(
        self,
        req: AtlasRequest,
        direction: str,
        k: int | None,
        prep: Prep,
        infos: Sequence[ModelInfo],
        layers: Sequence[list[int]],
        ids: np.ndarray,
        pairs: dict[tuple[int, int], AtlasPairResult],
        counts: tuple[DatasetCount, ...],
        key: str,
    ) -> AtlasResult:
        ordered = [pairs[p] for p in self._pair_indices(len(infos))]
        resized = []
        for (a, b), pair in zip(self._pair_indices(len(infos)), ordered):
            rows = resize_rows(layers[a], infos[a].n_layers, req.resize)
            cols = resize_rows(layers[b], infos[b].n_layers, req.resize)
            resized.append(analysis.atlas.resize(pair.values, rows, cols))
        best = analysis.atlas.max_similarity(len(infos), {p: pairs[p].max_value for p in pairs})
        return AtlasResult(
            models=[i.key for i in infos],
            measure=req.measure,
            direction=direction,
            k=k,
            n=len(ids),
            resize=req.resize,
            pairs=tuple(ordered),
            mean_resized=np.mean(resized, axis=0),
            max_similarity=best,
            preprocess=prep.name,
            datasets=counts,
            warning=mixed_warning(counts),
            key=key,
        )
