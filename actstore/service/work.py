"""Bounded heavy work: a cost estimate per query checked against a budget, a few slots for
heavy computations with a bounded queue, and cancellation of work whose caller gave up.

Cost estimates
==============
A cost is an estimate of floating-point operations (2 per multiply-add), made from the sizes
of the inputs before any heavy work starts. Work that is memory-bound rather than
arithmetic-bound is counted at ``GATHER_FLOPS`` operations per element moved, the GEMM
operations the same time would do (on 2 CPU cores a permutation gathers ~5e8 elements/s while
GEMMs run at ~2.5e10 flops/s). The formulas
(n prompts; p, q layer widths; m_a, m_b layer counts; P permutations; k neighbours):

==================  ========================================================================
query               estimated cost
==================  ========================================================================
cka                 min(gram, feature) of :func:`actstore.analysis.plan_cka_matrix` for one
                    pair; with P permutations 2 n^2 (p + q) + P n^2 (GATHER_FLOPS + 2)
ckaMatrix           min(gram, feature) of ``plan_cka_matrix`` over all layers
mutualKnn           per layer graph: 2 n^2 d exact, 2 n d ANN_CANDIDATES approximate; plus n k
affinityMatrix      one graph per layer of both lists, plus m_a m_b n k for the intersections
bridge (sweep)      2 n (p^2 + p q) + p^3 (+ min(p, q)^2 max(p, q) for the rank SVD)
probe transfer      the bridge on the bridge prompts, plus 2 PROBE_ITERS n (p + q) classes
SAE correlation     2 n (d_a f_a + d_b f_b) to encode, 2 n f_a f_b to correlate, f^3 for a
                    one-to-one matching (f = max(f_a, f_b)), R 2 min(f_a, f_b) d^2 for R
                    random pairings; an SAE matrix sums its cells
==================  ========================================================================

On two (busy) CPU cores actstore sustains about 2.5e10 of these operations per second, so the
default budget ``ACTSTORE_MAX_COST=1e13`` is roughly 7 minutes of work there (a GPU or more
cores do it faster: raise the budget with the hardware). Examples at d = 4,096: a
10,000-permutation CKA test over n = 10,000 prompts is 8.4e13 (refused; it ran ~95 minutes),
with 1,000 permutations 9.8e12; a 16 x 28-layer ckaMatrix (d = 2,048 / 3,072) over
n = 10,000 is 1.2e13. A query whose estimate exceeds the budget is refused with
:class:`LimitExceeded` naming the estimate and the limit; a cached answer is served whatever
its cost (the estimate is made only when computing).

Scheduling
==========
:class:`Scheduler` runs at most ``ACTSTORE_HEAVY_SLOTS`` heavy computations at once; up to
``ACTSTORE_HEAVY_QUEUE`` more wait for a slot (first come, first served) and further ones
are refused at once with the queue's length. Work estimated below ``ACTSTORE_CHEAP_COST``
takes no slot, so a cheap query never waits behind an expensive one.

Cancellation
============
:func:`run_cancellable` runs a function with a ``threading.Event``; the API sets it when the
request's time limit passes or the request task is cancelled (``call()`` sets it in a
``finally``). Long computations ask
:func:`stop_check` between batches (permutations, Gram blocks, layers, matrix cells) and stop
with :class:`QueryTimeout`; a computation waiting for a slot stops waiting.
"""

from __future__ import annotations

import contextvars
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from actstore.errors import InvalidInput, LimitExceeded, QueryTimeout

__all__ = [
    "ANN_CANDIDATES",
    "GATHER_FLOPS",
    "PROBE_ITERS",
    "Cost",
    "Scheduler",
    "WorkStatus",
    "affinity_cost",
    "bridge_cost",
    "check_budget",
    "check_cancelled",
    "check_length",
    "cka_cost",
    "cka_matrix_cost",
    "knn_graph_cost",
    "probe_cost",
    "run_cancellable",
    "sae_correlation_cost",
    "stop_check",
    "stop_requested",
]

T = TypeVar("T")

GATHER_FLOPS = 80  # operations counted per element a permutation gathers (memory-bound; measured)
ANN_CANDIDATES = 2048  # candidates per prompt counted for an approximate k-NN search
PROBE_ITERS = 100  # solver iterations counted for a logistic probe


