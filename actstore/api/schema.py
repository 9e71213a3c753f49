"""The core root fields of the GraphQL schema (strawberry, code-first), implementing
``shared/schema.graphql``: catalog, nearest neighbours, mutual k-NN, affinity and CKA
matrices, and the ingest / addPrompts mutations.

Resolvers are thin: they convert arguments, call a service part on a worker thread
(:func:`actstore.api.context.call`) and build the derived GraphQL types.
"""

from __future__ import annotations

from typing import Annotated, Optional

import strawberry

from actstore.service.requests import AffinityRequest, CkaMatrixRequest, CkaRequest, MutualKnnRequest, NeighborsRequest

from .context import Info, call, require_token
from .derive import build
from .requests import request_field
from .types import (
    AffinityMatrix,
    Cka,
    Dataset,
    Job,
    Model,
    MutualKnn,
    Neighbor,
    Prompt,
    SimilarityMatrix,
)

__all__ = ["Mutation", "Query"]


@strawberry.type
class Query:
    @strawberry.field
    async def models(self, info: Info) -> list[Model]:
        return [Model.of(info, m) for m in await call(info, info.context.service.catalog.model_infos)]

    @strawberry.field
    async def model(self, info: Info, key: str) -> Optional[Model]:
        m = await call(info, info.context.service.catalog.model_info, key)
        return Model.of(info, m) if m else None

    @strawberry.field
    async def datasets(self, info: Info) -> list[Dataset]:
        return [build(Dataset, d) for d in await call(info, info.context.service.catalog.datasets)]

    @strawberry.field
    async def prompts(self, info: Info, dataset: str, offset: int = 0, limit: int = 100) -> list[Prompt]:
        return [
            build(Prompt, p) for p in await call(info, info.context.service.catalog.prompts, dataset, offset, limit)
        ]

    @strawberry.field
    async def job(self, info: Info, id: strawberry.ID) -> Optional[Job]:
        j = info.context.service.jobs.job(str(id))
        return Job.of(j) if j else None

    nearest_neighbors: list[Neighbor] = request_field(
        NeighborsRequest,
        list[Neighbor],
        build=lambda rows: [build(Neighbor, r) for r in rows],
        heavy=lambda req: getattr(req, "text", None) is not None,
        description="k nearest prompts at one layer, by a stored prompt, a raw vector or new text (text needs the "
        "model's weights reachable from the server).",
    )
    mutual_knn: MutualKnn = request_field(
        MutualKnnRequest,
        MutualKnn,
        build=lambda r: build(MutualKnn, r),
        description="Mutual k-NN similarity of two layers (Huh et al. 2024; Wolfram & Schein); byDataset adds the "
        "value within each dataset.",
    )
    affinity_matrix: AffinityMatrix = request_field(
        AffinityRequest,
        AffinityMatrix,
        build=AffinityMatrix.of,
        description="Mutual k-NN for every layer pair of two models, with the generalized-diagonal test; byDataset "
        "adds the matrix within each dataset.",
    )
    cka: Cka = request_field(
        CkaRequest,
        Cka,
        build=lambda r: build(Cka, r),
        description="Linear CKA; debiased uses the unbiased HSIC estimator (Song et al. 2012). permutations > 0 "
        "adds a permutation-test p-value (null stratified by dataset when several are mixed); byDataset "
        "adds the value per dataset.",
    )
    cka_matrix: SimilarityMatrix = request_field(
        CkaMatrixRequest,
        SimilarityMatrix,
        build=SimilarityMatrix.of,
        description="CKA for every layer pair (or an evenly spaced relative-depth grid of `grid` layers).",
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Start an ingest of one model over one dataset; needs the API token.")
    async def ingest(
        self,
        info: Info,
        model: str,
        dataset: str,
        layers: Optional[list[int]] = None,
        batch_size: Optional[int] = None,
        token: Annotated[
            Optional[str], strawberry.argument(description="Token site stored: last (default), first or mean.")
        ] = None,
        chat_template: Annotated[
            Optional[bool], strawberry.argument(description="Wrap prompts in the tokenizer's chat template.")
        ] = None,
        key: Annotated[
            Optional[str], strawberry.argument(description="Model key in the store (default: from the model's name).")
        ] = None,
    ) -> Job:
        require_token(info)
        j = await call(
            info,
            info.context.service.jobs.start_ingest,
            model,
            dataset,
            layers=layers,
            batch_size=batch_size,
            token=token,
            chat_template=chat_template,
            key=key,
        )
        return Job.of(j)

    @strawberry.mutation(description="Add prompts (optionally labelled) as a dataset; needs the API token.")
    async def add_prompts(
        self, info: Info, dataset: str, texts: list[str], labels: Optional[list[int]] = None
    ) -> Dataset:
        require_token(info)
        return build(Dataset, await call(info, info.context.service.catalog.add_prompts, dataset, texts, labels))
