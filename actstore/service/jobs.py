"""Background jobs (ingests started over the API), run one at a time on a worker thread.

:class:`Jobs` is the service part (``service.jobs``): it starts ingests and reports jobs;
:class:`JobRunner` runs any submitted work.

A job's progress is ``done`` of ``total`` prompts; its state goes QUEUED -> RUNNING ->
SUCCEEDED | FAILED. Expected errors are reported in ``message``; unexpected ones are logged
in full on the server and reported as a short message.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from actstore.errors import ActstoreError, InvalidInput, NotFound
from actstore.store import Store

from .boundary import service_boundary
from .work import run_cancellable

log = logging.getLogger(__name__)

QUEUED, RUNNING, SUCCEEDED, FAILED = "QUEUED", "RUNNING", "SUCCEEDED", "FAILED"
#: the message of a job stopped by :meth:`JobRunner.cancel` starts with this (its state is FAILED)
CANCELLED = "cancelled"


@dataclass(frozen=True)
class Job:
    id: str
    state: str
    done: int = 0
    total: int = 0
    message: str | None = None


Progress = Callable[[int, int], None]


class JobRunner:
    """Runs submitted work on one worker thread; keeps every job's latest state."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._stops: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="actstore-job")

    def submit(self, work: Callable[[Progress], Any], describe: Callable[[Any], str] = str) -> Job:
        """Queue ``work(progress)``; its return value, through ``describe``, becomes the message."""
        job = Job(id=uuid.uuid4().hex[:12], state=QUEUED)
        stop = threading.Event()
        with self._lock:
            self._jobs[job.id] = job
            self._stops[job.id] = stop

        def progress(done: int, total: int) -> None:
            self._update(job.id, done=int(done), total=int(total))

        def run() -> None:
            if stop.is_set():
                self._update(job.id, state=FAILED, message=f"{CANCELLED} before it started")
                return
            self._update(job.id, state=RUNNING)
            try:
                result = run_cancellable(stop, work, progress)
            except ActstoreError as exc:
                if stop.is_set():
                    current = self.get(job.id)
                    self._update(
                        job.id,
                        state=FAILED,
                        message=f"{CANCELLED} after {current.done} of {current.total}"
                        if current is not None
                        else CANCELLED,
                    )
                else:
                    self._update(job.id, state=FAILED, message=str(exc))
            except Exception as exc:  # noqa: BLE001 - reported, logged, never raised into the pool
                log.exception("job %s failed", job.id)
                self._update(job.id, state=FAILED, message=f"internal error ({type(exc).__name__}); see server log")
            else:
                current = self.get(job.id)
                assert current is not None  # jobs are never forgotten
                self._update(job.id, state=SUCCEEDED, done=max(current.done, current.total), message=describe(result))

        self._pool.submit(run)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> Job:
        """Ask a job to stop (its work stops between batches; what it stored stays stored);
        NotFound for an unknown id."""
        with self._lock:
            stop = self._stops.get(job_id)
        if stop is None:
            raise NotFound(f"no job {job_id!r}")
        stop.set()
        job = self.get(job_id)
        assert job is not None
        return job

    def _update(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            self._jobs[job_id] = replace(self._jobs[job_id], **changes)

    def wait(self, timeout: float | None = None) -> None:
        """Block until every submitted job has finished (tests, shutdown)."""
        self._pool.submit(lambda: None).result(timeout=timeout)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@service_boundary
class Jobs:
    """Ingests started over the API, run in the background one at a time."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.runner = JobRunner()

    def job(self, job_id: str) -> Job | None:
        return self.runner.get(job_id)

    def cancel(self, job_id: str) -> Job:
        """Stop a queued or running job (see :meth:`JobRunner.cancel`)."""
        return self.runner.cancel(str(job_id))

    def start(self, work: Callable[[Progress], Any], describe: Callable[[Any], str] = str) -> Job:
        """Queue any work ``work(progress)`` (an atlas, ...); returns the job."""
        return self.runner.submit(work, describe)

    def start_ingest(
        self,
        model: str,
        dataset: str,
        layers: Sequence[int] | None = None,
        batch_size: int | None = None,
        token: str | None = None,
        chat_template: bool | None = None,
        key: str | None = None,
    ) -> Job:
        """Queue an ingest of ``model`` (hub id or local folder) over ``dataset``; returns the job.
        ``token``: the token site stored (last | first | mean; default last); ``chat_template``:
        wrap prompts in the tokenizer's chat template (default false); ``key``: the model's key
        in the store (default: from the model's name, see ``actstore.ingest.loading``)."""
        self.store.prompts.dataset(dataset)  # unknown dataset: fail now, not in the job
        if batch_size is not None and batch_size < 1:
            raise InvalidInput(
                f"batch_size must be >= 1, got {batch_size}", field="batch_size", value=batch_size, allowed=">= 1"
            )
        from actstore.ingest.pipeline import ingest  # torch + transformers only when an ingest starts
        from actstore.ingest.token_sites import check_token_site

        check_token_site(token or "last")  # a bad token site: fail now, not in the job
        if key is not None:
            from actstore.store.tables import check_model_key

            check_model_key(key)  # a bad key: fail now, not in the job

        def work(progress: Progress) -> Any:
            return ingest(
                self.store,
                model,
                dataset,
                layers=list(layers) if layers is not None else "all",
                batch_size=batch_size or 32,
                token=token or "last",
                chat_template=bool(chat_template),
                key=key,
                on_progress=progress,
            )

        def describe(summary: Any) -> str:
            return (
                f"stored {summary.encoded} prompts x {len(summary.layers)} layers as {summary.model_key!r} "
                f"({summary.skipped} already stored, {summary.truncated} truncated)"
            )

        return self.runner.submit(work, describe)

    def wait(self, timeout: float | None = None) -> None:
        """Block until every submitted job has finished (tests, shutdown)."""
        self.runner.wait(timeout)

    def shutdown(self) -> None:
        self.runner.shutdown()
