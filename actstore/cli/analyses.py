"""The everyday analyses on the command line: ``actstore cka``, ``cka-matrix``, ``mutual-knn``,
``affinity``, ``neighbors``, ``similarity`` and ``similarity-matrix`` (any registered measure)
and ``measures`` (the registry's listing), derived from the service's request types
(:mod:`.requests`). Answers print as tables (``--json`` for the API's JSON, ``--plot FILE.png``
to draw a matrix).

    actstore cka-matrix smollm2-135m minilm-l6 --grid 8 --dataset demo-text --plot cka.png
    actstore affinity smollm2-135m minilm-l6 --k 10 --dataset demo-text
    actstore cka smollm2-135m@0.5 minilm-l6:-1 --permutations 200 --dataset demo-text
    actstore neighbors smollm2-135m:20 --text "a quiet walk by the river" --k 5
    actstore similarity smollm2-135m@0.5 minilm-l6@0.5 cknna --k 10 --options '{"unbiased": false}'
    actstore similarity-matrix smollm2-135m minilm-l6 mutual_knn --k 10 --grid 6 --preprocess platonic
    actstore measures
"""

# No `from __future__ import annotations`: typer reads the Annotated hints at runtime.

import dataclasses
import enum
import math
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from actstore.service import requests as R

from .common import print_json
from .requests import request_command

__all__ = ["COMMANDS"]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, enum.Enum):
        return str(v.value)
    return str(v)


def _console() -> Console:
    # never cut: a piped table keeps its full width
    return Console(width=None if sys.stdout.isatty() else 10_000, soft_wrap=not sys.stdout.isatty())


def _corpus(answer: Any, console: Console) -> None:
    datasets = getattr(answer, "datasets", ())
    if datasets:
        console.print("datasets: " + ", ".join(f"{d.name} ({d.n})" for d in datasets))
    if getattr(answer, "warning", None):
        console.print(f"warning: {answer.warning} (--by-dataset)")


def show_scalar(answer: Any) -> None:
    """Every scalar field of an answer, one per line."""
    console = _console()
    for f in dataclasses.fields(answer):
        v = getattr(answer, f.name)
        if f.name != "warning" and isinstance(v, (bool, int, float, str, enum.Enum)):
            console.print(f"{f.name}: {_fmt(v)}", highlight=False)
    _corpus(answer, console)


def show_matrix(answer: Any) -> None:
    """A layer matrix: rows model A's layers, columns model B's; each row's largest value in bold;
    then the largest cell of the whole matrix, the corpus and (affinity) the diagonal test."""
    console = _console()
    values = answer.values
    table = Table(title=f"{answer.model_a} (rows) x {answer.model_b} (columns), n = {answer.n}")
    table.add_column("layer", justify="right")
    for lb in answer.layers_b:
        table.add_column(str(lb), justify="right")
    for i, la in enumerate(answer.layers_a):
        best = answer.argmax[i]
        table.add_row(str(la), *[f"[bold]{v:.3f}[/bold]" if j == best else f"{v:.3f}" for j, v in enumerate(values[i])])
    console.print(table)
    i, j = divmod(int(values.argmax()), values.shape[1])
    console.print(
        f"largest: {values[i, j]:.4f} at {answer.model_a} layer {answer.layers_a[i]} x "
        f"{answer.model_b} layer {answer.layers_b[j]}",
        highlight=False,
    )
    diagonal = getattr(answer, "diagonal", None)
    if diagonal is not None and diagonal.p_value == diagonal.p_value:
        console.print(
            f"generalized diagonal: on {diagonal.on_diagonal_mean:.4f} vs off {diagonal.off_diagonal_mean:.4f}, "
            f"t = {diagonal.t_statistic:.3f}, p = {diagonal.p_value:.3g}",
            highlight=False,
        )
    if getattr(answer, "null_mean", None) is not None:
        console.print(f"null mean (random neighbours): {answer.null_mean:.4f}", highlight=False)
    _corpus(answer, console)


def show_neighbors(rows: list[Any]) -> None:
    """Neighbours as a table: rank, prompt id, score, dataset, label, text (whole)."""
    table = Table()
    for name in ("rank", "prompt", "score", "dataset", "label", "text"):
        table.add_column(name, overflow="fold")
    for r in rows:
        table.add_row(
            str(r.rank),
            str(r.prompt_id),
            f"{r.score:.4f}",
            r.dataset or "",
            "" if r.label is None else str(r.label),
            r.text or "",
        )
    _console().print(table)


def _loading(service: Any, request: R.NeighborsRequest) -> None:
    if request.text is not None:
        info, _ = service.reads.resolve(request.at)
        print(
            f"loading model {info.key!r} ({info.source}) to encode the text: once per process, so every "
            f"look-up from this command line loads it again (actstore serve keeps it loaded)",
            file=sys.stderr,
        )


def measures_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the listing as JSON.")] = False,
) -> None:
    """Every registered similarity measure: name, direction, options and what it is sensitive to."""
    from actstore.service.measures import list_measures

    listing = [
        {
            "name": m.name,
            "direction": m.direction,
            "options": list(m.options),
            "sensitiveTo": m.sensitive_to,
            "reference": m.reference,
        }
        for m in list_measures()
    ]
    if as_json:
        print_json(listing)
        return
    table = Table(title="similarity measures (actstore similarity MODEL:LAYER MODEL:LAYER NAME)")
    for name in ("name", "direction", "options", "sensitive to"):
        table.add_column(name, overflow="fold")
    for m in listing:
        table.add_row(m["name"], m["direction"], ", ".join(m["options"]), m["sensitiveTo"])
    _console().print(table)


COMMANDS = {
    "cka": request_command(R.CkaRequest, show_scalar),
    "cka-matrix": request_command(R.CkaMatrixRequest, show_matrix),
    "mutual-knn": request_command(R.MutualKnnRequest, show_scalar),
    "affinity": request_command(R.AffinityRequest, show_matrix),
    "neighbors": request_command(R.NeighborsRequest, show_neighbors, before=_loading),
    "similarity": request_command(R.SimilarityRequest, show_scalar),
    "similarity-matrix": request_command(R.SimilarityMatrixRequest, show_matrix),
    "measures": measures_command,
}
