"""GraphQL fields for linear bridges and probe transfer: ``bridge``, ``probeTransfer`` (the
contract), and ``bridgeSweep``, ``probeTransferSweep`` (with a PNG plot) and
``nextTokenTransfer`` (additions). Output types are derived from the service's result
dataclasses; resolvers run the service on a worker thread.
"""

from __future__ import annotations

import strawberry

from actstore.service import (
    BridgeResult,
    BridgeSweepResult,
    NextTokenTransferResult,
    ProbeTransferResult,
    ProbeTransferSweepResult,
)
from actstore.service.requests import (
    BridgeRequest,
    BridgeSweepRequest,
    NextTokenTransferRequest,
    ProbeTransferRequest,
    ProbeTransferSweepRequest,
)

from .context import Info
from .derive import build, derive
from .requests import request_field
from .types import BridgeMethod

__all__ = ["BridgeQuery"]

Bridge = derive(
    BridgeResult,
    name="Bridge",
    fields={"method": BridgeMethod},
    descriptions={
        "alpha": "The ridge/low-rank penalty used (chosen by GCV when not given), or lasso's L1 weight.",
        "r2": "Held-out coefficient of determination, pooled over target dimensions (SST around the training mean).",
        "mean_cosine": "Mean cosine between predicted and true held-out target vectors.",
        "scale": "PROCRUSTES with scale: the isotropic scale s = tr(Sigma) / ||S_c||_F^2 of the map; null otherwise.",
        "dropped_source": "Source dimensions the preprocessing dropped (constant or outlier columns).",
        "dropped_target": "Target dimensions the preprocessing dropped (constant or outlier columns).",
    },
)
BridgeSweep = derive(
    BridgeSweepResult,
    name="BridgeSweep",
    descriptions={
        "r2": "Held-out r2 of the reduced-rank ridge bridge at each rank.",
        "ridge_r2": "Held-out r2 of the full-rank ridge bridge.",
    },
)
ProbeTransfer = derive(
    ProbeTransferResult,
    name="ProbeTransfer",
    fields={"method": BridgeMethod},
    descriptions={"n_bridge": "Prompts the frozen bridge was fitted on."},
)
NextTokenTransfer = derive(
    NextTokenTransferResult,
    name="NextTokenTransfer",
    fields={"method": BridgeMethod},
    descriptions={
        "transferred_top1": "Source probe on bridged target activations, scored against the target model's next tokens.",
        "agreement_top1": "Cross-model ceiling: share of test prompts where both models' next tokens are the same string.",
        "agreement_top5": "Share where the target's next token is among the source model's top 5.",
    },
)


@strawberry.type
class ProbeTransferSweep(
    derive(
        ProbeTransferSweepResult,
        name="ProbeTransferSweepFields",
        exclude=("key",),
        descriptions={
            "transferred": "Frozen-bridge transfer accuracy at each rank.",
            "task_specific": "Task-specific-bridge accuracy at each rank.",
            "ridge_transferred": "Transfer through the full-rank ridge bridge.",
        },
    )
):
    key: strawberry.Private[str]

    @strawberry.field(description="PNG: accuracy against rank with native and chance lines.")
    def plot_url(self, info: Info) -> str:
        return info.context.plot_url(self.key)


@strawberry.type
class BridgeQuery:
    bridge: Bridge = request_field(
        BridgeRequest,
        Bridge,
        build=lambda r: build(Bridge, r),
        description="Fit a linear map from source activations to target activations and score it on held-out prompts.",
    )
    bridge_sweep: BridgeSweep = request_field(
        BridgeSweepRequest,
        BridgeSweep,
        build=lambda r: build(BridgeSweep, r),
        description="Reduced-rank ridge bridges at several ranks from one ridge fit and one SVD: held-out r2 and "
        "mean cosine per rank.",
    )
    probe_transfer: ProbeTransfer = request_field(
        ProbeTransferRequest,
        ProbeTransfer,
        build=lambda r: build(ProbeTransfer, r),
        description="Train a linear probe on `source` for the labels of `taskDataset`; map `target` activations "
        "into source space with a bridge (frozen: fit on `bridgeDataset`; task-specific: fit on the "
        "task's training split) and score the source probe on them.",
    )
    probe_transfer_sweep: ProbeTransferSweep = request_field(
        ProbeTransferSweepRequest,
        ProbeTransferSweep,
        build=lambda r: build(ProbeTransferSweep, r),
        description="Probe transfer through reduced-rank ridge bridges at every rank in `ranks` (shared work done "
        "once): the accuracy-against-rank curve, with a PNG plot.",
    )
    next_token_transfer: NextTokenTransfer = request_field(
        NextTokenTransferRequest,
        NextTokenTransfer,
        build=lambda r: build(NextTokenTransfer, r),
        description="Next-token probe transfer across tokenizers: vocabularies aligned on shared decoded token "
        "strings, the `classes` most frequent shared next tokens as classes; top-1 / top-5 of "
        "source-native, target-native, transferred and the cross-model agreement ceiling. Needs next "
        "tokens stored at ingest.",
    )
