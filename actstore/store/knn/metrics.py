"""The k-NN metrics and what their scores mean (in their own units):

- ``cosine``: inner product of L2-normalised vectors, in [-1, 1], larger is nearer.
- ``dot``: raw inner product, larger is nearer.
- ``l2``: Euclidean distance, smaller is nearer.
"""

from __future__ import annotations

__all__ = ["METRICS"]

METRICS = ("cosine", "dot", "l2")
