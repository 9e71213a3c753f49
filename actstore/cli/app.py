"""``actstore`` command line. Every command takes ``--store URI`` (default ``$ACTSTORE_STORE``
or ``./actstore-data``). Expected errors print ``error: ...`` and exit with status 2.

Only ``ingest``, ``import`` and ``demo`` create a store; every other command refuses a store
that does not exist. Heavy modules (LanceDB, torch, transformers, strawberry, matplotlib)
are imported inside the commands that need them, so the command line starts at once.
"""

# No `from __future__ import annotations`: typer reads the Annotated hints at runtime.

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from actstore.errors import InvalidInput, require_extra
from actstore.layers import format_layers

from .admin import drop_command, verify_command
from .analyses import COMMANDS as ANALYSES
from .atlas import atlas_command
from .bridges import bridge_command, next_token_transfer_command, probe_transfer_command
from .common import (
    App,
    StoreOption,
    check_port_free,
    check_store_path,
    column_spec,
    fail,
    int_list,
    open_service,
    open_store,
    settings_for,
    user_errors,
)
from .ingest import ingest_command
from .sae import sae_app

app = App(
    name="actstore",
    help="A store of LLM activations with a GraphQL query API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("ingest")(ingest_command)
app.command("bridge")(bridge_command)
app.command("probe-transfer")(probe_transfer_command)
app.command("next-token-transfer")(next_token_transfer_command)
app.add_typer(sae_app, name="sae")
app.command("drop")(drop_command)
app.command("verify")(verify_command)
app.command("atlas")(atlas_command)
for _name, _command in ANALYSES.items():
    app.command(_name)(_command)


@app.command("info")
def info_command(ctx: typer.Context, store: StoreOption = None) -> None:
    """Models, layers, datasets and prompt counts at a glance."""
    from rich.console import Console

    from .tables import print_records

    with user_errors(ctx):
        s = open_store(settings_for(store))
        models, datasets = s.models.list(), s.prompts.datasets()
        prompts = {m.key: len(s.activations.model_ids(m.key)) for m in models}
        indexes = {m.key: s.knn.layer_indexes(m.key, m.layers) for m in models}
    # piped output (a log, a file) is not cut to 80 columns; on a terminal, rows that do not fit
    # are printed one block per row (print_records): keys and sources are never ellipsised
    console = Console() if sys.stdout.isatty() else Console(width=400)
    console.print(f"[bold]store[/bold] {s.uri}", overflow="fold", highlight=False)
    rows = []
    for m in models:
        layers = f"{len(m.layers)}/{m.n_layers}" + (f" ({format_layers(m.layers)})" if m.layers else "")
        rows.append(
            [
                m.key,
                m.architecture,
                layers,
                str(m.d_model),
                m.dtype,
                m.quantization or "-",
                m.token + (" +chat" if m.chat_template else ""),
                str(prompts[m.key]),
                m.source,
            ]
        )
    print_records(
        console,
        f"models ({len(models)})",
        ("key", "architecture", "layers stored", "d_model", "dtype", "quantization", "token", "prompts", "source"),
        rows,
    )
    approx = [(key, r) for key, rows in indexes.items() for r in rows if r.kind != "flat" or r.metric is not None]
    rows = []
    for key, r in approx:
        recall = (
            "not built yet"
            if r.recall is None
            else f"{r.recall:.4f}" + (f" at {r.measured_rows} rows" if r.measured_rows not in (None, r.rows) else "")
        )
        rows.append(
            [
                key,
                str(r.layer),
                str(r.rows),
                r.metric or "all",
                "exact (target not reachable in budget)" if r.exact else r.kind,
                recall,
                "-" if r.nprobe is None else str(r.nprobe),
                "-" if r.candidates is None else str(r.candidates),
            ]
        )
    if approx:
        print_records(
            console,
            f"approximate k-NN indexes (tables of at least {s.knn.ann_threshold} rows; smaller "
            "ones are searched exactly)",
            (
                "model",
                "layer",
                "rows",
                "metric",
                "search",
                f"recall@10 (target {s.knn.recall_target:g})",
                "nprobe",
                "candidates",
            ),
            rows,
        )
    print_records(
        console,
        f"datasets ({len(datasets)})",
        ("name", "prompts", "labelled"),
        [[d.name, str(d.prompt_count), "yes" if d.has_labels else "no"] for d in datasets],
    )


@app.command("import")
def import_command(
    ctx: typer.Context,
    arrays: Annotated[
        list[Path],
        typer.Argument(
            help="One [n, L, d] .npy, several [n, d] .npy (one per layer), or one .safetensors "
            "with one tensor per layer."
        ),
    ],
    model: Annotated[str, typer.Option("--model", help="Model key to store the activations under.")],
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset the prompts go into.")],
    prompts: Annotated[
        Path,
        typer.Option(
            "--prompts", help="Prompts file (.jsonl, .csv, .tsv, .parquet, .txt); row i of each array is prompt i."
        ),
    ],
    layers: Annotated[
        Optional[str],
        typer.Option(
            "--layers", help="Comma-separated layer indices of the arrays (default: from the names or axis 1)."
        ),
    ] = None,
    n_layers: Annotated[
        Optional[int],
        typer.Option("--n-layers", help="Number of decoder blocks of the model (default: highest layer + 1)."),
    ] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="Storage dtype: float16 or float32.")] = "float16",
    source: Annotated[Optional[str], typer.Option("--source", help="Where the activations came from.")] = None,
    architecture: Annotated[
        Optional[str], typer.Option("--architecture", help="config.model_type of the model.")
    ] = None,
    text_column: Annotated[
        str,
        typer.Option(
            "--text-column",
            help="Text column/field of the prompts file (a 0-based index for a CSV/TSV without a header row).",
        ),
    ] = "text",
    label_column: Annotated[
        str, typer.Option("--label-column", help="Label column/field of the prompts file (optional in the file).")
    ] = "label",
    store: StoreOption = None,
) -> None:
    """Load activations extracted elsewhere, with their prompts, into the store.

    Creates the store if it does not exist, once every file is validated.
    """
    from actstore.ingest.importer import import_activations

    from .flags import flag_words

    with user_errors(ctx), flag_words():
        settings = settings_for(store)
        check_store_path(settings.store_uri, create=True)
        summary = import_activations(
            settings.store_uri,
            model_key=model,
            dataset=dataset,
            prompts_file=prompts,
            arrays=arrays,
            layers=int_list(layers, "--layers"),
            n_layers=n_layers,
            dtype=dtype,
            source=source,
            architecture=architecture,
            text_column=column_spec(text_column),
            label_column=column_spec(label_column),
            settings=settings,
        )
    print(
        f"imported {summary.prompts} prompts x {len(summary.layers)} layers (d={summary.d_model}) "
        f"as model {summary.model_key!r}, dataset {summary.dataset!r}"
    )


