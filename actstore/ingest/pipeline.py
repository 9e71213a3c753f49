"""Ingest: run a model over a dataset's prompts and store last-token activations per layer.

``ingest(store, model, dataset, ...)`` is resumable and idempotent:

1. With ``prompts_file`` the file is read and validated completely (nothing is stored for a
   bad file), then its prompts are added to ``dataset`` (same text -> same id). Without it
   the dataset's stored prompts are used.
2. Prompts already stored for *every* requested layer are skipped.
3. All prompts (done or not) are tokenized and planned into length-sorted batches; only the
   batches holding a prompt still to do are run. The plan depends only on the prompt set,
   so a resumed run computes exactly the batches (and so bit-identical vectors) that an
   uninterrupted run would.
4. Vectors are buffered for several batches (``flush_prompts`` prompts or ``flush_bytes``)
   and written per layer through ``store.activations.write`` (one commit per layer; upserts
   on prompt_id, so re-writing after a crash leaves no duplicates). Writes run in a
   background thread while the model computes the next batches (one write in flight at a
   time). ``store.activations.optimize(key)`` compacts the tables at the end.

The model's fingerprint (weights, tokenizer, extraction spec: :mod:`.fingerprint`) is
recorded with its first rows; an ingest under a key holding another model's activations is
refused with Conflict before any prompt is added, naming both sources and ``--key``.

A process killed at any point (even SIGKILL) and run again therefore ends with exactly the
rows of an uninterrupted run.

Nothing here prints: progress goes to the ``on_progress(done, total)`` callback, and the
returned :class:`IngestSummary` says what was done (``str(summary)`` is a short report).
The command line draws the progress bar and prints the summary.
"""

from __future__ import annotations

import logging
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from actstore.config import Settings
from actstore.errors import Conflict, InvalidInput, NotFound
from actstore.ingest.fingerprint import model_fingerprint
from actstore.ingest.sources import PromptSet, read_prompts
from actstore.ingest.token_sites import check_token_site
from actstore.layers import LayerSpec

if TYPE_CHECKING:
    from actstore.ingest.runner import ModelRunner
    from actstore.store import Store

__all__ = ["NEXT_TOP_K", "IngestSummary", "check_args", "check_model_matches", "dataset_prompts", "ingest",
           "model_key_for", "open_store", "stored_everywhere"]

ProgressCallback = Callable[[int, int], None]

log = logging.getLogger(__name__)

STORAGE_DTYPES = ("float16", "float32")


@dataclass
class IngestSummary:
    """What one ingest did. ``prompts`` = prompts in the dataset considered; ``encoded`` =
    prompts run through the model and written; ``skipped`` = already stored for every
    requested layer; ``bytes_written`` counts vector and id bytes (before compression)."""

    model_key: str
    dataset: str
    source: str
    prompts: int
    encoded: int
    skipped: int
    layers: list[int]
    tokens: int
    seconds: float
    bytes_written: int
    rows_written: int
    truncated: int
    max_tokens: int | None
    batches: int = 0
    added_prompts: int = 0
    forward_seconds: float = 0.0  # in the model (hooks and last-token gather included)
    write_seconds: float = 0.0  # in store writes (a background thread, overlapping forwards)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def prompts_per_s(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        layers = _fmt_layers(self.layers)
        lines = [
            f"ingested {self.encoded} prompt(s) of dataset {self.dataset!r} into model "
            f"{self.model_key!r} ({layers})",
            f"  skipped {self.skipped} already stored; {self.rows_written} rows, "
            f"{_fmt_bytes(self.bytes_written)} written in {self.seconds:.1f} s",
            f"  {self.prompts_per_s:.1f} prompts/s, {self.tokens_per_s:.0f} tokens/s",
        ]
        if self.truncated:
            lines.append(f"  {self.truncated} prompt(s) truncated to {self.max_tokens} tokens")
        return "\n".join(lines)


