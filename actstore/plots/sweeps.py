"""Curves of sweep answers: probe-transfer accuracy against bridge rank. Drawn with
matplotlib's Agg backend (no display needed), imported on first use."""

from __future__ import annotations

import io
from typing import Any

from .registry import renders

__all__ = ["sweep_png"]


@renders("ProbeTransferSweepResult")
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
    ax.set_title(
        f"probe transfer {result.target} L{result.layer_target} -> {result.source} "
        f"L{result.layer_source}\n{result.task_dataset}: n_train={result.n_train}, "
        f"n_test={result.n_test}, bridge n={result.n_bridge}",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="best", framealpha=0.7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
