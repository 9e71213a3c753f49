"""GraphQL fields for every registered similarity measure: ``measures`` (the registry's
listing), ``similarity`` (two layers) and ``similarityMatrix`` (every layer pair, the
``SimilarityMatrix`` type that ``ckaMatrix`` returns too). Options are a ``JSON`` object; the
root type ``MeasureQuery`` is merged into Query by :mod:`actstore.api.app`.
"""

from __future__ import annotations

import json

import strawberry
from strawberry.scalars import JSON

from actstore.service import MeasureInfo, SimilarityByDataset, SimilarityResult
from actstore.service.requests import SimilarityMatrixRequest, SimilarityRequest

from .context import Info, call
from .derive import build, derive
from .requests import request_field
from .types import SimilarityMatrix

__all__ = ["MeasureQuery"]

Measure = derive(
    MeasureInfo,
    name="Measure",
    fields={"defaults": JSON},
    descriptions={
        "direction": "similarity (larger is more alike) or distance (smaller is more alike).",
        "options": "Option names (k for the k-NN measures, given as the k argument; the others in options).",
        "defaults": "Each option's default (k has none: the k-NN measures need it).",
        "sensitive_to": "One line on what the measure responds to.",
        "definition": "The formula.",
        "reference": "Paper, reference code (with its commit) and the largest difference measured against it.",
    },
)
SimilarityByDatasetType = derive(SimilarityByDataset, name="SimilarityByDataset")
Similarity = derive(
    SimilarityResult,
    name="Similarity",
    fields={"options": JSON},
    descriptions={
        "value": "The measure's value (direction says whether larger or smaller is more alike).",
        "options": "Every option of the measure used (defaults filled in; k apart).",
        "p_value": "Permutation-test p-value (1 + #{null at least as extreme}) / (1 + permutations); null without "
        "permutations.",
        "warnings": "Warnings about the answer (a mixed corpus, ...).",
    },
)


def similarity_of(r: SimilarityResult) -> Similarity:  # type: ignore[valid-type]
    """The GraphQL object of a similarity answer."""
    return build(Similarity, r, options=json.loads(r.options))


@strawberry.type
class MeasureQuery:
    @strawberry.field(description="Every registered similarity measure, platonic-representation's first.")
    async def measures(self, info: Info) -> list[Measure]:  # type: ignore[valid-type]
        return [
            build(Measure, m, defaults=json.loads(m.defaults))
            for m in await call(info, info.context.service.measures.measures)
        ]

    similarity: Similarity = request_field(  # type: ignore[valid-type]
        SimilarityRequest,
        Similarity,
        build=similarity_of,
        description="Any registered measure of two layers over their shared prompts; permutations > 0 adds a "
        "p-value (null stratified by dataset when several are mixed); byDataset adds the value per "
        "dataset.",
    )
    similarity_matrix: SimilarityMatrix = request_field(
        SimilarityMatrixRequest,
        SimilarityMatrix,
        build=SimilarityMatrix.of,
        description="Any registered measure for every layer pair of two models (or an evenly spaced relative-depth "
        "grid of `grid` layers); each layer's statistics are computed once.",
    )