@dataclass(frozen=True)
class Cost:
    """Estimated floating-point operations of one computation, and what it is (for messages)."""

    flops: float
    what: str


def check_budget(cost: Cost, limit: float) -> None:
    """LimitExceeded when ``cost`` is over ``limit`` operations."""
    if cost.flops > limit:
        raise LimitExceeded(
            f"{cost.what} has an estimated cost of {cost.flops:.3g} floating-point operations, over this "
            f"server's limit of {limit:.3g} (ACTSTORE_MAX_COST); use fewer prompts (a dataset), permutations, "
            f"layers or random pairs"
        )


def check_length(values: Sequence[Any] | None, name: str, limit: int) -> None:
    """LimitExceeded when the list ``values`` has more than ``limit`` entries."""
    if values is not None and len(values) > limit:
        raise LimitExceeded(
            f"{name} has {len(values)} entries; this server allows at most {limit} (ACTSTORE_MAX_LAYERS)"
        )


# ----------------------------------------------------------------- estimates
def _cka_plan_flops(n: int, dims_a: Sequence[int], dims_b: Sequence[int]) -> float:
    from actstore.analysis import plan_cka_matrix

    plan = plan_cka_matrix(n, list(dims_a), list(dims_b))
    flops: float = min(plan.gram_flops, plan.feature_flops)
    return flops


def cka_cost(n: int, p: int, q: int, permutations: int = 0) -> Cost:
    """CKA of one pair: min(gram, feature) flops of plan_cka_matrix; with P permutations
    2 n^2 (p + q) for the two Grams plus P n^2 (GATHER_FLOPS + 2) for the permuted traces."""
    if permutations:
        flops = 2.0 * n * n * (p + q) + float(permutations) * n * n * (GATHER_FLOPS + 2)
        return Cost(flops, f"cka over n = {n} prompts (d = {p}, {q}) with {permutations} permutations")
    return Cost(_cka_plan_flops(n, [p], [q]), f"cka over n = {n} prompts (d = {p}, {q})")


def cka_matrix_cost(n: int, dims_a: Sequence[int], dims_b: Sequence[int]) -> Cost:
    """All-pairs CKA: min(gram, feature) flops of plan_cka_matrix."""
    return Cost(
        _cka_plan_flops(n, dims_a, dims_b), f"ckaMatrix of {len(dims_a)} x {len(dims_b)} layers over n = {n} prompts"
    )


def knn_graph_cost(n: int, d: int, approximate: bool) -> float:
    """One cosine k-NN graph: 2 n^2 d exact, 2 n d ANN_CANDIDATES approximate."""
    return 2.0 * n * d * (ANN_CANDIDATES if approximate else n)


def affinity_cost(
    n: int, k: int, dims_a: Sequence[int], dims_b: Sequence[int], approximate: bool, op: str = "affinityMatrix"
) -> Cost:
    """One graph per layer of both lists plus m_a m_b n k for the neighbour-set intersections."""
    graphs = sum(knn_graph_cost(n, d, approximate) for d in [*dims_a, *dims_b])
    shape = f"{len(dims_a)} x {len(dims_b)} layers, " if op == "affinityMatrix" else ""
    return Cost(graphs + float(len(dims_a)) * len(dims_b) * n * k, f"{op} of {shape}k = {k} over n = {n} prompts")


def bridge_cost(n: int, p: int, q: int, sweep: bool = False, op: str = "bridge") -> Cost:
    """A linear bridge: 2 n (p^2 + p q) + p^3 (normal equations and solve), plus
    min(p, q)^2 max(p, q) for a rank sweep's SVD."""
    flops = 2.0 * n * (p * p + p * q) + float(p) ** 3
    if sweep:
        flops += float(min(p, q)) ** 2 * max(p, q)
    return Cost(flops, f"{op} over n = {n} prompts (d = {p}, {q})")