def _fmt_layers(layers: Sequence[int]) -> str:
    if not layers:
        return "no layers"
    if list(layers) == list(range(layers[0], layers[-1] + 1)) and len(layers) > 2:
        return f"layers {layers[0]}..{layers[-1]}"
    return "layer" + ("s " if len(layers) > 1 else " ") + ",".join(map(str, layers))


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def model_key_for(source: str | Path) -> str:
    """A store key (slug) for a model: the last part of the hub id or folder name.

    ``EleutherAI/pythia-70m`` -> ``pythia-70m``; ``/m/Qwen2.5-0.5B/`` -> ``qwen2.5-0.5b``;
    a Hugging Face cache snapshot path (``.../models--org--name/snapshots/<hash>``) gives
    the repo name; a GGUF file gives its name without ``.gguf``. Pass ``key`` explicitly
    when folder names are not distinctive.
    """
    s = str(source).strip().rstrip("/\\")
    parts = [p for p in re.split(r"[/\\]", s) if p]
    name = parts[-1] if parts else "model"
    if name.lower().endswith(".gguf"):
        name = name[:-len(".gguf")]
    for p in parts:
        if p.startswith("models--"):
            name = p.split("--")[-1]
            break
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower())
    slug = re.sub(r"_{2,}", "_", slug)
    slug = re.sub(r"-{2,}", "-", slug)
    slug = re.sub(r"^[^a-z0-9]+|[^a-z0-9]+$", "", slug)[:100]
    slug = re.sub(r"[^a-z0-9]+$", "", slug)
    return slug or "model"


def open_store(store: Store | str | Path, settings: Settings | None = None, *, create: bool = True) -> Store:
    """``store`` itself, or the store at that URI (by default created if missing: ingests and
    imports create stores; ``create=False`` raises NotFound for a missing one)."""
    from actstore.store import Store as StoreClass

    if isinstance(store, StoreClass):
        return store
    return StoreClass.open(str(store), create=create, settings=settings)


