"""GraphQL for the atlas: the ``atlas`` query (answered when cached or within the cost budget),
the ``runAtlas`` mutation (the same arguments, behind the token: a job with progress) and
``cancelJob``. Output types derived from the service's AtlasResult / AtlasPairResult."""

from __future__ import annotations

import math
from typing import Optional

import strawberry

from actstore.service.atlas import AtlasPairResult, AtlasResult
from actstore.service.requests import AtlasRequest

from .context import Info, call, require_token
from .derive import build, derive
from .requests import request_field
from .types import Job

__all__ = ["AtlasMutation", "AtlasQuery"]

AtlasPair = derive(
    AtlasPairResult,
    name="AtlasPair",
    descriptions={
        "values": "values[i][j] compares layersA[i] of modelA with layersB[j] of modelB.",
        "argmax": "For each row, the column index (into layersB) of its largest value.",
        "argmax_depths": "For each row, the relative depth of model B's layer at its argmax: the path of maximum "
        "similarity in relative depth.",
        "diagonal": "The generalized-diagonal test; null where the matrix is too small or flat for it.",
        "max_value": "The largest cell.",
    },
)


@strawberry.type
class Atlas(
    derive(
        AtlasResult,
        name="AtlasFields",
        exclude=("key", "max_similarity"),
        descriptions={
            "pairs": "Every unordered pair in the order the models were given (modelA before modelB).",
            "mean_resized": "The mean over pairs of each pair's matrix resized to resize x resize relative depths.",
            "n": "Prompts every model shares (within the dataset).",
        },
    )
):
    key: strawberry.Private[str]
    max_similarity_values: strawberry.Private[list[list[float]]]

    @strawberry.field(
        description="maxSimilarity[i][j]: the largest cell of pair (i, j)'s matrix (symmetric, null on the diagonal)."
    )
    def max_similarity(self) -> list[list[Optional[float]]]:
        return [[None if math.isnan(v) else v for v in row] for row in self.max_similarity_values]

    @strawberry.field(
        description="PNG: the mean resized matrix, every pair's argmax-depth line and the on vs off diagonal scatter."
    )
    def plot_url(self, info: Info) -> str:
        return info.context.plot_url(self.key)

    @classmethod
    def of(cls, r: AtlasResult) -> Atlas:
        return build(cls, r, max_similarity_values=r.max_similarity.tolist())


@strawberry.type
class AtlasQuery:
    atlas: Atlas = request_field(
        AtlasRequest,
        Atlas,
        build=Atlas.of,
        description="Every pair of a set of models compared layer by layer with one registered measure (default "
        "mutual_knn, k = 10) over the prompts all share: each pair's matrix, argmax path and "
        "generalized-diagonal test, the mean resized matrix and the largest similarity of every pair. "
        "Answered when cached or within the server's cost budget; otherwise run it with runAtlas.",
    )


@strawberry.type
class AtlasMutation:
    run_atlas: Job = request_field(
        AtlasRequest,
        Job,
        build=Job.of,
        heavy=False,
        mutation=True,
        guard=require_token,
        run=lambda service, request: service.atlas.start_job(service.jobs, request),
        description="Compute an atlas as a background job (needs the API token): progress in pairs, cancellable "
        "with cancelJob; pairs are stored as they finish, so a stopped job resumes. When it is done, "
        "the atlas query with the same arguments answers from the cache.",
    )

    @strawberry.mutation(
        description="Stop a queued or running job (needs the API token): its state becomes FAILED with a message starting 'cancelled'; what it stored stays."
    )
    async def cancel_job(self, info: Info, id: strawberry.ID) -> Job:
        require_token(info)
        return Job.of(await call(info, info.context.service.jobs.cancel, str(id)))
