"""GraphQL fields for linear bridges and probe transfer: ``bridge``, ``probeTransfer`` (the
contract), and ``bridgeSweep``, ``probeTransferSweep`` (with a PNG plot) and
``nextTokenTransfer`` (additions). Output types are derived from the service's result
dataclasses; resolvers run the service on a worker thread.
"""

from __future__ import annotations

from typing import Optional

import strawberry

from actstore.service import (
    BridgeResult,
    BridgeSweepResult,
    NextTokenTransferResult,
    ProbeTransferResult,
    ProbeTransferSweepResult,
)

from .context import Info, call
from .derive import build, derive
from .types import BridgeMethod, LayerRef, Precision, Preprocess

__all__ = ["BridgeQuery"]

Bridge = derive(BridgeResult, name="Bridge", fields={"method": BridgeMethod}, descriptions={
    "alpha": "The ridge/low-rank penalty used (chosen by GCV when not given), or lasso's L1 weight.",
    "r2": "Held-out coefficient of determination, pooled over target dimensions (SST around the training mean).",
    "mean_cosine": "Mean cosine between predicted and true held-out target vectors.",
    "scale": "PROCRUSTES with scale: the isotropic scale s = tr(Sigma) / ||S_c||_F^2 of the map; null otherwise.",
    "dropped_source": "Source dimensions the preprocessing dropped (constant or outlier columns).",
    "dropped_target": "Target dimensions the preprocessing dropped (constant or outlier columns)."})
BridgeSweep = derive(BridgeSweepResult, name="BridgeSweep", descriptions={
    "r2": "Held-out r2 of the reduced-rank ridge bridge at each rank.",
    "ridge_r2": "Held-out r2 of the full-rank ridge bridge."})
ProbeTransfer = derive(ProbeTransferResult, name="ProbeTransfer", fields={"method": BridgeMethod}, descriptions={
    "n_bridge": "Prompts the frozen bridge was fitted on."})
NextTokenTransfer = derive(NextTokenTransferResult, name="NextTokenTransfer", fields={"method": BridgeMethod},
                           descriptions={
    "transferred_top1": "Source probe on bridged target activations, scored against the target model's next tokens.",
    "agreement_top1": "Cross-model ceiling: share of test prompts where both models' next tokens are the same string.",
    "agreement_top5": "Share where the target's next token is among the source model's top 5."})


@strawberry.type
class ProbeTransferSweep(derive(ProbeTransferSweepResult, name="ProbeTransferSweepFields", exclude=("key",),
                                descriptions={
    "transferred": "Frozen-bridge transfer accuracy at each rank.",
    "task_specific": "Task-specific-bridge accuracy at each rank.",
    "ridge_transferred": "Transfer through the full-rank ridge bridge."})):
    key: strawberry.Private[str]

    @strawberry.field(description="PNG: accuracy against rank with native and chance lines.")
    def plot_url(self, info: Info) -> str:
        return info.context.plot_url(self.key)


