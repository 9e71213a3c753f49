"""Similarity measures by the reference projects' names, in one registry (see :mod:`.registry`).

One module per family registers its measures on import (:mod:`.families` imports them all).
"""

from . import families  # noqa: F401  registers every family's measures
from .registry import Measure, Option, get, measures, names, register, similarity, similarity_matrix

__all__ = ["Measure", "Option", "get", "measures", "names", "register", "similarity", "similarity_matrix"]
