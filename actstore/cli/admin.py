"""``actstore drop`` and ``actstore verify``: remove a model or a dataset, check the store.

``drop`` asks for confirmation (unless ``--yes``) after printing what will go; a drop that
fails half-way is finished by running it again (see :mod:`actstore.store.maintenance`).
``verify`` prints one line per check and exits 1 when any check fails.
"""

# No `from __future__ import annotations`: typer reads the Annotated hints at runtime.

import sys
from typing import Annotated, Optional

import typer

from actstore.errors import InvalidInput

from .common import StoreOption, fail, open_service, open_store, settings_for, user_errors

__all__ = ["drop_command", "verify_command"]


def drop_command(
    ctx: typer.Context,
    model: Annotated[
        Optional[str],
        typer.Option("--model", help="Key of the model to remove with its activations, next tokens, SAEs and indices."),
    ] = None,
    dataset: Annotated[
        Optional[str], typer.Option("--dataset", help="Dataset to remove: its prompts and their rows in every model.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    store: StoreOption = None,
) -> None:
    """Remove a model or a dataset from the store (instead of deleting folders by hand)."""
    with user_errors(ctx):
        if (model is None) == (dataset is None):
            raise InvalidInput("give exactly one of --model KEY or --dataset NAME")
        service = open_service(settings_for(store))
        if model is not None:
            info = service.store.models.get(model)  # NotFound naming the known models
            saes = len(service.store.saes.list(model))
            what = (
                f"model {model!r}: {len(info.layers)} activation table(s), its next tokens, "
                f"{saes} SAE(s) and its FAISS indices"
            )
        else:
            ds = service.store.prompts.dataset(dataset)  # NotFound naming the known datasets
            what = (
                f"dataset {dataset!r}: {ds.prompt_count} prompt(s) and their activation and next-token rows "
                "in every model"
            )
    if not yes:
        if not sys.stdin.isatty():
            raise fail(f"refusing to drop {what} without confirmation: pass --yes")
        if not typer.confirm(f"Drop {what}?", default=False):
            raise fail("nothing dropped", 1)
    with user_errors(ctx):
        r = service.admin.drop_model(model) if model is not None else service.admin.drop_dataset(dataset)
    if r.kind == "model":
        print(
            f"dropped model {r.name!r}: {r.tables_dropped} table(s), {r.saes_removed} SAE(s), "
            f"{r.index_files_removed} index file(s)"
        )
    else:
        print(f"dropped dataset {r.name!r}: {r.rows_deleted} row(s)")


def verify_command(ctx: typer.Context, store: StoreOption = None) -> None:
    """Check the store: every table opens and scans, activation rows name known prompts, no
    prompt id names two texts, vectors are finite, index files and SAE weights match their
    checksums, models agree with the layer catalog. One line per check; exit 1 on a failure."""
    with user_errors(ctx):
        s = open_store(settings_for(store))
        checks = s.maintenance.verify(on_check=lambda c: print(c.line(), flush=True))
    failed = [c.name for c in checks if not c.ok]
    if failed:
        print(f"verify: {len(failed)} of {len(checks)} checks failed ({', '.join(failed)})", file=sys.stderr)
        raise typer.Exit(1)
