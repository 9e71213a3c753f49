"""GraphQL enums, inputs and the output types of the core queries, derived from the service's
result dataclasses (:mod:`actstore.api.derive`). Fields beyond the contract come with the
dataclasses (``Model.layers``, ``depthsA/depthsB``, ``debiased``, ``recall``, ...).
"""

from __future__ import annotations

import asyncio
import enum
import json
from collections.abc import Awaitable, Callable
from typing import Optional

import strawberry
from strawberry.scalars import JSON

from actstore.errors import InvalidInput
from actstore.layers import LayerRef as LayerRefValue
from actstore.service import (
    AffinityMatrixByDataset,
    AffinityMatrixResult,
    CkaByDataset,
    CkaMatrixByDataset,
    CkaResult,
    DatasetCount,
    DatasetInfo,
    ModelInfo,
    ModelSummary,
    MutualKnnByDataset,
    MutualKnnResult,
    PromptRecord,
    SimilarityMatrixResult,
    requests,
)
from actstore.service import DiagonalTest as DiagonalTestResult
from actstore.service import Job as JobValue
from actstore.service import (
    LayerIndex as LayerIndexValue,
)
from actstore.service import Neighbor as NeighborResult

from .context import Info, call
from .derive import build, derive

# ------------------------------------------------------------------- enums, inputs
# the request enums of the service, shown to GraphQL under the same names (values: member names)
Metric = strawberry.enum(requests.Metric, name="Metric")
BridgeMethod = strawberry.enum(requests.BridgeMethod, name="BridgeMethod")
Preprocess = strawberry.enum(
    requests.Preprocess,
    name="Preprocess",
    description=(
        "Preprocessing of activations before similarity and bridges: NONE, STANDARDIZE (per-dimension z-score; "
        "constant dimensions dropped), DROP_OUTLIER_DIMS (dimensions whose variance share exceeds "
        "outlierThreshold, default 0.05, dropped) or PLATONIC (similarity only: platonic-rep's pipeline, every "
        "entry clipped at one value per model, the mean over prompts of the 0.95-quantile of |x| over all its "
        "stored layers, then unit-length rows)."
    ),
)
Precision = strawberry.enum(
    requests.Precision,
    name="Precision",
    description=(
        "Floating-point precision: AUTO (the default; CKA: float64 for small problems, float32 for large ones; "
        "bridges and probe transfer: float64), FLOAT32 or FLOAT64."
    ),
)
Matching = strawberry.enum(requests.Matching, name="Matching")


