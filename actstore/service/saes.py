"""SAE queries of the service: the registry, feature correlation of two SAEs, and the SVCCA
matrix over every SAE layer pair of two models (the ``service.saes`` part).

A correlation answer (``sae_feature_correlation``) is computed over the prompts both models
have (``dataset`` restricts them), in ascending prompt-id order:
  1. each SAE encodes its layer's stored activations (batched, torch, CUDA when present;
     encodings are cached per SAE, table version and prompt set);
  2. optional semantic subspace: with ``keywords``, only features whose top-activating
     prompts (``top_prompts`` of them, at least ``keyword_share`` of them containing a
     keyword) are kept, on each side, before matching;
  3. :func:`actstore.analysis.sae_match.match_features` (never-varying features dropped and
     counted; blocked Pearson; ONE_TO_ONE or MANY_TO_ONE; ``min_correlation`` floor);
  4. :func:`actstore.analysis.sae_match.paired_space_test` on the matched decoder rows
     (SVCCA at 99% variance, RSA, ``random_pairs`` random pairings from ``seed``).
Answers are cached in the results table, keyed by the query, the SAE ids (content hashes)
and the versions of both activation tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from actstore import analysis
from actstore.config import Settings
from actstore.errors import InvalidInput, NotFound
from actstore.layers import relative_depth
from actstore.store import ModelInfo, SaeRecord, Store

from .answering import Answers, answers
from .boundary import service_boundary
from .cache import ByteLRU
from .reads import Reads, digest
from .requests import SaeCorrelationRequest, SaeMatrixRequest
from .results import Matrix, Plan, ResultCache, result_type
from .work import Cost, check_cancelled, sae_correlation_cost, stop_check

if TYPE_CHECKING:
    from actstore.analysis.sae import SaeParams

TOP_PAIRS_KEPT = 2000  # matched pairs stored with an answer (topPairs returns at most this many)
MATCHINGS = ("one_to_one", "many_to_one")


@dataclass(frozen=True)
class FeaturePairResult:
    feature_a: int
    feature_b: int
    correlation: float


@result_type
@dataclass(frozen=True)
class SaeCorrelationResult:
    """One SAE pair compared (see the module doc). ``pairs``: matched pairs K; ``features_a``:
    features considered (after a keyword subspace), ``dropped_a``: of those, never varying;
    ``svcca_dims_a``: SVD directions kept for 99% variance; ``rsa_pairs``: pairs used for RSA;
    ``top_pairs``: up to TOP_PAIRS_KEPT pairs, strongest first."""

    sae_a: str
    sae_b: str
    model_a: str
    layer_a: int
    model_b: str
    layer_b: int
    matching: str
    n: int
    pairs: int
    mean_correlation: float
    svcca: float
    rsa: float
    random_svcca_mean: float
    random_rsa_mean: float
    random_svcca_std: float
    p_value: float
    rsa_p_value: float
    random_pairs: int
    seed: int
    features_a: int
    features_b: int
    dropped_a: int
    dropped_b: int
    svcca_dims_a: int
    svcca_dims_b: int
    rsa_pairs: int
    method: str
    min_correlation: float | None = None
    keywords: list[str] | None = None
    top_pairs: list[FeaturePairResult] = field(default_factory=list)
    key: str = ""


@result_type
@dataclass(frozen=True)
class SaeMatrixResult:
    """SVCCA (and RSA, random means, p-values) of every SAE layer pair of two models:
    row i = saes_a[i] at layers_a[i], column j = saes_b[j] at layers_b[j]."""

    model_a: str
    model_b: str
    saes_a: list[str]
    saes_b: list[str]
    layers_a: list[int]
    layers_b: list[int]
    depths_a: list[float]
    depths_b: list[float]
    values: Matrix
    rsa: Matrix
    random_svcca_mean: Matrix
    p_values: Matrix
    mean_correlation: Matrix
    argmax: list[int]
    n: int
    matching: str
    random_pairs: int
    seed: int
    key: str = ""


@service_boundary
class Saes(Answers):
    """The SAE registry and SAE feature comparisons. Thread-safe; keeps the parameters of the
    last few SAEs used and their encodings of recent prompt sets in memory."""

    def __init__(self, store: Store, settings: Settings, reads: Reads, results: ResultCache) -> None:
        self.store, self.settings, self.reads, self.results = store, settings, reads, results
        # SAE parameters by ("params", sae id) and feature activations (CSR) by (sae id, table
        # version, prompt-set digest), together bounded by ACTSTORE_SAE_CACHE_MB
        self.features = ByteLRU(settings.sae_cache_mb << 20)

    sae_feature_correlation = answers(SaeCorrelationRequest)
    sae_matrix = answers(SaeMatrixRequest)

    # --------------------------------------------------------------- registry
    def saes(self, model: str | None = None) -> list[SaeRecord]:
        """Registered SAEs, optionally of one model (NotFound for an unknown model)."""
        return self.store.saes.list(model)

    def sae(self, sae_id: str) -> SaeRecord:
        return self.store.saes.get(str(sae_id))

    def register_sae(self, model: str, layer: int, path: str) -> SaeRecord:
        """Register an SAE folder (any supported layout) from the server's SAE root (``ACTSTORE_SAE_ROOT``);
        relative paths are taken from the root; nothing outside it, symlinks included."""
        root = self.settings.sae_root
        if not root:
            raise InvalidInput(
                "SAE registration over the API is disabled: the server has no ACTSTORE_SAE_ROOT configured"
            )
        return self.store.saes.register(model, layer, path, root=root)

    # ---------------------------------------------------------------- helpers
    def _sae_params(self, sae_id: str) -> tuple[SaeRecord, SaeParams]:
        hit: tuple[SaeRecord, SaeParams] | None = self.features.get(("params", sae_id))
        if hit is not None:
            return hit
        record, w = self.store.saes.load(sae_id)
        cfg = record.cfg
        params = analysis.sae.SaeParams(
            W_enc=w["W_enc"],
            b_enc=w["b_enc"],
            W_dec=w["W_dec"],
            b_dec=w["b_dec"],
            architecture=record.architecture,
            threshold=w.get("threshold"),
            k=cfg.get("k"),
            apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
            normalize_activations=cfg.get("normalize_activations", "none"),
            norm_scaling_factor=cfg.get("norm_scaling_factor"),
        )
        self.features.put(("params", sae_id), (record, params))
        return record, params

    def _sae_features(self, record: SaeRecord, params: SaeParams, ids: np.ndarray) -> np.ndarray:
        """Sparse feature activations [len(ids), d_sae] of one SAE over stored prompts."""
        version = self.store.activations.version(record.model_key, record.layer)
        key = (record.sae_id, version, digest(ids))
        F: np.ndarray | None = self.features.get(key)
        if F is not None:
            return F
        X = self.reads.rows(record.model_key, record.layer, ids)
        F = analysis.sae.encode(X, params)
        self.features.put(key, F)
        return F

    def _sae_record(self, sae_id: str) -> tuple[SaeRecord, ModelInfo]:
        record = self.store.saes.get(str(sae_id))
        info = self.store.models.get(record.model_key)
        if record.layer not in info.layers:
            raise NotFound(
                f"SAE {record.sae_id!r} reads layer {record.layer} of model {record.model_key!r}, "
                f"which has no stored activations; stored layers: {list(info.layers)}"
            )
        return record, info

    # ----------------------------------------------------------------- queries
    def _plan_SaeCorrelationRequest(self, req: SaeCorrelationRequest) -> Plan[SaeCorrelationResult]:
        """Match the features of SAEs ``a`` and ``b`` (ids) by activation correlation over the
        prompts their models share and compare the matched decoder rows (SVCCA, RSA) with
        ``random_pairs`` random pairings (p-value with the +1 correction)."""
        matching, random_pairs, seed, dataset = req.matching.value, req.random_pairs, req.seed, req.dataset
        min_correlation, top_prompts, keyword_share = req.min_correlation, req.top_prompts, req.keyword_share
        kw = sorted({k.strip().lower() for k in req.keywords if k.strip()}) if req.keywords is not None else None
        ra, ia = self._sae_record(req.a)
        rb, ib = self._sae_record(req.b)
        versions = self.reads.versions(ia, ib)

        def compute(key: str) -> SaeCorrelationResult:
            ids = self.reads.shared(ra.model_key, rb.model_key, dataset)
            if len(ids) < 3:
                raise InvalidInput(f"only {len(ids)} shared prompts: feature correlation needs at least 3")
            _, pa_ = self._sae_params(ra.sae_id)
            _, pb_ = self._sae_params(rb.sae_id)
            Fa = self._sae_features(ra, pa_, ids)
            Fb = self._sae_features(rb, pb_, ids)
            fa = fb = None
            if kw:
                texts = [p.text for p in self.store.prompts.get(ids)]
                hits = analysis.sae.keyword_hits(texts, kw)
                if not hits.any():
                    raise InvalidInput(
                        f"none of the {len(ids)} shared prompts contains any of the keywords {', '.join(kw[:10])}"
                    )
                fa = analysis.sae.keyword_features(Fa, hits, top=int(top_prompts), min_share=float(keyword_share))
                fb = analysis.sae.keyword_features(Fb, hits, top=int(top_prompts), min_share=float(keyword_share))
                for side, f in (("A", fa), ("B", fb)):
                    if len(f) == 0:
                        raise InvalidInput(
                            f"no feature of SAE {side} has its top-activating prompts matching the keywords "
                            f"(top {top_prompts}, share >= {keyword_share}); try more keywords or prompts"
                        )
            m = analysis.sae_match.match_features(
                Fa, Fb, matching=matching, features_a=fa, features_b=fb, min_correlation=min_correlation
            )
            if len(m.pairs_a) < 3:
                floor = f" at or above minCorrelation {min_correlation}" if min_correlation is not None else ""
                raise InvalidInput(f"only {len(m.pairs_a)} matched feature pairs{floor}; SVCCA and RSA need at least 3")
            t = analysis.sae_match.paired_space_test(
                pa_.W_dec[m.pairs_a].astype(np.float64),
                pb_.W_dec[m.pairs_b].astype(np.float64),
                random_pairs=random_pairs,
                seed=int(seed),
                should_stop=stop_check(),
            )
            top = [
                FeaturePairResult(int(x), int(y), float(r))
                for x, y, r in zip(
                    m.pairs_a[:TOP_PAIRS_KEPT], m.pairs_b[:TOP_PAIRS_KEPT], m.correlation[:TOP_PAIRS_KEPT]
                )
            ]
            return SaeCorrelationResult(
                sae_a=ra.sae_id,
                sae_b=rb.sae_id,
                model_a=ra.model_key,
                layer_a=ra.layer,
                model_b=rb.model_key,
                layer_b=rb.layer,
                matching=matching,
                n=len(ids),
                pairs=len(m.pairs_a),
                mean_correlation=float(m.correlation.mean()),
                svcca=t.svcca,
                rsa=t.rsa,
                random_svcca_mean=float(t.random_svcca.mean()),
                random_rsa_mean=float(t.random_rsa.mean()),
                random_svcca_std=float(t.random_svcca.std()),
                p_value=t.p_value,
                rsa_p_value=t.rsa_p_value,
                random_pairs=random_pairs,
                seed=int(seed),
                features_a=m.n_features_a,
                features_b=m.n_features_b,
                dropped_a=m.dropped_a,
                dropped_b=m.dropped_b,
                svcca_dims_a=t.dims_a,
                svcca_dims_b=t.dims_b,
                rsa_pairs=t.rsa_pairs,
                method=m.method,
                min_correlation=min_correlation,
                keywords=kw,
                top_pairs=top,
                key=key,
            )

        def cost() -> Cost:
            n = len(self.reads.shared(ra.model_key, rb.model_key, dataset))
            return Cost(
                self._pair_cost(ra, rb, n, matching, random_pairs),
                f"saeFeatureCorrelation of {ra.d_sae} x {rb.d_sae} features over n = {n} prompts with "
                f"{random_pairs} random pairs",
            )

        return Plan(compute, {"a": ra.sae_id, "b": rb.sae_id, "keywords": kw}, versions, cost)

    @staticmethod
    def _pair_cost(ra: SaeRecord, rb: SaeRecord, n: int, matching: str, random_pairs: int) -> float:
        return sae_correlation_cost(n, ra.d_in, ra.d_sae, rb.d_in, rb.d_sae, random_pairs, matching == "one_to_one")

    def _plan_SaeMatrixRequest(self, req: SaeMatrixRequest) -> Plan[SaeMatrixResult]:
        """SVCCA of every SAE pair over the layers of two models (rows: model A's SAEs by
        layer; columns: model B's). Default SAEs: the latest registered one per stored layer.
        The cells are answered (and cached) one by one as SAE correlations; the whole matrix is
        checked against the budget first."""
        ia, ib = self.store.models.get(req.model_a), self.store.models.get(req.model_b)
        la = self._sae_list(ia, req.saes_a)
        lb = self._sae_list(ib, req.saes_b)
        versions = self.reads.versions(ia, ib)
        dataset, matching, random_pairs, seed = req.dataset, req.matching, req.random_pairs, req.seed

        def cost() -> Cost:
            n = len(self.reads.shared(ia.key, ib.key, dataset))
            flops = sum(self._pair_cost(x, y, n, matching.value, random_pairs) for x in la for y in lb)
            return Cost(
                flops, f"saeMatrix of {len(la)} x {len(lb)} SAEs over n = {n} prompts with {random_pairs} random pairs"
            )

        def compute(key: str) -> SaeMatrixResult:
            cells = []
            for i, x in enumerate(la):
                check_cancelled(i * len(lb), len(la) * len(lb), "cells")
                cells.append(
                    [
                        self.answer(
                            SaeCorrelationRequest(
                                x.sae_id,
                                y.sae_id,
                                dataset=dataset,
                                matching=matching,
                                random_pairs=random_pairs,
                                seed=seed,
                            )
                        )
                        for y in lb
                    ]
                )

            def grid(name: str) -> np.ndarray:
                return np.array([[float(getattr(c, name)) for c in row] for row in cells])

            values = grid("svcca")
            return SaeMatrixResult(
                model_a=ia.key,
                model_b=ib.key,
                saes_a=[r.sae_id for r in la],
                saes_b=[r.sae_id for r in lb],
                layers_a=[r.layer for r in la],
                layers_b=[r.layer for r in lb],
                depths_a=[relative_depth(r.layer, ia.n_layers) for r in la],
                depths_b=[relative_depth(r.layer, ib.n_layers) for r in lb],
                values=values,
                rsa=grid("rsa"),
                random_svcca_mean=grid("random_svcca_mean"),
                p_values=grid("p_value"),
                mean_correlation=grid("mean_correlation"),
                argmax=[int(np.argmax(r)) for r in values],
                n=cells[0][0].n,
                matching=cells[0][0].matching,
                random_pairs=int(random_pairs),
                seed=int(seed),
                key=key,
            )

        # the whole matrix is checked against the budget; the cells take their own slots (a matrix
        # holding one too could deadlock)
        return Plan(
            compute, {"saes_a": [r.sae_id for r in la], "saes_b": [r.sae_id for r in lb]}, versions, cost, slot=False
        )

    def _sae_list(self, info: ModelInfo, ids: Sequence[str] | None) -> list[SaeRecord]:
        if ids is not None:
            if len(ids) == 0:
                raise InvalidInput(
                    f"the SAE list for model {info.key!r} is empty",
                    field="saes_a",
                    value=[],
                    allowed="a non-empty list",
                )
            out = [self.store.saes.get(str(i)) for i in ids]
            wrong = [r.sae_id for r in out if r.model_key != info.key]
            if wrong:
                raise InvalidInput(f"SAE(s) {', '.join(wrong)} do not belong to model {info.key!r}")
            return sorted(out, key=lambda r: r.layer)
        latest: dict[int, SaeRecord] = {}
        for r in self.store.saes.list(info.key):  # sorted by layer, then registration time
            if r.layer in info.layers:
                latest[r.layer] = r
        if not latest:
            raise NotFound(f"model {info.key!r} has no registered SAE on a stored layer; register one first")
        return [latest[l] for l in sorted(latest)]
