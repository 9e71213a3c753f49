"""GraphQL for SAEs: ``saes``, ``saeFeatureCorrelation``, ``saeMatrix`` (SVCCA over layer
pairs, with a PNG heatmap) and the ``registerSae`` mutation. Root types ``SaeQuery`` and
``SaeMutation`` are merged into Query / Mutation by :mod:`actstore.api.app`.

Fields beyond the contract: Sae.hookName/notes/createdAt; SaeCorrelation.saeA/saeB, n,
featuresA/B, droppedA/B (never-varying features left out), svccaDimsA/B (directions kept for
99% variance), rsaPairs, rsaPValue, randomSvccaStd, matching, randomPairs, seed, method.
"""

from __future__ import annotations

import io
from typing import Any, Optional

import strawberry
from strawberry.types import Info

from actstore.service.saes import SaeCorrelationResult, SaeMatrixResult
from actstore.errors import InvalidInput
from actstore.store.saes import SaeRecord

from .schema import Matching, SaeRef, call, require_token


@strawberry.type(description="One registered sparse autoencoder.")
class Sae:
    id: strawberry.ID
    model: str
    layer: int
    d_in: int
    d_sae: int
    architecture: str = strawberry.field(description="relu (SAELens standard), jumprelu or topk.")
    hook_name: Optional[str] = strawberry.field(description="The hook it was trained on (from cfg.json).")
    notes: Optional[str] = strawberry.field(description="Warnings recorded at registration.")
    created_at: str

    @classmethod
    def of(cls, r: SaeRecord) -> "Sae":
        return cls(id=strawberry.ID(r.sae_id), model=r.model_key, layer=r.layer, d_in=r.d_in, d_sae=r.d_sae,
                   architecture=r.architecture, hook_name=r.cfg.get("hook_name"), notes=r.notes,
                   created_at=r.created_at.isoformat() if r.created_at else "")


@strawberry.type
class FeaturePair:
    feature_a: int
    feature_b: int
    correlation: float


@strawberry.type(description="SAE features of two layers matched by activation correlation; SVCCA and RSA of "
                 "the matched decoder rows against random pairings.")
class SaeCorrelation:
    sae_a: strawberry.ID
    sae_b: strawberry.ID
    matching: Matching
    n: int = strawberry.field(description="Shared prompts the activations were correlated over.")
    pairs: int
    mean_correlation: float
    svcca: float
    rsa: float
    random_svcca_mean: float
    random_svcca_std: float
    random_rsa_mean: float
    p_value: float = strawberry.field(
        description="Share of random pairings whose SVCCA reaches the matched SVCCA (with +1 smoothing).")
    rsa_p_value: float
    random_pairs: int
    seed: int
    features_a: int = strawberry.field(description="Features of SAE A considered (a keyword subspace or all).")
    features_b: int
    dropped_a: int = strawberry.field(description="Of those, features that never vary over the prompts (left out).")
    dropped_b: int
    svcca_dims_a: int = strawberry.field(description="SVD directions kept for 99% of the variance.")
    svcca_dims_b: int
    rsa_pairs: int = strawberry.field(description="Matched pairs used for RSA (a seeded subset when there are many).")
    method: str = strawberry.field(description="How the correlation blocks were computed: sparse or dense.")
    result: strawberry.Private[Any]

    @strawberry.field(description="Matched pairs, strongest correlation first (at most 2,000 are kept).")
    def top_pairs(self, limit: int = 20) -> list[FeaturePair]:
        if limit < 0:
            raise InvalidInput(f"limit must be >= 0, got {limit}")
        return [FeaturePair(feature_a=p.feature_a, feature_b=p.feature_b, correlation=p.correlation)
                for p in self.result.top_pairs[:limit]]

    @classmethod
    def of(cls, r: SaeCorrelationResult) -> "SaeCorrelation":
        return cls(sae_a=strawberry.ID(r.sae_a), sae_b=strawberry.ID(r.sae_b), matching=Matching(r.matching),
                   n=r.n, pairs=r.pairs, mean_correlation=r.mean_correlation, svcca=r.svcca, rsa=r.rsa,
                   random_svcca_mean=r.random_svcca_mean, random_svcca_std=r.random_svcca_std,
                   random_rsa_mean=r.random_rsa_mean, p_value=r.p_value, rsa_p_value=r.rsa_p_value,
                   random_pairs=r.random_pairs, seed=r.seed, features_a=r.features_a, features_b=r.features_b,
                   dropped_a=r.dropped_a, dropped_b=r.dropped_b, svcca_dims_a=r.svcca_dims_a,
                   svcca_dims_b=r.svcca_dims_b, rsa_pairs=r.rsa_pairs, method=r.method, result=r)


@strawberry.type(description="SVCCA of SAE features for every SAE layer pair of two models.")
class SaeMatrix:
    model_a: str
    model_b: str
    saes_a: list[strawberry.ID]
    saes_b: list[strawberry.ID]
    layers_a: list[int]
    layers_b: list[int]
    depths_a: list[float]
    depths_b: list[float]
    values: list[list[float]] = strawberry.field(description="SVCCA of the matched decoder rows.")
    rsa: list[list[float]]
    random_svcca_mean: list[list[float]]
    p_values: list[list[float]]
    mean_correlation: list[list[float]]
    argmax: list[int]
    n: int
    matching: Matching
    plot_url: str = strawberry.field(description="PNG heatmap of the SVCCA values.")

    @classmethod
    def of(cls, info: Info, r: SaeMatrixResult) -> "SaeMatrix":
        return cls(model_a=r.model_a, model_b=r.model_b, saes_a=[strawberry.ID(s) for s in r.saes_a],
                   saes_b=[strawberry.ID(s) for s in r.saes_b], layers_a=r.layers_a, layers_b=r.layers_b,
                   depths_a=r.depths_a, depths_b=r.depths_b, values=r.values, rsa=r.rsa,
                   random_svcca_mean=r.random_svcca_mean, p_values=r.p_values,
                   mean_correlation=r.mean_correlation, argmax=r.argmax, n=r.n, matching=Matching(r.matching),
                   plot_url=f"{info.context.get('base_url', '/')}plots/{r.key}.png")


