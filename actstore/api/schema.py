"""The GraphQL schema (strawberry, code-first), implementing ``shared/schema.graphql``.

Resolvers are thin: they convert arguments, call :class:`actstore.service.Service` on a
worker thread (heavy work never blocks the event loop) under the per-request time limit,
and wrap the service's dataclasses. Fields beyond the contract: ``Model.layers``,
``depthsA/depthsB``, ``debiased`` and ``plotUrl`` on matrices.
"""

from __future__ import annotations

import asyncio
import enum
import hmac
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Optional, TypeVar

import strawberry
from strawberry.types import Info

from actstore.service import (
    AffinityMatrixResult,
    ModelSummary,
    Service,
    SimilarityMatrixResult,
)
from actstore.service.jobs import Job as JobValue
from actstore.store import ModelInfo
from actstore.errors import ActstoreError, InvalidInput
from actstore.layers import LayerRef as LayerRefValue

T = TypeVar("T")


class QueryTimeoutError(ActstoreError):
    """A query ran past the server's per-request time limit."""


class Unauthorized(ActstoreError):
    """A mutation without the server's bearer token."""


# Light reads and heavy numerics use separate threads, so a queue of matrix computations
# can never take every thread that nearest-neighbour look-ups need.
_LIGHT = ThreadPoolExecutor(max_workers=16, thread_name_prefix="actstore-light")
_HEAVY = ThreadPoolExecutor(max_workers=4, thread_name_prefix="actstore-heavy")


async def call(info: Info, fn: Callable[..., T], *args: Any, heavy: bool = False, **kwargs: Any) -> T:
    service: Service = info.context["service"]
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(_HEAVY if heavy else _LIGHT, lambda: fn(*args, **kwargs))
    timeout = service.settings.request_timeout_s
    try:
        return await asyncio.wait_for(fut, timeout)
    except asyncio.TimeoutError:
        raise QueryTimeoutError(
            f"the query ran past the server's time limit of {timeout:g} s; its answer is cached "
            "when it finishes, so asking again later may succeed"
        ) from None


def require_token(info: Info) -> None:
    token = info.context["service"].settings.token
    if not token:
        raise Unauthorized("mutations are disabled on this server: it has no ACTSTORE_TOKEN configured")
    given = info.context.get("authorization") or ""
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise Unauthorized("this mutation needs the header 'Authorization: Bearer TOKEN' with the server's token")


def _prompt_id(value: strawberry.ID) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"promptId must be an integer id, got {value!r}") from None


# ------------------------------------------------------------------- enums, inputs
@strawberry.enum
class Metric(enum.Enum):
    COSINE = "cosine"
    L2 = "l2"
    DOT = "dot"


@strawberry.enum
class BridgeMethod(enum.Enum):
    PROCRUSTES = "procrustes"
    RIDGE = "ridge"
    LOW_RANK = "low_rank"
    LASSO = "lasso"


@strawberry.enum
class Matching(enum.Enum):
    ONE_TO_ONE = "one_to_one"
    MANY_TO_ONE = "many_to_one"