@strawberry.enum
class JobState(enum.Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@strawberry.input(
    description="One layer of one stored model: give exactly one of `layer` (0-based decoder "
    "block, negative counts from the end) or `depth` (relative depth in [0, 1], nearest stored "
    "layer, ties to the deeper one)."
)
class LayerRef:
    model: str
    layer: Optional[int] = None
    depth: Optional[float] = None

    def value(self) -> LayerRefValue:
        return LayerRefValue(self.model, self.layer, self.depth)


@strawberry.input(description="One registered sparse autoencoder.")
class SaeRef:
    id: strawberry.ID


INT64_MAX = 2**63 - 1


def parse_prompt_id(value: strawberry.ID) -> int:
    """A GraphQL prompt ID as the store's int64 id (0 .. 2**63 - 1)."""
    text = str(value)
    if len(text) > 24:  # int() of a long digit string is slow; no int64 needs more digits
        raise InvalidInput(f"promptId must be an integer id between 0 and {INT64_MAX}, got {text[:24]!r}...")
    try:
        pid = int(text)
    except (TypeError, ValueError):
        raise InvalidInput(f"promptId must be an integer id, got {value!r}") from None
    if not 0 <= pid <= INT64_MAX:
        raise InvalidInput(f"promptId must be an integer id between 0 and {INT64_MAX}, got {value!r}")
    return pid


# ------------------------------------------------------------------------ catalog
_ModelFields = derive(
    ModelInfo,
    name="ModelFields",
    exclude=("created_at",),
    descriptions={
        "layers": "Decoder blocks with stored activations.",
        "site": "Where activations were read: resid_post = after each decoder block.",
        "token": "Which token site was stored: last (the last non-padding "
        "token), first (the first token) or mean (the mean over "
        "non-padding tokens).",
        "chat_template": "Whether prompts were wrapped in the tokenizer's chat template.",
    },
)


LayerIndex = derive(
    LayerIndexValue,
    name="LayerIndex",
    descriptions={
        "kind": "flat (exact search) or ivfpq4fs+rerank (approximate: IVF-PQ candidates re-ranked exactly).",
        "metric": "The metric of the approximate index; null when every metric is searched the same way.",
        "recall": "Recall@10 measured when the index was built, on held-out stored prompts against exact search "
        "(1.0 when exact; null while the approximate index is not built yet: it is built on the first "
        "search).",
        "exact": "True when the layer's answers are exact: a table below the approximate threshold, or one whose "
        "approximate index could not reach the target recall within the latency budget.",
        "target": "Recall@10 the index is tuned to (ACTSTORE_ANN_RECALL).",
        "candidates": "Candidates re-ranked exactly for k = 10 (tuned).",
        "measured_rows": "Rows of the table when the recall was measured.",
    },
)


@strawberry.type
class Model(_ModelFields):
    summary: strawberry.Private[Callable[[], Awaitable[ModelSummary]]]

    @strawberry.field(description="Datasets with prompts stored at every stored layer of this model.")
    async def datasets(self) -> list[str]:
        return (await self.summary()).datasets

    @strawberry.field(description="Prompts stored at every stored layer of this model.")
    async def prompt_count(self) -> int:
        return (await self.summary()).prompt_count

    @strawberry.field(description="How k-NN searches each stored layer: kind, measured recall, exact or not.")
    async def indexes(self, info: Info) -> list[LayerIndex]:
        return [build(LayerIndex, r) for r in await call(info, info.context.service.catalog.layer_indexes, self.key)]

    @classmethod
    def of(cls, info: Info, model: ModelInfo) -> Model:
        """Catalog fields at once; datasets and promptCount (which read every layer's ids)
        only when the query asks for them, computed once per model."""
        memo: list[asyncio.Future] = []

        def summary() -> Awaitable[ModelSummary]:
            if not memo:
                memo.append(asyncio.ensure_future(call(info, info.context.service.catalog.model_summary, model.key)))
            return memo[0]

        return build(cls, model, summary=summary)


Dataset = derive(DatasetInfo, name="Dataset")
Prompt = derive(PromptRecord, name="Prompt", exclude=("meta",), fields={"id": strawberry.ID})
Neighbor = derive(NeighborResult, name="Neighbor", fields={"prompt_id": strawberry.ID})


@strawberry.type
class Job:
    id: strawberry.ID
    state: JobState
    done: int
    total: int
    message: Optional[str]

    @classmethod
    def of(cls, j: JobValue) -> Job:
        return cls(id=strawberry.ID(j.id), state=JobState(j.state), done=j.done, total=j.total, message=j.message)


# --------------------------------------------------------------------- similarity
DatasetCountType = derive(DatasetCount, name="DatasetCount")
CkaByDatasetType = derive(CkaByDataset, name="CkaByDataset")
CkaMatrixByDatasetType = derive(CkaMatrixByDataset, name="CkaMatrixByDataset")
MutualKnnByDatasetType = derive(MutualKnnByDataset, name="MutualKnnByDataset")
AffinityMatrixByDatasetType = derive(AffinityMatrixByDataset, name="AffinityMatrixByDataset")
MutualKnn = derive(
    MutualKnnResult,
    name="MutualKnn",
    descriptions={
        "null_mean": "Expected value under random neighbour sets, k / (n - 1).",
        "recall": "Recall@k of the approximate k-NN graphs against exact search, measured on a sample of prompts "
        "(the worse layer); null when the graphs are exact.",
    },
)
Cka = derive(CkaResult, name="Cka")
DiagonalTest = derive(
    DiagonalTestResult,
    name="DiagonalTest",
    descriptions={
        "df": "Welch-Satterthwaite degrees of freedom.",
        "transposed": "True when the matrix had fewer rows than columns and was tested transposed (METHODS.md: n1 >= n2).",
    },
)

_MATRIX_DOCS = {
    "argmax": "For each row, the column index (into layersB) of the most similar layer.",
    "depths_a": "Relative depth l / (L - 1) of each of layersA.",
}


@strawberry.type(
    description="One cell of a layer x layer matrix: its row and column (indices into layersA and "
    "layersB), the two layers and the value."
)
class MatrixCell:
    row: int
    column: int
    layer_a: int
    layer_b: int
    value: float


def best_cell(layers_a: list[int], layers_b: list[int], values: list[list[float]]) -> MatrixCell:
    """The largest value of the whole matrix (the first in row-major order on a tie)."""
    i, j = max(((i, j) for i in range(len(values)) for j in range(len(values[i]))), key=lambda ij: values[ij[0]][ij[1]])
    return MatrixCell(row=i, column=j, layer_a=layers_a[i], layer_b=layers_b[j], value=values[i][j])


_BEST_DOC = "The most similar layer pair of the whole matrix (argmax is per row)."


@strawberry.type
class SimilarityMatrix(
    derive(
        SimilarityMatrixResult,
        name="SimilarityMatrixFields",
        exclude=("key",),
        fields={"options": JSON},
        descriptions={
            **_MATRIX_DOCS,
            "argmax": "For each row, the column index (into layersB) of the most similar "
            "layer (the smallest value for a distance measure).",
            "measure": "The registered measure (ckaMatrix: unbiased_cka, or cka when not debiased).",
            "debiased": "True for unbiased_cka only.",
            "options": "Every option of the measure used (defaults filled in; k apart).",
        },
    )
):
    key: strawberry.Private[str]

    @strawberry.field(description="PNG heatmap of this matrix, argmax path drawn.")
    def plot_url(self, info: Info) -> str:
        return info.context.plot_url(self.key)

    @strawberry.field(description=_BEST_DOC)
    def best(self) -> MatrixCell:
        return best_cell(self.layers_a, self.layers_b, self.values)

    @classmethod
    def of(cls, r: SimilarityMatrixResult) -> SimilarityMatrix:
        return build(cls, r, options=json.loads(r.options))


@strawberry.type
class AffinityMatrix(
    derive(
        AffinityMatrixResult,
        name="AffinityMatrixFields",
        exclude=("key", "diagonal"),
        descriptions={
            **_MATRIX_DOCS,
            "recall": "Smallest sampled recall@k of the layers' "
            "approximate k-NN graphs against exact search; null when every graph "
            "is exact.",
        },
    )
):
    key: strawberry.Private[str]
    diagonal_result: strawberry.Private[DiagonalTestResult]

    @strawberry.field(description="PNG heatmap of this matrix, argmax path drawn.")
    def plot_url(self, info: Info) -> str:
        return info.context.plot_url(self.key)

    @strawberry.field(description=_BEST_DOC)
    def best(self) -> MatrixCell:
        return best_cell(self.layers_a, self.layers_b, self.values)

    @strawberry.field(description="The generalized-diagonal test of the matrix.")
    def diagonal(self) -> DiagonalTest:
        d = self.diagonal_result
        if d.p_value != d.p_value:  # NaN: too few cells for the test
            raise InvalidInput(
                "the generalized-diagonal test needs at least 2 layers of each model and 2 off-diagonal cells; "
                "ask for more layers"
            )
        return build(DiagonalTest, d)

    @classmethod
    def of(cls, r: AffinityMatrixResult) -> AffinityMatrix:
        return build(cls, r, diagonal_result=r.diagonal)
