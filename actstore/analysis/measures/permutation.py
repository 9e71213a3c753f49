"""A permutation test for any registered measure.

Null hypothesis: X and Y are unrelated, so any re-pairing of their rows is as likely as the
observed one. X is prepared once; each of the P draws of
:func:`actstore.analysis.permutation.stratified_permutations` (seeded, optionally within
strata) permutes Y's rows (row i of the permuted Y is Y[pi[i]]), which is then prepared and
compared with X. p = (1 + #{null at least as extreme as the observed value}) / (1 + P), never
0: "at least as extreme" is null >= value - tol for similarities and null <= value + tol for
distances, tol = 1e-12 max(1, |value|) (values equal to rounding count, conservatively).

Cost: P + 1 ``prepare`` calls of Y and ``compare`` calls (for k-NN measures a k-NN graph per
draw). Linear CKA has a faster dedicated test (actstore.analysis.permutation) that permutes
Gram matrices instead; it draws the same permutations for the same seed and strata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import validation as V
from ..errors import StopCheck, check_stop
from ..permutation import stratified_permutations
from .registry import check_pair, get

__all__ = ["MeasureTest", "measure_permutation_test"]


@dataclass(frozen=True, eq=False)
class MeasureTest:
    """Permutation test of one measure's value.

    value: the observed value; p_value: (1 + #{null at least as extreme}) / (1 + P);
    permutations: P; null: float64 [P], the measure under permuted rows of Y (draw order);
    measure, direction, seed: what was tested and how.
    """

    value: float
    p_value: float
    permutations: int
    null: np.ndarray
    measure: str = ""
    direction: str = "similarity"
    seed: int = 0


def measure_permutation_test(
    X: np.ndarray,
    Y: np.ndarray,
    measure: str,
    options: Mapping[str, Any] | None = None,
    *,
    permutations: int,
    seed: int = 0,
    strata: Sequence[object] | np.ndarray | None = None,
    should_stop: StopCheck | None = None,
) -> MeasureTest:
    """Permutation test of ``measure`` between X [n, p] and Y [n, q] (rows: the same inputs).

    Args:
        measure, options: a registered measure and its options (validated by the registry).
        permutations: P >= 0 draws (P = 0 gives p = 1); seed >= 0: numpy default_rng seed.
        strata: optional label per row [n]: rows of Y move only within their stratum.
        should_stop: asked before every draw; True stops with AnalysisCancelled.
    """
    m = get(measure)
    opts = m.options_for(options)
    X, Y = np.asarray(X), np.asarray(Y)
    check_pair(X, Y, m, opts)
    P = V.check_int(permutations, "permutations", minimum=0)
    seed_ = V.check_int(seed, "seed", minimum=0)
    n = X.shape[0]
    px = m.prepare(X, opts)
    value = float(m.compare(px, m.prepare(Y, opts), opts))
    null = np.empty(P)
    for i, pi in enumerate(stratified_permutations(n, P, seed_, strata)):
        check_stop(should_stop, i, P, "permutations")
        null[i] = m.compare(px, m.prepare(Y[pi], opts), opts)
    tol = 1e-12 * max(1.0, abs(value))
    extreme = null >= value - tol if m.direction == "similarity" else null <= value + tol
    p = (1.0 + np.count_nonzero(extreme)) / (1.0 + P)
    null.setflags(write=False)
    return MeasureTest(
        value=value, p_value=float(p), permutations=P, null=null, measure=m.name, direction=m.direction, seed=seed_
    )
