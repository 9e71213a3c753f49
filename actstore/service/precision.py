"""The ``precision`` argument of CKA and bridge queries: its allowed values and their check.

* CKA (cka, ckaMatrix): "auto" (the default) computes in float64 while the problem is small
  (below ~1e10 Gram-form flops, or when the permutation Grams fit the memory budget in
  float64) and in float32 above; float32 and float64 agree to ~1e-5 in CKA units on
  unit-scale data (tests/unit/service/test_corpus.py).
* Bridges and probe transfer: "auto" is float64 (ridge works on S_c^T S_c, whose condition
  number is the square of S_c's); "float32" trades that margin for speed and memory (see
  :mod:`actstore.analysis.bridges`).

Every answer names the precision it was asked for; it is part of the cache key.
"""

from __future__ import annotations

from actstore.errors import InvalidInput

__all__ = ["PRECISIONS", "check_precision"]

PRECISIONS = ("auto", "float32", "float64")


def check_precision(precision: object) -> str:
    """``precision`` as one of PRECISIONS (an enum's ``value`` is accepted)."""
    value = getattr(precision, "value", precision)
    if value not in PRECISIONS:
        raise InvalidInput(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return str(value)
