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
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from actstore.config import Settings
from actstore.ingest.keys import model_key_for
from actstore.ingest.plan import (
    STORAGE_DTYPES,
    IngestNotice,
    IngestPlan,
    ModelInfo,
    check_args,
    check_model_matches,
    dataset_prompts,
    open_store,
    plan_ingest,
    store_and_prompts,
    stored_everywhere,
)
from actstore.layers import LayerSpec

if TYPE_CHECKING:
    from actstore.ingest.runner import ModelRunner
    from actstore.store import Store

# check_args ... stored_everywhere live in .plan (shared with the Ray engine) and model_key_for in
# .keys; they are re-exported here, where other modules have always imported them from.
__all__ = [
    "NEXT_TOP_K",
    "STORAGE_DTYPES",
    "IngestSummary",
    "check_args",
    "check_model_matches",
    "dataset_prompts",
    "ingest",
    "model_key_for",
    "open_store",
    "run_plan",
    "store_and_prompts",
    "stored_everywhere",
]

ProgressCallback = Callable[[int, int], None]

log = logging.getLogger(__name__)


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
    notices: list[IngestNotice] = field(default_factory=list)  # warnings (see IngestPlan.claim)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def prompts_per_s(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        layers = _fmt_layers(self.layers)
        lines = [
            f"ingested {self.encoded} prompt(s) of dataset {self.dataset!r} into model {self.model_key!r} ({layers})",
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
    on_notice: Callable[[IngestNotice], None] | None = None,
) -> IngestSummary:
    """Store the last-token block outputs of ``model`` for the prompts of ``dataset``.

    ``model`` is a hub id, a local folder or an already loaded :class:`ModelRunner`.
    ``layers``: ``"all"``, ``"0,5,-1"``, ``"grid:9"`` or a list of ints. ``dtype`` is the
    storage dtype (float16 | float32); ``compute_dtype`` the model's (default: bf16/fp16 on
    CUDA, fp32 on CPU). Returns an :class:`IngestSummary` and prints nothing.
    ``on_progress(done, total)`` is called from the calling thread at the start and after
    every batch, with ``total`` = the prompts this run has to encode (already stored ones
    are not counted). Vectors are written every ``flush_prompts`` prompts (or ``flush_bytes``
    of vectors) and when the run ends or is interrupted (KeyboardInterrupt), so every prompt
    the callback has counted is stored by then. ``next_tokens``: also store the model's own top-5 next tokens after
    each prompt (greedy, from its LM head; the runner must be loaded with ``lm_head=True``);
    prompts stored without them are encoded again. ``token``: the token site stored, ``last``
    (the last non-padding token), ``first`` (the first token, [CLS] for BERT-style encoders)
    or ``mean`` (the mean over the non-padding tokens). ``chat_template``: wrap each prompt as
    one user message with the tokenizer's chat template (InvalidInput when it has none). Both
    are recorded with the model and are part of its fingerprint. ``settings`` (default ``Settings()``)
    says whether the Hugging Face hub may be contacted and how the store is opened.
    The checks before the model loads and the key claim are :mod:`.plan`'s, shared with
    the Ray engine; ``key`` defaults to the model's own name (:mod:`.keys`). ``on_notice``
    gets each warning (e.g. token site ``last`` on a BERT-style encoder); default: logged.
    """
    t0 = time.perf_counter()
    plan = plan_ingest(
        store,
        model,
        dataset,
        prompts_file=prompts_file,
        key=key,
        layers=layers,
        batch_size=batch_size,
        max_tokens=max_tokens,
        dtype=dtype,
        device=device,
        compute_dtype=compute_dtype,
        revision=revision,
        text_column=text_column,
        label_column=label_column,
        token=token,
        chat_template=chat_template,
        next_tokens=next_tokens,
        settings=settings,
    )
    return run_plan(
        plan,
        flush_prompts=flush_prompts,
        flush_bytes=flush_bytes,
        on_progress=on_progress,
        on_notice=on_notice,
        started=t0,
    )


