"""The atlas figure: the mean resized matrix, every pair's argmax-depth line, and the on- vs
off-diagonal scatter of the generalized-diagonal test (one point per pair). Drawn with
matplotlib's Agg backend, imported on first use.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from .registry import renders

__all__ = ["atlas_png"]


@renders("AtlasResult")
def atlas_png(result: Any) -> bytes:
    """An AtlasResult as PNG bytes: three panels side by side.

    1. ``mean_resized`` [resize, resize]: rows model A's relative depth, columns model B's.
    2. One thin line per pair: x the relative depth of model A's layer (``depths_a``), y the
       relative depth of model B's argmax layer (``argmax_depths``); dashed: the diagonal y = x.
    3. One point per pair with a diagonal test: x off-diagonal mean, y on-diagonal mean;
       points above the dashed y = x line have on > off.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = list(result.pairs)
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.3), dpi=100)
    mean = np.asarray(result.mean_resized, dtype=float)
    size = mean.shape[0]
    im = axes[0].imshow(
        mean,
        origin="lower",
        aspect="auto",
        cmap="viridis",
        interpolation="nearest",
        extent=(-0.5 / (size - 1), 1 + 0.5 / (size - 1), -0.5 / (size - 1), 1 + 0.5 / (size - 1)),
    )
    axes[0].set_xlabel("model B: relative depth")
    axes[0].set_ylabel("model A: relative depth")
    axes[0].set_title(f"mean of {len(pairs)} pairs resized to {size} x {size}", fontsize=9)
    fig.colorbar(im, ax=axes[0], label=result.measure)

    ax = axes[1]
    for p in pairs:
        ax.plot(
            p.depths_a,
            p.argmax_depths,
            lw=0.8,
            alpha=0.7,
            marker="o" if len(pairs) <= 6 else None,
            ms=2,
            label=f"{p.model_a} x {p.model_b}",
        )
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("model A: relative depth of the layer")
    ax.set_ylabel("model B: relative depth of the argmax")
    ax.set_title("argmax depth of every pair (dashed: same depth)", fontsize=9)
    if len(pairs) <= 6:
        ax.legend(fontsize=6, loc="upper left")

    ax = axes[2]
    tested = [p for p in pairs if p.diagonal is not None]
    on = np.array([p.diagonal.on_diagonal_mean for p in tested], dtype=float)
    off = np.array([p.diagonal.off_diagonal_mean for p in tested], dtype=float)
    if tested:
        above = on > off
        ax.scatter(off[above], on[above], s=18, color="tab:blue", label=f"on > off ({int(above.sum())})")
        ax.scatter(off[~above], on[~above], s=18, color="tab:red", label=f"on <= off ({int((~above).sum())})")
        lo, hi = float(min(on.min(), off.min())), float(max(on.max(), off.max()))
        pad = 0.05 * (hi - lo) if hi > lo else 0.05
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], ls="--", color="grey", lw=1)
        ax.legend(fontsize=7, loc="upper left")
    else:
        ax.text(0.5, 0.5, "no pair has a diagonal test", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("off-diagonal mean")
    ax.set_ylabel("on-diagonal mean")
    ax.set_title(f"generalized diagonal: {len(tested)} of {len(pairs)} pairs tested", fontsize=9)

    k = f", k={result.k}" if result.k is not None else ""
    fig.suptitle(f"atlas of {len(result.models)} models, {result.measure}{k}, n={result.n}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
