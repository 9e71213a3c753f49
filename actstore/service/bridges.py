"""Linear bridges and probe transfer over stored layers (the ``service.bridges`` part).

Names mirror the GraphQL fields: ``bridge``, ``probe_transfer``, ``probe_transfer_sweep``,
``bridge_sweep``, ``next_token_transfer``. Two models are compared on the prompts both have
at every stored layer (ascending prompt_id), as everywhere in actstore.

Prompt sets (choices where METHODS.md is silent):
- ``bridge``: without ``eval_dataset`` the shared prompts of ``train_dataset`` (all shared
  prompts when None) are split by a seeded shuffle (``test_fraction`` held out). With
  ``eval_dataset`` the bridge is fitted on every shared prompt of ``train_dataset`` that is
  not in ``eval_dataset`` and scored on all shared prompts of ``eval_dataset``
  (``test_fraction`` is then unused).
- ``probe_transfer``: the task is the shared, labelled prompts of ``task_dataset`` (unlabelled
  ones are left out). The frozen bridge is fitted on the shared prompts of
  ``bridge_dataset`` (default: every shared prompt outside the task dataset), always leaving
  out the task's prompts, so it never sees the task.

Preprocessing (``preprocess``, METHODS.md): fitted per side on the bridge's training prompts
and applied to its held-out prompts. For probe transfer it is fitted on the frozen bridge's
prompts (never the task's) and applied to the task's prompts. Results name it and list the
columns dropped from the source and target layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from actstore import analysis
from actstore.analysis.results import BridgeFit, BridgeRankSweep, NextTokenTransfer, ProbeTransfer, ProbeTransferSweep
from actstore.config import Settings
from actstore.errors import InvalidInput, NotFound
from actstore.layers import LayerRef
from actstore.store import ModelInfo, Store

from .answering import Answers, answers
from .boundary import service_boundary
from .preprocessing import Prep, check_prep
from .reads import Reads
from .requests import (
    BridgeRequest,
    BridgeSweepRequest,
    NextTokenTransferRequest,
    ProbeTransferRequest,
    ProbeTransferSweepRequest,
)
from .results import Plan, ResultCache, result_type
from .work import Cost, bridge_cost, probe_cost

__all__ = [
    "BridgeResult",
    "BridgeSweepResult",
    "Bridges",
    "NextTokenTransferResult",
    "ProbeTransferResult",
    "ProbeTransferSweepResult",
]


@dataclass(frozen=True, kw_only=True)
class Joined:
    """What every bridge answer adds to the analysis dataclass it extends (keyword-only fields,
    after the analysis fields): the layers it joined, the preprocessing, the columns it dropped
    from each side and the precision of the fits."""

    layer_source: int
    layer_target: int
    preprocess: str = "none"
    dropped_source: tuple[int, ...] = ()
    dropped_target: tuple[int, ...] = ()
    precision: str = "auto"


@result_type
@dataclass(frozen=True)
class BridgeResult(BridgeFit, Joined):
    """A fitted bridge's held-out scores, with the layers it joined (see :class:`Joined`)."""


@result_type
@dataclass(frozen=True)
class BridgeSweepResult(BridgeRankSweep, Joined):
    """Reduced-rank bridges at several ranks, with the layers they joined (see :class:`Joined`)."""


@result_type
@dataclass(frozen=True)
class ProbeTransferResult(ProbeTransfer, Joined):
    """Probe-transfer accuracies, with the layers they read (see :class:`Joined`)."""


@result_type
@dataclass(frozen=True)
class ProbeTransferSweepResult(ProbeTransferSweep, Joined):
    """Probe transfer at several ranks, with the models, task and layers it read; ``key``
    is the cache key its plot is served under."""

    plottable = True  # the accuracy-against-rank curve

    source: str
    target: str
    task_dataset: str
    key: str = ""


@result_type
@dataclass(frozen=True)
class NextTokenTransferResult(NextTokenTransfer):
    """Next-token transfer accuracies, with the layers they read and the bridges' precision."""

    layer_source: int
    layer_target: int
    precision: str = "auto"


