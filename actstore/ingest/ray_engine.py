"""Ingest on a Ray cluster: the local extraction as a Ray Data pipeline (``--engine ray``).

``ingest_ray(store, model, dataset, ...)`` stores exactly what :func:`actstore.ingest.pipeline.ingest`
stores -- bit for bit, on the same kind of device -- and keeps its guarantees:

1. The driver (this process; it never loads the model) validates the options and the prompts
   file. A *planner* actor (the resources of one worker) loads the model once to give its
   shape, fingerprint and the token length of every prompt, and is released. Steps 1 and 2
   are :mod:`actstore.ingest.plan`'s (``plan_ingest`` and ``IngestPlan.claim``), the same
   code the local engine runs.
2. The driver checks the model against the store, adds the file's prompts and skips those
   stored for every requested layer (resume). It plans the length-sorted batches of
   :meth:`ModelRunner.plan_batches <actstore.ingest.runner.ModelRunner.plan_batches>` over the
   *whole* dataset -- the same batches as the local path, hence the same padding and the
   same vectors -- and groups consecutive batches into work units (length buckets). It
   registers the model and creates its missing layer tables, empty
   (:meth:`Activations.fragment_targets <actstore.store.activations.Activations.fragment_targets>`).
3. A Ray Data ``map_batches`` over the units runs an actor pool of the existing ModelRunner:
   one actor per GPU (``num_gpus=1``), or CPU actors when the cluster has no GPU. Each actor
   tokenizes its unit's prompts, runs its planned batches and writes each layer's new rows as
   Lance fragments straight into the store (S3 or a shared folder), in parallel.
4. The driver collects fragment metadata as units finish and commits them in waves of about
   ``commit_prompts`` prompts: one atomic Lance append per layer table per wave
   (:meth:`Activations.commit_fragments <actstore.store.activations.Activations.commit_fragments>`).
   A run killed at any point loses at most the uncommitted wave; run again, it skips what is
   committed (per layer: a prompt committed to some layers only is written to the others).
   Fragments written but never committed are unreferenced files, never rows.

Progress goes to ``on_progress(done, total)`` (prompts encoded / to encode); each commit
wave to ``on_commit(prompts_committed)``. Ray is imported only here and only when called.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from actstore.config import Settings
from actstore.errors import InvalidInput, NotFound
from actstore.ingest.pipeline import IngestSummary
from actstore.ingest.plan import IngestNotice, IngestPlan, ModelInfo, plan_ingest
from actstore.layers import LayerSpec

if TYPE_CHECKING:
    from actstore.store import Store
    from actstore.store.snapshots import FragmentTarget

__all__ = ["RunnerInfo", "ingest_ray", "run_plan_ray"]

log = logging.getLogger(__name__)

UNIT_BATCHES = 4  # planned batches per work unit (one map_batches call of one actor)


RunnerInfo = ModelInfo  # the name this module used before the plan was shared


@dataclass(frozen=True)
class _RunnerArgs:
    model: str
    device: str
    compute_dtype: str | None
    revision: str | None
    settings: Settings


def _load(args: _RunnerArgs, threads: int | None = None) -> Any:
    from actstore.ingest.runner import ModelRunner

    if threads:
        import torch

        torch.set_num_threads(threads)
    return ModelRunner(
        args.model, device=args.device, dtype=args.compute_dtype, revision=args.revision, settings=args.settings
    )


class _Planner:
    """Ray actor: loads the model once; its shape, fingerprint and the prompts' token lengths."""

    def __init__(self, args: _RunnerArgs, threads: int | None) -> None:
        self.runner = _load(args, threads)

    def info(self, max_tokens: int | None, token: str, chat_template: bool) -> ModelInfo:
        return ModelInfo.of(self.runner, max_tokens, token, chat_template)

    def lengths(self, texts: list[str], max_tokens: int | None, chat_template: bool) -> tuple[np.ndarray, np.ndarray]:
        tok = self.runner.tokenize(texts, max_tokens, chat_template)
        return tok.lengths, tok.truncated


