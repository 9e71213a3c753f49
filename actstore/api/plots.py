"""PNG heatmaps of matrix answers (CKA matrices, affinity matrices), argmax path drawn.

Axes are labelled with layer indices and relative depth. Rendered with matplotlib's Agg
backend, no display needed.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _ticks(layers: list[int], depths: list[float], max_ticks: int = 16) -> tuple[list[int], list[str]]:
    step = max(1, int(np.ceil(len(layers) / max_ticks)))
    pos = list(range(0, len(layers), step))
    return pos, [f"{layers[i]}\n({depths[i]:.2f})" for i in pos]


def heatmap_png(result: Any) -> bytes:
    """Render a SimilarityMatrixResult or AffinityMatrixResult as PNG bytes.

    Rows are layers of model A (y axis), columns layers of model B (x axis); the white line
    marks each row's argmax. Affinity plots state k, n, the null mean and the diagonal test.
    """
    M = np.asarray(result.values, dtype=float)
    ncols, nrows = min(M.shape[1], 16), min(M.shape[0], 16)  # tick labels are thinned past 16
    fig, ax = plt.subplots(figsize=(2.6 + 0.55 * max(6, ncols), 2.0 + 0.32 * max(8, nrows)), dpi=110)
    im = ax.imshow(M, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest")
    ax.plot(result.argmax, np.arange(M.shape[0]), color="white", lw=1.5, marker="o", ms=3)
    xt, xl = _ticks(result.layers_b, result.depths_b)
    yt, yl = _ticks(result.layers_a, result.depths_a)
    ax.set_xticks(xt, xl, fontsize=7)
    ax.set_yticks(yt, yl, fontsize=7)
    ax.set_xlabel(f"{result.model_b}: layer (relative depth)")
    ax.set_ylabel(f"{result.model_a}: layer (relative depth)")
    if hasattr(result, "k"):
        d = result.diagonal
        title = f"mutual k-NN (k={result.k}, n={result.n}, null {result.null_mean:.3f})"
        if d.p_value == d.p_value:
            title += f"\ndiagonal {d.on_diagonal_mean:.3f} vs {d.off_diagonal_mean:.3f}, t={d.t_statistic:.2f}, p={d.p_value:.2g}"
        label = "mutual k-NN"
    else:
        kind = "debiased" if result.debiased else "biased"
        title = f"linear CKA ({kind}, n={result.n})"
        label = "CKA"
    ax.set_title(title + "\nwhite line: argmax of each row", fontsize=9)
    fig.colorbar(im, ax=ax, label=label)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


# Result types with their own renderer, by class name (feature modules register theirs).
RENDERERS: dict[str, Any] = {}


def render_png(result: Any) -> bytes:
    """PNG of any plottable cached result: its registered renderer, else :func:`heatmap_png`."""
    renderer = RENDERERS.get(type(result).__name__)
    return renderer(result) if renderer is not None else heatmap_png(result)
