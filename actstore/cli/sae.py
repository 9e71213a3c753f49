"""``actstore sae ...``: register SAEs (folders in the released layouts, or SAELens registry entries),
list SAEs, correlate two SAEs' features.

With ``ACTSTORE_SAE_ROOT`` set (``Settings.sae_root``), ``sae add`` accepts only folders under
it (symlinks followed), as the API does; unset, a local user may register any folder they can
read. Every command needs an existing store; none creates one.
"""

# No `from __future__ import annotations`: typer reads the Annotated hints at runtime.

import sys
from typing import Annotated, Optional

import typer

from actstore.errors import InvalidInput

from .common import App, StoreOption, open_service, open_store, print_json, result_json, settings_for, user_errors

sae_app = App(help="Sparse autoencoders: register, list, correlate features.", no_args_is_help=True)

MATCHINGS = ("one_to_one", "many_to_one")


@sae_app.command("add")
def sae_add(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="Key of the stored model the SAE reads.")],
    layer: Annotated[int, typer.Option("--layer", help="Decoder block (0-based; negative counts from the end).")],
    path: Annotated[
        Optional[str],
        typer.Option(
            "--path",
            help="SAE folder: SAELens (cfg.json + sae_weights.safetensors), Gemma Scope (params.npz), "
            "Gemma Scope 2 (config.json + params.safetensors), Llama Scope (hyperparams.json + "
            "checkpoints/final.safetensors), sparsify (cfg.json + sae.safetensors) or "
            "dictionary_learning (config.json + ae.pt).",
        ),
    ] = None,
    release: Annotated[
        Optional[str],
        typer.Option(
            "--release", help="SAELens registry release (needs sae-lens; downloads from the Hugging Face Hub)."
        ),
    ] = None,
    sae_id: Annotated[Optional[str], typer.Option("--sae-id", help="SAE id within --release.")] = None,
    store: StoreOption = None,
) -> None:
    """Check an SAE (a folder, or a SAELens registry entry) against the model layer and copy it into the store."""
    with user_errors(ctx):
        if (path is None) == (release is None and sae_id is None):
            raise InvalidInput("give either --path FOLDER or --release R --sae-id ID")
        if path is None and (release is None or sae_id is None):
            raise InvalidInput("--release and --sae-id go together")
        settings = settings_for(store)
        saes = open_store(settings).saes
        if path is not None:
            r = saes.register(model, layer, path, root=settings.sae_root)
        else:
            r = saes.register_release(model, layer, release, sae_id)
    print(
        f"registered SAE {r.sae_id}: model {r.model_key!r} layer {r.layer}, {r.architecture}, "
        f"d_in={r.d_in}, d_sae={r.d_sae} ({r.cfg.get('format') or 'saelens'})"
    )
    if r.notes:
        print(f"note: {r.notes}", file=sys.stderr)


@sae_app.command("list")
def sae_list(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Option("--model", help="Only this model's SAEs.")] = None,
    store: StoreOption = None,
) -> None:
    """Registered SAEs: id, model, layer, architecture, sizes."""
    with user_errors(ctx):
        rows = open_store(settings_for(store)).saes.list(model)
    for r in rows:
        print(
            f"{r.sae_id}\t{r.model_key}\tL{r.layer}\t{r.architecture}\td_in={r.d_in}\td_sae={r.d_sae}"
            + (f"\tnote: {r.notes}" if r.notes else "")
        )
    if not rows:
        print("no SAEs registered", file=sys.stderr)


@sae_app.command("correlate")
def sae_correlate(
    ctx: typer.Context,
    a: Annotated[str, typer.Argument(help="Id of SAE A.")],
    b: Annotated[str, typer.Argument(help="Id of SAE B.")],
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Only prompts of this dataset.")] = None,
    matching: Annotated[str, typer.Option("--matching", help="one_to_one or many_to_one.")] = "one_to_one",
    random_pairs: Annotated[int, typer.Option("--random-pairs", help="Random pairings for the baseline.")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random pairings.")] = 0,
    min_correlation: Annotated[
        Optional[float], typer.Option("--min-correlation", help="Drop weaker pairs (in [-1, 1]).")
    ] = None,
    keywords: Annotated[Optional[str], typer.Option("--keywords", help="Comma-separated semantic subspace.")] = None,
    top: Annotated[int, typer.Option("--top", help="Top pairs to print.")] = 10,
    store: StoreOption = None,
) -> None:
    """Feature correlation of two SAEs (SVCCA, RSA, random baseline) as JSON.

    The fields and names of the API's SaeCorrelation (topPairs: the --top strongest pairs).
    """
    with user_errors(ctx):
        m = matching.lower().replace("-", "_")
        if m not in MATCHINGS:
            raise InvalidInput(f"--matching must be one of {', '.join(MATCHINGS)}, got {matching!r}")
        if random_pairs < 1:
            raise InvalidInput(f"--random-pairs must be at least 1, got {random_pairs}")
        if min_correlation is not None and not -1.0 <= min_correlation <= 1.0:
            raise InvalidInput(f"--min-correlation must be in [-1, 1], got {min_correlation}")
        if top < 0:
            raise InvalidInput(f"--top must be >= 0, got {top}")
        service = open_service(settings_for(store))
        r = service.saes.sae_feature_correlation(
            a,
            b,
            dataset=dataset,
            matching=m,
            random_pairs=random_pairs,
            seed=seed,
            min_correlation=min_correlation,
            keywords=keywords.split(",") if keywords else None,
        )
    data = result_json(r)  # the fields of the API's SaeCorrelation
    data["topPairs"] = data["topPairs"][:top]
    print_json(data)