class _Worker:
    """Ray Data callable class: one loaded ModelRunner; each call runs one work unit and
    writes its rows of every layer as Lance fragments."""

    def __init__(
        self,
        args: _RunnerArgs,
        threads: int | None,
        targets: dict[int, FragmentTarget],
        max_tokens: int | None,
        token: str,
        chat_template: bool,
    ) -> None:
        self.runner = _load(args, threads)
        self.targets, self.max_tokens = targets, max_tokens
        self.token, self.chat_template = token, chat_template

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from actstore.store.snapshots import write_layer_fragments

        out = []
        for payload in rows["payload"]:
            unit = pickle.loads(payload)
            t0 = time.perf_counter()
            tok = self.runner.tokenize(unit["texts"], self.max_tokens, self.chat_template)
            layers = sorted(self.targets)
            acts = {l: np.zeros((len(tok), self.runner.d_model), np.float32) for l in layers}
            for pos in unit["batches"]:
                batch = self.runner.run_batch(tok, pos, layers, token=self.token)
                for l in layers:
                    acts[l][pos] = batch.activations[l]
            forward = time.perf_counter() - t0
            frags = {}
            for l in layers:
                need = unit["need"][l]
                frags[l] = write_layer_fragments(self.targets[l], unit["ids"][need], acts[l][need])
            todo = unit["todo"]
            out.append(
                pickle.dumps(
                    {
                        "fragments": frags,
                        "encoded": int(todo.sum()),
                        "tokens": int(tok.lengths.sum()),
                        "truncated": int(tok.truncated[todo].sum()),
                        "rows": int(sum(unit["need"][l].sum() for l in layers)),
                        "forward_seconds": forward,
                        "write_seconds": time.perf_counter() - t0 - forward,
                        "batches": len(unit["batches"]),
                    }
                )
            )
        return {"result": np.array(out, dtype=object)}


def _stored_ids(st: Store, key: str, layer: int) -> np.ndarray:
    """Prompt ids stored for one layer (none for an unknown model or a layer without a table)."""
    try:
        return st.activations.ids(key, layer)
    except NotFound:
        return np.zeros(0, np.int64)


def _ray(address: str | None) -> Any:
    """The ``ray`` module, connected: an already initialised Ray, else ``ray.init(address)``
    (None: a new local cluster, or the one ``RAY_ADDRESS`` names)."""
    try:
        import ray
    except ImportError:
        raise InvalidInput("the Ray engine needs Ray: pip install 'actstore[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray


def ingest_ray(
    store: Store | str | Path,
    model: str | Path,
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
    token: str = "last",
    chat_template: bool = False,
    settings: Settings | None = None,
    address: str | None = None,
    workers: int | None = None,
    threads: int = 1,
    commit_prompts: int = 4096,
    on_progress: Callable[[int, int], None] | None = None,
    on_commit: Callable[[int], None] | None = None,
    on_notice: Callable[[IngestNotice], None] | None = None,
) -> IngestSummary:
    """:func:`actstore.ingest.pipeline.ingest` on a Ray cluster (see the module docstring).

    ``model``: a hub id or a folder every Ray node can read (a shared or baked-in path).
    ``address``: the cluster (``auto``, ``ray://host:10001``; None: the running Ray, or a new
    local one). ``workers``: model actors (default: one per GPU, else the CPUs less one).
    ``threads``: CPUs (torch threads) of each CPU actor. Vectors are bit-identical to a local
    ingest on the same kind of device; on CPUs, with the same torch thread count (the local
    path's ``torch.get_num_threads()``), as a float32 matmul sums in an order that depends on
    it (differences of ~1e-4 in float16 otherwise).
    ``device``: inside the actors (``auto``: the actor's GPU when it has one).
    ``commit_prompts``: prompts per commit wave. Returns the same IngestSummary as ``ingest``
    (``extra["engine"] = "ray"``, ``extra["workers"]``, ``extra["commits"]``).
    """
    t0 = time.perf_counter()
    if not isinstance(model, (str, Path)):
        raise InvalidInput(
            "the Ray engine loads the model in its workers: pass a hub id or a folder, not a loaded runner"
        )
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
        settings=settings,
    )
    return run_plan_ray(
        plan,
        address=address,
        workers=workers,
        threads=threads,
        commit_prompts=commit_prompts,
        on_progress=on_progress,
        on_commit=on_commit,
        on_notice=on_notice,
        started=t0,
    )