def check_args(batch_size: int, max_tokens: int | None, dtype: str) -> None:
    """InvalidInput for a bad batch size, token cap or storage dtype."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInput(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                   or max_tokens < 1):
        raise InvalidInput(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
    if dtype not in STORAGE_DTYPES:
        raise InvalidInput(f"storage dtype must be float16 or float32, got {dtype!r}")


def _check_key(key: str) -> str:
    from actstore.store.tables import check_model_key

    return check_model_key(key)  # InvalidInput naming the key and the allowed characters


def store_and_prompts(store: Store | str | Path, dataset: str, prompts_file: str | Path | None,
                      text_column: str | int, label_column: str | int | None,
                      settings: Settings | None) -> tuple[Store | None, PromptSet | None]:
    """The checks of an ingest before any model loads: (the store, None when it does not exist
    yet; the whole prompts file read and validated, None without one). A missing store is
    created only once the model has loaded, so a failed ingest leaves none; without a prompts
    file the dataset must already exist (NotFound naming the known ones)."""
    prompt_set = None
    if prompts_file is not None:
        prompt_set = read_prompts(prompts_file, text_column=text_column, label_column=label_column)
    try:
        st: Store | None = open_store(store, settings, create=False)
    except NotFound:
        if prompt_set is None:
            raise NotFound(f"unknown dataset {dataset!r}: there is no actstore store at {str(store)!r} yet; "
                           "pass a prompts file (--prompts FILE) to add its prompts") from None
        st = None
    if st is not None and prompt_set is None:
        try:
            st.prompts.ids(dataset)
        except NotFound as e:
            raise NotFound(f"{e}; pass a prompts file (--prompts FILE) to add its prompts") from None
    return st, prompt_set


def ingest(
    store: Store | str | Path,
    model: str | Path | ModelRunner,
    dataset: str,
    *,
    prompts_file: str | Path | None = None,
    key: str | None = None,
    layers: LayerSpec = "all",
    batch_size: int = 32,
    max_tokens: int | None = 512,
    dtype: str = "float16",
    device: str = "auto",
    compute_dtype: str | None = None,
    revision: str | None = None,
    text_column: str | int = "text",
    label_column: str | int | None = "label",
    flush_prompts: int = 1024,
    flush_bytes: int = 256 << 20,
    on_progress: ProgressCallback | None = None,
    next_tokens: bool = False,
    token: str = "last",
    chat_template: bool = False,
    settings: Settings | None = None,
) -> IngestSummary:
    """Store the last-token block outputs of ``model`` for the prompts of ``dataset``.

    ``model`` is a hub id, a local folder or an already loaded :class:`ModelRunner`.
    ``layers``: ``"all"``, ``"0,5,-1"``, ``"grid:9"`` or a list of ints. ``dtype`` is the
    storage dtype (float16 | float32); ``compute_dtype`` the model's (default: bf16/fp16 on
    CUDA, fp32 on CPU). Returns an :class:`IngestSummary` and prints nothing.
    ``on_progress(done, total)`` is called from the calling thread at the start and after
    every batch, with ``total`` = the prompts this run has to encode (already stored ones
    are not counted). ``next_tokens``: also store the model's own top-5 next tokens after
    each prompt (greedy, from its LM head; the runner must be loaded with ``lm_head=True``);
    prompts stored without them are encoded again. ``token``: the token site stored, ``last``
    (the last non-padding token), ``first`` (the first token, [CLS] for BERT-style encoders)
    or ``mean`` (the mean over the non-padding tokens). ``chat_template``: wrap each prompt as
    one user message with the tokenizer's chat template (InvalidInput when it has none). Both
    are recorded with the model and are part of its fingerprint. ``settings`` (default ``Settings()``)
    says whether the Hugging Face hub may be contacted and how the store is opened.
    """
    t0 = time.perf_counter()
    check_args(batch_size, max_tokens, dtype)
    check_token_site(token)
    if not isinstance(chat_template, bool):
        raise InvalidInput(f"chat_template must be true or false, got {chat_template!r}")
    if not isinstance(dataset, str) or not dataset.strip():
        raise InvalidInput(f"dataset must be a non-empty name, got {dataset!r}")
    is_runner = not isinstance(model, (str, Path))
    source_name = model.source if is_runner else str(model)
    key = _check_key(key if key is not None else model_key_for(source_name))
    st, prompt_set = store_and_prompts(store, dataset, prompts_file, text_column, label_column, settings)

    runner = model if is_runner else _load_runner(model, device, compute_dtype, revision, next_tokens, settings)
    if next_tokens and runner.lm_head is None:
        raise InvalidInput("next tokens need the model's LM head: load the runner with "
                           "ModelRunner(..., lm_head=True)")
    wanted = runner.layers(layers)
    if chat_template:  # refuse a tokenizer without a template before anything is stored
        runner.apply_chat_template([""])
    if st is None:
        st = open_store(store, settings)
    fingerprint = model_fingerprint(runner, runner.effective_max_tokens(max_tokens), token, chat_template)
    check_model_matches(st, key, runner, dtype, fingerprint, token, chat_template)

    ids, texts, added = dataset_prompts(st, dataset, prompt_set)
    done = stored_everywhere(st, key, ids, wanted, next_tokens)
    summary = IngestSummary(
        model_key=key, dataset=dataset, source=runner.source, prompts=len(ids), encoded=0,
        skipped=int(done.sum()), layers=wanted, tokens=0, seconds=0.0, bytes_written=0,
        rows_written=0, truncated=0, max_tokens=runner.effective_max_tokens(max_tokens),
        added_prompts=added,
    )
    todo_count = int((~done).sum())
    if on_progress is not None:
        on_progress(0, todo_count)
    if done.all():
        summary.seconds = time.perf_counter() - t0
        log.debug("%s", summary)
        return summary

    tok = runner.tokenize(texts, max_tokens, chat_template)
    batches = [b for b in runner.plan_batches(tok, batch_size) if not done[b].all()]
    itemsize = 2 if dtype == "float16" else 4
    row_bytes = runner.d_model * itemsize + 8
    write_kwargs = dict(n_layers=runner.n_layers, source=runner.source, architecture=runner.architecture,
                        dtype=dtype, revision=runner.revision, fingerprint=fingerprint,
                        quantization=runner.quantization, token=token, chat_template=chat_template)

    buf_ids: list[np.ndarray] = []
    buf_next: list[np.ndarray] = []
    buf_vecs: dict[int, list[np.ndarray]] = {l: [] for l in wanted}
    buffered = 0
    pending: Future | None = None

    def write(bid: np.ndarray, vecs: dict[int, np.ndarray], nxt: np.ndarray | None = None) -> None:
        t = time.perf_counter()
        rows = st.activations.write(key, vecs, bid, **write_kwargs)
        if nxt is not None:
            _write_next_tokens(st, key, runner, bid, nxt)
        summary.rows_written += rows
        summary.bytes_written += rows * row_bytes
        summary.write_seconds += time.perf_counter() - t

    def flush(pool: ThreadPoolExecutor) -> None:
        """Hand the buffer to the writer thread (at most one write in flight)."""
        nonlocal buffered, pending
        if not buffered:
            return
        bid = np.concatenate(buf_ids)
        vecs = {l: np.concatenate(buf_vecs[l]) for l in wanted}
        nxt = np.concatenate(buf_next) if buf_next else None
        buf_next.clear()
        buf_ids.clear()
        for l in wanted:
            buf_vecs[l].clear()
        buffered = 0
        if pending is not None:
            pending.result()  # re-raises a failed write here
        pending = pool.submit(write, bid, vecs, nxt)

    # Writes run in one background thread, overlapping the next forward passes (LanceDB
    # commits release the GIL). Leaving the `with` waits for the write in flight, so an
    # interrupted ingest never abandons a half-submitted write; each write is atomic anyway.
    with ThreadPoolExecutor(1, thread_name_prefix="actstore-ingest-writer") as pool:
        for idx in batches:
            t = time.perf_counter()
            batch = runner.run_batch(tok, idx, wanted, top_k=NEXT_TOP_K if next_tokens else 0, token=token)
            summary.forward_seconds += time.perf_counter() - t
            keep = ~done[idx]
            sel = idx[keep]
            buf_ids.append(ids[sel])
            if next_tokens:
                buf_next.append(batch.next_tokens[keep])
            for l in wanted:
                acts = batch.activations[l]
                buf_vecs[l].append(acts[keep] if not keep.all() else acts)
            buffered += len(sel)
            summary.batches += 1
            summary.tokens += int(tok.lengths[idx].sum())
            summary.encoded += len(sel)
            summary.truncated += int(tok.truncated[sel].sum())
            if buffered >= flush_prompts or buffered * row_bytes * len(wanted) >= flush_bytes:
                flush(pool)
            if on_progress is not None:
                on_progress(summary.encoded, todo_count)
        flush(pool)
        if pending is not None:
            pending.result()
    st.activations.optimize(key)
    summary.seconds = time.perf_counter() - t0
    log.debug("%s", summary)
    return summary


def dataset_prompts(st: Store, dataset: str, prompt_set: Any | None) -> tuple[np.ndarray, list[str], int]:
    """Add the prompts of ``prompt_set`` (a read prompts file, or None) to ``dataset``; return
    (ids int64 [n] ascending, texts [n] in id order, prompts added) of the whole dataset:
    the file's prompts and any stored before."""
    added = 0
    text_of: dict[int, str] = {}
    if prompt_set is not None:
        before = _count(st, dataset)
        ids_list = st.add_prompts(dataset, prompt_set.texts, labels=prompt_set.labels,
                                  meta=prompt_set.meta)
        added = _count(st, dataset) - before
        text_of = dict(zip(ids_list, prompt_set.texts))
    ids = st.prompts.ids(dataset)
    missing = [int(i) for i in ids if int(i) not in text_of]
    if missing:
        text_of.update((p.id, p.text) for p in st.prompts.get(missing))
    return ids, [text_of[int(i)] for i in ids], added