@strawberry.type
class SaeQuery:
    @strawberry.field(description="Registered SAEs, optionally of one model.")
    async def saes(self, info: Info, model: Optional[str] = None) -> list[Sae]:
        return [Sae.of(r) for r in await call(info, info.context["service"].saes, model)]

    @strawberry.field(description="Match SAE features of two layers by activation correlation over shared prompts "
                      "and compare the matched feature spaces (SVCCA, RSA) against random pairings. Optional "
                      "filters: minCorrelation drops weaker pairs; keywords restricts both SAEs to the features "
                      "whose top-activating prompts (topPrompts of them, at least keywordShare) contain a keyword.")
    async def sae_feature_correlation(
        self, info: Info, a: SaeRef, b: SaeRef, dataset: Optional[str] = None,
        matching: Matching = Matching.ONE_TO_ONE, random_pairs: int = 100, seed: int = 0,
        min_correlation: Optional[float] = None, keywords: Optional[list[str]] = None,
        top_prompts: int = 10, keyword_share: float = 0.5,
    ) -> SaeCorrelation:
        r = await call(info, info.context["service"].sae_feature_correlation, str(a.id), str(b.id),
                       dataset=dataset, matching=matching.value, random_pairs=random_pairs, seed=seed,
                       min_correlation=min_correlation, keywords=keywords, top_prompts=top_prompts,
                       keyword_share=keyword_share, heavy=True)
        return SaeCorrelation.of(r)

    @strawberry.field(description="SVCCA of SAE features for every SAE layer pair of two models (default: the "
                      "latest SAE per stored layer), with a PNG heatmap.")
    async def sae_matrix(
        self, info: Info, model_a: str, model_b: str, dataset: Optional[str] = None,
        matching: Matching = Matching.ONE_TO_ONE, random_pairs: int = 100, seed: int = 0,
        saes_a: Optional[list[strawberry.ID]] = None, saes_b: Optional[list[strawberry.ID]] = None,
    ) -> SaeMatrix:
        r = await call(info, info.context["service"].sae_matrix, model_a, model_b, dataset=dataset,
                       matching=matching.value, random_pairs=random_pairs, seed=seed,
                       saes_a=[str(s) for s in saes_a] if saes_a is not None else None,
                       saes_b=[str(s) for s in saes_b] if saes_b is not None else None, heavy=True)
        return SaeMatrix.of(info, r)


@strawberry.type
class SaeMutation:
    @strawberry.mutation(description="Register a SAELens-format SAE folder from the server's allowed SAE root; "
                         "needs the token.")
    async def register_sae(self, info: Info, model: str, layer: int, path: str) -> Sae:
        require_token(info)
        r = await call(info, info.context["service"].register_sae, model, layer, path, heavy=True)
        return Sae.of(r)


# ---------------------------------------------------------------------- PNG
def sae_heatmap_png(result: SaeMatrixResult) -> bytes:
    """SVCCA heatmap of an SaeMatrixResult: rows model A's SAE layers, columns model B's,
    argmax per row drawn, each cell annotated with its p-value when the grid is small."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .plots import _ticks

    M = np.asarray(result.values, dtype=float)
    ncols, nrows = min(M.shape[1], 16), min(M.shape[0], 16)
    fig, ax = plt.subplots(figsize=(2.6 + 0.55 * max(6, ncols), 1.8 + 0.32 * max(8, nrows)), dpi=110)
    im = ax.imshow(M, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest", vmin=0.0, vmax=1.0)
    ax.plot(result.argmax, np.arange(M.shape[0]), color="white", lw=1.5, marker="o", ms=3, label="argmax per row")
    if M.size <= 64:
        P = np.asarray(result.p_values, dtype=float)
        for i in range(M.shape[0]):
            for j in range(M.shape[1]):
                ax.text(j, i, f"{M[i, j]:.2f}\np={P[i, j]:.2g}", ha="center", va="center", fontsize=6,
                        color="black" if M[i, j] > 0.6 else "white")
    xt, xl = _ticks(result.layers_b, result.depths_b)
    yt, yl = _ticks(result.layers_a, result.depths_a)
    ax.set_xticks(xt, xl, fontsize=7)
    ax.set_yticks(yt, yl, fontsize=7)
    ax.set_xlabel(f"{result.model_b}: SAE layer (relative depth)")
    ax.set_ylabel(f"{result.model_a}: SAE layer (relative depth)")
    rand = float(np.mean(result.random_svcca_mean))
    ax.set_title(f"SAE feature SVCCA ({result.matching.upper()}, n={result.n})\n"
                 f"random-pairing mean {rand:.3f} over {result.random_pairs} pairings", fontsize=9, pad=18)
    fig.colorbar(im, ax=ax, label="SVCCA")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.12), fontsize=7, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


from .plots import RENDERERS  # noqa: E402

RENDERERS["SaeMatrixResult"] = sae_heatmap_png
