"""GraphQL fields for linear bridges and probe transfer: ``bridge``, ``probeTransfer`` (the
contract), and ``bridgeSweep``, ``probeTransferSweep`` (with a PNG plot) and
``nextTokenTransfer`` (additions). Resolvers are thin: heavy work runs on a worker thread
through :func:`actstore.api.schema.call`.
"""

from __future__ import annotations

import io
from typing import Any, Optional

import strawberry
from strawberry.types import Info

from .plots import RENDERERS
from .schema import BridgeMethod, LayerRef, call


@strawberry.type
class Bridge:
    method: BridgeMethod
    rank: Optional[int]
    alpha: Optional[float] = strawberry.field(
        description="The ridge/low-rank penalty used (chosen by GCV when not given), or lasso's L1 weight.")
    n_train: int
    n_test: int
    r2: float = strawberry.field(description="Held-out coefficient of determination, pooled over target "
                                 "dimensions (SST around the training mean).")
    mean_cosine: float = strawberry.field(description="Mean cosine between predicted and true held-out "
                                          "target vectors.")
    layer_source: int
    layer_target: int


@strawberry.type
class BridgeSweep:
    ranks: list[int]
    r2: list[float] = strawberry.field(description="Held-out r2 of the reduced-rank ridge bridge at each rank.")
    mean_cosine: list[float]
    ridge_r2: float = strawberry.field(description="Held-out r2 of the full-rank ridge bridge.")
    ridge_mean_cosine: float
    alpha: float
    n_train: int
    n_test: int
    layer_source: int
    layer_target: int


@strawberry.type
class ProbeTransfer:
    source_native: float
    target_native: float
    transferred: float
    task_specific: float
    chance: float
    n_train: int
    n_test: int
    n_bridge: int = strawberry.field(description="Prompts the frozen bridge was fitted on.")
    n_classes: int
    alpha_frozen: Optional[float]
    alpha_task: Optional[float]
    layer_source: int
    layer_target: int


@strawberry.type
class ProbeTransferSweep:
    ranks: list[int]
    transferred: list[float] = strawberry.field(description="Frozen-bridge transfer accuracy at each rank.")
    task_specific: list[float] = strawberry.field(description="Task-specific-bridge accuracy at each rank.")
    source_native: float
    target_native: float
    chance: float
    ridge_transferred: float = strawberry.field(description="Transfer through the full-rank ridge bridge.")
    ridge_task_specific: float
    alpha_frozen: float
    alpha_task: float
    n_train: int
    n_test: int
    n_bridge: int
    n_classes: int
    layer_source: int
    layer_target: int
    plot_url: str = strawberry.field(description="PNG: accuracy against rank with native and chance lines.")


@strawberry.type
class NextTokenTransfer:
    source_native_top1: float
    source_native_top5: float
    target_native_top1: float
    target_native_top5: float
    transferred_top1: float = strawberry.field(description="Source probe on bridged target activations, "
                                               "scored against the target model's next tokens.")
    transferred_top5: float
    task_specific_top1: float
    task_specific_top5: float
    agreement_top1: float = strawberry.field(description="Cross-model ceiling: share of test prompts where "
                                             "both models' next tokens are the same string.")
    agreement_top5: float = strawberry.field(description="Share where the target's next token is among the "
                                             "source model's top 5.")
    chance: float
    classes: list[str]
    shared_tokens: int
    n_train: int
    n_test: int
    n_bridge: int
    layer_source: int
    layer_target: int


def _plot_url(info: Info, key: str) -> str:
    return f"{info.context.get('base_url', '/')}plots/{key}.png"