def run_plan(
    plan: IngestPlan,
    *,
    flush_prompts: int = 1024,
    flush_bytes: int = 256 << 20,
    on_progress: ProgressCallback | None = None,
    on_notice: Callable[[IngestNotice], None] | None = None,
    started: float | None = None,
) -> IngestSummary:
    """Run a planned ingest in this process: load the model (unless the plan holds a loaded
    runner), claim the key, encode what is still to do and write it (see the module docstring).
    ``on_notice`` gets each warning (default: logged)."""
    t0 = started if started is not None else time.perf_counter()
    is_runner = not isinstance(plan.source, (str, Path))
    runner = (
        plan.source
        if is_runner
        else _load_runner(plan.source, plan.device, plan.compute_dtype, plan.revision, plan.next_tokens, plan.settings)
    )
    info = ModelInfo.of(runner, plan.max_tokens, plan.token, plan.chat_template)
    work = plan.claim(info)
    for notice in work.notices:
        on_notice(notice) if on_notice is not None else log.warning("%s", notice.message)
    st, key, wanted, ids, done = work.store, plan.key, work.layers, work.ids, work.done
    next_tokens = plan.next_tokens
    summary = IngestSummary(
        model_key=key,
        dataset=plan.dataset,
        source=info.source,
        prompts=len(ids),
        encoded=0,
        skipped=int(done.sum()),
        layers=wanted,
        tokens=0,
        seconds=0.0,
        bytes_written=0,
        rows_written=0,
        truncated=0,
        max_tokens=info.max_tokens,
        added_prompts=work.added,
        notices=list(work.notices),
    )
    todo_count = work.todo
    if on_progress is not None:
        on_progress(0, todo_count)
    if done.all():
        summary.seconds = time.perf_counter() - t0
        log.debug("%s", summary)
        return summary

    tok = runner.tokenize(work.texts, plan.max_tokens, plan.chat_template)
    batches = [b for b in runner.plan_batches(tok, plan.batch_size) if not done[b].all()]
    row_bytes = work.row_bytes
    write_kwargs = work.write_kwargs

    # one entry per computed batch: (prompt ids, next tokens or None, {layer: vectors}); appended
    # in one statement, so an interrupt leaves whole batches only
    buf: list[tuple[np.ndarray, np.ndarray | None, dict[int, np.ndarray]]] = []
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
        nonlocal pending
        if not buf:
            return
        parts = buf[:]
        buf.clear()
        bid = np.concatenate([p[0] for p in parts])
        vecs = {l: np.concatenate([p[2][l] for p in parts]) for l in wanted}
        nxt = np.concatenate([p[1] for p in parts]) if next_tokens else None
        if pending is not None:
            pending.result()  # re-raises a failed write here
        pending = pool.submit(write, bid, vecs, nxt)

    # Writes run in one background thread, overlapping the next forward passes (LanceDB
    # commits release the GIL). Leaving the `with` waits for the write in flight, so an
    # interrupted ingest never abandons a half-submitted write; each write is atomic anyway.
    # Ctrl-C (KeyboardInterrupt) writes the batches computed so far before it propagates, so
    # what the progress callback counted is stored; only a hard kill loses the buffer.
    with ThreadPoolExecutor(1, thread_name_prefix="actstore-ingest-writer") as pool:
        try:
            for idx in batches:
                t = time.perf_counter()
                batch = runner.run_batch(tok, idx, wanted, top_k=NEXT_TOP_K if next_tokens else 0, token=plan.token)
                summary.forward_seconds += time.perf_counter() - t
                keep = ~done[idx]
                sel = idx[keep]
                buf.append(
                    (
                        ids[sel],
                        batch.next_tokens[keep] if next_tokens else None,
                        {l: batch.activations[l][keep] for l in wanted},
                    )
                )
                summary.batches += 1
                summary.tokens += int(tok.lengths[idx].sum())
                summary.encoded += len(sel)
                summary.truncated += int(tok.truncated[sel].sum())
                buffered = sum(len(p[0]) for p in buf)
                if buffered >= flush_prompts or buffered * row_bytes * len(wanted) >= flush_bytes:
                    flush(pool)
                if on_progress is not None:
                    on_progress(summary.encoded, todo_count)
        except KeyboardInterrupt:
            flush(pool)
            if pending is not None:
                pending.result()
            raise
        flush(pool)
        if pending is not None:
            pending.result()
    st.activations.optimize(key)
    summary.seconds = time.perf_counter() - t0
    log.debug("%s", summary)
    return summary


def _load_runner(
    model: str | Path,
    device: str,
    compute_dtype: str | None,
    revision: str | None,
    lm_head: bool,
    settings: Settings | None,
) -> ModelRunner:
    from actstore.ingest.runner import ModelRunner

    return ModelRunner(model, device=device, dtype=compute_dtype, revision=revision, lm_head=lm_head, settings=settings)


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