def run_plan_ray(
    plan: IngestPlan,
    *,
    address: str | None = None,
    workers: int | None = None,
    threads: int = 1,
    commit_prompts: int = 4096,
    on_progress: Callable[[int, int], None] | None = None,
    on_commit: Callable[[int], None] | None = None,
    on_notice: Callable[[IngestNotice], None] | None = None,
    started: float | None = None,
) -> IngestSummary:
    """Run a planned ingest on a Ray cluster (see :func:`ingest_ray`)."""
    t0 = started if started is not None else time.perf_counter()
    if plan.next_tokens:
        raise InvalidInput("the Ray engine does not store next tokens; ingest them with the local engine")
    if isinstance(commit_prompts, bool) or not isinstance(commit_prompts, int) or commit_prompts < 1:
        raise InvalidInput(f"commit_prompts must be an integer >= 1, got {commit_prompts!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InvalidInput(f"threads must be an integer >= 1, got {threads!r}")
    key, max_tokens, token, chat_template = plan.key, plan.max_tokens, plan.token, plan.chat_template
    settings = plan.settings if plan.settings is not None else Settings()
    ray = _ray(address if address is not None else settings.ray_address)
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    if workers is None:
        workers = gpus if gpus else max(1, (cpus - 1) // threads)
    per_actor = {"num_gpus": 1} if gpus else {"num_cpus": threads}
    threads = None if gpus else threads
    args = _RunnerArgs(str(plan.source), plan.device, plan.compute_dtype, plan.revision, settings)

    planner = ray.remote(**per_actor)(_Planner).remote(args, threads)
    try:
        info: ModelInfo = ray.get(planner.info.remote(max_tokens, token, chat_template))
        work = plan.claim(info)
        for notice in work.notices:
            on_notice(notice) if on_notice is not None else log.warning("%s", notice.message)
        st, wanted, ids, texts, done = work.store, work.layers, work.ids, work.texts, work.done
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
            extra={"engine": "ray", "workers": 0, "commits": 0},
            notices=list(work.notices),
        )
        todo_count = work.todo
        if on_progress is not None:
            on_progress(0, todo_count)
        if done.all():
            summary.seconds = time.perf_counter() - t0
            return summary
        lengths, _ = ray.get(planner.lengths.remote(texts, max_tokens, chat_template))
    finally:
        ray.kill(planner)

    from actstore.ingest.runner import ModelRunner, Tokenized

    batches = ModelRunner.plan_batches(
        Tokenized([], None, np.asarray(lengths), np.zeros(len(lengths), bool)), plan.batch_size
    )
    batches = [b for b in batches if not done[b].all()]
    stored = {l: np.isin(ids, _stored_ids(st, key, l)) for l in wanted}
    units = []
    for u in range(0, len(batches), UNIT_BATCHES):
        group = batches[u : u + UNIT_BATCHES]
        rows = np.concatenate(group)
        starts = np.cumsum([0] + [len(b) for b in group])
        units.append(
            {
                "ids": ids[rows],
                "texts": [texts[i] for i in rows],
                "todo": ~done[rows],
                "batches": [np.arange(starts[k], starts[k + 1]) for k in range(len(group))],
                "need": {l: ~stored[l][rows] for l in wanted},
            }
        )
    targets = st.activations.fragment_targets(key, wanted, d_model=info.d_model, **work.write_kwargs)
    workers = max(1, min(int(workers), len(units)))
    summary.extra["workers"] = workers
    row_bytes = work.row_bytes

    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = False
    items = [{"payload": pickle.dumps(unit)} for unit in units]
    results = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _Worker,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=workers),
        zero_copy_batch=True,
        fn_constructor_kwargs=dict(
            args=args, threads=threads, targets=targets, max_tokens=max_tokens, token=token, chat_template=chat_template
        ),
        **per_actor,
    )

    pending: dict[int, list[str]] = {l: [] for l in wanted}
    pending_prompts = 0

    def commit() -> None:
        nonlocal pending_prompts
        if not pending_prompts:
            return
        t = time.perf_counter()
        st.activations.commit_fragments(key, pending)
        summary.write_seconds += time.perf_counter() - t
        summary.extra["commits"] += 1
        n = pending_prompts
        for l in wanted:
            pending[l] = []
        pending_prompts = 0
        if on_commit is not None:
            on_commit(n)

    # Ctrl-C (KeyboardInterrupt) commits the fragments already written before it propagates,
    # so what the progress callback counted is stored.
    try:
        for row in results.iter_rows():
            r = pickle.loads(row["result"])
            for l in wanted:
                pending[l].extend(r["fragments"][l])
            pending_prompts += r["encoded"]
            summary.encoded += r["encoded"]
            summary.tokens += r["tokens"]
            summary.truncated += r["truncated"]
            summary.rows_written += r["rows"]
            summary.bytes_written += r["rows"] * row_bytes
            summary.forward_seconds += r["forward_seconds"]
            summary.write_seconds += r["write_seconds"]
            summary.batches += r["batches"]
            if pending_prompts >= commit_prompts:
                commit()
            if on_progress is not None:
                on_progress(summary.encoded, todo_count)
    except KeyboardInterrupt:
        commit()
        raise
    commit()
    st.activations.optimize(key)
    summary.seconds = time.perf_counter() - t0
    return summary