@strawberry.type
class BridgeQuery:
    @strawberry.field(description="Fit a linear map from source activations to target activations and score "
                      "it on held-out prompts.")
    async def bridge(self, info: Info, source: LayerRef, target: LayerRef,
                     method: BridgeMethod = BridgeMethod.RIDGE, rank: Optional[int] = None,
                     alpha: Optional[float] = None, train_dataset: Optional[str] = None,
                     eval_dataset: Optional[str] = None, test_fraction: float = 0.2, seed: int = 0,
                     preprocess: Preprocess = Preprocess.NONE, outlier_threshold: Optional[float] = None,
                     scale: bool = False, precision: Precision = Precision.AUTO) -> Bridge:
        r = await call(info, info.context.service.bridges.bridge, source.value(), target.value(),
                       method=method.value, rank=rank, alpha=alpha, train_dataset=train_dataset,
                       eval_dataset=eval_dataset, test_fraction=test_fraction, seed=seed,
                       preprocess=preprocess.value, outlier_threshold=outlier_threshold, scale=scale,
                       precision=precision.value, heavy=True)
        return build(Bridge, r)

    @strawberry.field(description="Reduced-rank ridge bridges at several ranks from one ridge fit and one SVD: "
                      "held-out r2 and mean cosine per rank.")
    async def bridge_sweep(self, info: Info, source: LayerRef, target: LayerRef, ranks: list[int],
                           alpha: Optional[float] = None, train_dataset: Optional[str] = None,
                           eval_dataset: Optional[str] = None, test_fraction: float = 0.2,
                           seed: int = 0, preprocess: Preprocess = Preprocess.NONE,
                           outlier_threshold: Optional[float] = None,
                           precision: Precision = Precision.AUTO) -> BridgeSweep:
        r = await call(info, info.context.service.bridges.bridge_sweep, source.value(), target.value(), ranks,
                       alpha=alpha, train_dataset=train_dataset, eval_dataset=eval_dataset,
                       test_fraction=test_fraction, seed=seed, preprocess=preprocess.value,
                       outlier_threshold=outlier_threshold, precision=precision.value, heavy=True)
        return build(BridgeSweep, r)

    @strawberry.field(description="Train a linear probe on `source` for the labels of `taskDataset`; map "
                      "`target` activations into source space with a bridge (frozen: fit on `bridgeDataset`; "
                      "task-specific: fit on the task's training split) and score the source probe on them.")
    async def probe_transfer(self, info: Info, source: LayerRef, target: LayerRef, task_dataset: str,
                             bridge_dataset: Optional[str] = None, method: BridgeMethod = BridgeMethod.RIDGE,
                             rank: Optional[int] = None, test_fraction: float = 0.3, seed: int = 0,
                             alpha: Optional[float] = None, preprocess: Preprocess = Preprocess.NONE,
                             outlier_threshold: Optional[float] = None,
                             precision: Precision = Precision.AUTO) -> ProbeTransfer:
        r = await call(info, info.context.service.bridges.probe_transfer, source.value(), target.value(),
                       task_dataset, bridge_dataset=bridge_dataset, method=method.value, rank=rank,
                       test_fraction=test_fraction, seed=seed, alpha=alpha, preprocess=preprocess.value,
                       outlier_threshold=outlier_threshold, precision=precision.value, heavy=True)
        return build(ProbeTransfer, r)

    @strawberry.field(description="Probe transfer through reduced-rank ridge bridges at every rank in `ranks` "
                      "(shared work done once): the accuracy-against-rank curve, with a PNG plot.")
    async def probe_transfer_sweep(self, info: Info, source: LayerRef, target: LayerRef, task_dataset: str,
                                   ranks: list[int], bridge_dataset: Optional[str] = None,
                                   alpha: Optional[float] = None, test_fraction: float = 0.3,
                                   seed: int = 0, preprocess: Preprocess = Preprocess.NONE,
                                   outlier_threshold: Optional[float] = None,
                                   precision: Precision = Precision.AUTO) -> ProbeTransferSweep:
        r = await call(info, info.context.service.bridges.probe_transfer_sweep, source.value(), target.value(),
                       task_dataset, ranks, bridge_dataset=bridge_dataset, alpha=alpha,
                       test_fraction=test_fraction, seed=seed, preprocess=preprocess.value,
                       outlier_threshold=outlier_threshold, precision=precision.value, heavy=True)
        return build(ProbeTransferSweep, r)

    @strawberry.field(description="Next-token probe transfer across tokenizers: vocabularies aligned on shared "
                      "decoded token strings, the `classes` most frequent shared next tokens as classes; top-1 / "
                      "top-5 of source-native, target-native, transferred and the cross-model agreement ceiling. "
                      "Needs next tokens stored at ingest (--next-tokens).")
    async def next_token_transfer(self, info: Info, source: LayerRef, target: LayerRef, dataset: str,
                                  bridge_dataset: Optional[str] = None,
                                  method: BridgeMethod = BridgeMethod.RIDGE, rank: Optional[int] = None,
                                  alpha: Optional[float] = None, classes: int = 500, test_fraction: float = 0.3,
                                  seed: int = 0, precision: Precision = Precision.AUTO) -> NextTokenTransfer:
        r = await call(info, info.context.service.bridges.next_token_transfer, source.value(), target.value(),
                       dataset, bridge_dataset=bridge_dataset, method=method.value, rank=rank, alpha=alpha,
                       classes=classes, test_fraction=test_fraction, seed=seed, precision=precision.value,
                       heavy=True)
        return build(NextTokenTransfer, r)
