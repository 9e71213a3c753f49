"""The one exception type of :mod:`actstore.analysis`."""

from __future__ import annotations

__all__ = ["AnalysisError"]


class AnalysisError(ValueError):
    """Bad input to an analysis function.

    The message names the offending value and what is allowed, so the service layer can pass
    it to the user unchanged (through GraphQL it becomes a GraphQL error, not a 500).
    """