def stored_everywhere(st: Store, key: str, ids: np.ndarray, layers: Sequence[int],
                      next_tokens: bool = False) -> np.ndarray:
    """bool [len(ids)]: which prompts are stored for every one of ``layers`` of model ``key``
    (and have next tokens, when asked): what a resumed ingest skips."""
    done = np.ones(len(ids), dtype=bool)
    for layer in layers:
        done &= np.isin(ids, st.activations.ids(key, layer))
    if next_tokens:
        done &= np.isin(ids, st.next_tokens.ids(key))
    return done


def _count(st: Store, dataset: str) -> int:
    try:
        return len(st.prompts.ids(dataset))
    except NotFound:
        return 0


def _load_runner(model: str | Path, device: str, compute_dtype: str | None, revision: str | None,
                 lm_head: bool, settings: Settings | None) -> ModelRunner:
    from actstore.ingest.runner import ModelRunner

    return ModelRunner(model, device=device, dtype=compute_dtype, revision=revision, lm_head=lm_head,
                       settings=settings)


NEXT_TOP_K = 5  # next tokens stored per prompt (top-1 is the label, top-5 the ceiling)


def _write_next_tokens(st: Store, key: str, runner: ModelRunner, ids: np.ndarray, top: np.ndarray) -> None:
    """Store each prompt's top next-token ids with their decoded strings and vocabulary pieces."""
    tok = runner.tokenizer
    cache: dict[int, tuple[str, str]] = {}

    def text(i: int) -> tuple[str, str]:
        if i not in cache:
            piece = tok.convert_ids_to_tokens(i)
            cache[i] = (tok.decode([i]), piece if isinstance(piece, str) else str(piece))
        return cache[i]

    rows = [[text(int(i)) for i in row] for row in top]
    st.next_tokens.write(key, ids, top, [[d for d, _ in r] for r in rows], [[p for _, p in r] for r in rows])


