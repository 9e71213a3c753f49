"""GraphQL for SAEs: ``saes``, ``saeFeatureCorrelation``, ``saeMatrix`` (SVCCA over layer
pairs, with a PNG heatmap) and the ``registerSae`` mutation. Root types ``SaeQuery`` and
``SaeMutation`` are merged into Query / Mutation by :mod:`actstore.api.app`.

Fields beyond the contract: Sae.hookName/notes/format/createdAt; SaeCorrelation.saeA/saeB, n,
featuresA/B, droppedA/B (never-varying features left out), svccaDimsA/B (directions kept for
99% variance), rsaPairs, rsaPValue, randomSvccaStd, matching, randomPairs, seed, method, and
the models and layers compared. Correlation and matrix types are derived from the service's
result dataclasses; ``Sae`` maps a store record (its GraphQL names are the contract's).
"""

from __future__ import annotations

from typing import Optional

import strawberry

from actstore.errors import InvalidInput
from actstore.service import FeaturePairResult, SaeCorrelationResult, SaeMatrixResult, SaeRecord, check_list_limit
from actstore.service.requests import SaeCorrelationRequest, SaeMatrixRequest

from .context import Info, call, require_token
from .derive import build, derive
from .requests import request_field
from .types import Matching

__all__ = ["SaeMutation", "SaeQuery"]


@strawberry.type(description="One registered sparse autoencoder.")
class Sae:
    id: strawberry.ID
    model: str
    layer: int
    d_in: int
    d_sae: int
    architecture: str = strawberry.field(description="SAELens' name: standard (ReLU), jumprelu or topk.")
    hook_name: Optional[str] = strawberry.field(description="The hook it was trained on (from cfg.json).")
    notes: Optional[str] = strawberry.field(description="Warnings recorded at registration.")
    format: str = strawberry.field(
        description="The layout it was read from: saelens, gemma_scope, gemma_scope_2, "
        "llama_scope, sparsify, dictionary_learning or saelens_registry."
    )
    created_at: str

    @classmethod
    def of(cls, r: SaeRecord) -> Sae:
        return cls(
            id=strawberry.ID(r.sae_id),
            model=r.model_key,
            layer=r.layer,
            d_in=r.d_in,
            d_sae=r.d_sae,
            architecture=r.architecture,
            hook_name=r.cfg.get("hook_name"),
            notes=r.notes,
            format=r.cfg.get("format") or "saelens",
            created_at=r.created_at.isoformat() if r.created_at else "",
        )


FeaturePair = derive(FeaturePairResult, name="FeaturePair")


@strawberry.type(
    description="SAE features of two layers matched by activation correlation; SVCCA and RSA of "
    "the matched decoder rows against random pairings."
)
class SaeCorrelation(
    derive(
        SaeCorrelationResult,
        name="SaeCorrelationFields",
        exclude=("key", "top_pairs"),
        fields={"sae_a": strawberry.ID, "sae_b": strawberry.ID, "matching": Matching},
        descriptions={
            "n": "Shared prompts the activations were correlated over.",
            "p_value": "Share of random pairings whose SVCCA reaches the matched SVCCA (with +1 smoothing).",
            "features_a": "Features of SAE A considered (a keyword subspace or all).",
            "dropped_a": "Of those, features that never vary over the prompts (left out).",
            "svcca_dims_a": "SVD directions kept for 99% of the variance.",
            "rsa_pairs": "Matched pairs used for RSA (a seeded subset when there are many).",
            "method": "How the correlation blocks were computed: sparse or dense.",
        },
    )
):
    pairs_kept: strawberry.Private[list[FeaturePairResult]]

    @strawberry.field(description="Matched pairs, strongest correlation first (at most 2,000 are kept).")
    def top_pairs(self, info: Info, limit: int = 20) -> list[FeaturePair]:
        if limit < 0:
            raise InvalidInput(f"limit must be >= 0, got {limit}")
        check_list_limit(limit, info.context.service.settings.max_list)
        return [build(FeaturePair, p) for p in self.pairs_kept[:limit]]

    @classmethod
    def of(cls, r: SaeCorrelationResult) -> SaeCorrelation:
        return build(cls, r, pairs_kept=r.top_pairs)


@strawberry.type(description="SVCCA of SAE features for every SAE layer pair of two models.")
class SaeMatrix(
    derive(
        SaeMatrixResult,
        name="SaeMatrixFields",
        exclude=("key",),
        fields={"saes_a": list[strawberry.ID], "saes_b": list[strawberry.ID], "matching": Matching},
        descriptions={"values": "SVCCA of the matched decoder rows."},
    )
):
    key: strawberry.Private[str]

    @strawberry.field(description="PNG heatmap of the SVCCA values.")
    def plot_url(self, info: Info) -> str:
        return info.context.plot_url(self.key)


@strawberry.type
class SaeQuery:
    @strawberry.field(description="Registered SAEs, optionally of one model.")
    async def saes(self, info: Info, model: Optional[str] = None) -> list[Sae]:
        return [Sae.of(r) for r in await call(info, info.context.service.saes.saes, model)]

    sae_feature_correlation: SaeCorrelation = request_field(
        SaeCorrelationRequest,
        SaeCorrelation,
        build=SaeCorrelation.of,
        description="Match SAE features of two layers by activation correlation over shared prompts and compare "
        "the matched feature spaces (SVCCA, RSA) against random pairings. Optional filters: "
        "minCorrelation drops weaker pairs; keywords restricts both SAEs to the features whose "
        "top-activating prompts (topPrompts of them, at least keywordShare) contain a keyword.",
    )
    sae_matrix: SaeMatrix = request_field(
        SaeMatrixRequest,
        SaeMatrix,
        build=lambda r: build(SaeMatrix, r),
        description="SVCCA of SAE features for every SAE layer pair of two models (default: the latest SAE per "
        "stored layer), with a PNG heatmap.",
    )


@strawberry.type
class SaeMutation:
    @strawberry.mutation(
        description="Register an SAE folder from the server's allowed SAE root; needs the token. "
        "Layouts: SAELens, Gemma Scope, Gemma Scope 2, Llama Scope, EleutherAI sparsify, "
        "dictionary_learning."
    )
    async def register_sae(self, info: Info, model: str, layer: int, path: str) -> Sae:
        require_token(info)
        r = await call(info, info.context.service.saes.register_sae, model, layer, path, heavy=True)
        return Sae.of(r)
