"""Similarity measures by the reference projects' names, in one registry (see :mod:`.registry`).

One module per family registers its measures on import (:mod:`.families` imports them all).
"""

# The family modules register their measures on import. Importing them here (the package face
# runs before any of its submodules) rather than lazily from registry.py keeps the graph acyclic:
# face -> families -> each family -> registry.
from . import families  # noqa: F401
from .registry import (
    Measure,
    Option,
    get,
    measures,
    names,
    register,
    similarity,
    similarity_matrix,
)

__all__ = ["Measure", "Option", "get", "measures", "names", "register", "similarity", "similarity_matrix"]