def check_model_matches(st: Store, key: str, runner: ModelRunner, dtype: str, fingerprint: str,
                        token: str = "last", chat_template: bool = False) -> None:
    """Refuse to mix a different model (or storage dtype) into an existing key, before any
    prompt is added: InvalidInput for another shape or dtype, Conflict for another token
    site, chat template or fingerprint (checked again by every write)."""
    info = st.models.find(key)
    if info is None:
        return
    diffs = []
    if info.n_layers != runner.n_layers:
        diffs.append(f"n_layers {info.n_layers} vs {runner.n_layers}")
    if info.d_model != runner.d_model:
        diffs.append(f"d_model {info.d_model} vs {runner.d_model}")
    if info.architecture and info.architecture != runner.architecture:
        diffs.append(f"architecture {info.architecture} vs {runner.architecture}")
    if diffs:
        raise InvalidInput(
            f"model key {key!r} is already used by another model ({info.source or 'unknown source'}: "
            f"{'; '.join(diffs)}); choose another --key"
        )
    if info.dtype != dtype:
        raise InvalidInput(f"model {key!r} is stored as {info.dtype}; ingest it with "
                                f"--dtype {info.dtype} (got {dtype})")
    if info.fingerprint and (info.token, info.chat_template) != (token, chat_template):
        def spec(t: str, c: bool) -> str:
            return f"--token {t}" + (" --chat-template" if c else "")
        raise Conflict(f"model key {key!r} holds activations extracted with {spec(info.token, info.chat_template)}; "
                       f"this ingest asks for {spec(token, chat_template)}: ingest it under another key "
                       "with --key NAME")
    st.models.check_write(info, fingerprint, runner.source)
    if info.source and info.source != runner.source:
        log.info("model %r was stored from %s; now ingesting from %s", key, info.source, runner.source)
