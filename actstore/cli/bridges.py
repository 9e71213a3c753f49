"""``actstore bridge``, ``actstore probe-transfer`` and ``actstore next-token-transfer``.

Layers are given as ``MODEL:LAYER`` (0-based block, negative from the end) or
``MODEL@DEPTH`` (relative depth in [0, 1]), parsed by :meth:`actstore.layers.LayerRef.parse`.
Answers are printed as JSON with the fields and names of the API's types (camelCase; the
API's types are derived from the same result dataclasses): ``bridge`` as Bridge (BridgeSweep
with ``--ranks``), ``probe-transfer`` as ProbeTransfer (ProbeTransferSweep with ``--ranks``,
without its plotUrl), ``next-token-transfer`` as NextTokenTransfer. Expected errors print
``error: ...`` and exit with status 2. Every command needs an existing store.
"""

# No `from __future__ import annotations`: typer reads the Annotated hints at runtime.

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from actstore.errors import InvalidInput
from actstore.layers import LayerRef

from .common import (
    StoreOption,
    check_output_file,
    fraction,
    int_list,
    open_service,
    print_json,
    result_json,
    settings_for,
    user_errors,
)

METHODS = ("procrustes", "ridge", "low_rank", "lasso")


def _method(text: str) -> str:
    m = text.lower().replace("-", "_")
    if m not in METHODS:
        raise InvalidInput(f"--method must be one of {', '.join(METHODS)}, got {text!r}")
    return m


def _rank(rank: Optional[int]) -> Optional[int]:
    if rank is not None and rank < 1:
        raise InvalidInput(f"--rank must be at least 1, got {rank}")
    return rank


SourceOption = Annotated[str, typer.Option("--source", help="Source layer: MODEL:LAYER or MODEL@DEPTH.")]
TargetOption = Annotated[str, typer.Option("--target", help="Target layer: MODEL:LAYER or MODEL@DEPTH.")]
MethodOption = Annotated[str, typer.Option("--method", help="procrustes, ridge, low_rank or lasso.")]
RankOption = Annotated[
    Optional[int],
    typer.Option("--rank", help="Rank of a low_rank bridge (a positive integer at most the narrower layer width)."),
]
AlphaOption = Annotated[
    Optional[float],
    typer.Option(
        "--alpha",
        help="Penalty (> 0) of a ridge, low_rank or lasso bridge (default: generalized "
        "cross-validation for ridge and low_rank; for lasso 0.05 x the smallest penalty that gives the zero map).",
    ),
]
PreprocessOption = Annotated[
    str,
    typer.Option("--preprocess", help="none, standardize (per-dimension z-score) or drop_outlier_dims (see README)."),
]
ThresholdOption = Annotated[
    Optional[float],
    typer.Option(
        "--outlier-threshold", help="Variance share above which drop_outlier_dims drops a dimension (default 0.05)."
    ),
]
PrecisionOption = Annotated[
    str,
    typer.Option("--precision", help="auto (float64 for bridges), float32 or float64: the working dtype of the fits."),
]


def bridge_command(
    ctx: typer.Context,
    source: SourceOption,
    target: TargetOption,
    method: MethodOption = "ridge",
    rank: RankOption = None,
    ranks: Annotated[
        Optional[str],
        typer.Option("--ranks", help="Comma-separated ranks: sweep reduced-rank ridge over them (one fit)."),
    ] = None,
    alpha: AlphaOption = None,
    train_dataset: Annotated[
        Optional[str],
        typer.Option("--train-dataset", help="Fit on this dataset's shared prompts (default: every shared prompt)."),
    ] = None,
    eval_dataset: Annotated[
        Optional[str],
        typer.Option(
            "--eval-dataset",
            help="Score on this dataset's shared prompts and fit on the others (--test-fraction is then unused).",
        ),
    ] = None,
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="Held-out share, in (0, 1).")] = 0.2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the train/test split.")] = 0,
    preprocess: PreprocessOption = "none",
    outlier_threshold: ThresholdOption = None,
    scale: Annotated[
        bool, typer.Option("--scale", help="procrustes only: also fit the isotropic scale s (reported as scale).")
    ] = False,
    precision: PrecisionOption = "auto",
    store: StoreOption = None,
) -> None:
    """Fit a linear bridge source -> target and print its held-out r2 and mean cosine."""
    with user_errors(ctx):
        s, t = LayerRef.parse(source), LayerRef.parse(target)
        rk = int_list(ranks, "--ranks", minimum=1)
        fraction(test_fraction, "--test-fraction")
        common = dict(
            alpha=alpha,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            test_fraction=test_fraction,
            seed=seed,
            preprocess=preprocess,
            outlier_threshold=outlier_threshold,
            precision=precision,
        )
        if rk is not None:
            if scale:
                raise InvalidInput(
                    "--scale applies to a procrustes bridge, not to a --ranks sweep (reduced-rank ridge)"
                )
            r = open_service(settings_for(store)).bridges.bridge_sweep(s, t, rk, **common)
        else:
            m, k = _method(method), _rank(rank)
            r = open_service(settings_for(store)).bridges.bridge(s, t, method=m, rank=k, scale=scale, **common)
    print_json(result_json(r))


