"""``actstore atlas``: every pair of a set of models compared layer by layer, with a progress
bar in pairs, a table of the pairs and the summary (pairs with on > off; significant after
Bonferroni over the pairs tested).

    actstore atlas --models smollm2-135m,minilm-l6,smollm2-random --dataset demo-text
    actstore atlas --all --dataset demo-text --measure unbiased_cka --grid 8 --out atlas.json --plot atlas.png

It runs :meth:`actstore.service.atlas.Atlas.run`, as a ``runAtlas`` job does: no cost budget,
pairs stored as they finish (so an interrupted atlas resumes where it stopped).
"""

# No `from __future__ import annotations`: typer reads the Annotated hints at runtime.

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from actstore.errors import InvalidInput, require_extra

from .common import StoreOption, check_output_file, open_service, result_json, settings_for, user_errors

__all__ = ["atlas_command", "print_atlas"]


def _models(service: Any, models: Optional[str], all_models: bool) -> list[str]:
    if all_models == (models is not None):
        raise InvalidInput("give the models with --models a,b,c or every stored model with --all (one of the two)")
    if all_models:
        return [m.key for m in service.store.models.list()]
    return [m.strip() for m in str(models).split(",") if m.strip()]


def _num(v: Optional[float], fmt: str = ".4f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def print_atlas(answer: Any, console: Any) -> None:
    """The pairs as a table (model A, model B, max, on, off, p, Bonferroni p), then the summary."""
    from actstore.service.atlas_summary import summarize

    from .tables import print_records

    summary = summarize(answer)
    rows = []
    for pair, adjusted in zip(answer.pairs, summary.adjusted):
        d = pair.diagonal
        rows.append(
            [
                pair.model_a,
                pair.model_b,
                _num(pair.max_value),
                _num(d.on_diagonal_mean if d else None),
                _num(d.off_diagonal_mean if d else None),
                _num(d.p_value if d else None, ".3g"),
                _num(adjusted, ".3g"),
            ]
        )
    k = f", k = {answer.k}" if answer.k is not None else ""
    print_records(
        console,
        f"atlas: {answer.measure}{k}, n = {answer.n} prompts",
        ("model A", "model B", "max", "on", "off", "p", "p (Bonferroni)"),
        rows,
    )
    console.print(f"{summary.line()}; {summary.tested} of {summary.pairs} pairs have a diagonal test", highlight=False)
    if answer.datasets:
        console.print("datasets: " + ", ".join(f"{d.name} ({d.n})" for d in answer.datasets), highlight=False)
    if answer.warning:
        console.print(f"warning: {answer.warning}", highlight=False)


def atlas_command(
    ctx: typer.Context,
    models: Annotated[
        Optional[str],
        typer.Option("--models", help="The models compared, comma-separated, in the order their pairs are listed."),
    ] = None,
    all_models: Annotated[bool, typer.Option("--all", help="Compare every stored model.")] = False,
    dataset: Annotated[
        Optional[str], typer.Option("--dataset", help="Restrict to the prompts of this dataset.")
    ] = None,
    measure: Annotated[
        str, typer.Option("--measure", help="A registered similarity measure (actstore query '{ measures { name } }').")
    ] = "mutual_knn",
    k: Annotated[int, typer.Option("--k", help="Neighbours per prompt (k-NN measures).")] = 10,
    grid: Annotated[
        Optional[int],
        typer.Option(
            "--grid",
            help="An evenly spaced relative-depth grid of this many layers per model (default: every stored layer).",
        ),
    ] = None,
    resize: Annotated[int, typer.Option("--resize", help="Depths per axis of the mean resized matrix.")] = 20,
    preprocess: Annotated[str, typer.Option("--preprocess", help="none, standardize or drop_outlier_dims.")] = "none",
    out: Annotated[
        Optional[Path], typer.Option("--out", help="Write the answer as the API's JSON to this file.")
    ] = None,
    plot: Annotated[
        Optional[Path],
        typer.Option("--plot", help="Draw the atlas (mean resized matrix, argmax-depth lines, on vs off) to this PNG."),
    ] = None,
    store: StoreOption = None,
) -> None:
    """Every pair of a set of models compared layer by layer with one measure: a table of the
    pairs (largest value, on- and off-diagonal means, p) and how many pairs have on > off."""
    from rich.console import Console

    from actstore.service.requests import AtlasRequest

    from .progress import ProgressBar

    console = Console(width=None if sys.stdout.isatty() else 10_000, soft_wrap=not sys.stdout.isatty())
    with user_errors(ctx):
        for path, flag in ((out, "--out"), (plot, "--plot")):
            if path is not None:
                check_output_file(path, flag)
        if plot is not None:
            require_extra("server", "--plot")
        service = open_service(settings_for(store))
        # the request's checks take the preprocessing by name (any case) and refuse others
        fields: dict[str, Any] = {"preprocess": preprocess}
        request = AtlasRequest(
            models=tuple(_models(service, models, all_models)),
            measure=measure,
            k=k,
            dataset=dataset,
            grid=grid,
            resize=resize,
            **fields,
        )
        label = f"atlas of {len(request.models)} models"
        with ProgressBar(Console(stderr=True), unit="pairs") as bar:
            answer = service.atlas.run(request, lambda done, total: bar.update(label, done, total))
        if out is not None:
            out.write_text(json.dumps(result_json(answer), indent=2))
        if plot is not None:
            from actstore.plots import render_png

            plot.write_bytes(render_png(answer))
    print_atlas(answer, console)
    if out is not None:
        print(f"json: {out}")
    if plot is not None:
        print(f"plot: {plot}")