def _prepare(
    prep: Prep, S_fit: np.ndarray, T_fit: np.ndarray, S_other: np.ndarray, T_other: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Preprocessing fitted per side on the ``*_fit`` rows and applied to them and the others;
    with the result fields naming it."""
    S_fit, S_other, ds = prep.split(S_fit, S_other, "source")
    T_fit, T_other, dt = prep.split(T_fit, T_other, "target")
    return S_fit, T_fit, S_other, T_other, {"preprocess": prep.name, "dropped_source": ds, "dropped_target": dt}


@service_boundary
class Bridges(Answers):
    """Linear bridges, probe transfer, rank sweeps and next-token transfer over stored layers."""

    def __init__(self, store: Store, settings: Settings, reads: Reads, results: ResultCache) -> None:
        self.store, self.settings, self.reads, self.results = store, settings, reads, results

    bridge = answers(BridgeRequest)
    bridge_sweep = answers(BridgeSweepRequest)
    probe_transfer = answers(ProbeTransferRequest)
    probe_transfer_sweep = answers(ProbeTransferSweepRequest)
    next_token_transfer = answers(NextTokenTransferRequest)

    # ------------------------------------------------------------------ helpers
    def _pair(self, source: LayerRef, target: LayerRef) -> tuple[ModelInfo, int, ModelInfo, int, dict[str, str | int]]:
        info_s, ls = self.reads.resolve(source)
        info_t, lt = self.reads.resolve(target)
        return info_s, ls, info_t, lt, self.reads.versions(info_s, info_t)

    def _split_ids(self, ids: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        train, test = analysis.probes.split_indices(len(ids), test_fraction, seed)
        return ids[train], ids[test]

    def _task(self, s_key: str, t_key: str, task_dataset: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids, integer labels) of the shared labelled prompts of the task dataset."""
        ids = self.reads.shared(s_key, t_key, task_dataset)
        labels = self.store.prompts.labels(ids)
        has = ~np.isnan(labels)
        if not has.any():
            raise InvalidInput(
                f"task_dataset {task_dataset!r} has no labels on the {len(ids)} prompts both "
                f"models share; add labelled prompts (with labels)"
            )
        ids, y = ids[has], labels[has].astype(np.int64)
        classes = np.unique(y)
        if len(classes) < 2:
            raise InvalidInput(
                f"task_dataset {task_dataset!r} has only one class ({classes.tolist()}) among "
                f"its {len(ids)} labelled shared prompts; a probe needs at least 2"
            )
        return ids, y

    def _bridge_ids(
        self, s_key: str, t_key: str, bridge_dataset: str | None, exclude: np.ndarray, task_dataset: str
    ) -> np.ndarray:
        if bridge_dataset is not None:
            ids = self.reads.shared(s_key, t_key, bridge_dataset)
        else:
            ids = self.store.activations.shared(s_key, t_key)
        ids = np.setdiff1d(ids, exclude, assume_unique=True)
        if len(ids) < 3:
            where = (
                f"bridge_dataset {bridge_dataset!r}"
                if bridge_dataset is not None
                else "the prompts outside the task dataset"
            )
            raise InvalidInput(
                f"too few prompts to fit the frozen bridge: {where} has {len(ids)} prompt(s) both models share "
                f"that are not in task_dataset {task_dataset!r}; at least 3 are needed (pass a general-text "
                f"bridge_dataset)",
                field="bridge_dataset",
                value=bridge_dataset,
                allowed="a dataset of >= 3 prompts",
            )
        return ids

    # ------------------------------------------------------------------ bridge
    def _plan_BridgeRequest(self, req: BridgeRequest) -> Plan[BridgeResult]:
        """Fit a linear map source -> target and score it on held-out prompts (r2, mean cosine).
        ``scale`` (PROCRUSTES only) adds the isotropic scale s, reported as ``scale``;
        ``precision`` the working dtype (see :mod:`.precision`; "auto" is float64)."""
        method, precision, prep = (
            req.method.value,
            req.precision.value,
            check_prep(req.preprocess, req.outlier_threshold, similarity=False),
        )
        rank, alpha, scale, train_dataset = req.rank, req.alpha, req.scale, req.train_dataset
        info_s, ls, info_t, lt, versions = self._pair(req.source, req.target)

        def compute(_key: str) -> BridgeResult:
            S_tr, T_tr, S_te, T_te, named = self._split_rows(prep, req, info_s.key, ls, info_t.key, lt)
            f = analysis.bridges.evaluate_bridge(
                S_tr, T_tr, S_te, T_te, method, alpha=alpha, rank=rank, scale=scale, precision=precision
            )
            return BridgeResult(**asdict(f), layer_source=ls, layer_target=lt, precision=precision, **named)

        def cost() -> Cost:
            n = len(self.reads.shared(info_s.key, info_t.key, train_dataset))
            return bridge_cost(n, info_s.d_model, info_t.d_model)

        return Plan(compute, {"source": [info_s.key, ls], "target": [info_t.key, lt]}, versions, cost)

    def _split_rows(
        self, prep: Prep, req: BridgeRequest | BridgeSweepRequest, s_key: str, ls: int, t_key: str, lt: int
    ) -> tuple[Any, ...]:
        """(S_train, T_train, S_test, T_test, preprocessing fields) of a bridge request's split,
        preprocessing fitted on the training rows."""
        train_ids, test_ids = self._bridge_split(
            s_key, t_key, req.train_dataset, req.eval_dataset, req.test_fraction, req.seed
        )
        S_tr, T_tr, S_te, T_te = self._four(s_key, ls, t_key, lt, train_ids, test_ids)
        return _prepare(prep, S_tr, T_tr, S_te, T_te)

    def _bridge_split(
        self,
        s_key: str,
        t_key: str,
        train_dataset: str | None,
        eval_dataset: str | None,
        test_fraction: float,
        seed: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        if train_dataset is not None:
            ids = self.reads.shared(s_key, t_key, train_dataset)
        else:
            ids = self.reads.shared(s_key, t_key, None)
        if eval_dataset is None or eval_dataset == train_dataset:
            return self._split_ids(ids, test_fraction, seed)
        test_ids = self.reads.shared(s_key, t_key, eval_dataset)
        train_ids = np.setdiff1d(ids, test_ids, assume_unique=True)
        if len(train_ids) < 2:
            raise InvalidInput(
                f"too few prompts to fit the bridge: {len(train_ids)} shared prompt(s) of "
                f"{train_dataset or 'the store'} outside eval_dataset {eval_dataset!r}"
            )
        return train_ids, test_ids

    def _plan_BridgeSweepRequest(self, req: BridgeSweepRequest) -> Plan[BridgeSweepResult]:
        """Reduced-rank ridge bridges at every rank (one ridge fit, one SVD): held-out r2 per rank;
        ``precision`` as in a bridge."""
        precision, prep = req.precision.value, check_prep(req.preprocess, req.outlier_threshold, similarity=False)
        ranks, alpha, train_dataset = self._ranks(req.ranks), req.alpha, req.train_dataset
        info_s, ls, info_t, lt, versions = self._pair(req.source, req.target)

        def compute(_key: str) -> BridgeSweepResult:
            S_tr, T_tr, S_te, T_te, named = self._split_rows(prep, req, info_s.key, ls, info_t.key, lt)
            r = analysis.bridges.bridge_rank_sweep(S_tr, T_tr, S_te, T_te, ranks, alpha=alpha, precision=precision)
            return BridgeSweepResult(**asdict(r), layer_source=ls, layer_target=lt, precision=precision, **named)

        def cost() -> Cost:
            n = len(self.reads.shared(info_s.key, info_t.key, train_dataset))
            return bridge_cost(n, info_s.d_model, info_t.d_model, sweep=True, op="bridgeSweep")

        return Plan(compute, {"source": [info_s.key, ls], "target": [info_t.key, lt]}, versions, cost)

    @staticmethod
    def _ranks(ranks: Sequence[int]) -> list[int]:
        if len(ranks) == 0:
            raise InvalidInput(
                "ranks must be a non-empty list of integers >= 1",
                field="ranks",
                value=[],
                allowed="a non-empty list of integers >= 1",
            )
        bad = [r for r in ranks if r < 1]
        if bad:
            raise InvalidInput(
                f"every rank must be an integer >= 1, got {bad[0]!r}",
                field="ranks",
                value=bad[0],
                allowed="integers >= 1",
            )
        return list(ranks)

    # ------------------------------------------------------------ probe transfer
    def _plan_ProbeTransferRequest(self, req: ProbeTransferRequest) -> Plan[ProbeTransferResult]:
        """Probe transfer (METHODS.md): sourceNative, targetNative, transferred (frozen bridge),
        taskSpecific and chance, as shares of the task's test prompts; ``precision`` of the
        bridges as in a bridge."""
        method, precision, prep = (
            req.method.value,
            req.precision.value,
            check_prep(req.preprocess, req.outlier_threshold, similarity=False),
        )
        rank, alpha, seed, test_fraction = req.rank, req.alpha, req.seed, req.test_fraction
        task_dataset, bridge_dataset = req.task_dataset, req.bridge_dataset
        info_s, ls, info_t, lt, versions = self._pair(req.source, req.target)

        def compute(_key: str) -> ProbeTransferResult:
            S, T, y, Sb, Tb, named = self._probe_inputs(
                prep, info_s.key, ls, info_t.key, lt, task_dataset, bridge_dataset
            )
            r = analysis.probes.probe_transfer(
                S,
                T,
                y,
                Sb,
                Tb,
                method=method,
                rank=rank,
                alpha=alpha,
                test_fraction=test_fraction,
                seed=seed,
                precision=precision,
            )
            return ProbeTransferResult(**asdict(r), layer_source=ls, layer_target=lt, precision=precision, **named)

        return Plan(
            compute,
            {"source": [info_s.key, ls], "target": [info_t.key, lt]},
            versions,
            lambda: self._probe_cost(info_s, info_t, task_dataset, 2, False, "probeTransfer"),
        )

    def _probe_cost(
        self, info_s: ModelInfo, info_t: ModelInfo, task_dataset: str, classes: int, sweep: bool, op: str
    ) -> Cost:
        """:func:`.work.probe_cost` with the task's shared prompts and every shared prompt as bridge prompts."""
        n_task = len(self.reads.shared(info_s.key, info_t.key, task_dataset))
        n_all = len(self.store.activations.shared(info_s.key, info_t.key))
        return probe_cost(n_task, max(0, n_all - n_task), info_s.d_model, info_t.d_model, classes, sweep, op)

    def _probe_inputs(
        self, prep: Prep, s_key: str, ls: int, t_key: str, lt: int, task_dataset: str, bridge_dataset: str | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """(S, T, labels of the task's shared labelled prompts, then S and T of the frozen
        bridge's prompts, and the preprocessing fields): preprocessing fitted on the bridge's
        prompts (never the task's) and applied to the task's."""
        ids, y = self._task(s_key, t_key, task_dataset)
        bids = self._bridge_ids(s_key, t_key, bridge_dataset, self.store.prompts.ids(task_dataset), task_dataset)
        S, T, Sb, Tb = self._four(s_key, ls, t_key, lt, ids, bids)
        Sb, Tb, S, T, named = _prepare(prep, Sb, Tb, S, T)
        return S, T, y, Sb, Tb, named

    def _four(
        self, s_key: str, ls: int, t_key: str, lt: int, ids: np.ndarray, bids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Source and target rows of ``ids``, then of ``bids``."""
        S = self.reads.rows(s_key, ls, ids)
        T = self.reads.rows(t_key, lt, ids)
        Sb = self.reads.rows(s_key, ls, bids)
        Tb = self.reads.rows(t_key, lt, bids)
        return S, T, Sb, Tb

    def _plan_ProbeTransferSweepRequest(self, req: ProbeTransferSweepRequest) -> Plan[ProbeTransferSweepResult]:
        """Probe transfer through reduced-rank ridge bridges at every rank, shared work done once;
        ``ridge_*`` are the full-rank values. The result's ``key`` names its PNG plot;
        ``precision`` as in a bridge."""
        precision, prep = req.precision.value, check_prep(req.preprocess, req.outlier_threshold, similarity=False)
        ranks, alpha, seed, test_fraction = self._ranks(req.ranks), req.alpha, req.seed, req.test_fraction
        task_dataset, bridge_dataset = req.task_dataset, req.bridge_dataset
        info_s, ls, info_t, lt, versions = self._pair(req.source, req.target)

        def compute(key: str) -> ProbeTransferSweepResult:
            S, T, y, Sb, Tb, named = self._probe_inputs(
                prep, info_s.key, ls, info_t.key, lt, task_dataset, bridge_dataset
            )
            r = analysis.probes.probe_transfer_sweep(
                S, T, y, Sb, Tb, ranks, alpha=alpha, test_fraction=test_fraction, seed=seed, precision=precision
            )
            return ProbeTransferSweepResult(
                **asdict(r),
                source=info_s.key,
                target=info_t.key,
                task_dataset=task_dataset,
                layer_source=ls,
                layer_target=lt,
                key=key,
                precision=precision,
                **named,
            )

        return Plan(
            compute,
            {"source": [info_s.key, ls], "target": [info_t.key, lt]},
            versions,
            lambda: self._probe_cost(info_s, info_t, task_dataset, 2, True, "probeTransferSweep"),
        )

    # ------------------------------------------------------------ next tokens
    def _plan_NextTokenTransferRequest(self, req: NextTokenTransferRequest) -> Plan[NextTokenTransferResult]:
        """Next-token probe transfer across tokenizers (see
        :func:`actstore.analysis.probes.next_token_transfer`) over the shared prompts of
        ``dataset`` that have next tokens stored for both models; the frozen bridge is fitted on
        ``bridge_dataset`` (default: every other shared prompt); ``precision`` as in a bridge."""
        method, precision = req.method.value, req.precision.value
        rank, alpha, seed, test_fraction, classes = req.rank, req.alpha, req.seed, req.test_fraction, req.classes
        dataset, bridge_dataset = req.dataset, req.bridge_dataset
        info_s, ls, info_t, lt, versions = self._pair(req.source, req.target)
        nt = self.store.next_tokens
        for key in (info_s.key, info_t.key):
            if not nt.has(key):
                raise NotFound(f"model {key!r} has no next tokens stored; ingest it again with next tokens")
        versions = versions | {
            f"next/{info_s.key}": nt.version(info_s.key),
            f"next/{info_t.key}": nt.version(info_t.key),
        }

        def compute(_key: str) -> NextTokenTransferResult:
            ids = self.reads.shared(info_s.key, info_t.key, dataset)
            ids = np.intersect1d(ids, np.intersect1d(nt.ids(info_s.key), nt.ids(info_t.key)), assume_unique=True)
            if len(ids) < 3:
                raise InvalidInput(
                    f"only {len(ids)} prompt(s) of dataset {dataset!r} have next tokens stored for "
                    f"both {info_s.key!r} and {info_t.key!r}; ingest them with next tokens"
                )
            bids = self._bridge_ids(info_s.key, info_t.key, bridge_dataset, self.store.prompts.ids(dataset), dataset)
            S, T, Sb, Tb = self._four(info_s.key, ls, info_t.key, lt, ids, bids)
            _, _, src = nt.read(info_s.key, ids)
            _, _, tgt = nt.read(info_t.key, ids)
            r = analysis.probes.next_token_transfer(
                S,
                T,
                src,
                tgt,
                Sb,
                Tb,
                classes=int(classes),
                method=method,
                rank=rank,
                alpha=alpha,
                test_fraction=test_fraction,
                seed=seed,
                precision=precision,
            )
            return NextTokenTransferResult(**asdict(r), layer_source=ls, layer_target=lt, precision=precision)

        return Plan(
            compute,
            {"source": [info_s.key, ls], "target": [info_t.key, lt]},
            versions,
            lambda: self._probe_cost(info_s, info_t, dataset, int(classes), False, "nextTokenTransfer"),
        )