def probe_transfer_command(
    ctx: typer.Context,
    source: Annotated[str, typer.Option("--source", help="Source layer (the probe's): MODEL:LAYER or MODEL@DEPTH.")],
    target: Annotated[str, typer.Option("--target", help="Target layer (bridged into the source).")],
    task_dataset: Annotated[str, typer.Option("--task-dataset", help="Labelled dataset of the task.")],
    bridge_dataset: Annotated[
        Optional[str],
        typer.Option(
            "--bridge-dataset", help="General text for the frozen bridge (default: every other shared prompt)."
        ),
    ] = None,
    method: MethodOption = "ridge",
    rank: RankOption = None,
    ranks: Annotated[
        Optional[str],
        typer.Option("--ranks", help="Comma-separated ranks: sweep reduced-rank ridge bridges (shared work once)."),
    ] = None,
    alpha: AlphaOption = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="With --ranks: write the sweep's PNG here.")] = None,
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="Held-out share, in (0, 1).")] = 0.3,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the train/test split.")] = 0,
    preprocess: PreprocessOption = "none",
    outlier_threshold: ThresholdOption = None,
    precision: PrecisionOption = "auto",
    store: StoreOption = None,
) -> None:
    """Probe transfer: sourceNative, targetNative, transferred, taskSpecific and chance (or a rank sweep)."""
    with user_errors(ctx):
        s, t = LayerRef.parse(source), LayerRef.parse(target)
        rk = int_list(ranks, "--ranks", minimum=1)
        fraction(test_fraction, "--test-fraction")
        if rk is None and plot is not None:
            raise InvalidInput("--plot needs --ranks (it plots the rank sweep)")
        if plot is not None:
            check_output_file(plot, "--plot")
        if rk is not None:
            r = open_service(settings_for(store)).bridges.probe_transfer_sweep(
                s,
                t,
                task_dataset,
                rk,
                bridge_dataset=bridge_dataset,
                alpha=alpha,
                test_fraction=test_fraction,
                seed=seed,
                preprocess=preprocess,
                outlier_threshold=outlier_threshold,
                precision=precision,
            )
            if plot is not None:
                from actstore.plots import render_png

                plot.write_bytes(render_png(r))
                print(f"wrote {plot}", file=sys.stderr)
        else:
            m, k = _method(method), _rank(rank)
            r = open_service(settings_for(store)).bridges.probe_transfer(
                s,
                t,
                task_dataset,
                bridge_dataset=bridge_dataset,
                method=m,
                rank=k,
                alpha=alpha,
                test_fraction=test_fraction,
                seed=seed,
                preprocess=preprocess,
                outlier_threshold=outlier_threshold,
                precision=precision,
            )
    print_json(result_json(r))


def next_token_transfer_command(
    ctx: typer.Context,
    source: SourceOption,
    target: TargetOption,
    dataset: Annotated[str, typer.Option("--dataset", help="Prompts ingested with --next-tokens.")],
    bridge_dataset: Annotated[
        Optional[str],
        typer.Option(
            "--bridge-dataset", help="Prompts the bridge is fitted on (default: every shared prompt outside --dataset)."
        ),
    ] = None,
    method: MethodOption = "ridge",
    rank: RankOption = None,
    alpha: AlphaOption = None,
    classes: Annotated[int, typer.Option("--classes", help="Most frequent shared next tokens kept.")] = 500,
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="Held-out share, in (0, 1).")] = 0.3,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the train/test split.")] = 0,
    precision: PrecisionOption = "auto",
    store: StoreOption = None,
) -> None:
    """Next-token probe transfer across tokenizers (top-1 / top-5 and the agreement ceiling).

    The printed classes list stops after 20 tokens ("..." marks the rest).
    """
    with user_errors(ctx):
        s, t = LayerRef.parse(source), LayerRef.parse(target)
        fraction(test_fraction, "--test-fraction")
        if classes < 2:
            raise InvalidInput(f"--classes must be at least 2, got {classes}")
        m, k = _method(method), _rank(rank)
        r = open_service(settings_for(store)).bridges.next_token_transfer(
            s,
            t,
            dataset,
            bridge_dataset=bridge_dataset,
            method=m,
            rank=k,
            alpha=alpha,
            classes=classes,
            test_fraction=test_fraction,
            seed=seed,
            precision=precision,
        )
    data = result_json(r)
    data["classes"] = data["classes"][:20] + (["..."] if len(data["classes"]) > 20 else [])
    print_json(data)