@strawberry.type
class BridgeQuery:
    @strawberry.field(description="Fit a linear map from source activations to target activations and score "
                      "it on held-out prompts.")
    async def bridge(self, info: Info, source: LayerRef, target: LayerRef,
                     method: BridgeMethod = BridgeMethod.RIDGE, rank: Optional[int] = None,
                     alpha: Optional[float] = None, train_dataset: Optional[str] = None,
                     eval_dataset: Optional[str] = None, test_fraction: float = 0.2, seed: int = 0) -> Bridge:
        r = await call(info, info.context["service"].bridge, source.value(), target.value(), method=method.value,
                       rank=rank, alpha=alpha, train_dataset=train_dataset, eval_dataset=eval_dataset,
                       test_fraction=test_fraction, seed=seed, heavy=True)
        return Bridge(method=BridgeMethod(r.method), rank=r.rank, alpha=r.alpha, n_train=r.n_train,
                      n_test=r.n_test, r2=r.r2, mean_cosine=r.mean_cosine, layer_source=r.layer_source,
                      layer_target=r.layer_target)

    @strawberry.field(description="Reduced-rank ridge bridges at several ranks from one ridge fit and one SVD: "
                      "held-out r2 and mean cosine per rank.")
    async def bridge_sweep(self, info: Info, source: LayerRef, target: LayerRef, ranks: list[int],
                           alpha: Optional[float] = None, train_dataset: Optional[str] = None,
                           eval_dataset: Optional[str] = None, test_fraction: float = 0.2,
                           seed: int = 0) -> BridgeSweep:
        r = await call(info, info.context["service"].bridge_sweep, source.value(), target.value(), ranks,
                       alpha=alpha, train_dataset=train_dataset, eval_dataset=eval_dataset,
                       test_fraction=test_fraction, seed=seed, heavy=True)
        return BridgeSweep(ranks=r.ranks, r2=r.r2, mean_cosine=r.mean_cosine, ridge_r2=r.ridge_r2,
                           ridge_mean_cosine=r.ridge_mean_cosine, alpha=r.alpha, n_train=r.n_train,
                           n_test=r.n_test, layer_source=r.layer_source, layer_target=r.layer_target)

    @strawberry.field(description="Train a linear probe on `source` for the labels of `taskDataset`; map "
                      "`target` activations into source space with a bridge (frozen: fit on `bridgeDataset`; "
                      "task-specific: fit on the task's training split) and score the source probe on them.")
    async def probe_transfer(self, info: Info, source: LayerRef, target: LayerRef, task_dataset: str,
                             bridge_dataset: Optional[str] = None, method: BridgeMethod = BridgeMethod.RIDGE,
                             rank: Optional[int] = None, test_fraction: float = 0.3, seed: int = 0,
                             alpha: Optional[float] = None) -> ProbeTransfer:
        r = await call(info, info.context["service"].probe_transfer, source.value(), target.value(), task_dataset,
                       bridge_dataset=bridge_dataset, method=method.value, rank=rank,
                       test_fraction=test_fraction, seed=seed, alpha=alpha, heavy=True)
        return ProbeTransfer(source_native=r.source_native, target_native=r.target_native,
                             transferred=r.transferred, task_specific=r.task_specific, chance=r.chance,
                             n_train=r.n_train, n_test=r.n_test, n_bridge=r.n_bridge, n_classes=r.n_classes,
                             alpha_frozen=r.alpha_frozen, alpha_task=r.alpha_task,
                             layer_source=r.layer_source, layer_target=r.layer_target)

    @strawberry.field(description="Probe transfer through reduced-rank ridge bridges at every rank in `ranks` "
                      "(shared work done once): the accuracy-against-rank curve, with a PNG plot.")
    async def probe_transfer_sweep(self, info: Info, source: LayerRef, target: LayerRef, task_dataset: str,
                                   ranks: list[int], bridge_dataset: Optional[str] = None,
                                   alpha: Optional[float] = None, test_fraction: float = 0.3,
                                   seed: int = 0) -> ProbeTransferSweep:
        r = await call(info, info.context["service"].probe_transfer_sweep, source.value(), target.value(),
                       task_dataset, ranks, bridge_dataset=bridge_dataset, alpha=alpha,
                       test_fraction=test_fraction, seed=seed, heavy=True)
        return ProbeTransferSweep(
            ranks=r.ranks, transferred=r.transferred, task_specific=r.task_specific,
            source_native=r.source_native, target_native=r.target_native, chance=r.chance,
            ridge_transferred=r.ridge_transferred, ridge_task_specific=r.ridge_task_specific,
            alpha_frozen=r.alpha_frozen, alpha_task=r.alpha_task, n_train=r.n_train, n_test=r.n_test,
            n_bridge=r.n_bridge, n_classes=r.n_classes, layer_source=r.layer_source,
            layer_target=r.layer_target, plot_url=_plot_url(info, r.key))

    @strawberry.field(description="Next-token probe transfer across tokenizers: vocabularies aligned on shared "
                      "decoded token strings, the `classes` most frequent shared next tokens as classes; top-1 / "
                      "top-5 of source-native, target-native, transferred and the cross-model agreement ceiling. "
                      "Needs next tokens stored at ingest (--next-tokens).")
    async def next_token_transfer(self, info: Info, source: LayerRef, target: LayerRef, dataset: str,
                                  bridge_dataset: Optional[str] = None,
                                  method: BridgeMethod = BridgeMethod.RIDGE, rank: Optional[int] = None,
                                  alpha: Optional[float] = None, classes: int = 500, test_fraction: float = 0.3,
                                  seed: int = 0) -> NextTokenTransfer:
        r = await call(info, info.context["service"].next_token_transfer, source.value(), target.value(), dataset,
                       bridge_dataset=bridge_dataset, method=method.value, rank=rank, alpha=alpha,
                       classes=classes, test_fraction=test_fraction, seed=seed, heavy=True)
        return NextTokenTransfer(
            source_native_top1=r.source_native_top1, source_native_top5=r.source_native_top5,
            target_native_top1=r.target_native_top1, target_native_top5=r.target_native_top5,
            transferred_top1=r.transferred_top1, transferred_top5=r.transferred_top5,
            task_specific_top1=r.task_specific_top1, task_specific_top5=r.task_specific_top5,
            agreement_top1=r.agreement_top1, agreement_top5=r.agreement_top5, chance=r.chance,
            classes=r.classes, shared_tokens=r.shared_tokens, n_train=r.n_train, n_test=r.n_test,
            n_bridge=r.n_bridge, layer_source=r.layer_source, layer_target=r.layer_target)


