"""The progress bar of ``actstore ingest`` / ``demo``: fed by the pipeline's
``on_progress(done, total)`` callbacks, drawn with rich on a terminal only."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["ProgressBar"]


class ProgressBar:
    """One bar per description (a model <- dataset ingest): done/total ``unit`` (prompts), per s,
    elapsed and ETA. :meth:`update` is the progress callback; a bar is drawn from its first
    update with work to do and stops when ``done`` reaches ``total``, so nothing stays live
    between ingests (or while the demo serves). Use as a context manager: leaving it stops a
    bar cut short by an error. Draws nothing when ``console`` is not a terminal."""

    def __init__(self, console: Any, unit: str = "prompts") -> None:
        self.console = console
        self.unit = unit
        self._progress: Any = None
        self._task: Any = None
        self._description: str | None = None
        self._start = 0.0

    def __enter__(self) -> ProgressBar:
        return self

    def update(self, description: str, done: int, total: int) -> None:
        """``done`` of ``total`` units (prompts; pairs for the atlas) of ``description``; a new
        description starts a new bar."""
        if not self.console.is_terminal:
            return
        if description != self._description:
            self._stop()
            self._description = description
            if total <= 0 or done >= total:
                return  # nothing to do: no bar
            self._begin(description, total)
        if self._progress is None:
            return
        dt = time.perf_counter() - self._start
        rate = f"{done / dt:.1f}" if done and dt > 0 else "-"
        self._progress.update(self._task, completed=done, total=total, rate=rate)
        if done >= total:
            self._stop()

    def _begin(self, description: str, total: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(f"{{task.fields[rate]}} {self.unit}/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._start = time.perf_counter()
        self._task = self._progress.add_task(description, total=total, rate="-")

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __exit__(self, *exc: Any) -> None:
        self._stop()
