"""Similarity measures by the reference projects' names, in one registry (see :mod:`.registry`).

One module per family registers its measures on import (:mod:`.families` imports them all).
:func:`measure_permutation_test` tests any of them against a (stratified) permutation null.
"""

# The family modules register their measures on import. Importing them here (the package face
# runs before any of its submodules) rather than lazily from registry.py keeps the graph acyclic:
# face -> families -> each family -> registry.
from . import families  # noqa: F401
from .permutation import MeasureTest, measure_permutation_test
from .registry import (
    Measure,
    Option,
    check_pair,
    get,
    measures,
    names,
    register,
    similarity,
    similarity_matrix,
)

__all__ = [
    "Measure",
    "MeasureTest",
    "Option",
    "check_pair",
    "get",
    "measure_permutation_test",
    "measures",
    "names",
    "register",
    "similarity",
    "similarity_matrix",
]
