"""``actstore ingest``: the command-line glue around :func:`actstore.ingest.pipeline.ingest`.

Registered as ``actstore ingest`` in :mod:`actstore.cli.app`. The pipeline reports progress
through a callback; this command draws the bar (on a terminal) and prints each summary to
stderr. Every expected error (bad input, unknown dataset, missing model folder, offline hub
id, ...) prints one clear line to stderr and exits with status 2, without a traceback.
Ctrl-C exits with 130; running the same command again resumes where it stopped.
"""

# No `from __future__ import annotations`: typer reads the Annotated hints at runtime.

import logging
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from actstore.errors import require_extra

from .common import StoreOption, check_store_path, column_spec, fail, settings_for, user_errors
from .flags import flag_words

__all__ = ["ingest_command"]


def _notice_line(notice: Any) -> str:
    """A warning of the ingest, naming the flag that avoids it."""
    flag = f"--{notice.field.replace('_', '-')}"
    return (
        f"warning: {notice.message}; pass {flag} {notice.suggest}" if notice.suggest else f"warning: {notice.message}"
    )


def ingest_command(
    ctx: typer.Context,
    model: Annotated[
        Optional[str],
        typer.Option(
            "--model",
            help="Hugging Face hub id, local model folder (safetensors weights) or .gguf file "
            "(or a folder holding one).",
        ),
    ] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Dataset name in the store.")] = None,
    prompts: Annotated[
        Optional[Path],
        typer.Option(
            "--prompts",
            help="Prompt file to add to the dataset first: .jsonl, .csv, .tsv, "
            ".parquet, .txt, or hf:NAME[:split] / a save_to_disk folder.",
        ),
    ] = None,
    key: Annotated[
        Optional[str], typer.Option("--key", help="Model key in the store (default: slug of the model name).")
    ] = None,
    layers: Annotated[
        str, typer.Option("--layers", help="'all', a list like '0,5,-1' (negative from the end) or 'grid:G'.")
    ] = "all",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Prompts per forward pass.")] = 32,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Truncate prompts to this many tokens.")] = 512,
    dtype: Annotated[str, typer.Option("--dtype", help="Storage dtype: float16 or float32.")] = "float16",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    manifest: Annotated[
        Optional[Path],
        typer.Option(
            "--manifest",
            help="TOML file with several run tables (model, dataset, prompts, layers, key); "
            "see actstore.ingest.manifest.",
        ),
    ] = None,
    store: StoreOption = None,
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
    compute_dtype: Annotated[
        Optional[str],
        typer.Option(
            "--compute-dtype", help="Model dtype: auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16."
        ),
    ] = None,
    next_tokens: Annotated[
        bool,
        typer.Option(
            "--next-tokens",
            help="Also store the model's own top-5 next tokens per prompt (for "
            "next-token transfer; loads the LM head; refused for a model without a trained one, "
            "such as a BERT-style encoder).",
        ),
    ] = False,
    token: Annotated[
        str,
        typer.Option(
            "--token",
            help="Token site stored: last (the last non-padding token; [SEP] for BERT-style "
            "encoders, which warn), first (the first token, [CLS] for encoders) or mean (the mean over "
            "non-padding tokens).",
        ),
    ] = "last",
    chat_template: Annotated[
        bool,
        typer.Option(
            "--chat-template",
            help="Wrap each prompt as one user message with the tokenizer's chat template (instruct models).",
        ),
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="local (this process) or ray (a Ray Data pipeline of model actors, one per GPU; see docs/scale.md).",
        ),
    ] = "local",
    address: Annotated[
        Optional[str],
        typer.Option(
            "--address",
            help="Ray cluster address for --engine ray (auto, ray://HOST:10001, HOST:6379; "
            "default: $RAY_ADDRESS, else a local Ray).",
        ),
    ] = None,
) -> None:
    """Run a Hugging Face model over a dataset's prompts and store last-token activations per layer.

    Creates the store if it does not exist. Resumable: prompts already stored for every
    requested layer are skipped. Vectors are written every 1,024 prompts (or 256 MiB) and
    when the run ends; Ctrl-C writes the prompts computed so far first, so the progress bar
    counts only what a rerun will skip (a killed process loses up to one such interval).
    The model key defaults to the model's own name (a GGUF's general.name, a model card's
    title), else the folder or file name.
    """
    from rich.console import Console

    with user_errors(ctx):
        require_extra("ingest", "actstore ingest")

    from actstore.ingest.keys import default_model_key
    from actstore.ingest.manifest import run_manifest
    from actstore.ingest.pipeline import ingest

    from .progress import ProgressBar

    logging.getLogger("actstore").setLevel(logging.WARNING)
    console = Console(stderr=True)

    def report(summary) -> None:
        console.print(str(summary), markup=False, highlight=False)

    try:

        def notify(notice: Any) -> None:
            console.print(_notice_line(notice), markup=False, highlight=False, soft_wrap=True)

        with user_errors(ctx), flag_words(), ProgressBar(console) as bar:
            settings = settings_for(store)
            check_store_path(settings.store_uri, create=True)
            if engine not in ("local", "ray"):
                raise fail(f"--engine must be local or ray, got {engine!r}")
            if engine == "local" and address is not None:
                raise fail("--address needs --engine ray")
            if engine == "ray" and next_tokens:
                raise fail("--next-tokens is not supported with --engine ray; ingest them with --engine local")
            if manifest is not None:
                given = [
                    name
                    for name, v in (("--model", model), ("--dataset", dataset), ("--prompts", prompts), ("--key", key))
                    if v is not None
                ]
                if given:
                    raise fail(
                        f"--manifest cannot be combined with {', '.join(given)}; put them in "
                        "the manifest's [[run]] tables"
                    )
                base = dict(
                    layers=layers,
                    batch_size=batch_size,
                    max_tokens=max_tokens,
                    dtype=dtype,
                    device=device,
                    compute_dtype=compute_dtype,
                    text_column=column_spec(text_column),
                    label_column=column_spec(label_column),
                    token=token,
                    chat_template=chat_template,
                )
                run_manifest(
                    settings.store_uri,
                    manifest,
                    base=base,
                    settings=settings,
                    on_progress=lambda run, done, total: bar.update(
                        f"{run.key or default_model_key(run.model)} <- {run.dataset}", done, total
                    ),
                    on_summary=lambda run, summary: report(summary),
                    engine=engine,
                    address=address,
                    on_notice=lambda run, notice: notify(notice),
                )
                return
            missing = [name for name, v in (("--model", model), ("--dataset", dataset)) if not v]
            if missing:
                raise fail(f"missing {' and '.join(missing)} (or pass --manifest FILE.toml)")
            description = f"{key or default_model_key(model)} <- {dataset}"
            common = dict(
                prompts_file=prompts,
                key=key,
                layers=layers,
                batch_size=batch_size,
                max_tokens=max_tokens,
                dtype=dtype,
                device=device,
                compute_dtype=compute_dtype,
                text_column=column_spec(text_column),
                label_column=column_spec(label_column),
                token=token,
                chat_template=chat_template,
                settings=settings,
                on_progress=lambda done, total: bar.update(description, done, total),
                on_notice=notify,
            )
            if engine == "ray":
                from actstore.ingest.ray_engine import ingest_ray

                summary = ingest_ray(settings.store_uri, model, dataset, address=address, **common)
            else:
                summary = ingest(settings.store_uri, model, dataset, next_tokens=next_tokens, **common)
        report(summary)
    except KeyboardInterrupt:
        raise fail("interrupted; run the same command again to resume", 130) from None