@app.command("serve")
def serve_command(
    ctx: typer.Context,
    store: StoreOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind; loopback unless told otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port; a busy one is refused at once.")] = 8000,
    log_level: Annotated[
        str, typer.Option("--log-level", help="uvicorn's log level: critical, error, warning, info, debug or trace.")
    ] = "info",
) -> None:
    """Serve the GraphQL API (GraphiQL at /graphql, /healthz, heatmaps at /plots/KEY.png)."""
    with user_errors(ctx):
        require_extra("server", "actstore serve")
        settings = settings_for(store)
        service = open_service(settings)
        check_port_free(host, port)
    import uvicorn

    from actstore.api import create_app

    if not settings.token:
        print("note: ACTSTORE_TOKEN is not set, so mutations (ingest, addPrompts) are refused", file=sys.stderr)
    print(
        f"actstore: serving {service.store.uri} at http://{host}:{port}/graphql "
        f"(the explorer at http://{host}:{port}/)",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(create_app(service, host=host), host=host, port=port, log_level=log_level)


@app.command("query")
def query_command(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="A GraphQL operation, e.g. '{ models { key nLayers } }'.")],
    variables: Annotated[Optional[str], typer.Option("--variables", help="Variables as a JSON object.")] = None,
    plots: Annotated[
        Optional[Path],
        typer.Option(
            "--plots", help="Folder to save the answer's plots in, as KEY.png; plotUrl is then that file's path."
        ),
    ] = None,
    server: Annotated[
        str,
        typer.Option(
            "--server", help="Where `actstore serve` runs on this store: plotUrl links to its /plots/KEY.png."
        ),
    ] = "http://127.0.0.1:8000/",
    json_errors: Annotated[
        bool,
        typer.Option(
            "--json",
            help="On errors, print the whole JSON answer (errors with their path and extensions) "
            "instead of one `error:` line each.",
        ),
    ] = False,
    store: StoreOption = None,
) -> None:
    """Run one GraphQL operation in-process and print the JSON answer.

    Runs as the owner of the store: mutations are allowed without the token. plotUrl is an
    absolute address on the server given by --server, or with --plots a PNG file saved here.
    Errors: one line `error: MESSAGE (CODE)` each on stderr, exit status 1 (--json: the whole answer).
    """
    import asyncio
    import json

    with user_errors(ctx):
        require_extra("server", "actstore query")
        try:
            vars_ = json.loads(variables) if variables else None
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"--variables is not valid JSON: {exc}") from None
        if vars_ is not None and not isinstance(vars_, dict):
            raise InvalidInput("--variables must be a JSON object")
        if plots is not None and plots.exists() and not plots.is_dir():
            raise InvalidInput(f"--plots {str(plots)!r} is a file, not a folder")
        service = open_service(settings_for(store))
    from actstore.api import execute

    base_url = server if server.endswith("/") else server + "/"
    out = asyncio.run(execute(service, query, vars_, authorized=True, base_url=base_url))
    if out.get("errors"):
        if json_errors:
            print(json.dumps(out, indent=2))
            raise typer.Exit(1)
        for err in out["errors"]:
            code = (err.get("extensions") or {}).get("code")
            where = ".".join(str(p) for p in err.get("path") or [])
            print(
                f"error: {err.get('message')}" + (f" (at {where})" if where else "") + (f" [{code}]" if code else ""),
                file=sys.stderr,
            )
        raise typer.Exit(1)
    if plots is not None:
        with user_errors(ctx):
            _save_plots(out.get("data"), service, plots, base_url)
    print(json.dumps(out, indent=2))


