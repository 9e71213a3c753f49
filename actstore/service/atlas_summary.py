"""The one-line reading of an atlas: how many pairs have a generalized diagonal (on > off) and
how many of those tests are significant after Bonferroni over the pairs tested. Shared by the
command line and the demo's findings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from actstore import analysis

__all__ = ["AtlasSummary", "summarize"]


@dataclass(frozen=True)
class AtlasSummary:
    """``pairs`` in the atlas, ``tested`` of them with a diagonal test, ``on_above_off`` with
    on-diagonal mean > off-diagonal mean, ``significant`` with on > off and Bonferroni-adjusted
    p < ``alpha`` (adjusted over the ``tested`` pairs); ``adjusted`` the adjusted p of each pair
    in the atlas's order (NaN where untested)."""

    models: int
    pairs: int
    tested: int
    on_above_off: int
    significant: int
    alpha: float
    adjusted: tuple[float, ...]

    def line(self) -> str:
        """``atlas of M models (P pairs): X pairs with on > off, Y significant (Bonferroni p < 0.05)``."""
        return (
            f"atlas of {self.models} models ({self.pairs} pairs): {self.on_above_off} pairs with on > off, "
            f"{self.significant} significant (Bonferroni p < {self.alpha:g})"
        )


def summarize(result: Any, alpha: float = 0.05) -> AtlasSummary:
    """The summary of an AtlasResult (see :class:`AtlasSummary`)."""
    pairs = list(result.pairs)
    tested = [i for i, p in enumerate(pairs) if p.diagonal is not None]
    adjusted = np.full(len(pairs), np.nan)
    if tested:
        adjusted[tested] = analysis.bonferroni(np.array([pairs[i].diagonal.p_value for i in tested], dtype=np.float64))
    above = [i for i in tested if pairs[i].diagonal.on_diagonal_mean > pairs[i].diagonal.off_diagonal_mean]
    significant = sum(1 for i in above if adjusted[i] < alpha)
    return AtlasSummary(
        len(result.models), len(pairs), len(tested), len(above), significant, alpha, tuple(float(x) for x in adjusted)
    )
