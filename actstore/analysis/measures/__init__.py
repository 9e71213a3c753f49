"""Similarity measures by the reference projects' names, in one registry (see :mod:`.registry`).

One module per family registers its measures on import (:mod:`.families` imports them all).
:func:`measure_permutation_test` tests any of them against a (stratified) permutation null.
"""

from . import families  # noqa: F401  registers every family's measures
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

__all__ = ["Measure", "MeasureTest", "Option", "check_pair", "get", "measure_permutation_test", "measures",
           "names", "register", "similarity", "similarity_matrix"]