def probe_cost(
    n_task: int, n_bridge: int, p: int, q: int, classes: int, sweep: bool = False, op: str = "probeTransfer"
) -> Cost:
    """The frozen bridge on the bridge prompts plus probes on both sides:
    bridge_cost(n_bridge) + 2 PROBE_ITERS n_task (p + q) classes."""
    flops = bridge_cost(n_bridge, p, q, sweep).flops + 2.0 * PROBE_ITERS * n_task * (p + q) * max(2, classes)
    return Cost(flops, f"{op} over {n_task} task and {n_bridge} bridge prompts (d = {p}, {q})")


def sae_correlation_cost(n: int, d_a: int, f_a: int, d_b: int, f_b: int, random_pairs: int, one_to_one: bool) -> float:
    """2 n (d_a f_a + d_b f_b) encoding, 2 n f_a f_b correlating, f^3 one-to-one matching,
    random_pairs 2 min(f_a, f_b) max(d_a, d_b)^2 for the random pairings' SVCCA."""
    f, d = max(f_a, f_b), max(d_a, d_b)
    flops = 2.0 * n * (d_a * f_a + d_b * f_b) + 2.0 * n * f_a * f_b
    if one_to_one:
        flops += float(f) ** 3
    return flops + float(random_pairs) * 2.0 * min(f_a, f_b) * d * d


# -------------------------------------------------------------- cancellation
_STOP: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("actstore_stop", default=None)


def run_cancellable(stop: threading.Event, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in this thread; long work inside stops once ``stop`` is set."""
    token = _STOP.set(stop)
    try:
        return fn(*args, **kwargs)
    finally:
        _STOP.reset(token)


def stop_check() -> Callable[[], bool] | None:
    """The current call's "should I stop?" callable (for analysis ``should_stop``), or None."""
    stop = _STOP.get()
    return stop.is_set if stop is not None else None


def stop_requested() -> bool:
    """Whether the current call was told to stop."""
    stop = _STOP.get()
    return stop is not None and stop.is_set()


def check_cancelled(done: int | None = None, total: int | None = None, what: str = "") -> None:
    """QueryTimeout when the current call was told to stop."""
    if stop_requested():
        where = f" after {done} of {total} {what}" if total is not None else ""
        raise QueryTimeout(f"the computation was stopped{where}: its time limit passed or its client left")


# ---------------------------------------------------------------- scheduling
@dataclass(frozen=True)
class WorkStatus:
    """Heavy computations now: ``running`` of ``slots``, ``queued`` of at most ``max_queued``."""

    running: int
    queued: int
    slots: int
    max_queued: int


class Scheduler:
    """At most ``slots`` heavy computations at once, at most ``max_queued`` waiting (first come,
    first served). Thread-safe."""

    def __init__(self, slots: int, max_queued: int, cheap_cost: float) -> None:
        if slots < 1:
            raise InvalidInput(f"ACTSTORE_HEAVY_SLOTS must be at least 1, got {slots}")
        if max_queued < 0:
            raise InvalidInput(f"ACTSTORE_HEAVY_QUEUE must be at least 0, got {max_queued}")
        self.slots, self.max_queued, self.cheap_cost = slots, max_queued, cheap_cost
        self._cond = threading.Condition()
        self._running = 0
        self._waiting: deque[object] = deque()

    def status(self) -> WorkStatus:
        with self._cond:
            return WorkStatus(self._running, len(self._waiting), self.slots, self.max_queued)

    @contextmanager
    def slot(self, cost: Cost | None) -> Iterator[None]:
        """Hold a slot while the block runs (none for work estimated below ``cheap_cost``).

        LimitExceeded at once when every slot is taken and the queue is full; QueryTimeout
        when the caller is told to stop while waiting.
        """
        if cost is not None and cost.flops < self.cheap_cost:
            yield
            return
        me = object()
        with self._cond:
            if self._running >= self.slots and len(self._waiting) >= self.max_queued:
                raise LimitExceeded(
                    f"the server is busy: {self._running} heavy computations are running and {len(self._waiting)} "
                    f"are queued, the most it queues (ACTSTORE_HEAVY_QUEUE={self.max_queued}); try again later"
                )
            self._waiting.append(me)
            try:
                while self._running >= self.slots or self._waiting[0] is not me:
                    self._cond.wait(0.05)
                    check_cancelled()
            finally:
                self._waiting.remove(me)
                self._cond.notify_all()
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()
