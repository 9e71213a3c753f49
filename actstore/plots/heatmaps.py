"""Heatmaps of matrix answers, argmax path drawn: CKA and mutual k-NN affinity matrices (the
default renderer) and SAE SVCCA matrices. Axes are labelled with layer indices and relative
depth. Drawn with matplotlib's Agg backend (no display needed), imported on first use.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from .registry import renders

__all__ = ["heatmap_png", "sae_heatmap_png"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ticks(layers: list[int], depths: list[float], max_ticks: int = 16) -> tuple[list[int], list[str]]:
    step = max(1, int(np.ceil(len(layers) / max_ticks)))
    pos = list(range(0, len(layers), step))
    return pos, [f"{layers[i]}\n({depths[i]:.2f})" for i in pos]


def _png(fig: Any, plt: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


@renders("SimilarityMatrixResult", "AffinityMatrixResult", default=True)
def heatmap_png(result: Any) -> bytes:
    """A SimilarityMatrixResult or AffinityMatrixResult as PNG bytes.

    Rows are layers of model A (y axis), columns layers of model B (x axis); the white line
    marks each row's most alike column. Affinity plots state k, n, the null mean and the diagonal
    test; other measures their name (and k).
    """
    plt = _pyplot()
    M = np.asarray(result.values, dtype=float)
    ncols, nrows = min(M.shape[1], 16), min(M.shape[0], 16)  # tick labels are thinned past 16
    fig, ax = plt.subplots(figsize=(2.6 + 0.55 * max(6, ncols), 2.0 + 0.32 * max(8, nrows)), dpi=110)
    im = ax.imshow(M, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest")
    ax.plot(result.argmax, np.arange(M.shape[0]), color="white", lw=1.5, marker="o", ms=3)
    _layer_axes(ax, result, "layer")
    measure = getattr(result, "measure", "unbiased_cka")
    if hasattr(result, "diagonal"):
        d = result.diagonal
        title = f"mutual k-NN (k={result.k}, n={result.n}, null {result.null_mean:.3f})"
        if d.p_value == d.p_value:
            title += f"\ndiagonal {d.on_diagonal_mean:.3f} vs {d.off_diagonal_mean:.3f}, t={d.t_statistic:.2f}, p={d.p_value:.2g}"
        label = "mutual k-NN"
    elif measure in ("unbiased_cka", "cka"):
        kind = "debiased" if result.debiased else "biased"
        title = f"linear CKA ({kind}, n={result.n})"
        label = "CKA"
    else:
        k = f"k={result.k}, " if result.k is not None else ""
        title = f"{measure} ({k}n={result.n})"
        label = measure if result.direction == "similarity" else f"{measure} (smaller: more alike)"
    best = "argmax" if getattr(result, "direction", "similarity") == "similarity" else "argmin"
    ax.set_title(title + f"\nwhite line: {best} of each row", fontsize=9)
    fig.colorbar(im, ax=ax, label=label)
    fig.tight_layout()
    return _png(fig, plt)


def _layer_axes(ax: Any, result: Any, what: str) -> None:
    """Ticks and labels of a layer-by-layer matrix: model B's layers across, model A's up."""
    xt, xl = _ticks(result.layers_b, result.depths_b)
    yt, yl = _ticks(result.layers_a, result.depths_a)
    ax.set_xticks(xt, xl, fontsize=7)
    ax.set_yticks(yt, yl, fontsize=7)
    ax.set_xlabel(f"{result.model_b}: {what} (relative depth)")
    ax.set_ylabel(f"{result.model_a}: {what} (relative depth)")


@renders("SaeMatrixResult")
def sae_heatmap_png(result: Any) -> bytes:
    """SVCCA heatmap of an SaeMatrixResult: rows model A's SAE layers, columns model B's,
    argmax per row drawn, each cell annotated with its p-value when the grid is small."""
    plt = _pyplot()
    M = np.asarray(result.values, dtype=float)
    ncols, nrows = min(M.shape[1], 16), min(M.shape[0], 16)
    fig, ax = plt.subplots(figsize=(2.6 + 0.55 * max(6, ncols), 1.8 + 0.32 * max(8, nrows)), dpi=110)
    im = ax.imshow(M, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest", vmin=0.0, vmax=1.0)
    ax.plot(result.argmax, np.arange(M.shape[0]), color="white", lw=1.5, marker="o", ms=3, label="argmax per row")
    if M.size <= 64:
        P = np.asarray(result.p_values, dtype=float)
        for i in range(M.shape[0]):
            for j in range(M.shape[1]):
                ax.text(
                    j,
                    i,
                    f"{M[i, j]:.2f}\np={P[i, j]:.2g}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="black" if M[i, j] > 0.6 else "white",
                )
    _layer_axes(ax, result, "SAE layer")
    rand = float(np.mean(result.random_svcca_mean))
    ax.set_title(
        f"SAE feature SVCCA ({result.matching.upper()}, n={result.n})\n"
        f"random-pairing mean {rand:.3f} over {result.random_pairs} pairings",
        fontsize=9,
        pad=18,
    )
    fig.colorbar(im, ax=ax, label="SVCCA")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.12), fontsize=7, frameon=False)
    fig.tight_layout()
    return _png(fig, plt)
