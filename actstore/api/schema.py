"""The core root fields of the GraphQL schema (strawberry, code-first), implementing
``shared/schema.graphql``: catalog, nearest neighbours, mutual k-NN, affinity and CKA
matrices, and the ingest / addPrompts mutations.

Resolvers are thin: they convert arguments, call a service part on a worker thread
(:func:`actstore.api.context.call`) and build the derived GraphQL types.
"""

from __future__ import annotations

from typing import Annotated, Optional

import strawberry

from .context import Info, call, require_token
from .derive import build
from .types import (
    AffinityMatrix,
    Cka,
    Dataset,
    Job,
    LayerRef,
    Metric,
    Model,
    MutualKnn,
    Neighbor,
    Precision,
    Preprocess,
    Prompt,
    SimilarityMatrix,
    parse_prompt_id,
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
        return [build(Prompt, p) for p in await call(info, info.context.service.catalog.prompts, dataset, offset, limit)]

    @strawberry.field
    async def job(self, info: Info, id: strawberry.ID) -> Optional[Job]:
        j = info.context.service.jobs.job(str(id))
        return Job.of(j) if j else None

    @strawberry.field(description="k nearest prompts at one layer, by a stored prompt, a raw vector or new "
                      "text (text needs the model's weights reachable from the server).")
    async def nearest_neighbors(
        self, info: Info, at: LayerRef, prompt_id: Optional[strawberry.ID] = None,
        vector: Optional[list[float]] = None, text: Optional[str] = None, k: int = 10,
        dataset: Optional[str] = None, metric: Metric = Metric.COSINE,
        labelled: Annotated[Optional[bool], strawberry.argument(
            description="true: only labelled prompts as neighbours; false: only unlabelled; null: all")] = None,
    ) -> list[Neighbor]:
        pid = parse_prompt_id(prompt_id) if prompt_id is not None else None
        rows = await call(info, info.context.service.similarity.nearest_neighbors, at.value(), prompt_id=pid,
                          vector=vector, text=text, k=k, dataset=dataset, metric=metric.value, labelled=labelled,
                          heavy=text is not None)
        return [build(Neighbor, r) for r in rows]

    @strawberry.field(description="Mutual k-NN similarity of two layers (Huh et al. 2024; Wolfram & Schein); "
                      "byDataset adds the value within each dataset.")
    async def mutual_knn(self, info: Info, a: LayerRef, b: LayerRef, k: int = 10,
                         dataset: Optional[str] = None, preprocess: Preprocess = Preprocess.NONE,
                         outlier_threshold: Optional[float] = None, by_dataset: bool = False) -> MutualKnn:
        r = await call(info, info.context.service.similarity.mutual_knn, a.value(), b.value(), k=k, dataset=dataset,
                       preprocess=preprocess.value, outlier_threshold=outlier_threshold, by_dataset=by_dataset,
                       heavy=True)
        return build(MutualKnn, r)

    @strawberry.field(description="Mutual k-NN for every layer pair of two models, with the generalized-diagonal test; "
                      "byDataset adds the matrix within each dataset.")
    async def affinity_matrix(self, info: Info, model_a: str, model_b: str, k: int = 10,
                              dataset: Optional[str] = None, layers_a: Optional[list[int]] = None,
                              layers_b: Optional[list[int]] = None, preprocess: Preprocess = Preprocess.NONE,
                              outlier_threshold: Optional[float] = None,
                              by_dataset: bool = False) -> AffinityMatrix:
        r = await call(info, info.context.service.similarity.affinity_matrix, model_a, model_b, k=k,
                       dataset=dataset, layers_a=layers_a, layers_b=layers_b, preprocess=preprocess.value,
                       outlier_threshold=outlier_threshold, by_dataset=by_dataset, heavy=True)
        return AffinityMatrix.of(r)

    @strawberry.field(description="Linear CKA; debiased uses the unbiased HSIC estimator (Song et al. 2012). "
                      "permutations > 0 adds a permutation-test p-value (null stratified by dataset "
                      "when several are mixed); byDataset adds the value per dataset.")
    async def cka(self, info: Info, a: LayerRef, b: LayerRef, debiased: bool = True, permutations: int = 0,
                  dataset: Optional[str] = None, seed: int = 0, preprocess: Preprocess = Preprocess.NONE,
                  outlier_threshold: Optional[float] = None, by_dataset: bool = False,
                  precision: Precision = Precision.AUTO) -> Cka:
        r = await call(info, info.context.service.similarity.cka, a.value(), b.value(), debiased=debiased,
                       permutations=permutations, dataset=dataset, seed=seed, preprocess=preprocess.value,
                       outlier_threshold=outlier_threshold, by_dataset=by_dataset, precision=precision.value,
                       heavy=True)
        return build(Cka, r)

    @strawberry.field(description="CKA for every layer pair (or an evenly spaced relative-depth grid of `grid` layers).")
    async def cka_matrix(self, info: Info, model_a: str, model_b: str, debiased: bool = True,
                         dataset: Optional[str] = None, layers_a: Optional[list[int]] = None,
                         layers_b: Optional[list[int]] = None, grid: Optional[int] = None,
                         preprocess: Preprocess = Preprocess.NONE,
                         outlier_threshold: Optional[float] = None,
                         precision: Precision = Precision.AUTO, by_dataset: bool = False) -> SimilarityMatrix:
        r = await call(info, info.context.service.similarity.cka_matrix, model_a, model_b, debiased=debiased,
                       dataset=dataset, layers_a=layers_a, layers_b=layers_b, grid=grid, preprocess=preprocess.value,
                       outlier_threshold=outlier_threshold, precision=precision.value, by_dataset=by_dataset,
                       heavy=True)
        return build(SimilarityMatrix, r)


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Start an ingest of one model over one dataset; needs the API token.")
    async def ingest(self, info: Info, model: str, dataset: str, layers: Optional[list[int]] = None,
                     batch_size: Optional[int] = None,
                     token: Annotated[Optional[str], strawberry.argument(
                         description="Token site stored: last (default), first or mean.")] = None,
                     chat_template: Annotated[Optional[bool], strawberry.argument(
                         description="Wrap prompts in the tokenizer's chat template.")] = None,
                     key: Annotated[Optional[str], strawberry.argument(
                         description="Model key in the store (default: from the model's name).")] = None) -> Job:
        require_token(info)
        j = await call(info, info.context.service.jobs.start_ingest, model, dataset, layers=layers,
                       batch_size=batch_size, token=token, chat_template=chat_template, key=key)
        return Job.of(j)

    @strawberry.mutation(description="Add prompts (optionally labelled) as a dataset; needs the API token.")
    async def add_prompts(self, info: Info, dataset: str, texts: list[str],
                          labels: Optional[list[int]] = None) -> Dataset:
        require_token(info)
        return build(Dataset, await call(info, info.context.service.catalog.add_prompts, dataset, texts, labels))
