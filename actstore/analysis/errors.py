"""The exception types of :mod:`actstore.analysis`: AnalysisError (bad input) and
AnalysisCancelled (long work told to stop by its ``should_stop`` callable)."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["AnalysisCancelled", "AnalysisError", "StopCheck", "check_stop"]

#: a callable asked between batches of long work; True means "stop now"
StopCheck = Callable[[], bool]


class AnalysisError(ValueError):
    """Bad input to an analysis function.

    The message names the offending value and what is allowed, so the service layer can pass
    it to the user unchanged (through GraphQL it becomes a GraphQL error, not a 500).
    """


class AnalysisCancelled(Exception):
    """Long work stopped because its ``should_stop`` callable returned True (its caller's time
    limit passed or its client left). Not an AnalysisError: the input was not at fault."""


def check_stop(should_stop: StopCheck | None, done: int, total: int, what: str) -> None:
    """Raise AnalysisCancelled when ``should_stop`` says so; ``done``/``total`` units of ``what``."""
    if should_stop is not None and should_stop():
        raise AnalysisCancelled(f"stopped after {done} of {total} {what}")
