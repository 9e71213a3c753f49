"""What the service takes and returns: a LayerRef in, small dataclasses out.

Names mirror ``schema.graphql`` in snake_case. Matrix results carry ``key``, the cache key
of the answer, from which the API serves a PNG heatmap.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Neighbor:
    rank: int
    prompt_id: int
    score: float
    text: str | None


@dataclass(frozen=True)
class MutualKnnResult:
    value: float
    k: int
    n: int
    null_mean: float
    layer_a: int
    layer_b: int
    # recall@k of the approximate k-NN graphs against exact search, measured on a sample of
    # prompts (the smaller of the two layers'); None when both graphs are exact
    recall: float | None = None


@dataclass(frozen=True)
class CkaResult:
    value: float
    debiased: bool
    n: int
    layer_a: int
    layer_b: int
    permutations: int
    p_value: float | None


@dataclass(frozen=True)
class SimilarityMatrixResult:
    model_a: str
    model_b: str
    layers_a: list[int]
    layers_b: list[int]
    values: list[list[float]]
    n: int
    argmax: list[int]
    depths_a: list[float]
    depths_b: list[float]
    debiased: bool
    key: str = ""


@dataclass(frozen=True)
class DiagonalTestResult:
    on_diagonal_mean: float
    off_diagonal_mean: float
    t_statistic: float
    p_value: float


@dataclass(frozen=True)
class AffinityMatrixResult:
    model_a: str
    model_b: str
    layers_a: list[int]
    layers_b: list[int]
    values: list[list[float]]
    n: int
    argmax: list[int]
    k: int
    null_mean: float
    diagonal: DiagonalTestResult
    depths_a: list[float]
    depths_b: list[float]
    key: str = ""
    # smallest sampled recall@k over the layers' approximate k-NN graphs; None when all exact
    recall: float | None = None


RESULT_TYPES = {
    cls.__name__: cls
    for cls in (MutualKnnResult, CkaResult, SimilarityMatrixResult, AffinityMatrixResult)
}


def to_jsonable(result: Any) -> dict[str, Any]:
    """A result dataclass as a JSON-ready dict tagged with its type."""
    return {"type": type(result).__name__, "data": dataclasses.asdict(result)}


def from_jsonable(payload: dict[str, Any]) -> Any:
    """Inverse of :func:`to_jsonable`."""
    cls = RESULT_TYPES[payload["type"]]
    data = dict(payload["data"])
    if hasattr(cls, "from_jsonable"):  # result types with nested dataclasses rebuild themselves
        return cls.from_jsonable(data)
    if cls is AffinityMatrixResult:
        data["diagonal"] = DiagonalTestResult(**data["diagonal"])
    return cls(**data)
