"""Ingest manifests: several models x datasets in one TOML file, each run resumable.

Format (``tomllib``)::

    # optional defaults for every run (top-level keys or a [defaults] table)
    layers = "grid:9"
    [defaults]
    batch_size = 16
    max_tokens = 256
    dtype = "float16"            # storage dtype
    device = "auto"

    [[run]]
    model = "EleutherAI/pythia-160m"   # hub id or local folder (relative to this file)
    dataset = "sst2"
    prompts = "data/sst2.tsv"          # optional; relative to this file; else stored prompts
    text_column = "sentence"           # optional, for the prompts file
    key = "pythia-160m"                # optional; slug of the model name by default

    [[run]]
    model = "./models/tiny-llama"
    dataset = "sst2"                   # no prompts: uses the prompts added by the first run
    layers = "all"

Allowed run keys: ``model`` and ``dataset`` (required), ``prompts``, ``key``, ``layers``,
``batch_size``, ``max_tokens``, ``dtype``, ``device``, ``compute_dtype``, ``revision``,
``text_column``, ``label_column``, ``token`` (``"last"``, ``"first"`` or ``"mean"``),
``chat_template`` (true / false). Defaults may hold any of them but ``model``/``dataset``/
``prompts``/``key``. Precedence: run > [defaults] > top-level keys > the caller's ``base``
(the command-line options). The whole manifest is validated before the first run starts;
runs then go in file order, and a failed run stops the rest (rerun to resume).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actstore.config import Settings
from actstore.errors import InvalidInput
from actstore.ingest.token_sites import TOKEN_SITES

if TYPE_CHECKING:
    from actstore.ingest.pipeline import IngestSummary
    from actstore.store import Store

__all__ = ["ManifestRun", "load_manifest", "run_manifest"]

_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "layers": (str, int, list),
    "batch_size": (int,),
    "max_tokens": (int,),
    "dtype": (str,),
    "device": (str,),
    "compute_dtype": (str,),
    "revision": (str,),
    "text_column": (str, int),
    "label_column": (str, int),
    "token": (str,),
    "chat_template": (bool,),
}
_RUN_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "dataset": (str,),
    "prompts": (str,),
    "key": (str,),
    **_OPTION_TYPES,
}
DEFAULT_OPTIONS: dict[str, Any] = {
    "layers": "all",
    "batch_size": 32,
    "max_tokens": 512,
    "dtype": "float16",
    "device": "auto",
    "compute_dtype": None,
    "revision": None,
    "text_column": "text",
    "label_column": "label",
    "token": "last",
    "chat_template": False,
}


@dataclass
class ManifestRun:
    """One resolved run: ``ingest(store, model, dataset, prompts_file=prompts, **options)``."""

    model: str
    dataset: str
    prompts: Path | None = None
    key: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


def _check_table(table: dict, allowed: dict[str, tuple[type, ...]], where: str) -> None:
    for name, value in table.items():
        if name not in allowed:
            raise InvalidInput(f"{where}: unknown key {name!r}; allowed: {', '.join(sorted(allowed))}")
        types = allowed[name]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            want = " or ".join("list" if t is list else t.__name__ for t in types)
            raise InvalidInput(f"{where}: {name} must be {want}, got {value!r}")
        if name == "token" and value not in TOKEN_SITES:
            raise InvalidInput(f"{where}: token must be one of {', '.join(TOKEN_SITES)}, got {value!r}")
        if (
            name == "layers"
            and isinstance(value, list)
            and not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise InvalidInput(f"{where}: layers list must hold integers, got {value!r}")


def _local_or_hub(value: str, base: Path) -> str:
    """Resolve ``value`` against the manifest folder when it names an existing local path."""
    p = Path(value).expanduser()
    if not p.is_absolute():
        q = base / p
        if q.exists() or value.startswith(("./", "../")):
            return str(q)
    return str(p) if p.exists() else value


def load_manifest(path: str | Path, base: dict[str, Any] | None = None) -> list[ManifestRun]:
    """Parse and validate a manifest into runs (paths resolved relative to its folder)."""
    path = Path(path).expanduser()
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InvalidInput(f"cannot read manifest {str(path)!r}: {e.strerror or e}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidInput(f"manifest {str(path)!r} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise InvalidInput(f"manifest {str(path)!r} is not valid TOML: {e}") from None
    folder = path.resolve().parent
    runs = doc.pop("run", None)
    defaults_table = doc.pop("defaults", {})
    if not isinstance(defaults_table, dict):
        raise InvalidInput(f"{path}: [defaults] must be a table")
    _check_table(doc, _OPTION_TYPES, f"{path}: top level")
    _check_table(defaults_table, _OPTION_TYPES, f"{path}: [defaults]")
    if not isinstance(runs, list) or not runs:
        raise InvalidInput(f"{path}: no runs; add one or more [[run]] tables with model = ... and dataset = ...")
    options = {**DEFAULT_OPTIONS, **(base or {}), **doc, **defaults_table}
    out: list[ManifestRun] = []
    for i, run in enumerate(runs, start=1):
        where = f"{path}: run {i}"
        if not isinstance(run, dict):
            raise InvalidInput(f"{where}: must be a table")
        _check_table(run, _RUN_TYPES, where)
        for req in ("model", "dataset"):
            if not run.get(req, "").strip():
                raise InvalidInput(f'{where}: missing {req} = "..."')
        opts = {**options, **{k: v for k, v in run.items() if k in _OPTION_TYPES}}
        prompts = None
        if run.get("prompts"):
            prompts_s = run["prompts"]
            if prompts_s.startswith("hf:"):
                prompts = prompts_s  # type: ignore[assignment]
            else:
                prompts = Path(_local_or_hub(prompts_s, folder))
                if not prompts.exists():
                    raise InvalidInput(f"{where}: prompts file {prompts_s!r} not found (looked in {prompts})")
        out.append(
            ManifestRun(
                model=_local_or_hub(run["model"], folder),
                dataset=run["dataset"],
                prompts=prompts,
                key=run.get("key"),
                options=opts,
            )
        )
    return out


def run_manifest(
    store: Store | str | Path,
    path: str | Path,
    *,
    base: dict[str, Any] | None = None,
    on_progress: Callable[[ManifestRun, int, int], None] | None = None,
    on_summary: Callable[[ManifestRun, IngestSummary], None] | None = None,
    settings: Settings | None = None,
    engine: str = "local",
    address: str | None = None,
    on_notice: Callable[[ManifestRun, Any], None] | None = None,
) -> list[IngestSummary]:
    """Run every ingest of a manifest in order; returns one summary per run.

    ``on_progress(run, done, total)`` reports each run's progress (see
    :func:`actstore.ingest.pipeline.ingest`), ``on_summary(run, summary)`` each finished run.
    A model used by consecutive runs (same model, device and compute dtype) is loaded once.
    ``engine="ray"`` runs each ingest on a Ray cluster (``address``; see
    :mod:`actstore.ingest.ray_engine`), the runs still one after another.
    ``on_notice(run, notice)`` gets each run's warnings (an ``IngestNotice``; default: logged).
    """
    if engine not in ("local", "ray"):
        raise InvalidInput(f"engine must be local or ray, got {engine!r}")
    if engine == "ray":
        from actstore.ingest.pipeline import open_store
        from actstore.ingest.ray_engine import ingest_ray

        st = open_store(store, settings)
        out = []
        for run in load_manifest(path, base):
            o = dict(run.options)
            report = None if on_progress is None else (lambda done, total, run=run: on_progress(run, done, total))
            notice = None if on_notice is None else (lambda n, run=run: on_notice(run, n))
            summary = ingest_ray(
                st,
                run.model,
                run.dataset,
                prompts_file=run.prompts,
                key=run.key,
                layers=o["layers"],
                batch_size=o["batch_size"],
                max_tokens=o["max_tokens"],
                dtype=o["dtype"],
                device=o["device"],
                compute_dtype=o["compute_dtype"],
                revision=o["revision"],
                text_column=o["text_column"],
                label_column=o["label_column"],
                token=o["token"],
                chat_template=o["chat_template"],
                settings=settings,
                address=address,
                on_progress=report,
                on_notice=notice,
            )
            out.append(summary)
            if on_summary is not None:
                on_summary(run, summary)
        return out
    from actstore.ingest.pipeline import ingest, open_store
    from actstore.ingest.runner import ModelRunner

    runs = load_manifest(path, base)
    st = open_store(store, settings)
    summaries = []
    runner: ModelRunner | None = None
    loaded: tuple | None = None
    for run in runs:
        o = dict(run.options)
        ident = (run.model, o["device"], o["compute_dtype"], o["revision"])
        if ident != loaded:
            runner = None  # free the previous model before loading the next
            runner = ModelRunner(
                run.model, device=o["device"], dtype=o["compute_dtype"], revision=o["revision"], settings=settings
            )
            loaded = ident
        report = None if on_progress is None else (lambda done, total, run=run: on_progress(run, done, total))
        notice = None if on_notice is None else (lambda n, run=run: on_notice(run, n))
        summary = ingest(
            st,
            runner,
            run.dataset,
            prompts_file=run.prompts,
            key=run.key,
            layers=o["layers"],
            batch_size=o["batch_size"],
            max_tokens=o["max_tokens"],
            dtype=o["dtype"],
            text_column=o["text_column"],
            label_column=o["label_column"],
            token=o["token"],
            chat_template=o["chat_template"],
            on_progress=report,
            on_notice=notice,
        )
        summaries.append(summary)
        if on_summary is not None:
            on_summary(run, summary)
    return summaries
