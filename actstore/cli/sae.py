"""``actstore sae ...``: register SAELens folders, list SAEs, correlate two SAEs' features.

With ``ACTSTORE_SAE_ROOT`` set, ``sae add`` accepts only folders under it (symlinks
followed), as the API does; unset, a local user may register any folder they can read.
"""

# No `from __future__ import annotations`: typer reads the Annotated hints at runtime.

import json
import os
import sys
from typing import Annotated, Optional

import typer

from actstore.analysis import AnalysisError
from actstore.store import Store
from actstore.errors import ActstoreError

from .common import DEFAULT_STORE, StoreOption, fail

sae_app = typer.Typer(help="Sparse autoencoders: register, list, correlate features.", no_args_is_help=True)



@sae_app.command("add")
def sae_add(
    model: Annotated[str, typer.Option("--model", help="Key of the stored model the SAE reads.")],
    layer: Annotated[int, typer.Option("--layer", help="Decoder block (0-based; negative counts from the end).")],
    path: Annotated[str, typer.Option("--path", help="SAELens folder with cfg.json and sae_weights.safetensors.")],
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Check a SAELens folder against the model layer and copy it into the store."""
    root = os.environ.get("ACTSTORE_SAE_ROOT") or None
    try:
        r = Store.open(store).register_sae(model, layer, path, root=root)
    except (ActstoreError, AnalysisError) as exc:
        raise fail(str(exc)) from None
    print(f"registered SAE {r.sae_id}: model {r.model_key!r} layer {r.layer}, {r.architecture}, "
          f"d_in={r.d_in}, d_sae={r.d_sae}")
    if r.notes:
        print(f"note: {r.notes}", file=sys.stderr)


@sae_app.command("list")
def sae_list(
    model: Annotated[Optional[str], typer.Option("--model", help="Only this model's SAEs.")] = None,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Registered SAEs: id, model, layer, architecture, sizes."""
    try:
        rows = Store.open(store).saes(model)
    except ActstoreError as exc:
        raise fail(str(exc)) from None
    for r in rows:
        print(f"{r.sae_id}\t{r.model_key}\tL{r.layer}\t{r.architecture}\td_in={r.d_in}\td_sae={r.d_sae}"
              + (f"\tnote: {r.notes}" if r.notes else ""))
    if not rows:
        print("no SAEs registered", file=sys.stderr)


@sae_app.command("correlate")
def sae_correlate(
    a: Annotated[str, typer.Argument(help="Id of SAE A.")],
    b: Annotated[str, typer.Argument(help="Id of SAE B.")],
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Only prompts of this dataset.")] = None,
    matching: Annotated[str, typer.Option("--matching", help="one_to_one or many_to_one.")] = "one_to_one",
    random_pairs: Annotated[int, typer.Option("--random-pairs", help="Random pairings for the baseline.")] = 100,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    min_correlation: Annotated[Optional[float], typer.Option("--min-correlation", help="Drop weaker pairs.")] = None,
    keywords: Annotated[Optional[str], typer.Option("--keywords", help="Comma-separated semantic subspace.")] = None,
    top: Annotated[int, typer.Option("--top", help="Top pairs to print.")] = 10,
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Feature correlation of two SAEs (SVCCA, RSA, random baseline) as JSON."""
    from actstore.service import Service
    from actstore.config import Settings

    try:
        service = Service(store, Settings(store_uri=store))
        r = service.sae_feature_correlation(
            a, b, dataset=dataset, matching=matching, random_pairs=random_pairs, seed=seed,
            min_correlation=min_correlation,
            keywords=[k for k in keywords.split(",")] if keywords else None)
    except (ActstoreError, AnalysisError) as exc:
        raise fail(str(exc)) from None
    out = {k: v for k, v in r.__dict__.items() if k not in ("top_pairs", "key")}
    out["top_pairs"] = [p.__dict__ for p in r.top_pairs[:max(0, top)]]
    print(json.dumps(out, indent=2))