def _save_plots(data: object, service: object, folder: Path, base_url: str) -> None:
    """Render every ``plotUrl`` of ``data`` into ``folder/KEY.png`` and point it there (in place)."""
    from actstore.plots import render_png

    if isinstance(data, list):
        for item in data:
            _save_plots(item, service, folder, base_url)
    if not isinstance(data, dict):
        return
    for name, value in data.items():
        if name == "plotUrl" and isinstance(value, str) and value.startswith(f"{base_url}plots/"):
            key = value[len(f"{base_url}plots/") :].removesuffix(".png")
            folder.mkdir(parents=True, exist_ok=True)
            path = (folder / f"{key}.png").absolute()
            path.write_bytes(render_png(service.results.get(key)))
            data[name] = str(path)
        else:
            _save_plots(value, service, folder, base_url)


@app.command("demo")
def demo_command(
    ctx: typer.Context,
    store: Annotated[str, typer.Option("--store", help="Where to build the demo store.")] = "./demo-store",
    host: Annotated[
        str, typer.Option("--host", help="Address to serve on; loopback unless told otherwise.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="TCP port to serve on (make demo PORT=N); checked before anything is built.")
    ] = 8000,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline", help="Don't use the hub: the installed SmolLM2 GGUF and MiniLM (else tiny random models)."
        ),
    ] = False,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Build the store and exit.")] = False,
) -> None:
    """Build a demo store (hub models online; offline installed SmolLM2 + MiniLM, else tiny ones) and serve it.

    Prints the store's absolute path and the --store to use it with the other commands.
    """
    from rich.console import Console

    with user_errors(ctx):
        require_extra("server", "actstore demo")
        require_extra("ingest", "actstore demo")

    from actstore.demo import run_demo

    from .progress import ProgressBar

    with user_errors(ctx):
        if not no_serve:  # before any output or build: a busy port is one line, not minutes later
            check_port_free(host, port)
    try:
        with user_errors(ctx), ProgressBar(Console(stderr=True)) as bar:
            settings = settings_for(store)
            check_store_path(settings.store_uri, create=True)
            run_demo(
                settings.store_uri,
                host=host,
                port=port,
                online=False if offline else None,
                serve=not no_serve,
                settings=settings,
                on_progress=lambda label, done, total: bar.update(label, done, total),
            )
    except KeyboardInterrupt:
        raise fail("interrupted; run the same command again to resume", 130) from None


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