@strawberry.enum
class JobState(enum.Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@strawberry.input(description="One layer of one stored model: give exactly one of `layer` (0-based decoder "
                  "block, negative counts from the end) or `depth` (relative depth in [0, 1], nearest layer).")
class LayerRef:
    model: str
    layer: Optional[int] = None
    depth: Optional[float] = None

    def value(self) -> LayerRefValue:
        return LayerRefValue(self.model, self.layer, self.depth)


@strawberry.input(description="One registered sparse autoencoder.")
class SaeRef:
    id: strawberry.ID


# ----------------------------------------------------------------------- outputs
@strawberry.type
class Model:
    key: str
    source: str
    architecture: str
    n_layers: int
    d_model: int
    dtype: str
    layers: list[int] = strawberry.field(description="Decoder blocks with stored activations.")
    summary: strawberry.Private[Callable[[], Awaitable[ModelSummary]]]

    @strawberry.field(description="Datasets with prompts stored at every stored layer of this model.")
    async def datasets(self) -> list[str]:
        return (await self.summary()).datasets

    @strawberry.field(description="Prompts stored at every stored layer of this model.")
    async def prompt_count(self) -> int:
        return (await self.summary()).prompt_count

    @classmethod
    def of(cls, info: Info, i: ModelInfo) -> "Model":
        """Catalog fields at once; datasets and promptCount (which read every layer's ids)
        only when the query asks for them, computed once per model."""
        memo: list[asyncio.Future] = []

        def summary() -> Awaitable[ModelSummary]:
            if not memo:
                memo.append(asyncio.ensure_future(call(info, info.context["service"].model_summary, i.key)))
            return memo[0]

        return cls(key=i.key, source=i.source, architecture=i.architecture, n_layers=i.n_layers,
                   d_model=i.d_model, dtype=i.dtype, layers=list(i.layers), summary=summary)


@strawberry.type
class Dataset:
    name: str
    prompt_count: int
    has_labels: bool


@strawberry.type
class Prompt:
    id: strawberry.ID
    dataset: str
    text: str
    label: Optional[int]


@strawberry.type
class Neighbor:
    rank: int
    prompt_id: strawberry.ID
    score: float
    text: Optional[str]


@strawberry.type
class MutualKnn:
    value: float
    k: int
    n: int
    null_mean: float = strawberry.field(description="Expected value under random neighbour sets, k / (n - 1).")
    layer_a: int
    layer_b: int
    recall: Optional[float] = strawberry.field(
        default=None, description="Recall@k of the approximate k-NN graphs against exact search, measured on a "
        "sample of prompts (the worse layer); null when the graphs are exact.")


@strawberry.type
class SimilarityMatrix:
    model_a: str
    model_b: str
    layers_a: list[int]
    layers_b: list[int]
    values: list[list[float]]
    n: int
    argmax: list[int] = strawberry.field(
        description="For each row, the column index (into layersB) of the most similar layer.")
    depths_a: list[float] = strawberry.field(description="Relative depth l / (L - 1) of each of layersA.")
    depths_b: list[float]
    debiased: bool
    plot_url: str = strawberry.field(description="PNG heatmap of this matrix, argmax path drawn.")


@strawberry.type
class DiagonalTest:
    on_diagonal_mean: float
    off_diagonal_mean: float
    t_statistic: float
    p_value: float


@strawberry.type
class AffinityMatrix:
    model_a: str
    model_b: str
    layers_a: list[int]
    layers_b: list[int]
    values: list[list[float]]
    n: int
    argmax: list[int]
    k: int
    null_mean: float
    depths_a: list[float]
    depths_b: list[float]
    plot_url: str
    diagonal_result: strawberry.Private[Any]
    recall: Optional[float] = strawberry.field(
        default=None, description="Smallest sampled recall@k of the layers' approximate k-NN graphs against exact "
        "search; null when every graph is exact.")

    @strawberry.field
    def diagonal(self) -> DiagonalTest:
        d = self.diagonal_result
        if d.p_value != d.p_value:  # NaN: too few cells for the test
            raise InvalidInput(
                "the generalized-diagonal test needs at least 2 layers of each model and 2 off-diagonal cells; "
                "ask for more layers"
            )
        return DiagonalTest(on_diagonal_mean=d.on_diagonal_mean, off_diagonal_mean=d.off_diagonal_mean,
                            t_statistic=d.t_statistic, p_value=d.p_value)


@strawberry.type
class Cka:
    value: float
    debiased: bool
    n: int
    layer_a: int
    layer_b: int
    permutations: int
    p_value: Optional[float]


@strawberry.type
class Job:
    id: strawberry.ID
    state: JobState
    done: int
    total: int
    message: Optional[str]

    @classmethod
    def of(cls, j: JobValue) -> "Job":
        return cls(id=strawberry.ID(j.id), state=JobState(j.state), done=j.done, total=j.total, message=j.message)


def _plot_url(info: Info, key: str) -> str:
    return f"{info.context.get('base_url', '/')}plots/{key}.png"


def _similarity(info: Info, r: SimilarityMatrixResult) -> SimilarityMatrix:
    return SimilarityMatrix(model_a=r.model_a, model_b=r.model_b, layers_a=r.layers_a, layers_b=r.layers_b,
                            values=r.values, n=r.n, argmax=r.argmax, depths_a=r.depths_a, depths_b=r.depths_b,
                            debiased=r.debiased, plot_url=_plot_url(info, r.key))


def _affinity(info: Info, r: AffinityMatrixResult) -> AffinityMatrix:
    return AffinityMatrix(model_a=r.model_a, model_b=r.model_b, layers_a=r.layers_a, layers_b=r.layers_b,
                          values=r.values, n=r.n, argmax=r.argmax, k=r.k, null_mean=r.null_mean,
                          depths_a=r.depths_a, depths_b=r.depths_b, plot_url=_plot_url(info, r.key),
                          diagonal_result=r.diagonal, recall=r.recall)


# -------------------------------------------------------------------------- root
@strawberry.type
class Query:
    @strawberry.field
    async def models(self, info: Info) -> list[Model]:
        return [Model.of(info, m) for m in await call(info, info.context["service"].model_infos)]

    @strawberry.field
    async def model(self, info: Info, key: str) -> Optional[Model]:
        m = await call(info, info.context["service"].model_info, key)
        return Model.of(info, m) if m else None

    @strawberry.field
    async def datasets(self, info: Info) -> list[Dataset]:
        ds = await call(info, info.context["service"].datasets)
        return [Dataset(name=d.name, prompt_count=d.prompt_count, has_labels=d.has_labels) for d in ds]

    @strawberry.field
    async def prompts(self, info: Info, dataset: str, offset: int = 0, limit: int = 100) -> list[Prompt]:
        ps = await call(info, info.context["service"].prompts, dataset, offset, limit)
        return [Prompt(id=strawberry.ID(str(p.id)), dataset=p.dataset, text=p.text, label=p.label) for p in ps]

    @strawberry.field
    async def job(self, info: Info, id: strawberry.ID) -> Optional[Job]:
        j = info.context["service"].job(str(id))
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
        pid = _prompt_id(prompt_id) if prompt_id is not None else None
        service = info.context["service"]
        rows = await call(info, service.nearest_neighbors, at.value(), prompt_id=pid, vector=vector, text=text,
                           k=k, dataset=dataset, metric=metric.value, labelled=labelled, heavy=text is not None)
        return [Neighbor(rank=r.rank, prompt_id=strawberry.ID(str(r.prompt_id)), score=r.score, text=r.text)
                for r in rows]

    @strawberry.field(description="Mutual k-NN similarity of two layers (Huh et al. 2024; Wolfram & Schein).")
    async def mutual_knn(self, info: Info, a: LayerRef, b: LayerRef, k: int = 10,
                         dataset: Optional[str] = None) -> MutualKnn:
        r = await call(info, info.context["service"].mutual_knn, a.value(), b.value(), k=k, dataset=dataset,
                        heavy=True)
        return MutualKnn(value=r.value, k=r.k, n=r.n, null_mean=r.null_mean, layer_a=r.layer_a, layer_b=r.layer_b,
                         recall=r.recall)

    @strawberry.field(description="Mutual k-NN for every layer pair of two models, with the generalized-diagonal test.")
    async def affinity_matrix(self, info: Info, model_a: str, model_b: str, k: int = 10,
                              dataset: Optional[str] = None, layers_a: Optional[list[int]] = None,
                              layers_b: Optional[list[int]] = None) -> AffinityMatrix:
        r = await call(info, info.context["service"].affinity_matrix, model_a, model_b, k=k, dataset=dataset,
                        layers_a=layers_a, layers_b=layers_b, heavy=True)
        return _affinity(info, r)

    @strawberry.field(description="Linear CKA; debiased uses the unbiased HSIC estimator (Song et al. 2012). "
                      "permutations > 0 adds a permutation-test p-value.")
    async def cka(self, info: Info, a: LayerRef, b: LayerRef, debiased: bool = True, permutations: int = 0,
                  dataset: Optional[str] = None, seed: int = 0) -> Cka:
        r = await call(info, info.context["service"].cka, a.value(), b.value(), debiased=debiased,
                        permutations=permutations, dataset=dataset, seed=seed, heavy=True)
        return Cka(value=r.value, debiased=r.debiased, n=r.n, layer_a=r.layer_a, layer_b=r.layer_b,
                   permutations=r.permutations, p_value=r.p_value)

    @strawberry.field(description="CKA for every layer pair (or an evenly spaced relative-depth grid of `grid` layers).")
    async def cka_matrix(self, info: Info, model_a: str, model_b: str, debiased: bool = True,
                         dataset: Optional[str] = None, layers_a: Optional[list[int]] = None,
                         layers_b: Optional[list[int]] = None, grid: Optional[int] = None) -> SimilarityMatrix:
        r = await call(info, info.context["service"].cka_matrix, model_a, model_b, debiased=debiased,
                        dataset=dataset, layers_a=layers_a, layers_b=layers_b, grid=grid, heavy=True)
        return _similarity(info, r)


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Start an ingest of one model over one dataset; needs the API token.")
    async def ingest(self, info: Info, model: str, dataset: str, layers: Optional[list[int]] = None,
                     batch_size: Optional[int] = None) -> Job:
        require_token(info)
        j = await call(info, info.context["service"].start_ingest, model, dataset, layers=layers,
                        batch_size=batch_size)
        return Job.of(j)

    @strawberry.mutation(description="Add prompts (optionally labelled) as a dataset; needs the API token.")
    async def add_prompts(self, info: Info, dataset: str, texts: list[str],
                          labels: Optional[list[int]] = None) -> Dataset:
        require_token(info)
        d = await call(info, info.context["service"].add_prompts, dataset, texts, labels)
        return Dataset(name=d.name, prompt_count=d.prompt_count, has_labels=d.has_labels)