# ------------------------------------------------------------------------------ plot
def sweep_png(result: Any) -> bytes:
    """PNG of a ProbeTransferSweepResult: transferred and task-specific accuracy against rank
    (log-2 x axis), the full-rank ridge values as dotted lines, source/target native and chance
    as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    ranks = list(result.ranks)
    ax.plot(ranks, result.transferred, "o-", color="tab:red", label="transferred (frozen bridge)")
    ax.plot(ranks, result.task_specific, "s-", color="tab:blue", label="task-specific bridge")
    ax.axhline(result.ridge_transferred, color="tab:red", ls=":", lw=1, label="full-rank ridge (frozen)")
    ax.axhline(result.ridge_task_specific, color="tab:blue", ls=":", lw=1, label="full-rank ridge (task)")
    ax.axhline(result.target_native, color="tab:purple", ls="--", label="target native")
    ax.axhline(result.source_native, color="tab:green", ls="-", lw=1, label="source native")
    ax.axhline(result.chance, color="gray", ls="--", label="chance")
    if len(ranks) > 1 and min(ranks) > 0 and max(ranks) / min(ranks) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(ranks, [str(r) for r in ranks], fontsize=7)
    ax.set_xlabel("bridge rank (reduced-rank ridge, target -> source)")
    ax.set_ylabel("accuracy on the task's test prompts")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"probe transfer {result.target} L{result.layer_target} -> {result.source} "
                 f"L{result.layer_source}\n{result.task_dataset}: n_train={result.n_train}, "
                 f"n_test={result.n_test}, bridge n={result.n_bridge}", fontsize=9)
    ax.legend(fontsize=7, loc="best", framealpha=0.7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


RENDERERS["ProbeTransferSweepResult"] = sweep_png
