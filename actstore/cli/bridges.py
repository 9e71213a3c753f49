"""``actstore bridge``, ``actstore probe-transfer`` and ``actstore next-token-transfer``.

Layers are given as ``MODEL:LAYER`` (0-based block, negative from the end) or
``MODEL@DEPTH`` (relative depth in [0, 1]). Answers are printed as JSON; expected errors print
``error: ...`` and exit with status 2.
"""

# No `from __future__ import annotations`: typer reads the Annotated hints at runtime.

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from actstore.analysis import AnalysisError
from actstore.errors import ActstoreError

from .common import DEFAULT_STORE, StoreOption, fail

METHODS = ("procrustes", "ridge", "low_rank", "lasso")


def parse_layer_ref(text: str):
    """``MODEL:LAYER`` or ``MODEL@DEPTH`` -> LayerRef."""
    from actstore.layers import LayerRef

    if "@" in text:
        model, _, depth = text.rpartition("@")
        try:
            return LayerRef(model, depth=float(depth))
        except ValueError:
            raise fail(f"bad depth in {text!r}: use MODEL@DEPTH with DEPTH in [0, 1]") from None
    model, sep, layer = text.rpartition(":")
    if not sep or not model:
        raise fail(f"bad layer {text!r}: use MODEL:LAYER (e.g. pythia-70m:3, llama:-1) or MODEL@DEPTH")
    try:
        return LayerRef(model, layer=int(layer))
    except ValueError:
        raise fail(f"bad layer number in {text!r}: use MODEL:LAYER with an integer LAYER") from None


def _ranks(text: Optional[str]) -> Optional[list]:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise fail(f"--ranks must be comma-separated integers, got {text!r}") from None


def _method(text: str) -> str:
    m = text.lower().replace("-", "_")
    if m not in METHODS:
        raise fail(f"--method must be one of {', '.join(METHODS)}, got {text!r}")
    return m


def _service(store: str):
    from actstore.service import Service
    from actstore.config import Settings

    return Service(store, Settings(store_uri=store))


def _print(result) -> None:
    data = asdict(result)
    data.pop("key", None)
    print(json.dumps(data, indent=2))


def bridge_command(
    source: Annotated[str, typer.Option("--source", help="Source layer: MODEL:LAYER or MODEL@DEPTH.")],
    target: Annotated[str, typer.Option("--target", help="Target layer: MODEL:LAYER or MODEL@DEPTH.")],
    method: Annotated[str, typer.Option("--method", help="procrustes, ridge, low_rank or lasso.")] = "ridge",
    rank: Annotated[Optional[int], typer.Option("--rank", help="Rank of a low_rank bridge.")] = None,
    ranks: Annotated[Optional[str], typer.Option(
        "--ranks", help="Comma-separated ranks: sweep reduced-rank ridge over them (one fit).")] = None,
    alpha: Annotated[Optional[float], typer.Option("--alpha", help="Penalty (default: GCV for ridge).")] = None,
    train_dataset: Annotated[Optional[str], typer.Option("--train-dataset")] = None,
    eval_dataset: Annotated[Optional[str], typer.Option("--eval-dataset")] = None,
    test_fraction: Annotated[float, typer.Option("--test-fraction")] = 0.2,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Fit a linear bridge source -> target and print its held-out r2 and mean cosine."""
    try:
        svc = _service(store)
        s, t = parse_layer_ref(source), parse_layer_ref(target)
        rk = _ranks(ranks)
        if rk is not None:
            r = svc.bridge_sweep(s, t, rk, alpha=alpha, train_dataset=train_dataset, eval_dataset=eval_dataset,
                                 test_fraction=test_fraction, seed=seed)
        else:
            r = svc.bridge(s, t, method=_method(method), rank=rank, alpha=alpha, train_dataset=train_dataset,
                           eval_dataset=eval_dataset, test_fraction=test_fraction, seed=seed)
    except (ActstoreError, AnalysisError) as exc:
        raise fail(str(exc)) from None
    _print(r)


def probe_transfer_command(
    source: Annotated[str, typer.Option("--source", help="Source layer (the probe's): MODEL:LAYER or MODEL@DEPTH.")],
    target: Annotated[str, typer.Option("--target", help="Target layer (bridged into the source).")],
    task_dataset: Annotated[str, typer.Option("--task-dataset", help="Labelled dataset of the task.")],
    bridge_dataset: Annotated[Optional[str], typer.Option(
        "--bridge-dataset", help="General text for the frozen bridge (default: every other shared prompt).")] = None,
    method: Annotated[str, typer.Option("--method", help="procrustes, ridge, low_rank or lasso.")] = "ridge",
    rank: Annotated[Optional[int], typer.Option("--rank")] = None,
    ranks: Annotated[Optional[str], typer.Option(
        "--ranks", help="Comma-separated ranks: sweep reduced-rank ridge bridges (shared work once).")] = None,
    alpha: Annotated[Optional[float], typer.Option("--alpha")] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="With --ranks: write the sweep's PNG here.")] = None,
    test_fraction: Annotated[float, typer.Option("--test-fraction")] = 0.3,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Probe transfer: sourceNative, targetNative, transferred, taskSpecific and chance (or a rank sweep)."""
    try:
        svc = _service(store)
        s, t = parse_layer_ref(source), parse_layer_ref(target)
        rk = _ranks(ranks)
        if rk is not None:
            r = svc.probe_transfer_sweep(s, t, task_dataset, rk, bridge_dataset=bridge_dataset, alpha=alpha,
                                         test_fraction=test_fraction, seed=seed)
            if plot is not None:
                from actstore.api.bridges import sweep_png

                plot.write_bytes(sweep_png(r))
        else:
            if plot is not None:
                raise fail("--plot needs --ranks (it plots the rank sweep)")
            r = svc.probe_transfer(s, t, task_dataset, bridge_dataset=bridge_dataset, method=_method(method),
                                   rank=rank, alpha=alpha, test_fraction=test_fraction, seed=seed)
    except (ActstoreError, AnalysisError) as exc:
        raise fail(str(exc)) from None
    _print(r)


def next_token_transfer_command(
    source: Annotated[str, typer.Option("--source", help="Source layer: MODEL:LAYER or MODEL@DEPTH.")],
    target: Annotated[str, typer.Option("--target", help="Target layer: MODEL:LAYER or MODEL@DEPTH.")],
    dataset: Annotated[str, typer.Option("--dataset", help="Prompts ingested with --next-tokens.")],
    bridge_dataset: Annotated[Optional[str], typer.Option("--bridge-dataset")] = None,
    method: Annotated[str, typer.Option("--method")] = "ridge",
    rank: Annotated[Optional[int], typer.Option("--rank")] = None,
    alpha: Annotated[Optional[float], typer.Option("--alpha")] = None,
    classes: Annotated[int, typer.Option("--classes", help="Most frequent shared next tokens kept.")] = 500,
    test_fraction: Annotated[float, typer.Option("--test-fraction")] = 0.3,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Next-token probe transfer across tokenizers (top-1 / top-5 and the agreement ceiling)."""
    try:
        svc = _service(store)
        r = svc.next_token_transfer(parse_layer_ref(source), parse_layer_ref(target), dataset,
                                    bridge_dataset=bridge_dataset, method=_method(method), rank=rank, alpha=alpha,
                                    classes=classes, test_fraction=test_fraction, seed=seed)
    except (ActstoreError, AnalysisError) as exc:
        raise fail(str(exc)) from None
    data = asdict(r)
    data["classes"] = data["classes"][:20] + (["..."] if len(data["classes"]) > 20 else [])
    print(json.dumps(data, indent=2))
